"""Simulated conversations: a user with a hidden target item talks to the agent until it shows it.

The simulated user is a test case of the leave-one-out split: its hidden target is the user's last
item, and it knows its own history. It speaks from the target's real attributes (kinds/genres,
decade, year, description with the title taken out) and never says the target's title; each turn
reveals a little more. The agent is the real one (`agent.session.Agent`), retrieval-only unless a
model server is given. Metrics per run of N conversations:

- success@K: share of conversations where the target appears in the first K items of a reply
  within the allowed turns; turns to success (for conversations that succeed);
- grounding violations: items in a reply that no tool returned in the conversation, mentions the
  agent's guard flags in the reply text, and attribute claims in item explanations that are false
  of the item (`eval.faithfulness`).

The agent uses the run's recommender at `llm_url` and its chat model at `chat_url` (default: the
run's, as `genrec chat` resolves it); without `llm_url` it answers from retrieval alone. The
template-driven user is the default; with `simulator="llm"` the chat model writes the user's
messages from the same hidden facts (falling back to the template when the model is unavailable or
lets the title slip).
"""

from __future__ import annotations

import random
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eval.faithfulness import ItemAttributes, Vocabulary, score_explanation
from genrec.errors import GenrecError

SUCCESS_KS = (1, 5, 10)
DEFAULT_TURNS = 5
_TITLE_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_UNSAYABLE = re.compile(r"[,.;&]|\band\b", re.IGNORECASE)  # titles the agent's "I loved A and B" reading would split


def bare_title(title: str) -> str:
    """A title without its trailing year: what "saying the title" means."""
    return _TITLE_YEAR.sub("", title).strip()


def says_title(message: str, title: str) -> bool:
    """True when `message` contains the title (as catalogued, bare, or in spoken order)."""
    from agent.lookup import display_title

    text = message.lower()
    forms = {title, bare_title(title), bare_title(display_title(title))}
    return any(len(f) >= 3 and re.search(r"(?<!\w)" + re.escape(f.lower()) + r"(?!\w)", text) for f in forms)


@dataclass
class TemplateUser:
    """A user who wants `target` and describes it a little more each turn, never by its title."""

    target: ItemAttributes
    description: str  # the item's text with its title removed
    liked: list[str]  # titles from the user's real history, as people write them

    def hints(self) -> list[str]:
        """The attribute phrases, least to most revealing."""
        kinds = sorted(self.target.kinds)
        kind_text = " and ".join(k.title() if k.islower() else k for k in kinds[:3])
        out = []
        if kind_text:
            out.append(f"something {kind_text}")
        if self.target.year:
            decade = self.target.year // 10 * 10
            out.append(f"something {kind_text} from the {decade}s".replace("  ", " "))
            out.append(f"something {kind_text} from {self.target.year}".replace("  ", " "))
        values = sorted(self.target.values)
        if values:
            out.append(f"something {kind_text} with {', '.join(values[:2])}".replace("  ", " "))
        if self.description:
            out.append(f"something that fits this description: {self.description.rstrip('.')}")
        return out or ["something you think I would like"]

    def message(self, turn: int, shown: Sequence[str]) -> str:
        """What the user says at `turn` (0-based), having been shown items `shown` last turn."""
        if turn == 0 and self.liked:
            return "I loved " + " and ".join(self.liked[:2]) + "."
        hints = self.hints()
        hint = hints[min(turn - (1 if self.liked else 0), len(hints) - 1)]
        prefix = "Not quite. " if shown else ""
        return f"{prefix}Can you recommend {hint}?"


_QUOTED = re.compile(r"[\"“”]|\(\d{4}\)")  # a quoted name or a title-with-year: the model inventing an item


@dataclass
class LLMUser:
    """A served chat model playing the user: each turn it words the template user's request (the same
    hidden facts, revealed at the same pace) as a user would type it. Its message is used only if it
    keeps a fact of that request (a kind, the decade or year, the liked titles), names no other item
    and does not say the target's title; otherwise the template's message is sent and counted."""

    template: TemplateUser
    chat: Any  # agent.llm.ChatLLM
    fallbacks: int = 0
    written: int = 0

    def message(self, turn: int, shown: Sequence[str]) -> str:
        """The model's wording of this turn's request, or the template's."""
        plain = self.template.message(turn, shown)
        if turn == 0 and self.template.liked:
            ask = f"say they loved {' and '.join(self.template.liked[:2])} and want something similar"
            must = [bare_title(t).lower() for t in self.template.liked[:2]]
        else:
            hint = plain.split("recommend ", 1)[-1].rstrip("?")
            ask = ("say the last suggestions were not it, and " if shown else "") + f"ask for {hint}"
            must = [k.lower() for k in self.template.target.kinds] + (
                [str(self.template.target.year), f"{self.template.target.year // 10 * 10}s"] if self.template.target.year else [])
        prompt = f"Write what a fan types into a recommender chat to {ask}. One sentence, first person."
        try:
            text = " ".join(self.chat.reply([{"role": "user", "content": prompt}], max_tokens=50).split()).strip('"')
        except GenrecError:
            text = ""
        lowered = text.lower()
        keeps = all(m in lowered for m in must) if turn == 0 and self.template.liked else any(m in lowered for m in must)
        if not text or not keeps or _QUOTED.search(text) or says_title(text, self.template.target.title):
            self.fallbacks += 1
            return plain
        self.written += 1
        return text


