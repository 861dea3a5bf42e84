"""Explanation faithfulness: are the attribute claims of an explanation true of the item it explains?

An explanation is read against the catalog's own vocabulary: every kind value the catalog uses
(genres, categories ...), every short string attribute value (brand, director ...), and years or
decades. Each mention is a claim about the explained item, true when the item has that attribute.
Titles of the user's history items are taken out first (their years and words describe those items,
not the explained one) and counted as mentions of the history; a year in parentheses always
belongs to a title, so it is not a claim either. Two numbers come out:

- attribute precision: true claims / claims (over all explanations, and per explanation);
- history share: explanations that mention at least one item of the user's history.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from retrieval.catalog import KIND_KEYS, YEAR_KEYS

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b(?!s)")
_DECADE = re.compile(r"\b(?:(1[89]\d0|20\d0)|'?(\d0))s\b")
_TITLE_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_PAREN_YEAR = re.compile(r"\(\d{4}\)")
MAX_VALUE_CHARS = 40


@dataclass(frozen=True)
class ItemAttributes:
    """What the catalog says about one item, as sets a claim is checked against."""

    title: str
    kinds: frozenset[str]  # lower-case
    year: int | None
    values: frozenset[str]  # other short string attribute values, lower-case


@dataclass
class Vocabulary:
    """Every attribute value the catalog uses, so a mention anywhere in a text can be recognised."""

    items: dict[str, ItemAttributes]
    kinds: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> Vocabulary:
        """Build from a catalog items frame (item_id, title, attributes JSON)."""
        out: dict[str, ItemAttributes] = {}
        all_kinds: set[str] = set()
        all_values: set[str] = set()
        for row in items.itertuples(index=False):
            attrs: dict[str, Any] = json.loads(row.attributes) if row.attributes else {}
            kinds, values, year = set(), set(), None
            for key, value in attrs.items():
                if value in (None, "", []):
                    continue
                if key in KIND_KEYS:
                    kinds |= {str(v).strip().lower() for v in (value if isinstance(value, list) else [value])}
                elif key in YEAR_KEYS and str(value).isdigit():
                    year = int(value)
                elif isinstance(value, str) and 3 <= len(value) <= MAX_VALUE_CHARS and not value.isdigit():
                    values.add(value.strip().lower())
            all_kinds |= kinds
            all_values |= values
            out[str(row.item_id)] = ItemAttributes(str(row.title), frozenset(kinds), year, frozenset(values))
        return cls(out, all_kinds, all_values - all_kinds)


@dataclass
class ExplanationScore:
    """The claims found in one explanation and which of them are true of its item."""

    item_id: str
    text: str
    true_claims: list[str] = field(default_factory=list)
    false_claims: list[str] = field(default_factory=list)
    history_mentions: list[str] = field(default_factory=list)

    @property
    def claims(self) -> int:
        return len(self.true_claims) + len(self.false_claims)

    @property
    def precision(self) -> float | None:
        """Share of claims that are true (None when the explanation makes no attribute claim)."""
        return len(self.true_claims) / self.claims if self.claims else None


def _phrase(value: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])" + re.escape(value) + r"(?![\w-])", re.IGNORECASE)


def _title_forms(title: str) -> list[str]:
    """A title as written in the catalog and without its year ("Alien (1979)", "Alien")."""
    bare = _TITLE_YEAR.sub("", title).strip()
    return [t for t in dict.fromkeys([title.strip(), bare]) if len(t) >= 4]


def score_explanation(text: str, item_id: str, history: Sequence[str], vocab: Vocabulary) -> ExplanationScore:
    """Check one explanation of `item_id` for a user whose history is `history` (item ids)."""
    item = vocab.items[item_id]
    score = ExplanationScore(item_id, text)
    rest = text
    for past in dict.fromkeys(history):
        if past == item_id or past not in vocab.items:
            continue
        for form in sorted(_title_forms(vocab.items[past].title), key=len, reverse=True):
            pattern = _phrase(form)
            if pattern.search(rest):
                score.history_mentions.append(past)
                rest = pattern.sub(" ", rest)
                break
    for form in sorted(_title_forms(item.title), key=len, reverse=True):
        rest = _phrase(form).sub(" ", rest)  # the item's own title is not a claim
    for kind in sorted(vocab.kinds, key=len, reverse=True):
        pattern = _phrase(kind)
        if pattern.search(rest):
            (score.true_claims if kind in item.kinds else score.false_claims).append(kind)
            rest = pattern.sub(" ", rest)
    for value in sorted(vocab.values, key=len, reverse=True):
        pattern = _phrase(value)
        if pattern.search(rest):
            (score.true_claims if value in item.values else score.false_claims).append(value)
            rest = pattern.sub(" ", rest)
    rest = _PAREN_YEAR.sub(" ", rest)  # "(1996)" follows a title (possibly one the text mangled), never a claim
    for m in _DECADE.finditer(rest):
        decade = int(m.group(1)) if m.group(1) else 1900 + int(m.group(2))
        ok = item.year is not None and decade <= item.year < decade + 10
        (score.true_claims if ok else score.false_claims).append(m.group(0))
    for m in _YEAR.finditer(_DECADE.sub(" ", rest)):
        (score.true_claims if item.year == int(m.group(1)) else score.false_claims).append(m.group(1))
    return score


def summarize(scores: Iterable[ExplanationScore]) -> dict[str, float | int | None]:
    """Attribute precision (micro over claims, and mean per explanation) and history share."""
    scores = list(scores)
    claims = sum(s.claims for s in scores)
    true = sum(len(s.true_claims) for s in scores)
    per = [s.precision for s in scores if s.precision is not None]
    return {
        "explanations": len(scores),
        "claims": claims,
        "attribute_precision": true / claims if claims else None,
        "attribute_precision_mean": sum(per) / len(per) if per else None,
        "history_share": sum(bool(s.history_mentions) for s in scores) / len(scores) if scores else None,
    }


def model_explanations(
    write: Any,
    items: pd.DataFrame,
    cases: Mapping[str, tuple[Sequence[str], str]],
    picks: Mapping[str, str],
    vocab: Vocabulary,
    max_history: int = 5,
) -> tuple[list[ExplanationScore], list[ExplanationScore], int]:
    """Explanations an instruction model writes (`write`: chat messages -> text) for each user's pick,
    scored twice: as the model wrote them (raw), and as users get them (`inference.explain.explain_with`
    keeps a grounded answer, else the template one). Also returns how many raw answers were kept."""
    from inference.explain import explain_with
    from inference.facts import item_facts

    facts = item_facts(items)
    kinds = {k for f in facts.values() for k in f.kinds}
    raw, shown, kept = [], [], 0
    for user, item in picks.items():
        history = [h for h in list(cases[user][0]) if h in facts][-max_history:]
        written = explain_with(write, facts[item], [facts[h] for h in history], kinds)
        raw.append(score_explanation(written.raw, item, history, vocab))
        shown.append(score_explanation(written.text, item, history, vocab))
        kept += written.source == "model"
    return raw, shown, kept


def agent_explanations(
    ctx: Any,
    cases: Mapping[str, tuple[Sequence[str], str]],
    picks: Mapping[str, str],
    vocab: Vocabulary,
    max_history: int = 20,
) -> list[ExplanationScore]:
    """Score the agent's `explain` tool (with its `AgentContext`) on recommended items: for each
    user in `picks`, why `picks[user]` suits the user's history in `cases` (what users read in chat)."""
    from agent.tools import explain

    out = []
    for user, item in picks.items():
        history = list(cases[user][0])[-max_history:]
        result = explain(ctx, f"id {item}", liked=[f"id {h}" for h in history])
        if result.get("found"):
            out.append(score_explanation(result["items"][0]["explanation"], item, history, vocab))
    return out
