"""The LangGraph agent: a small typed state (`agent.state`), nodes as plain functions, the graph
built in one place (`build_graph`).

    START -> plan --(tool calls)--> tools -> check --(a failed call, or items that break the request)--> plan
               \\                               \\------------------------------------------------> reply
                \\--(answer / direct)------------------------------------------> reply -> guard -> remember -> END

- plan: the chat model (`agent.llm.ChatLLM`) picks the tools and their arguments from the
  conversation and its memory (`agent.prompts.planner_messages`); its calls are constrained to
  the tool schemas (`tool_choice="required"`), and calling `answer` means no (more) tools. When no
  chat model answers, the rule planner (`agent.planner`) picks them, and the turn says so.
- tools: LangGraph's `ToolNode` over `agent.model_tools` (memory and the attached photo come
  from the state). A call with bad arguments is answered with a sentence naming the argument; the
  model then plans once more to correct it (and, with `replan="always"`, after every result).
- check: when the items a model-planned call returned break what the user's message states
  (years, genres wanted or not, read by `agent.planner.stated_request`), the model is sent back
  once with a note saying what broke; it decides again (the check never changes its call).
- reply: the model writes the reply from this turn's results (`agent.prompts.reply_messages`),
  streamed to the caller sentence by sentence once each sentence passes the grounding check; the
  deterministic reply (`agent.reply.rules_reply`) stands in when the model is down or absent.
- guard: no item leaves unless a tool returned it in this conversation (`agent.guard`); a model
  reply that names anything else, names none of its items, parrots its prompt or loops is
  replaced by the deterministic one.
- remember: what the tools resolved becomes memory (liked items, excluded items, the request's
  constraints, the catalog user, the items shown).

Every node takes `(state, deps)`: `Deps` holds the run's tools and models. `make_graph` is the
entry point named in `langgraph.json` for LangGraph's own dev tools.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode

from agent.guard import check, claim_problems, guard_cards, redact, said_items, tool_items
from agent.llm import ChatLLM
from agent.model_tools import ANSWER, answer_tool, bound_tools, known_args
from agent.planner import message_problem, plan_turn, stated_request, year_args
from agent.prompts import planner_messages, reply_messages, rewrite_messages, text_of, tool_result, turn_start
from agent.reply import PROMPT_MARKERS, rules_reply, shows_candidates, turn_cards, unknown_sentence, years_phrase
from agent.state import AgentState
from agent.tools import AgentContext, argument_problem
from inference.client import LLMError, LLMUnavailable

_log = logging.getLogger(__name__)


@dataclass
class AgentSettings:
    """How the agent behaves; defaults suit a chat."""

    k: int = 5  # items per list
    model_plans: bool = True  # let the chat model choose tools (else always the rule planner)
    model_replies: bool = True  # let the chat model write replies (else always the deterministic reply)
    reply_max_tokens: int = 100
    plan_max_tokens: int = 160  # a call takes 30-110 tokens; a model looping in a list is cut here
    max_steps: int = 3  # planning steps per turn (one step may call several tools)
    replan: str = "on_error"  # plan again after tools: "on_error" (to correct a bad call, once) or "always"
    warm_up: bool = True  # at start, have the chat server cache the prompts' fixed start (`warm_up`)


@dataclass
class Deps:
    """What the nodes use besides the state: the run's tools and the chat model."""

    ctx: AgentContext
    chat: ChatLLM | None = None
    settings: AgentSettings = field(default_factory=AgentSettings)
    tools: list[BaseTool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tools:
            self.tools = bound_tools(self.ctx, self.settings.k)


# ----------------------------------------------------------------------------- helpers


def turn_messages(messages: list[AnyMessage]) -> tuple[str, list[AnyMessage]]:
    """The last human message's text and the messages after it (this turn's calls and results)."""
    if not messages:
        return "", []
    start = turn_start(messages)
    return text_of(messages[start]), list(messages[start + 1 :])


_LISTS = ("recommend", "search_items")


def turn_results(messages: list[AnyMessage]) -> list[dict[str, Any]]:
    """This turn's tool results as dicts (a tool error becomes `{"tool", "items": [], "error"}`). When the
    model planned again and called for a new list, the earlier lists are left out: the turn answers
    with its last one."""
    _, turn = turn_messages(messages)
    results = [tool_result(m) for m in turn if isinstance(m, ToolMessage)]
    last_list = max((i for i, r in enumerate(results) if r.get("tool") in _LISTS), default=None)
    return [r for i, r in enumerate(results) if r.get("tool") not in _LISTS or i == last_list]


def mentions_any(text: str, cards: list[dict[str, Any]]) -> bool:
    """True if `text` names at least one of the cards (by id or by title)."""
    from agent.lookup import normalize_title

    norm_text = " " + normalize_title(text) + " "
    return any(f"id {c['item_id']}" in text or f" {normalize_title(c['title'])} " in norm_text for c in cards)


def degenerate(text: str) -> bool:
    """True for the loops small models fall into: a line said three times, a list entry or a sentence
    said twice, or few distinct words."""
    lines = [line.strip().lower() for line in text.splitlines() if line.strip()]
    if any(lines.count(line) >= 3 for line in set(lines)):
        return True
    entries = [re.sub(r"^\d+[.)]\s*", "", line) for line in lines if re.match(r"^\d+[.)]\s", line)]
    if any(entries.count(e) >= 2 for e in set(entries)):
        return True
    sentences = [x.strip().lower() for x in re.split(r"(?<=[.!?])\s+", text) if len(x.strip()) > 20]
    if len(set(sentences)) < len(sentences):
        return True
    words = text.lower().split()
    return len(words) > 40 and len(set(words)) / len(words) < 0.35


_BOUNDARY = re.compile(r"[.!?:](?=\s)|\n")
_LIST_NUMBER = re.compile(r"(?:^|\s)\d{1,2}[.:]$")


def sentence_ends(text: str, start: int = 0) -> list[int]:
    """Where sentences of `text` end after `start`; "2." opening a list item is no end (a reply cut
    at its token limit ended on "... as you asked 3.")."""
    return [m.end() for m in _BOUNDARY.finditer(text, start) if not _LIST_NUMBER.search(text[: m.end()])]


def release_checked(
    pieces: Iterable[str],
    allowed: set[str],
    ctx: AgentContext,
    write: Any,
    claims: Callable[[str], list[str]] | None = None,
) -> str:
    """Consume a streamed reply; pass each completed sentence to `write` once the text up to it names
    no item outside `allowed` and (with `claims`) states nothing false about its items. After a
    sentence that does, nothing more is released (the guard node then sends the reply back for a
    rewrite, or replaces it). Returns the whole text."""
    text, released, clean = "", 0, True
    for piece in pieces:
        text += piece
        if not clean:
            continue
        cut = max(sentence_ends(text, released), default=released)
        if cut > released:
            if check(text[:cut], allowed, ctx.titles).ok and not (claims and claims(text[:cut])):
                write(text[released:cut])
                released = cut
            else:
                clean = False
    return text


def _writer() -> Any:
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError):  # called outside a graph run (a node tested alone)
        return lambda _chunk: None


