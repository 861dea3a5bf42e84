"""Explanations of a recommendation, grounded in the item's real attributes and the user's history.

An instruction-tuned model (SmolLM2-135M-Instruct by default) is given only facts from the catalog
(the item's title, year, kinds, other attributes; the titles of the user's recent items) and asked
for one sentence. A 135M model often invents sequels, studios and dates, so its answer is kept only
if it passes `is_grounded` (every number and every capitalised name in it comes from the facts);
otherwise the template explanation of the same facts is returned. `grounded_explanation` is also
the training target of the explain task.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inference.facts import ItemFacts
from inference.templates import render, template_names

SYSTEM = "You are a movie, book and product recommender. Be brief and factual."
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")


def describe(item: ItemFacts) -> str:
    """One line of facts about an item: `Title (1995; Comedy, Drama; brand: X)`."""
    details = ([str(item.year)] if item.year else []) + ([", ".join(item.kinds)] if item.kinds else []) + item.facts[:2]
    return f"{item.title} ({'; '.join(details)})" if details else item.title


def explanation_messages(item: ItemFacts, history: Sequence[ItemFacts]) -> list[dict[str, str]]:
    """The chat messages asking an instruction model why `item` suits a user with `history`."""
    liked = ", ".join(h.title for h in list(history)[-5:]) or "nothing yet"
    user = (
        f"I liked {liked}. Why should I choose {item.title}? Facts: {describe(item)}. "
        f"Answer in one sentence using only these facts."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def shared_kinds(facts: ItemFacts, history: Sequence[ItemFacts]) -> tuple[list[str], list[str]]:
    """Kinds the item shares with the history, and up to two history titles that have them."""
    mine = set(facts.kinds)
    shared: list[str] = []
    titles: list[str] = []
    for past in reversed(history):
        common = [k for k in past.kinds if k in mine and k not in shared]
        if common:
            shared.extend(common)
            titles.append(past.title)
        if len(titles) == 2:
            break
    return shared[:3], titles


def join_words(words: Sequence[str]) -> str:
    """`["A", "B", "C"]` -> `"A, B and C"`."""
    words = [str(w) for w in words]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else ""


def kind_phrase(kinds: Sequence[str]) -> str:
    """`["Action", "Sci-Fi"]` -> `"an Action and Sci-Fi title"` (empty without kinds)."""
    if not kinds:
        return ""
    words = join_words(kinds)
    return f"{'an' if words[0].lower() in 'aeiou' else 'a'} {words} title"


def explanation_target(facts: ItemFacts, history: Sequence[ItemFacts], template: str) -> str:
    """A grounded explanation: only the item's real attributes and real history titles."""
    shared, titles = shared_kinds(facts, history)
    year = facts.year if facts.year and str(facts.year) not in facts.title else None  # titles often carry it
    return render(
        template,
        title=facts.title,
        year=year,
        kinds=kind_phrase(facts.kinds),
        shared=join_words(shared),
        shared_phrase=kind_phrase(shared),
        shared_titles=join_words(titles),
        last=history[-1].title if history else "",
    )


def grounded_explanation(item: ItemFacts, history: Sequence[ItemFacts]) -> str:
    """A template explanation from real attributes only (no model)."""
    return explanation_target(item, list(history)[-5:], template_names("explain_answer")[0])


