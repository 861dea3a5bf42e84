"""One agent for an application: the graph, its SQLite memory, and the calls the interfaces make.

The terminal, the web page and the HTTP API all go through `Agent.ask` / `Agent.stream`, so they
behave the same: raw input (bytes or text, and an optional photo) is checked before it reaches the
graph, turns on one thread are serialised (different threads run at once: the chat server batches
their requests), and every turn returns the reply plus the item cards the guard let through, and
which path answered (the chat model or the rule-based fallback).

A thread belongs to the API key that started it (`owner`, a hash): another key can neither read
nor continue it (`ThreadForbidden`); without keys every thread is readable locally.

    with Agent.open("runs/ml100k") as agent:
        print(agent.ask("alice", "I loved Star Wars and Alien").reply)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from agent.graph import AgentSettings, build_graph, warm_up
from agent.llm import ChatLLM
from agent.model_tools import bound_tools
from agent.planner import MAX_MESSAGE_CHARS, message_problem
from agent.tools import AgentContext
from genrec.errors import GenrecError
from inference.ranker import run_ranker
from inference.ranking import Ranker

DEFAULT_LLM_URL = "http://127.0.0.1:8000/v1"
MAX_THREAD_CHARS = 200
MAX_PHOTO_BYTES = 8_000_000
_PHOTO_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF", b"BM")


class ThreadForbidden(GenrecError):
    """The thread was started with another API key."""


def key_owner(api_key: str | None) -> str:
    """The owner tag of a thread started with `api_key` ("" without a key)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:32] if api_key else ""


def photo_problem(photo: bytes | None) -> str | None:
    """Why an attached photo cannot be used (too big, not an image file), or None."""
    if photo is None:
        return None
    if len(photo) > MAX_PHOTO_BYTES:
        return f"The photo is {len(photo):,} bytes; I read at most {MAX_PHOTO_BYTES:,}. Please send a smaller one."
    if not photo.startswith(_PHOTO_MAGIC):
        return "The attachment is not a JPEG, PNG, GIF, WebP or BMP image; please attach a photo."
    return None


@dataclass
class AgentReply:
    """One turn's answer."""

    reply: str
    items: list[dict[str, Any]] = field(default_factory=list)  # item_id, title, explanation, attributes, image
    thread_id: str = ""
    source: str = "rules"  # "model" if the model wrote the reply, else "rules"
    planner: str = "rules"  # "model" if the model chose the tools, "rules" if the rule-based fallback did
    note: str = ""  # why the model did not plan or write it, when it did not
    calls: list[dict[str, Any]] = field(default_factory=list)  # the turn's tool calls: name, args, by, valid
    violations: list[str] = field(default_factory=list)  # what the guard removed or replaced
    timing: dict[str, Any] = field(default_factory=dict)  # seconds per planning step, reply seconds and tokens

    def public_items(self) -> list[dict[str, Any]]:
        """The items in the HTTP API's shape."""
        return [
            {"item_id": i["item_id"], "title": i["title"], "explanation": i.get("explanation", "")} for i in self.items
        ]