def _fresh_turn() -> dict[str, Any]:
    return {
        "planner": "rules",
        "steps": 0,
        "calls": [],
        "llm_note": "",
        "guard_violations": [],
        "draft": {},
        "direct": None,
        "timing": {"plan_s": [], "plan_tokens": []},
        "retries": 0,
        "checked": False,
        "check_note": "",
        "route": "",
        "rewrite": "",
        "rewritten": False,
    }


def _tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}


# ----------------------------------------------------------------------------- nodes


def plan(state: AgentState, deps: Deps) -> dict[str, Any]:
    """Choose this step's tool calls: the chat model's when it answers, else the rule planner's."""
    messages = list(state.get("messages") or [])
    first = bool(messages) and isinstance(messages[-1], HumanMessage)
    update: dict[str, Any] = _fresh_turn() if first else {"timing": dict(state.get("timing") or {})}
    message = text_of(messages[turn_start(messages)]) if messages else ""
    if first:
        problem = message_problem(message)
        if problem:
            return {**update, "direct": problem}
    current = {**state, **update}
    if deps.chat is not None and deps.settings.model_plans and (first or state.get("planner") == "model"):
        _writer()({"status": "choosing tools" if first else "reading the results"})
        step = model_step(current, deps)
        if step is not None:
            return {**update, **step}
        update["llm_note"] = current.get("llm_note") or ""
    if not first:
        return update  # the model planned earlier steps and failed now: reply with what the tools returned
    if deps.chat is None:
        update["llm_note"] = "no language model is configured"
    elif not update.get("llm_note"):
        update["llm_note"] = "the language model is switched off for planning" if not deps.settings.model_plans else ""
    return {**update, **rules_step(current, deps, message)}