@dataclass
class Conversation:
    """One simulated conversation and what it achieved."""

    user_id: str
    target: str
    turns: int  # turns taken (until success@max K, or the limit)
    success_turn: dict[int, int | None]  # K -> first turn (1-based) with the target in the top K, or None
    violations: list[str]
    transcript: list[tuple[str, str]]


def simulated_user(user: str, cases: dict, vocab: Vocabulary, items: pd.DataFrame) -> TemplateUser:
    """The template user of a test case: target attributes, description without title, liked titles."""
    from agent.lookup import display_title

    history, target = cases[user]
    attrs = vocab.items[target]
    text = str(items.loc[target, "text"]) if "text" in items else ""
    for form in sorted({attrs.title, bare_title(attrs.title)}, key=len, reverse=True):
        text = text.replace(form, " ")
    text = re.sub(r"^[\s.,;:]+", "", re.sub(r"\s+", " ", text)).strip()[:200]
    liked = []
    for item in reversed(list(history)):
        title = display_title(vocab.items[item].title) if item in vocab.items else ""
        if title and not _UNSAYABLE.search(_TITLE_YEAR.sub("", title)) and not says_title(title, attrs.title):
            liked.append(title)
        if len(liked) == 2:
            break
    return TemplateUser(attrs, text if not says_title(text, attrs.title) else "", liked)


def run_conversation(agent: Any, thread: str, user: TemplateUser | LLMUser, user_id: str, target: str,
                     vocab: Vocabulary, max_turns: int) -> Conversation:
    """Talk until the target is shown in the top max(K) items or `max_turns` run out."""
    from agent.guard import check, grounded_ids

    template = user.template if isinstance(user, LLMUser) else user
    success: dict[int, int | None] = {k: None for k in SUCCESS_KS}
    violations: list[str] = []
    transcript: list[tuple[str, str]] = []
    shown: list[str] = []
    turn = 0
    for turn in range(1, max_turns + 1):
        message = user.message(turn - 1, shown)
        if says_title(message, template.target.title):  # the rule of the game, checked rather than trusted
            raise GenrecError(f"simulated user {user_id}: message names the hidden target ({message!r})")
        answer = agent.ask(thread, message)
        transcript += [("user", message), ("assistant", answer.reply)]
        state = agent.graph.get_state({"configurable": {"thread_id": thread}}).values
        grounded = set(grounded_ids(state.get("messages", [])))
        liked = [h["item_id"] for h in agent.memory(thread)["history"]]
        shown = [str(card["item_id"]) for card in answer.items]
        for card in answer.items:
            item = str(card["item_id"])
            if item not in grounded:
                violations.append(f"turn {turn}: item {item} was not returned by a tool")
            elif item in vocab.items and card.get("explanation"):
                score = score_explanation(str(card["explanation"]), item, liked, vocab)
                violations += [f"turn {turn}: item {item} explanation claims {c!r}" for c in score.false_claims]
        violations += [f"turn {turn}: reply mentions {v.describe()}" for v in check(answer.reply, grounded, agent.ctx.titles).violations]
        for k in SUCCESS_KS:
            if success[k] is None and target in shown[:k]:
                success[k] = turn
        if success[max(SUCCESS_KS)] is not None:
            break
    return Conversation(user_id, target, turn, success, violations, transcript)


