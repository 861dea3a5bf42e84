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
run's, as `genrec chat` resolves it); without `llm_url` it answers from retrieval alone. Users:

- `template`: the original simulated user. It speaks the rule planner's grammar ("I loved A and B",
  skipping liked titles that the planner would split) and its last hint pastes the target's own
  description, so it flatters the rule agent;
- `paraphrase`: the same hidden facts in varied wordings that no rule was written for; liked titles
  as they are (commas, "and" and all), never the target's description;
- `llm`: a served chat model words each request from the same facts, with its own prompt (not the
  agent's); a wording that drops the facts, names another item or the target is replaced by the
  paraphrase (counted).

Per turn it also records which path answered (the chat model or the rule fallback), every tool call
and whether it validated, the seconds the turn took and the reply's tokens/s.
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


_LIKED_FORMS = (
    "My favourites lately were {a} and {b}. What should I watch next?",
    "I've been enjoying {a}, plus {b}. Anything along those lines?",
    "Big fan of {a}; {b} was great too. Suggestions?",
    "Just finished {a} and before that {b}, both brilliant. What now?",
)
_LIKED_ONE = ("My favourite lately was {a}. What should I watch next?", "I really enjoyed {a}. Got more like it?")
_HINT_FORMS = {
    "kinds": ("Got anything that's {kinds}?", "I'm in the mood for {kinds}.", "Maybe something {kinds} this time?"),
    "decade": ("Ideally {kinds} and made in the {decade}s.", "Something {kinds} from the {decade}s would be nice."),
    "year": ("I have a feeling it came out in {year}, {kinds}.", "Think {kinds}, released around {year}."),
    "values": ("It should be {kinds}, with {values}.",),
}
_NOT_QUITE = ("Hmm, not those. ", "None of these ring a bell. ", "Not quite what I meant. ", "")


@dataclass
class ParaphraseUser:
    """The template user's hidden facts in wordings no rule was written for: liked titles exactly as
    catalogued people say them (a comma or an "and" inside a title included), hints as varied
    sentences, and never the target's own description."""

    template: TemplateUser
    liked: list[str]  # the user's last liked titles, none skipped
    seed: int = 0

    def hints(self) -> list[str]:
        """Attribute hints, least to most revealing, each in one of several wordings."""
        target = self.template.target
        kinds = " and ".join(k.title() if k.islower() else k for k in sorted(target.kinds)[:3]) or "good"
        rng = random.Random(f"{self.seed}-{target.title}")
        out = [rng.choice(_HINT_FORMS["kinds"]).format(kinds=kinds)]
        if target.year:
            out.append(rng.choice(_HINT_FORMS["decade"]).format(kinds=kinds, decade=target.year // 10 * 10))
            out.append(rng.choice(_HINT_FORMS["year"]).format(kinds=kinds, year=target.year))
        if target.values:
            out.append(
                rng.choice(_HINT_FORMS["values"]).format(kinds=kinds, values=", ".join(sorted(target.values)[:2]))
            )
        return out

    def message(self, turn: int, shown: Sequence[str]) -> str:
        """What the user says at `turn` (0-based), having been shown items `shown` last turn."""
        rng = random.Random(f"{self.seed}-{self.template.target.title}-{turn}")
        if turn == 0 and self.liked:
            if len(self.liked) == 1:
                return rng.choice(_LIKED_ONE).format(a=self.liked[0])
            return rng.choice(_LIKED_FORMS).format(a=self.liked[0], b=self.liked[1])
        hints = self.hints()
        hint = hints[min(turn - (1 if self.liked else 0), len(hints) - 1)]
        return (rng.choice(_NOT_QUITE) if shown else "") + hint


_QUOTED = re.compile(r"[\"“”]|\(\d{4}\)")  # a quoted name or a title-with-year: the model inventing an item


USER_PROMPT = (
    "You play a person chatting with a movie recommender. Write the one message they type, in "
    "their own casual words, first person, at most two sentences. Output only the message."
)


@dataclass
class LLMUser:
    """A served chat model playing the user, with its own prompt (not the agent's): each turn it words
    the paraphrase user's request (the same hidden facts, revealed at the same pace). Its message is
    used only if it keeps a fact of that request (a kind, the decade or year, the liked titles), names
    no other item and does not say the target's title; otherwise the paraphrase is sent and counted.
    `cache` keeps each wording, so that two agents talking to the same user get the same messages."""

    fallback: ParaphraseUser
    chat: Any  # agent.llm.ChatLLM
    cache: dict[tuple[str, int, bool], str] = field(default_factory=dict)
    fallbacks: int = 0
    written: int = 0

    @property
    def template(self) -> TemplateUser:
        return self.fallback.template

    def message(self, turn: int, shown: Sequence[str]) -> str:
        """The model's wording of this turn's request, or the paraphrase."""
        key = (self.template.target.title, turn, bool(shown))
        plain = self.fallback.message(turn, shown)
        if key not in self.cache:
            self.cache[key] = self._write(turn, shown) or ""
        text = self.cache[key]
        if not text:
            self.fallbacks += 1
            return plain
        self.written += 1
        return text

    def _write(self, turn: int, shown: Sequence[str]) -> str | None:
        target = self.template.target
        kinds = ", ".join(sorted(target.kinds)[:3])
        if turn == 0 and self.fallback.liked:
            ask = f"say they loved {' and '.join(self.fallback.liked[:2])} and ask what to watch next"
            must = [bare_title(t).lower() for t in self.fallback.liked[:2]]
        else:
            facts = [f"genre {kinds}"] if kinds else []
            step = turn - (1 if self.fallback.liked else 0)
            if target.year and step >= 1:
                facts.append(f"from the {target.year // 10 * 10}s" if step == 1 else f"released in {target.year}")
            ask = (
                ("say the last suggestions were not it, and " if shown else "") + "ask for a movie: " + "; ".join(facts)
            )
            must = [k.lower() for k in target.kinds] + (
                [str(target.year), f"{target.year // 10 * 10}s", f"{str(target.year)[2]}0s"] if target.year else []
            )
        messages = [{"role": "system", "content": USER_PROMPT}, {"role": "user", "content": f"Task: {ask}."}]
        try:
            text = " ".join(self.chat.reply(messages, max_tokens=60).split()).strip('"')
        except GenrecError:
            return None
        lowered = text.lower()
        keeps = (
            all(m in lowered for m in must) if turn == 0 and self.fallback.liked else any(m in lowered for m in must)
        )
        if not text or not keeps or _QUOTED.search(text) or says_title(text, target.title):
            return None
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
    turn_stats: list[dict[str, Any]] = field(
        default_factory=list
    )  # per turn: planner, source, calls, seconds, tokens/s


def simulated_user(user: str, cases: dict, vocab: Vocabulary, items: pd.DataFrame) -> TemplateUser:
    """The template user of a test case: target attributes, description without title, liked titles."""
    history, target = cases[user]
    attrs = vocab.items[target]
    text = str(items.loc[target, "text"]) if "text" in items else ""
    for form in sorted({attrs.title, bare_title(attrs.title)}, key=len, reverse=True):
        text = text.replace(form, " ")
    text = re.sub(r"^[\s.,;:]+", "", re.sub(r"\s+", " ", text)).strip()[:200]
    liked = liked_titles(history, vocab, attrs.title, skip_unsayable=True)
    return TemplateUser(attrs, text if not says_title(text, attrs.title) else "", liked)


def liked_titles(
    history: Sequence[str], vocab: Vocabulary, target_title: str, n: int = 2, skip_unsayable: bool = False
) -> list[str]:
    """The user's last `n` liked titles as people write them ("The Godfather (1972)"); with
    `skip_unsayable`, titles the rule planner would split are passed over (the template user's habit)."""
    from agent.lookup import display_title

    liked: list[str] = []
    for item in reversed(list(history)):
        title = display_title(vocab.items[item].title) if item in vocab.items else ""
        if (
            not title
            or says_title(title, target_title)
            or (skip_unsayable and _UNSAYABLE.search(_TITLE_YEAR.sub("", title)))
        ):
            continue
        liked.append(title)
        if len(liked) == n:
            break
    return liked


def paraphrase_user(user: str, cases: dict, vocab: Vocabulary, items: pd.DataFrame, seed: int = 0) -> ParaphraseUser:
    """The paraphrasing user of a test case (same target and history as `simulated_user`)."""
    history, target = cases[user]
    template = simulated_user(user, cases, vocab, items)
    return ParaphraseUser(template, liked_titles(history, vocab, vocab.items[target].title), seed)


def run_conversation(
    agent: Any,
    thread: str,
    user: TemplateUser | ParaphraseUser | LLMUser,
    user_id: str,
    target: str,
    vocab: Vocabulary,
    max_turns: int,
) -> Conversation:
    """Talk until the target is shown in the top max(K) items or `max_turns` run out."""
    import time

    from agent.guard import check, grounded_ids

    template = user if isinstance(user, TemplateUser) else user.template
    success: dict[int, int | None] = {k: None for k in SUCCESS_KS}
    violations: list[str] = []
    transcript: list[tuple[str, str]] = []
    stats: list[dict[str, Any]] = []
    shown: list[str] = []
    turn = 0
    for turn in range(1, max_turns + 1):
        message = user.message(turn - 1, shown)
        if says_title(message, template.target.title):  # the rule of the game, checked rather than trusted
            raise GenrecError(f"simulated user {user_id}: message names the hidden target ({message!r})")
        started = time.monotonic()
        answer = agent.ask(thread, message)
        seconds = time.monotonic() - started
        transcript += [("user", message), ("assistant", answer.reply)]
        state = agent.graph.get_state({"configurable": {"thread_id": thread}}).values
        grounded = set(grounded_ids(state.get("messages", [])))
        liked = [h["item_id"] for h in agent.memory(thread)["history"]]
        shown = [str(card["item_id"]) for card in answer.items]
        calls = getattr(answer, "calls", []) or []
        stats.append(
            {
                "planner": getattr(answer, "planner", "rules"),
                "source": getattr(answer, "source", "rules"),
                "seconds": round(seconds, 3),
                "calls": len([c for c in calls if c.get("name") != "answer"]),
                "invalid_calls": sum(not c.get("valid", True) for c in calls),
                "tool_errors": tool_errors(state),
                "guard_replaced": bool(getattr(answer, "violations", [])),
                "tokens_per_s": (getattr(answer, "timing", {}) or {}).get("reply_tokens_per_s"),
                "plan_s": (getattr(answer, "timing", {}) or {}).get("plan_s", []),
            }
        )
        for card in answer.items:
            item = str(card["item_id"])
            if item not in vocab.items:
                violations.append(f"turn {turn}: item {item} is not in the catalog")
            if item not in grounded:
                violations.append(f"turn {turn}: item {item} was not returned by a tool")
            elif item in vocab.items and card.get("explanation"):
                score = score_explanation(str(card["explanation"]), item, liked, vocab)
                violations += [f"turn {turn}: item {item} explanation claims {c!r}" for c in score.false_claims]
        violations += [
            f"turn {turn}: reply mentions {v.describe()}"
            for v in check(answer.reply, grounded, agent.ctx.titles).violations
        ]
        for k in SUCCESS_KS:
            if success[k] is None and target in shown[:k]:
                success[k] = turn
        if success[max(SUCCESS_KS)] is not None:
            break
    return Conversation(user_id, target, turn, success, violations, transcript, stats)


def tool_errors(state: dict[str, Any]) -> int:
    """Tool calls of the last turn answered with an error (bad arguments the tool refused)."""
    from langchain_core.messages import HumanMessage, ToolMessage

    messages = state.get("messages", [])
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=0)
    return sum(isinstance(m, ToolMessage) and getattr(m, "status", "success") == "error" for m in messages[start:])


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summarize(conversations: Sequence[Conversation], max_turns: int) -> dict[str, Any]:
    """success@K, average turns (all conversations, and to success), grounding violations, which path
    answered, tool-call validity, seconds per turn and reply tokens/s."""
    import statistics

    n = len(conversations)
    out: dict[str, Any] = {"conversations": n, "max_turns": max_turns}
    for k in SUCCESS_KS:
        out[f"success@{k}"] = sum(c.success_turn[k] is not None for c in conversations) / n if n else 0.0
    done = [c.success_turn[max(SUCCESS_KS)] for c in conversations if c.success_turn[max(SUCCESS_KS)] is not None]
    out["avg_turns"] = sum(c.turns for c in conversations) / n if n else 0.0
    out["avg_turns_to_success"] = sum(done) / len(done) if done else None
    out["grounding_violations"] = sum(len(c.violations) for c in conversations)
    out["conversations_with_violations"] = sum(bool(c.violations) for c in conversations)
    turns = [t for c in conversations for t in c.turn_stats]
    seconds = [t["seconds"] for t in turns]
    calls = sum(t["calls"] for t in turns)
    out["planner_turns"] = {p: sum(t["planner"] == p for t in turns) for p in ("model", "rules")}
    out["reply_source_turns"] = {p: sum(t["source"] == p for t in turns) for p in ("model", "rules")}
    out["tool_calls"] = calls
    out["tool_calls_invalid"] = sum(t["invalid_calls"] for t in turns)
    out["tool_calls_refused_by_schema"] = sum(t["tool_errors"] for t in turns)
    out["tool_calls_valid_share"] = (
        (calls - out["tool_calls_invalid"] - out["tool_calls_refused_by_schema"]) / calls if calls else None
    )
    out["guard_replaced_replies"] = sum(t["guard_replaced"] for t in turns)
    out["p50_s_per_turn"] = percentile(seconds, 50)
    out["p95_s_per_turn"] = percentile(seconds, 95)
    rates = [t["tokens_per_s"] for t in turns if t.get("tokens_per_s")]
    out["reply_tokens_per_s_p50"] = statistics.median(rates) if rates else None
    steps = [s for t in turns for s in t.get("plan_s") or []]
    out["p50_s_per_planning_step"] = percentile(steps, 50)
    return out


SIMULATORS = ("template", "paraphrase", "llm")


@dataclass
class Cases:
    """The test cases simulated users are drawn from: the split, the catalog, its vocabulary."""

    test: dict[str, tuple[Sequence[str], str]]
    items: pd.DataFrame
    vocab: Vocabulary

    @classmethod
    def of_run(cls, run: str | Path) -> Cases:
        """The leave-one-out test cases of an indexed run."""
        from eval.run_eval import load_split
        from genrec.run import open_run

        paths, _ = open_run(run)
        split, _ = load_split(paths)
        items = pd.read_parquet(paths.items).set_index("item_id", drop=False)
        items.index = items.index.astype(str)
        return cls(split.test, items, Vocabulary.from_items(items))

    def users(self, n: int, seed: int = 0) -> list[str]:
        """A fixed seeded sample of `n` test users, in a fixed order."""
        from genrec.metrics import sample_users

        users = sample_users(self.test, n, seed)
        random.Random(seed).shuffle(users)
        return users

    def user(
        self, kind: str, user_id: str, chat: Any = None, cache: dict | None = None, seed: int = 0
    ) -> TemplateUser | ParaphraseUser | LLMUser:
        """The simulated user of `kind` for one test case (`chat`: the model wording an `llm` user)."""
        if kind == "template":
            return simulated_user(user_id, self.test, self.vocab, self.items)
        paraphrase = paraphrase_user(user_id, self.test, self.vocab, self.items, seed)
        if kind == "paraphrase":
            return paraphrase
        return LLMUser(paraphrase, chat, cache if cache is not None else {})


def converse(
    agent: Any,
    cases: Cases,
    users: Sequence[str],
    kind: str,
    max_turns: int,
    chat: Any = None,
    cache: dict | None = None,
    progress: bool = True,
    label: str = "sim",
) -> tuple[list[Conversation], dict[str, int]]:
    """Each of `users` (test cases) talks to `agent` as a simulated user of `kind`; returns the
    conversations and, for `llm` users, how many messages the model worded and how many fell back."""
    from tqdm.auto import tqdm

    results: list[Conversation] = []
    counts = {"llm_user_messages": 0, "llm_fallback_messages": 0}
    for i, user_id in enumerate(
        tqdm(users, desc=f"simulated conversations ({kind})", unit="chat", disable=not progress)
    ):
        user = cases.user(kind, user_id, chat, cache)
        results.append(
            run_conversation(
                agent, f"{label}-{kind}-{i}-{user_id}", user, user_id, cases.test[user_id][1], cases.vocab, max_turns
            )
        )
        if isinstance(user, LLMUser):
            counts["llm_user_messages"] += user.written
            counts["llm_fallback_messages"] += user.fallbacks
    return results, counts


def simulate_run(
    run: str | Path,
    conversations: int = 200,
    max_turns: int = DEFAULT_TURNS,
    llm_url: str | None = None,
    seed: int = 0,
    progress: bool = True,
    keep_transcripts: int = 3,
    show_violations: int = 20,
    chat_url: str | None = None,
    simulator: str = "template",
    api_key: str | None = None,
) -> dict[str, Any]:
    """Simulate `conversations` chats (a fixed seeded sample of test users) with the run's agent.
    `api_key`: the model servers' key, if they were started with one."""
    from agent.graph import AgentSettings
    from agent.session import Agent
    from genrec.run import open_run

    if conversations < 1:
        raise GenrecError(f"--conversations: expected a positive number, got {conversations}")
    if max_turns < 1:
        raise GenrecError(f"--turns: expected a positive number, got {max_turns}")
    if simulator not in SIMULATORS:
        raise GenrecError(f"--simulator: expected one of {', '.join(SIMULATORS)}, got {simulator!r}")
    paths, config = open_run(run)
    paths.require(paths.chroma, f"genrec index --run {paths.root}")
    if llm_url and not chat_url:
        from serving.server import chat_url as run_chat_url

        chat_url = run_chat_url(paths.root, config.serve, llm_url)
    if simulator == "llm" and not chat_url:
        raise GenrecError("--simulator llm: needs a chat model; pass --chat-url URL (or --llm-url for the run's own)")
    cases = Cases.of_run(paths.root)
    users = cases.users(conversations, seed)
    chat = None
    if simulator == "llm":
        from agent.llm import ChatLLM

        chat = ChatLLM(chat_url, timeout_s=120.0, api_key=api_key)
    with tempfile.TemporaryDirectory(prefix="genrec-sim-") as tmp:
        agent = Agent.open(
            paths.root,
            llm_url=llm_url,
            chat_url=chat_url,
            db_path=Path(tmp) / "sim.sqlite",
            settings=AgentSettings(k=max(SUCCESS_KS)),
            llm_timeout_s=120.0,
            api_key=api_key,
        )
        try:
            results, counts = converse(agent, cases, users, simulator, max_turns, chat, progress=progress)
        finally:
            agent.close()
    out = summarize(results, max_turns)
    out["simulator"] = simulator
    out["agent"] = "model" if chat_url else "retrieval-only"
    out["llm_url"], out["chat_url"] = llm_url, chat_url
    if chat:
        out.update(counts)  # messages the model worded and the checks kept; paraphrases sent instead
    out["examples"] = [
        {
            "user_id": c.user_id,
            "target": c.target,
            "success_turn": c.success_turn[max(SUCCESS_KS)],
            "violations": c.violations[:5],
            "transcript": c.transcript,
        }
        for c in results[:keep_transcripts]
    ]
    return out


def print_simulation(result: dict[str, Any], console=None) -> None:
    """The headline numbers as a small table."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: keep the headers readable
            console.width = 180
    table = Table(
        title=f"simulated conversations ({result['simulator']} user, {result['agent']} agent, "
        f"up to {result['max_turns']} turns)"
    )
    keys = [
        "conversations",
        *(f"success@{k}" for k in SUCCESS_KS),
        "avg_turns",
        "avg_turns_to_success",
        "grounding_violations",
        "conversations_with_violations",
    ]
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(
        *(
            "-" if result.get(k) is None else f"{result[k]:.3f}" if isinstance(result[k], float) else str(result[k])
            for k in keys
        )
    )
    console.print(table)
