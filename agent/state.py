"""The agent's typed state: what one conversation remembers between turns (checkpointed per thread).

`messages` is the transcript (human, planner tool calls, tool results, replies); the other keys are
the conversation's memory in structured form so that a later turn ("something funnier", "why that
one?") can act on it without re-reading prose.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


class Preferences(TypedDict, total=False):
    """What the user wants now, in a form tools can filter on (the last request's constraints)."""

    genres: list[str]  # wanted, every one of them ("something funnier" -> Comedy)
    exclude_genres: list[str]  # not wanted ("no horror")
    year_min: int | None  # inclusive: "before 1960" is year_max 1959
    year_max: int | None


class ItemCard(TypedDict, total=False):
    """One item shown to the user: every field comes from a tool result."""

    item_id: str
    title: str
    explanation: str
    attributes: dict[str, Any]
    image: str | None
    score: float


def union(left: list[str] | None, right: list[str] | None) -> list[str]:
    """Reducer keeping every id ever added, in first-seen order (grounded items only grow)."""
    out = list(left or [])
    seen = set(out)
    for value in right or []:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


class AgentState(TypedDict, total=False):
    """One conversation: transcript plus structured memory."""

    messages: Annotated[list[AnyMessage], add_messages]
    user_id: str | None  # a catalog user (their interactions are history) when the user said who they are
    history: list[str]  # item ids the user said they liked, resolved by a tool
    excluded: list[str]  # item ids the user said they have seen or do not want: never recommended
    preferences: Preferences
    candidates: list[ItemCard]  # the items shown in the last reply, best first
    grounded: Annotated[list[str], union]  # every item id any tool returned in this conversation
    owner: str  # hash of the API key that started the thread ("" without keys): only it may read or continue it
    # ---- this turn only (reset by `agent.graph.plan` at a turn's first step)
    photo: str | None  # the photo attached to this message, base64 (tools read it from here, never from the model)
    planner: str  # "model" or "rules": who chose this turn's tools
    steps: int  # planning steps taken (the model may call tools several times)
    retries: int  # planning steps taken to correct a failed call (at most one)
    checked: bool  # the check after the tools has sent the model back once this turn
    check_note: str  # what the check told the model (the items broke the stated request), "" if nothing
    route: str  # where the check sends the turn: "plan" or "reply"
    calls: list[dict[str, Any]]  # every tool call of the turn: name, args, by (model/rules), valid, error
    llm_note: str  # why the model did not plan or write this turn ("" when it did)
    guard_violations: list[str]  # what the guard found wrong in this turn's reply (each draft's) and removed from it
    direct: str | None  # this turn's answer when no tool is needed (greeting, unreadable message)
    draft: dict[str, Any]  # the reply before the guard: text, source ("model"/"rules"), fallback, cards
    rewrite: str  # what the guard found wrong in the model's reply, sent back for one rewrite ("" if nothing)
    rewritten: bool  # the guard has sent the reply back once this turn
    timing: dict[str, Any]  # seconds per planning step, reply seconds and tokens (for benchmarks)