def decode_message(raw: str | bytes | None) -> tuple[str, str | None]:
    """Text of a message as received, and the reason it cannot be answered (None when it can).

    Bytes that are not UTF-8 are refused (decoding them "with replacement" would make the agent
    answer a message the user never wrote); huge messages are refused before anything is stored.
    """
    if raw is None:
        raw = ""
    if isinstance(raw, bytes):
        if len(raw) > 4 * MAX_MESSAGE_CHARS:
            return "", message_problem("x" * (len(raw) // 4 + 1)) or ""
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "", message_problem("\udcff") or ""
    return raw, message_problem(raw)


class Agent:
    """The compiled graph over one run, with a SQLite checkpointer at `RUN/chat.sqlite`."""

    def __init__(self, ctx: AgentContext, chat: ChatLLM | None, db_path: Path, settings: AgentSettings | None = None):
        self.ctx = ctx
        self.chat = chat
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)  # a new memory file may sit in a new folder
        from langgraph.checkpoint.sqlite import SqliteSaver

        # One connection shared by threads: SqliteSaver serialises its own use of it with a lock.
        self._conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30)
        self.checkpointer = SqliteSaver(self._conn)
        self.graph = build_graph(ctx, chat, self.checkpointer, settings)
        self.tools = bound_tools(ctx, (settings or AgentSettings()).k)  # what /tools describes
        if chat is not None and (settings or AgentSettings()).warm_up:
            threading.Thread(target=warm_up, args=(ctx, chat, settings), name="chat-warm-up", daemon=True).start()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def open(
        cls,
        run: str | Path,
        llm_url: str | None = DEFAULT_LLM_URL,
        *,
        chat_url: str | None = None,
        db_path: str | Path | None = None,
        settings: AgentSettings | None = None,
        ranker: Ranker | None = None,
        llm_timeout_s: float = 60.0,
        api_key: str | None = None,
    ) -> Agent:
        """Open a run's agent; `llm_url=None` answers from retrieval alone (no model server at all).

        `llm_url` serves the fine-tuned recommender; `chat_url` the model that plans, writes replies
        and explanations (default: `llm_url`, whose base model then chats). `api_key`: the servers'
        `--api-key`, if they have one."""
        if ranker is None:
            ranker = run_ranker(run, llm_url, timeout_s=llm_timeout_s, api_key=api_key)
        ctx = AgentContext.open(run, ranker=ranker)
        talk = chat_url or llm_url
        chat = ChatLLM(talk, timeout_s=llm_timeout_s, api_key=api_key) if talk else None
        if chat is not None:
            from agent.explainer import ChatExplainer

            ctx.explainer = ChatExplainer(chat, ctx.searcher.items)
        return cls(ctx, chat, Path(db_path) if db_path else ctx.paths.root / "chat.sqlite", settings)

    def close(self) -> None:
        """Close the memory database."""
        self._conn.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _thread_lock(self, thread_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(thread_id, threading.Lock())

    @staticmethod
    def _config(thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": 25}

    @staticmethod
    def check_thread(thread_id: str) -> str:
        """A usable thread name (non-empty, bounded)."""
        thread_id = (thread_id or "").strip()
        if not thread_id:
            return "default"
        return thread_id[:MAX_THREAD_CHARS]

    def _values(self, thread_id: str) -> dict[str, Any]:
        return self.graph.get_state(self._config(thread_id)).values or {}

    def check_owner(self, thread_id: str, api_key: str | None) -> None:
        """Raise `ThreadForbidden` unless the thread is new or was started with `api_key`."""
        owner = self._values(thread_id).get("owner")
        if owner is not None and not hmac.compare_digest(owner, key_owner(api_key)):
            raise ThreadForbidden(f"thread {thread_id!r}: started with another API key")

    def _turn_input(self, thread_id: str, text: str, photo: bytes | None, api_key: str | None) -> dict[str, Any]:
        self.check_owner(thread_id, api_key)
        self.ctx.refresh()  # items added or retired since the last turn (`genrec items`)
        content: Any = text
        if photo is not None:  # the transcript records that a photo came; the bytes go to the tools only
            content = [
                {"type": "text", "text": text or "Find items that look like this photo."},
                {"type": "text", "text": "[photo attached]"},
            ]
        return {
            "messages": [HumanMessage(content=content)],
            "owner": key_owner(api_key),
            "photo": base64.b64encode(photo).decode("ascii") if photo is not None else None,
        }

    def _checked(self, thread_id: str, message: str | bytes | None, photo: bytes | None) -> tuple[str, str, str | None]:
        thread_id = self.check_thread(thread_id)
        text, problem = decode_message(message)
        if photo is not None:
            if message is None or not message.strip():  # a photo alone is a request
                text, problem = "Find items that look like this photo.", None
            problem = problem or photo_problem(photo)
        return thread_id, text, problem

    def ask(
        self, thread_id: str, message: str | bytes | None, photo: bytes | None = None, api_key: str | None = None
    ) -> AgentReply:
        """Answer one message (and an optional photo) in a thread; memory is loaded from and saved to the checkpointer."""
        thread_id, text, problem = self._checked(thread_id, message, photo)
        if problem:
            return AgentReply(problem, [], thread_id)
        with self._thread_lock(thread_id):
            state = self.graph.invoke(self._turn_input(thread_id, text, photo, api_key), self._config(thread_id))
        return self._reply(state, thread_id)

    def stream(
        self, thread_id: str, message: str | bytes | None, photo: bytes | None = None, api_key: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Answer one message as a stream of events, as they happen:

        - `status`: what the agent is doing ("choosing tools", "writing the reply");
        - `tool_call`: a tool the planner called (`name`, `args`, `planner`), before it runs;
        - `tool_result`: its result (`name`, `items`: how many, `error`);
        - `delta`: a piece of the model's reply, released once it passed the grounding and claim checks;
        - `reset`: the deltas so far are void: the guard sent the reply back to the model to be rewritten;
        - `reply`: the final reply (text, items, source, planner) after the guard: it replaces the
          deltas (when the guard replaced the model's reply, it differs from them).
        """
        thread_id, text, problem = self._checked(thread_id, message, photo)
        if problem:
            yield {
                "event": "reply",
                "thread_id": thread_id,
                "reply": problem,
                "items": [],
                "source": "rules",
                "planner": "rules",
            }
            return
        with self._thread_lock(thread_id):
            turn = self._turn_input(thread_id, text, photo, api_key)
            for mode, chunk in self.graph.stream(turn, self._config(thread_id), stream_mode=["updates", "custom"]):
                if mode == "custom":
                    if "delta" in chunk:
                        yield {"event": "delta", "text": chunk["delta"]}
                    elif "reset" in chunk:
                        yield {"event": "reset"}
                    elif "status" in chunk:
                        yield {"event": "status", "text": chunk["status"]}
                    continue
                for node, delta in chunk.items():
                    if node == "plan" and delta and delta.get("messages"):
                        for call in delta["messages"][-1].tool_calls:
                            yield {
                                "event": "tool_call",
                                "name": call["name"],
                                "args": call["args"],
                                "planner": delta.get("planner"),
                            }
                    elif node == "tools" and delta:
                        from agent.prompts import tool_result

                        for msg in delta.get("messages", []):
                            result = tool_result(msg)
                            yield {
                                "event": "tool_result",
                                "name": msg.name,
                                "items": len(result.get("items") or []),
                                "error": result.get("error"),
                            }
            state = self._values(thread_id)
        answer = self._reply(state, thread_id)
        yield {
            "event": "reply",
            "thread_id": thread_id,
            "reply": answer.reply,
            "items": answer.items,
            "source": answer.source,
            "planner": answer.planner,
            "note": answer.note,
            "calls": answer.calls,
        }

    def _reply(self, state: dict[str, Any], thread_id: str) -> AgentReply:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        return AgentReply(
            str(last.content),
            list(last.additional_kwargs.get("items") or []),
            thread_id,
            last.additional_kwargs.get("source", "rules"),
            state.get("planner", "rules"),
            state.get("llm_note", ""),
            list(state.get("calls") or []),
            list(state.get("guard_violations") or []),
            dict(state.get("timing") or {}),
        )

    def memory(self, thread_id: str, api_key: str | None = None) -> dict[str, Any]:
        """What a thread remembers: liked and excluded items, preferences, user, last items, number of turns.
        Raises `ThreadForbidden` for a thread another key started."""
        thread_id = self.check_thread(thread_id)
        self.check_owner(thread_id, api_key)
        values = self._values(thread_id)
        titles = self.ctx.titles.titles
        return {
            "thread_id": thread_id,
            "turns": sum(isinstance(m, HumanMessage) for m in values.get("messages", [])),
            "history": [{"item_id": i, "title": titles.get(i, "")} for i in values.get("history") or []],
            "excluded": [{"item_id": i, "title": titles.get(i, "")} for i in values.get("excluded") or []],
            "preferences": values.get("preferences") or {},
            "user_id": values.get("user_id"),
            "candidates": [{"item_id": c["item_id"], "title": c["title"]} for c in values.get("candidates") or []],
        }

    def transcript(self, thread_id: str, api_key: str | None = None) -> list[tuple[str, str]]:
        """The thread's human/assistant exchanges as (role, text), oldest first."""
        from agent.prompts import text_of

        thread_id = self.check_thread(thread_id)
        self.check_owner(thread_id, api_key)
        out = []
        for m in self._values(thread_id).get("messages", []):
            if isinstance(m, HumanMessage):
                out.append(("user", text_of(m)))
            elif isinstance(m, AIMessage) and not m.tool_calls:
                out.append(("assistant", str(m.content)))
        return out