def _norm(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9']+", " ", text.lower()).strip() + " "


def _title_words(title: str) -> str:
    """A title without its trailing year and article suffix ("Godfather, The (1972)" -> "godfather")."""
    bare = re.sub(r"\s*\(\d{4}\)\s*$", "", title)
    return _norm(re.sub(r",\s*(The|A|An)$", "", bare)).strip()


def is_grounded(
    text: str, item: ItemFacts, history: Sequence[ItemFacts], max_words: int = 60, other_kinds: set[str] | None = None
) -> bool:
    """True if `text` says something the facts support and nothing beyond them.

    Nothing beyond: every number and every capitalised word (other than a sentence's first)
    occurs in the item's or the history's facts; no hashtags, no run-on or repetitive answers.
    Something: it names one of the item's kinds (genres, categories) or an item of the history,
    so "X is a movie, not a book" is not an explanation. With `other_kinds` (every kind the catalog
    uses), naming one the item does not have is a false claim.
    """
    facts = " ".join([describe(item), grounded_explanation(item, history)] + [describe(h) for h in history])
    known = {w.lower() for w in _WORD.findall(facts)} | {"i", "you", "it", "its", "this", "they"}
    words = _WORD.findall(text)
    if not words or len(words) > max_words or "#" in text or "fact" in text.lower():
        return False
    lowered = [w.lower() for w in words]
    if any(len(w) > 3 and w in lowered[n + 1 : n + 4] for n, w in enumerate(lowered)):
        return False  # "reimagined and reimagined": a small model looping
    trigrams = list(zip(lowered, lowered[1:], lowered[2:]))
    if len(set(trigrams)) < len(trigrams):
        return False  # "... a classic comedy-drama, and the movie itself is a classic comedy-drama"
    claims = _norm(text)
    for title in [item.title, *(h.title for h in history)]:  # kind words inside titles are not claims
        claims = claims.replace(f" {_title_words(title)} ", " ")
    if other_kinds and any(f" {_norm(k).strip()} " in claims for k in other_kinds - set(item.kinds)):
        return False  # a kind the catalog uses that this item does not have ("comedy-drama" for a Comedy, Romance)
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        for n, word in enumerate(_WORD.findall(sentence)):
            if (word.isdigit() or (word[0].isupper() and n > 0)) and word.lower() not in known:
                return False
    said = _norm(text)
    kinds = [_norm(k).strip() for k in item.kinds]
    titles = [_title_words(h.title) for h in history]
    return any(f" {k} " in said for k in kinds if k) or any(f" {t} " in said for t in titles if t)


@dataclass(frozen=True)
class Explanation:
    """An explanation as the user sees it, and where it came from."""

    text: str
    source: str  # "model": the model's answer passed `is_grounded`; "template": the catalog facts' template
    raw: str = ""  # the model's answer before the check ("" when no model was asked)


Write = Callable[[list[dict[str, str]]], str]  # chat messages -> the model's answer


def explain_with(
    write: Write | None,
    item: ItemFacts,
    history: Sequence[ItemFacts],
    other_kinds: set[str] | None = None,
    messages: Callable[[ItemFacts, Sequence[ItemFacts]], list[dict[str, str]]] = explanation_messages,
) -> Explanation:
    """Ask `write` (any instruction model: local, or served by vLLM) why `item` fits `history`, with the
    prompt `messages` builds; keep its answer only if it is grounded in the facts, else fall back to
    the template explanation."""
    fallback = grounded_explanation(item, history)
    if write is None:
        return Explanation(fallback, "template")
    raw = " ".join(write(messages(item, history)).split())
    grounded = is_grounded(raw, item, history, other_kinds=other_kinds)
    return Explanation(raw, "model", raw) if grounded else Explanation(fallback, "template", raw)


class Explainer:
    """An instruction-tuned causal LM, run locally with Hugging Face, that writes explanations; loaded on first use."""

    def __init__(self, base: str = "smollm2-135m", max_new_tokens: int = 80):
        self.base, self.max_new_tokens = base, max_new_tokens
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from inference.models import load_pretrained, resolve_base

        self._model, self._tokenizer = load_pretrained(resolve_base(self.base))
        self._model.eval()

    def write(self, messages: list[dict[str, str]]) -> str:
        """The model's greedy answer to chat `messages` (unchecked)."""
        import torch

        if self._model is None:
            self._load()
        inputs = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = self._model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                repetition_penalty=1.2,
                pad_token_id=self._tokenizer.pad_token_id,
            )
        return self._tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def generate(self, item: ItemFacts, history: Sequence[ItemFacts]) -> str:
        """The model's raw answer for `item` and `history` (unchecked)."""
        return self.write(explanation_messages(item, history))

    def explain(self, item: ItemFacts, history: Sequence[ItemFacts]) -> str:
        """One sentence on why `item` fits `history`: the model's if grounded, else the template's."""
        return explain_with(self.write, item, history).text
