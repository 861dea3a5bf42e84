"""Turning a turn's tool results into words when no model writes them: the deterministic reply.

The deterministic reply is grounded by construction (it only prints what tools returned, naming
items as `Title [id ID]`); it is what the user gets when the model is down, slow or ungrounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.tools import describe

# Which tool's items become the turn's item cards when several tools ran.
_CARD_PRIORITY = ("recommend", "search_items", "explain", "item_details", "user_history")

# a reply containing these parrots its prompt or talks about the user instead of to them
PROMPT_MARKERS = (
    "Results for this message",
    "The conversation remembers",
    "excluded as seen:",
    "(not in the catalog):",
    "recommend:",
    "search_items:",
    "item_details:",
    "user_history:",
    "the user's",
    "the user wants",
    "the user is",
    "the user has",
)


def name(card: dict[str, Any]) -> str:
    """How answers name an item: its catalog title and id."""
    return f"{card['title']} [id {card['item_id']}]"


def turn_cards(results: Sequence[dict[str, Any]], k: int = 10) -> list[dict[str, Any]]:
    """The item cards this turn shows: the items of its most important tool result."""
    for tool in _CARD_PRIORITY:
        for result in results:
            if result.get("tool") == tool and result.get("items"):
                return [dict(c) for c in result["items"][:k]]
    return []


def shows_candidates(results: Sequence[dict[str, Any]]) -> bool:
    """True if this turn produced a new list of suggestions (so "why that one?" should refer to it)."""
    return any(r.get("tool") in ("recommend", "search_items", "user_history") and r.get("items") for r in results)


def _listing(cards: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for n, card in enumerate(cards, 1):
        why = card.get("explanation") or describe(card.get("attributes") or {})
        lines.append(f"{n}. {name(card)}" + (f": {why}" if why else ""))
    return lines


def _join_names(items: Sequence[dict[str, Any]]) -> str:
    names = [name(i) for i in items]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _nothing(result: dict[str, Any]) -> str:
    note = str(result.get("note") or "")
    return note[:1].upper() + note[1:] + ("" if not note or note.endswith(".") else ".")


def unknown_sentence(names: Sequence[str]) -> str:
    """The sentence that says which named titles the catalog does not have."""
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"I could not find {quoted} in the catalog, so I did not use {'it' if len(names) == 1 else 'them'}."


def years_phrase(year_min: int | None, year_max: int | None) -> str:
    """An inclusive year range in words: "from 1990 to 1999", "from 1959 or earlier"."""
    if year_min is not None and year_max is not None:
        return f"from {year_min}" if year_min == year_max else f"from {year_min} to {year_max}"
    return f"from {year_min} or later" if year_min is not None else f"from {year_max} or earlier"


def _basis(result: dict[str, Any], request: dict[str, Any]) -> list[str]:
    """What a recommendation went on, in words: liked titles, a user's history, the request, what was seen."""
    basis = []
    if result.get("liked"):
        basis.append(f"you liked {_join_names(result['liked'][-4:])}")
    if result.get("user_id"):
        basis.append(f"user {result['user_id']}'s history")
    if request.get("genres"):
        basis.append(f"you want {', '.join(request['genres'])}")
    if request.get("exclude_genres"):
        basis.append(f"no {', '.join(request['exclude_genres'])}")
    if request.get("year_min") is not None or request.get("year_max") is not None:
        basis.append(years_phrase(request.get("year_min"), request.get("year_max")))
    if result.get("seen"):
        basis.append(f"not {_join_names(result['seen'][-4:])}, which you have seen")
    return basis


def rules_reply(results: Sequence[dict[str, Any]], preferences: dict[str, Any] | None = None) -> str:
    """A reply that states exactly what the tools returned."""
    parts: list[str] = []
    prefs = preferences or {}
    for r in results:
        tool = r.get("tool")
        if r.get("error"):
            # a tool's own errors are sentences for users (GenrecError); arguments that did not fit are
            # the planner's mistake, said plainly, never as validation text
            parts.append(
                "I could not turn that request into a catalog search; could you say it another way?"
                if r.get("bad_arguments")
                else f"I could not look that up: {r['error']}"
            )
            continue
        if r.get("unknown"):
            parts.append(unknown_sentence(r["unknown"]))
        if r.get("unknown_user"):
            parts.append(f"There is no user {r['unknown_user']!r} in this catalog.")
        if r.get("unknown_genres"):
            parts.append(f"This catalog has no genre {', '.join(map(repr, r['unknown_genres']))}.")
        if tool == "recommend":
            if not r.get("items"):
                parts.append(_nothing(r) or "I found nothing that fits; try another title or fewer constraints.")
                continue
            basis = _basis(r, r.get("request") or prefs)
            head = ("Since " + "; ".join(basis) + ", here are my picks:") if basis else "Here are my picks:"
            parts.append("\n".join([head, *_listing(r["items"])]))
            if r.get("model_unavailable"):
                parts.append("(The fine-tuned model did not answer, so these picks come from the vector store alone.)")
        elif tool == "search_items":
            if not r.get("items"):
                parts.append(_nothing(r) or "Nothing in the catalog matches that.")
                continue
            head = (
                "Items that look like your photo:"
                if r.get("by_photo")
                else f"Items like {name(r['like'])}:"
                if r.get("like")
                else "Here is what I found:"
            )
            parts.append("\n".join([head, *_listing(r["items"])]))
        elif tool == "item_details":
            if not r.get("found"):
                parts.append(
                    f'There is no item called "{r.get("query")}" in the catalog, so I cannot describe '
                    "or recommend it. Ask me to search for something similar instead."
                )
                continue
            card = r["items"][0]
            text = f"{name(card)}: {describe(card.get('attributes') or {})}."
            desc = str(card.get("description") or "").strip()
            if desc and desc != card["title"]:
                text += f' Catalog description: "{desc}"'
            parts.append(text)
        elif tool == "explain":
            if not r.get("found"):
                parts.append(
                    f'There is no item called "{r.get("query")}" in the catalog, so there is nothing to explain.'
                )
                continue
            card = r["items"][0]
            parts.append(f"Why {name(card)}? {card.get('explanation') or describe(card.get('attributes') or {})}.")
        elif tool == "user_history":
            if not r.get("found"):
                parts.append(r.get("note", "No such user."))
                continue
            parts.append(f"User {r['user_id']} recently had: " + "; ".join(name(c) for c in r["items"]) + ".")
    return "\n\n".join(p for p in parts if p) or "I have nothing to show for that; try naming a title you liked."