def summarize(conversations: Sequence[Conversation], max_turns: int) -> dict[str, Any]:
    """success@K, average turns (all conversations, and to success), grounding violations."""
    n = len(conversations)
    out: dict[str, Any] = {"conversations": n, "max_turns": max_turns}
    for k in SUCCESS_KS:
        out[f"success@{k}"] = sum(c.success_turn[k] is not None for c in conversations) / n if n else 0.0
    done = [c.success_turn[max(SUCCESS_KS)] for c in conversations if c.success_turn[max(SUCCESS_KS)] is not None]
    out["avg_turns"] = sum(c.turns for c in conversations) / n if n else 0.0
    out["avg_turns_to_success"] = sum(done) / len(done) if done else None
    out["grounding_violations"] = sum(len(c.violations) for c in conversations)
    out["conversations_with_violations"] = sum(bool(c.violations) for c in conversations)
    return out


def simulate_run(run: str | Path, conversations: int = 200, max_turns: int = DEFAULT_TURNS,
                 llm_url: str | None = None, seed: int = 0, progress: bool = True,
                 keep_transcripts: int = 3, show_violations: int = 20, chat_url: str | None = None,
                 simulator: str = "template") -> dict[str, Any]:
    """Simulate `conversations` chats (a fixed seeded sample of test users) with the run's agent."""
    from tqdm.auto import tqdm

    from agent.graph import AgentSettings
    from agent.session import Agent
    from genrec.metrics import sample_users
    from eval.run_eval import load_split
    from genrec.run import open_run

    if conversations < 1:
        raise GenrecError(f"--conversations: expected a positive number, got {conversations}")
    if max_turns < 1:
        raise GenrecError(f"--turns: expected a positive number, got {max_turns}")
    if simulator not in ("template", "llm"):
        raise GenrecError(f"--simulator: expected template or llm, got {simulator!r}")
    paths, config = open_run(run)
    paths.require(paths.chroma, f"genrec index --run {paths.root}")
    if llm_url and not chat_url:
        from serving.server import chat_url as run_chat_url

        chat_url = run_chat_url(paths.root, config.serve, llm_url)
    if simulator == "llm" and not chat_url:
        raise GenrecError("--simulator llm: needs a chat model; pass --chat-url URL (or --llm-url for the run's own)")
    split, _ = load_split(paths)
    items = pd.read_parquet(paths.items).set_index("item_id", drop=False)
    items.index = items.index.astype(str)
    vocab = Vocabulary.from_items(items)
    users = sample_users(split.test, conversations, seed)
    rng = random.Random(seed)
    rng.shuffle(users)  # the same users in the same order on every run of the same settings
    chat = None
    if simulator == "llm":
        from agent.llm import ChatLLM

        chat = ChatLLM(chat_url, timeout_s=60.0)
    results: list[Conversation] = []
    fallbacks = written = 0
    with tempfile.TemporaryDirectory(prefix="genrec-sim-") as tmp:
        agent = Agent.open(paths.root, llm_url=llm_url, chat_url=chat_url, db_path=Path(tmp) / "sim.sqlite",
                           settings=AgentSettings(k=max(SUCCESS_KS)), llm_timeout_s=60.0)
        try:
            for i, user_id in enumerate(tqdm(users, desc="simulated conversations", unit="chat", disable=not progress)):
                template = simulated_user(user_id, split.test, vocab, items)
                user: TemplateUser | LLMUser = LLMUser(template, chat) if chat else template
                results.append(run_conversation(agent, f"sim-{i}-{user_id}", user, user_id, split.test[user_id][1],
                                                vocab, max_turns))
                if isinstance(user, LLMUser):
                    fallbacks += user.fallbacks
                    written += user.written
        finally:
            agent.close()
    out = summarize(results, max_turns)
    out["simulator"] = "llm" if chat else "template"
    out["agent"] = "model" if llm_url else "retrieval-only"
    out["llm_url"], out["chat_url"] = llm_url, chat_url
    if chat:
        out["llm_user_messages"] = written  # messages the model worded and the checks kept
        out["llm_fallback_messages"] = fallbacks  # template messages sent instead
    out["examples"] = [{"user_id": c.user_id, "target": c.target, "success_turn": c.success_turn[max(SUCCESS_KS)],
                        "violations": c.violations[:5], "transcript": c.transcript} for c in results[:keep_transcripts]]
    return out


def print_simulation(result: dict[str, Any], console=None) -> None:
    """The headline numbers as a small table."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: keep the headers readable
            console.width = 180
    table = Table(title=f"simulated conversations ({result['simulator']} user, {result['agent']} agent, "
                        f"up to {result['max_turns']} turns)")
    keys = ["conversations", *(f"success@{k}" for k in SUCCESS_KS), "avg_turns", "avg_turns_to_success",
            "grounding_violations", "conversations_with_violations"]
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*("-" if result.get(k) is None else f"{result[k]:.3f}" if isinstance(result[k], float) else str(result[k])
                    for k in keys))
    console.print(table)