def model_step(state: dict[str, Any], deps: Deps) -> dict[str, Any] | None:
    """The chat model's step: its tool calls as an `AIMessage` (unknown arguments dropped, every call
    logged), or no message when it calls `answer`. None when it did not answer (the reason is
    left in `state["llm_note"]`)."""
    assert deps.chat is not None
    timing = dict(state.get("timing") or {})
    started = time.monotonic()
    try:
        message = deps.chat.plan(
            planner_messages(state, deps.ctx), [*deps.tools, answer_tool()], max_tokens=deps.settings.plan_max_tokens
        )
    except LLMUnavailable as exc:
        state["llm_note"] = f"the language model is unavailable ({exc})"
        return None
    except LLMError as exc:
        # the reason quotes what the model wrote, which a message or catalog text can steer: it goes to
        # the operator's log, and the user reads only that the call was unusable
        _log.warning("the chat model made no usable tool call: %s", exc)
        state["llm_note"] = "the language model made no usable tool call"
        return None
    timing["plan_s"] = [*timing.get("plan_s", []), round(time.monotonic() - started, 3)]
    timing["plan_tokens"] = [*timing.get("plan_tokens", []), (message.usage_metadata or {}).get("output_tokens", 0)]
    by_name = {t.name: t for t in deps.tools}
    calls, log = [], list(state.get("calls") or [])
    for bad in message.invalid_tool_calls:
        log.append(
            {
                "name": bad.get("name"),
                "args": bad.get("args"),
                "by": "model",
                "valid": False,
                "error": bad.get("error") or "arguments are not JSON",
            }
        )
    for call in message.tool_calls:
        if call["name"] == ANSWER:
            log.append({"name": ANSWER, "args": {}, "by": "model", "valid": True})
            continue
        tool = by_name.get(call["name"])
        if tool is None:  # constrained decoding names only offered tools; kept for other servers
            log.append(
                {"name": call["name"], "args": call["args"], "by": "model", "valid": False, "error": "unknown tool"}
            )
            continue
        args, dropped = known_args(tool, dict(call["args"] or {}))
        entry = {"name": tool.name, "args": args, "by": "model", "valid": True}
        if dropped:
            entry["dropped"] = dropped
        log.append(entry)
        calls.append({**call, "args": args, "type": "tool_call"})
    update: dict[str, Any] = {
        "planner": "model",
        "steps": int(state.get("steps") or 0) + 1,
        "calls": log,
        "timing": timing,
        "llm_note": "",
    }
    if calls:
        update["messages"] = [AIMessage(content="", tool_calls=calls)]
    elif not any(c["name"] == ANSWER for c in message.tool_calls):
        state["llm_note"] = "the language model's tool calls did not parse"
        return None
    return update


def rules_step(state: dict[str, Any], deps: Deps, message: str) -> dict[str, Any]:
    """The rule planner's step: its calls, or its direct answer, and the memory the message states."""
    ctx = deps.ctx
    turn = plan_turn(message, state, ctx.titles, ctx.genres, deps.settings.k)  # type: ignore[arg-type]
    update: dict[str, Any] = {
        "planner": "rules",
        "preferences": turn.preferences,
        "user_id": turn.user_id,
        "direct": turn.direct,
        "steps": 1,
    }
    calls = list(turn.calls)
    if state.get("photo") and turn.direct is None:
        calls = [{"name": "search_items", "args": {"by_photo": True}}]  # a photo is a search by it
    if turn.direct is None and calls:
        made = [_tool_call(c["name"], rule_args(c, deps)) for c in calls]
        update["calls"] = [
            *(state.get("calls") or []),
            *({"name": c["name"], "args": c["args"], "by": "rules", "valid": True} for c in made),
        ]
        update["messages"] = [AIMessage(content="", tool_calls=made)]
    return update


