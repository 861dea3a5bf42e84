"""`genrec chat` in a terminal: a rich prompt loop, or, when stdin is not a terminal, one reply per
input line on stdout (for scripts: `printf 'I loved Alien\\nwhy that one?\\n' | genrec chat --run R`).
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from agent.session import Agent, AgentReply
from agent.tools import describe

EXIT_WORDS = {"/quit", "/exit", "quit", "exit", ":q"}


def one_line(answer: AgentReply) -> str:
    """A reply on one line: its lines joined with " | " (scripts read one reply per line)."""
    return " | ".join(line.strip() for line in answer.reply.splitlines() if line.strip())


def run_script(agent: Agent, thread: str, stdin: IO[bytes], stdout: IO[str], as_json: bool = False) -> int:
    """Answer each line of `stdin` (raw bytes: undecodable lines get a clear reply); return the count."""
    count = 0
    for raw in stdin:
        answer = agent.ask(thread, raw.rstrip(b"\r\n"))
        if as_json:
            stdout.write(
                json.dumps(
                    {
                        "reply": answer.reply,
                        "items": answer.public_items(),
                        "source": answer.source,
                        "planner": answer.planner,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        else:
            stdout.write(one_line(answer) + "\n")
        stdout.flush()
        count += 1
    return count


def print_answer(console: Any, answer: AgentReply) -> None:
    """The reply, then a table of its items."""
    from rich.table import Table

    console.print("[bold green]genrec:[/]")
    for call in answer.calls:
        if call.get("name") != "answer":
            console.print(
                f"[dim]  tool {call['name']}({', '.join(f'{k}={v!r}' for k, v in call['args'].items())}) "
                f"chosen by {'the chat model' if call.get('by') == 'model' else 'the rules'}[/]",
                highlight=False,
            )
    console.print(answer.reply, markup=False, highlight=False)
    if answer.items:
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
        table.add_column("id", style="cyan", no_wrap=True)
        table.add_column("title", style="bold")
        table.add_column("attributes")
        for item in answer.items:
            table.add_row(str(item["item_id"]), item["title"], describe(item.get("attributes") or {}))
        console.print(table)


def run_interactive(agent: Agent, thread: str) -> None:
    """The rich prompt loop; Ctrl-D, Ctrl-C or /quit ends it. `/memory` shows what the thread remembers."""
    from rich.console import Console
    from rich.prompt import Prompt

    console = Console()
    memory = agent.memory(thread)
    if memory["turns"]:
        liked = ", ".join(h["title"] for h in memory["history"]) or "nothing yet"
        console.print(
            f"[dim]resuming conversation {thread!r}: {memory['turns']} turns; you liked {liked}; "
            f"preferences {memory['preferences'] or 'none'}[/]"
        )
        for role, text in agent.transcript(thread)[-4:]:
            console.print(f"[dim]{role}: {text[:300]}[/]", markup=True, highlight=False)
    else:
        console.print(f"[dim]new conversation {thread!r}; /quit to leave, /memory to see what I remember[/]")
    if agent.chat is None or agent.chat.unavailable():
        console.print("[yellow]no language model in use: replies come from retrieval alone[/]")
    while True:
        try:
            message = Prompt.ask("[bold cyan]you[/]")
        except (EOFError, KeyboardInterrupt):
            console.print()
            break
        if message.strip().lower() in EXIT_WORDS:
            break
        if message.strip() == "/memory":
            console.print(agent.memory(thread))
            continue
        answer = None
        with console.status("thinking ...") as status:
            for event in agent.stream(thread, message):
                if event["event"] == "status":
                    status.update(f"{event['text']} ...")
                elif event["event"] == "tool_call":
                    status.update(f"calling {event['name']} ...")
                elif event["event"] == "delta":
                    status.update("writing the reply ...")
                elif event["event"] == "reply":
                    answer = event
        if answer is not None:
            print_answer(
                console,
                AgentReply(
                    answer["reply"],
                    answer["items"],
                    thread,
                    answer.get("source", "rules"),
                    answer.get("planner", "rules"),
                    answer.get("note", ""),
                    answer.get("calls", []),
                ),
            )


def run_chat(agent: Agent, thread: str, as_json: bool = False) -> None:
    """Interactive when stdin is a terminal, else line by line."""
    if sys.stdin.isatty():
        run_interactive(agent, thread)
    else:
        run_script(agent, thread, sys.stdin.buffer, sys.stdout, as_json)


DEMO_MESSAGES = ("I loved Star Wars and Alien", "something funnier", "why the first one?")


def demo_conversation(
    agent: Agent, thread: str = "demo", messages: tuple[str, ...] = DEMO_MESSAGES, console: Any = None
) -> list[AgentReply]:
    """The scripted chat `genrec demo` ends with: each message, then the reply and a table of its items."""
    from rich.console import Console

    console = console or Console()
    answers = []
    for message in messages:
        console.print(f"[bold cyan]you:[/] {message}", highlight=False)
        answer = agent.ask(thread, message)
        print_answer(console, answer)
        answers.append(answer)
    return answers