def rule_args(call: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """A rule-planner call in the bound tools' arguments (those tools fill memory and `k` themselves)."""
    tool = next(t for t in deps.tools if t.name == call["name"])
    args, _ = known_args(tool, call["args"])
    if call["name"] == "recommend":  # the items shown ("id N") the tool leaves out anyway; titles are the user's
        seen = [e for e in args.pop("exclude", None) or [] if not str(e).startswith("id ")]
        if seen:
            args["exclude"] = seen
    return args


def tool_error(exc: Exception) -> str:
    """What the model reads when a call fails inside the tool node: arguments that do not fit the
    schema become one sentence naming the argument (never the exception's text), as a result the
    reply and the retry can read."""
    from langgraph.prebuilt.tool_node import ToolInvocationError
    from pydantic import ValidationError

    if isinstance(exc, ToolInvocationError) and isinstance(exc.source, ValidationError):
        text, name = argument_problem(exc.tool_name, exc.source), exc.tool_name
    else:
        _log.warning("a tool failed: %r", exc)
        text, name = "the tool failed on those arguments", ""
    return json.dumps({"tool": name, "items": [], "error": text + ".", "bad_arguments": True})


def tools_node(deps: Deps) -> ToolNode:
    """LangGraph's tool node over the bound tools: a call whose arguments do not validate is answered
    with a sentence saying which argument, for the model to correct."""
    return ToolNode(deps.tools, handle_tool_errors=tool_error)


def after_plan(state: AgentState) -> str:
    """Run the tools when this step called any, else write the reply."""
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else "reply"


def _last_round(messages: list[AnyMessage]) -> list[ToolMessage]:
    out = []
    for msg in reversed(messages):
        if not isinstance(msg, ToolMessage):
            break
        out.append(msg)
    return out[::-1]


def request_problem(state: AgentState, deps: Deps) -> str | None:
    """A note for the planner when the items of the last round break what the user's message states
    ("before 1960" over films from 1996), else None."""
    message, _ = turn_messages(list(state.get("messages") or []))
    stated = stated_request(message, deps.ctx)
    lists = [r for m in _last_round(list(state.get("messages") or [])) if (r := tool_result(m)).get("tool") in _LISTS]
    if lists and not any(r.get("items") for r in lists):
        return unasked_note(lists[-1].get("request") or {}, stated, state.get("preferences") or {}, message)
    if not stated.describe():
        return None
    cards = [c for r in lists for c in r.get("items") or []]
    broken = [(c, why) for c in cards if (why := stated.breaks(deps.ctx, str(c["item_id"])))]
    if not broken:
        return None
    card, why = broken[0]
    call = matching_call(list(state.get("messages") or []), stated)
    return (
        f"Check: the user's message asks for {stated.describe()} (as arguments: {stated_arguments(stated)}), and "
        f"{len(broken)} of the {len(cards)} items returned do not fit ({card['title']} {' and '.join(why)}). "
        + (
            f"The call that matches the message is {call}: make it, unless the user did not ask for that; then "
            "call answer."
            if call
            else "If your arguments misread the message, call the tool again with arguments that match it; if they "
            "were right, call answer."
        )
    )


def matching_call(messages: list[AnyMessage], stated: Any) -> str | None:
    """The last list call with the stated request's genres added and its years in their place, written
    as a call (`recommend(decade="1970s", genres=["Thriller"])`), or None without such a call. The
    1.5B, told which arguments the message states but not the call they make, answered instead of
    calling again for 2 of 5 dev-half decade requests; it still chooses whether to make it."""
    last = next(
        (
            c
            for m in reversed(messages)
            if isinstance(m, AIMessage)
            for c in reversed(m.tool_calls)
            if c["name"] in _LISTS
        ),
        None,
    )
    if last is None:
        return None
    args = {k: v for k, v in (last.get("args") or {}).items() if v not in (None, "", [])}
    for key in ("genres", "exclude_genres"):
        if getattr(stated, key):
            args[key] = list(dict.fromkeys([*(args.get(key) or []), *getattr(stated, key)]))
    if stated.year_min is not None or stated.year_max is not None:
        for key in ("decade", "same_decade_as", "released_after", "released_before"):
            args.pop(key, None)
        lo, hi = stated.year_min, stated.year_max
        if lo is not None and hi == lo + 9 and lo % 10 == 0:
            args["decade"] = f"{lo}s"
        else:
            args.update(year_args({"year_min": lo, "year_max": hi}))
    return f"{last['name']}({', '.join(f'{k}={json.dumps(v)}' for k, v in args.items())})"


def stated_arguments(stated: Any) -> str:
    """A stated request as the list tools' arguments: `genres=["Thriller"], released_before=1975`.
    The 1.5B, told only "Thriller, from 1974 or earlier", answered rather than turn its
    `released_after=1975` around; the check's note names the arguments so the choice is concrete."""
    args = []
    if stated.genres:
        args.append(f"genres={json.dumps(stated.genres)}")
    if stated.exclude_genres:
        args.append(f"exclude_genres={json.dumps(stated.exclude_genres)}")
    years = year_args({"year_min": stated.year_min, "year_max": stated.year_max})
    args += [f"{name}={year}" for name, year in years.items()]
    return ", ".join(args)


def unasked_note(applied: dict[str, Any], stated: Any, remembered: dict[str, Any], message: str) -> str | None:
    """A note for the planner when a list came back empty under filters that neither the user's
    message nor the conversation's remembered wishes ask for (the 1.5B turned "made before 1980 that
    isn't a comedy" into Musical + the 1980s, "older films" into Film-Noir + Drama + Thriller), else
    None. The model decides whether to drop them."""
    said = []
    for key, label in (("genres", "genres"), ("exclude_genres", "no")):
        extra = [g for g in applied.get(key) or [] if g not in getattr(stated, key) + (remembered.get(key) or [])]
        if extra:
            said.append(f"{label} {', '.join(extra)}")
    years_asked = (
        stated.year_min is not None
        or stated.year_max is not None
        or remembered.get("year_min") is not None
        or remembered.get("year_max") is not None
        or "decade" in message.lower()
    )
    if not years_asked and (applied.get("year_min") is not None or applied.get("year_max") is not None):
        said.append(years_phrase(applied.get("year_min"), applied.get("year_max")))
    if not said:
        return None
    return (
        f"Check: the call found no items. It asked for {'; '.join(said)}, which the user's message does not ask "
        "for. If you added that, call the tool again without it; if the user asked for it, call answer."
    )


def check_step(state: AgentState, deps: Deps) -> dict[str, Any]:
    """After the tools: plan again to correct a failed call (once), or once when the items break the
    user's stated request (the note says what broke; the model decides), else reply."""
    if state.get("planner") != "model" or int(state.get("steps") or 0) >= deps.settings.max_steps:
        return {"route": "reply"}
    if deps.settings.replan == "always":
        return {"route": "plan"}
    last_round = _last_round(list(state.get("messages") or []))
    failed = any(getattr(m, "status", "success") == "error" or tool_result(m).get("error") for m in last_round)
    if failed and not state.get("retries"):
        return {"route": "plan", "retries": int(state.get("retries") or 0) + 1}
    if not state.get("checked"):
        note = request_problem(state, deps)
        if note:
            return {"route": "plan", "checked": True, "check_note": note}
    return {"route": "reply"}


def after_check(state: AgentState) -> str:
    """Where the check sends the turn: back to planning, or on to the reply."""
    return "plan" if state.get("route") == "plan" else "reply"


def reply_allowed(state: AgentState, results: list[dict[str, Any]]) -> set[str]:
    """The items this turn's reply may name: every item a tool returned in the conversation, and
    the catalog items the user named this turn (`said_items`)."""
    return set(state.get("grounded") or []) | {i for r in results for i in [*tool_items(r), *said_items(r)]}


def write_reply(
    state: AgentState, deps: Deps, results: list[dict[str, Any]], draft: dict[str, Any], timing: dict[str, Any]
) -> str:
    """The model writes the reply into `draft` (streamed sentence by sentence while each passes the
    grounding and claim checks; told what was wrong when the guard sent a draft back), timed into
    `timing`. Returns why the model could not write it, or ""."""
    chat = deps.chat
    assert chat is not None
    problem = ""
    allowed = reply_allowed(state, results)
    write = _writer()
    started, first_at, pieces = time.monotonic(), None, 0

    def timed(stream: Iterator[str]) -> Iterator[str]:
        nonlocal first_at, pieces
        for piece in stream:
            first_at = first_at if first_at is not None else time.monotonic()
            pieces += 1
            yield piece

    prompt = reply_messages(state, deps.ctx, results)
    if state.get("rewrite"):  # the guard sent the last draft back: the model writes it again, told why
        write({"reset": True})
        write({"status": "rewriting the reply"})
        prompt += rewrite_messages(state["rewrite"])
    else:
        write({"status": "writing the reply"})
    cards = draft["cards"]
    try:
        text = release_checked(
            timed(chat.stream(prompt, deps.settings.reply_max_tokens)),
            allowed,
            deps.ctx,
            lambda chunk: write({"delta": chunk}),
            claims=lambda said: claim_problems(said, cards, results, deps.ctx),
        )
        if pieces >= deps.settings.reply_max_tokens - 1:  # cut off by the token limit: end at a sentence
            ends = sentence_ends(text)
            text = text[: ends[-1]] if ends else text
        unknown = [n for r in results for n in r.get("unknown") or []]
        if text.strip():  # a title the catalog lacks is always said, in the deterministic words
            draft.update(
                text=text.strip() + (f"\n\n{unknown_sentence(unknown)}" if unknown else ""),
                model_text=text.strip(),  # what the model wrote: the claims checked are its own
                source="model",
            )
    except LLMError as exc:
        problem = f"the language model is unavailable ({exc})"
    ended = time.monotonic()
    if state.get("rewrite"):  # the first draft's seconds stay in the turn's reply time
        timing["rewrite_s"] = round(ended - started, 3)
        started -= float(timing.get("reply_s") or 0.0)
    timing.update(
        reply_s=round(ended - started, 3),
        reply_tokens=pieces,
        reply_first_s=round((first_at or ended) - started, 3),
        reply_tokens_per_s=round((pieces - 1) / (ended - first_at), 2)
        if first_at and pieces > 1 and ended > first_at
        else None,
    )
    return problem


def reply(state: AgentState, deps: Deps) -> dict[str, Any]:
    """The reply draft: the model's (streamed, sentence by sentence, once grounded) or the deterministic one."""
    message, _ = turn_messages(list(state.get("messages") or []))
    results = turn_results(list(state.get("messages") or []))
    if state.get("direct"):
        return {"draft": {"text": state["direct"], "fallback": state["direct"], "source": "rules", "cards": []}}
    fallback = (
        rules_reply(results, state.get("preferences"))
        if results
        else (
            plan_turn(message, state, deps.ctx.titles, deps.ctx.genres).direct  # type: ignore[arg-type]
            or "Tell me titles you liked, or describe what you are looking for."
        )
    )
    draft = {"text": fallback, "fallback": fallback, "source": "rules", "cards": turn_cards(results, deps.settings.k)}
    note = state.get("llm_note") or ""
    timing = dict(state.get("timing") or {})
    chat = deps.chat
    if chat is None:
        note = note or "no language model is configured"
    elif results and all(r.get("tool") == "explain" and r.get("found") for r in results):
        # the explanation is already the model's sentence, checked claim by claim: a second model
        # pass would only add unchecked claims ("a comedy" for a drama)
        if all(r["items"][0].get("explained_by") == "model" for r in results):
            draft["source"] = "model"
    elif results and not any(r.get("items") for r in results):
        pass  # nothing found: the deterministic reply says exactly what was missing
    elif deps.settings.model_replies and not chat.unavailable():
        note = note or write_reply(state, deps, results, draft, timing)
    elif deps.settings.model_replies:
        note = note or f"the language model is unavailable ({chat.unavailable()})"
    return {"draft": draft, "llm_note": note, "timing": timing}


def reply_problems(
    text: str, draft: dict[str, Any], allowed: set[str], results: list[dict[str, Any]], ctx
) -> list[str]:
    """What is wrong with a model reply: an item named outside `allowed`, none of its items named,
    its prompt or itself repeated, or a claim its items break (`claim_problems`)."""
    checked = check(text, allowed, ctx.titles)
    if not checked.ok:
        return [f"it names {v.describe()}, which is not in the results" for v in checked.violations]
    if draft.get("cards") and not mentions_any(text, draft["cards"]):
        return ["the model's reply names none of the items it is about"]
    if any(marker.lower() in text.lower() for marker in PROMPT_MARKERS):
        return ["the model's reply repeats its prompt"]
    if degenerate(text):
        return ["the model's reply repeats itself"]
    return claim_problems(str(draft.get("model_text") or text), draft.get("cards") or [], results, ctx)


def guard(state: AgentState, deps: Deps) -> dict[str, Any]:
    """The reply that leaves: the model's draft when it passes `reply_problems`; otherwise the model is
    sent back once to rewrite it, told what was wrong, and a rewrite that fails too is replaced by
    the deterministic reply. Every item mention checked, cards limited to items the tools returned."""
    ctx = deps.ctx
    results = turn_results(list(state.get("messages") or []))
    allowed = reply_allowed(state, results)
    draft = state.get("draft") or {}
    violations: list[str] = []
    text = str(draft.get("text") or "")
    earlier = list(state.get("guard_violations") or [])  # the first draft's, when this is the rewrite
    if draft.get("source") == "model":
        violations = reply_problems(text, draft, allowed, results, ctx)
        if violations and not state.get("rewritten") and deps.chat is not None and not deps.chat.unavailable():
            return {"rewrite": "; ".join(violations), "rewritten": True, "guard_violations": violations}
        if violations:
            text = str(draft.get("fallback") or "")
    cleaned = redact(text, allowed, ctx.titles)
    violations += [v.describe() for v in cleaned.violations]
    text = cleaned.text
    note = state.get("llm_note")
    if note and not state.get("direct"):
        text += f"\n\n(Rule-based fallback: {note}.)"
    cards = guard_cards(draft.get("cards") or [], allowed, ctx.titles)
    source = "rules" if violations else draft.get("source", "rules")
    violations = earlier + violations if state.get("rewritten") else violations
    return {
        "messages": [
            AIMessage(
                content=text,
                additional_kwargs={
                    "items": cards,
                    "source": source,
                    "planner": state.get("planner", "rules"),
                    "note": note or "",
                },
            )
        ],
        "guard_violations": violations,
        "rewrite": "",
    }


def after_guard(state: AgentState) -> str:
    """Where the guard sends the turn: back to the reply step for a rewrite, or on to memory."""
    return "reply" if state.get("rewrite") else "remember"


def remember(state: AgentState, deps: Deps) -> dict[str, Any]:
    """Memory from this turn's results: liked and excluded items, the request, the user, the items shown."""
    results = turn_results(list(state.get("messages") or []))
    update: dict[str, Any] = {"grounded": [i for r in results for i in tool_items(r)], "photo": None}
    history = list(state.get("history") or [])
    excluded = list(state.get("excluded") or [])
    for r in results:
        if r.get("tool") == "recommend":  # the titles the user named, as the tool resolved them
            history += [c["item_id"] for c in r.get("liked") or [] if c["item_id"] not in history]
            excluded += [c["item_id"] for c in r.get("seen") or [] if c["item_id"] not in excluded]
            if r.get("user_id"):
                update["user_id"] = r["user_id"]
        if r.get("tool") in ("recommend", "search_items") and state.get("planner") == "model" and "request" in r:
            update["preferences"] = {k: v for k, v in r["request"].items() if v}
        if r.get("tool") == "user_history" and r.get("found"):
            update["user_id"] = r["user_id"]
        if r.get("unknown_user") or (r.get("tool") == "user_history" and not r.get("found")):
            update["user_id"] = None
    update["history"] = history
    update["excluded"] = [i for i in excluded if i not in history]
    if shows_candidates(results):
        last = (state.get("messages") or [None])[-1]
        update["candidates"] = list(getattr(last, "additional_kwargs", {}).get("items") or [])
    return update


# ----------------------------------------------------------------------------- the graph


def build_graph(
    ctx: AgentContext, chat: ChatLLM | None = None, checkpointer: Any = None, settings: AgentSettings | None = None
) -> Any:
    """Compile the agent graph over one run's tools; `checkpointer` (e.g. SqliteSaver) keeps threads."""
    deps = Deps(ctx, chat, settings or AgentSettings())
    graph = StateGraph(AgentState)
    graph.add_node("plan", functools.partial(plan, deps=deps))
    graph.add_node("tools", tools_node(deps))
    graph.add_node("check", functools.partial(check_step, deps=deps))
    graph.add_node("reply", functools.partial(reply, deps=deps))
    graph.add_node("guard", functools.partial(guard, deps=deps))
    graph.add_node("remember", functools.partial(remember, deps=deps))
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", after_plan, {"tools": "tools", "reply": "reply"})
    graph.add_edge("tools", "check")
    graph.add_conditional_edges("check", after_check, {"plan": "plan", "reply": "reply"})
    graph.add_edge("reply", "guard")
    graph.add_conditional_edges("guard", after_guard, {"reply": "reply", "remember": "remember"})
    graph.add_edge("remember", END)
    return graph.compile(checkpointer=checkpointer, name="genrec-agent")


def warm_up(ctx: AgentContext, chat: ChatLLM, settings: AgentSettings | None = None) -> dict[str, float | None]:
    """Have the chat server cache the fixed start of the planner's and the reply's prompts (their
    instructions and the tool schemas), so the first user does not wait for it to read them; the
    seconds each took (None: the server did not answer). Meant for a background thread at start."""
    settings = settings or AgentSettings()
    fresh: dict[str, Any] = {"messages": [HumanMessage("hello")]}
    seconds: dict[str, float | None] = {}
    if settings.model_plans:
        seconds["plan"] = chat.warm(planner_messages(fresh, ctx), [*bound_tools(ctx, settings.k), answer_tool()])
    if settings.model_replies:
        seconds["reply"] = chat.warm(reply_messages(fresh, ctx, []))
    _log.info("chat model warm-up: %s", seconds)
    return seconds


_GRAPHS: dict[tuple[str, str, str], Any] = {}  # one compiled graph per (run, urls): the dev server may ask often


def make_graph(config: Any = None) -> Any:
    """The graph for LangGraph's dev tools (`langgraph.json`): run from $GENREC_RUN, the fine-tuned
    recommender at $GENREC_LLM_URL (default the local vLLM), the chat model at $GENREC_CHAT_URL
    (default: the run's, as `genrec chat` resolves it). No checkpointer: the LangGraph server brings its own."""
    from agent.explainer import ChatExplainer
    from genrec.errors import GenrecError
    from genrec.run import open_run
    from inference.ranker import run_ranker
    from serving.server import chat_url

    run = os.environ.get("GENREC_RUN")
    if not run:
        raise GenrecError("GENREC_RUN: not set; export GENREC_RUN=runs/NAME (an indexed run) before `langgraph dev`")
    url = os.environ.get("GENREC_LLM_URL", "http://127.0.0.1:8000/v1")
    _, run_config = open_run(run)
    talk = os.environ.get("GENREC_CHAT_URL") or chat_url(run, run_config.serve, url)
    key = (run, url, talk or "")
    if key not in _GRAPHS:
        ctx = AgentContext.open(run, ranker=run_ranker(run, url))
        chat = ChatLLM(talk, timeout_s=60.0) if talk else None
        if chat is not None:
            ctx.explainer = ChatExplainer(chat, ctx.searcher.items)
        _GRAPHS[key] = build_graph(ctx, chat)
    return _GRAPHS[key]
