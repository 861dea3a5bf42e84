"""SFT examples built from a run (LC-Rec style tasks), as (prompt, target) text pairs.

Every example is a one-turn chat: `prompt` is the conversation up to where the assistant speaks,
`target` is what the model must write there; the loss covers the target only.

- next_item: a user's training items as SID tokens, loss on every item (SASRec-style: one
  sequence teaches every next-item step at once). Users longer than `max_history` are cut into
  consecutive chunks, the most recent chunk full length. Only `split.train` items appear: the
  validation and test items of leave-one-out are never trained on.
- item_to_text / text_to_item: an item's SID <-> its title and caption (the catalog's own facts).
- query_to_item: a free-text request built from real attributes ("a 1990s Comedy, Sci-Fi item") -> an item having them.
- explain: why an item fits a user's history, answered from the item's real attributes and the
  history items it shares them with.
Items with no text beyond an id (amazon-seq) get only the next-item task.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from finetune.sid_tokens import render_sid
from finetune.templates import render, template_names
from finetune.tokenizer import chat_prompt, end_of_turn
from retrieval.catalog import KIND_KEYS, YEAR_KEYS, item_caption

AUX_TASKS = ("item_to_text", "text_to_item", "query_to_item", "explain")


@dataclass(frozen=True)
class Example:
    """One training example: the prompt text, the text to learn, and the task it came from."""

    prompt: str
    target: str
    task: str
    user: str | None = None  # whose history the example shows (next_item, explain)


@dataclass(frozen=True)
class ItemFacts:
    """What the catalog says about one item, in the shape the templates use."""

    item_id: str
    title: str
    caption: str
    kinds: list[str]
    year: int | None
    facts: list[str]  # other attributes as "key: value"

    @property
    def has_content(self) -> bool:
        """True when the item has something to say beyond an id-like title."""
        return bool(self.kinds or self.year or self.facts or self.caption.strip() != self.title.strip())


def item_facts(items: pd.DataFrame) -> dict[str, ItemFacts]:
    """Per item: title, caption and the attributes the tasks talk about."""
    out: dict[str, ItemFacts] = {}
    for row in items.itertuples(index=False):
        attrs: dict[str, Any] = json.loads(row.attributes) if row.attributes else {}
        kinds: list[str] = []
        year = None
        facts = []
        for key, value in attrs.items():
            if value in (None, "", []):
                continue
            if key in KIND_KEYS:
                kinds.extend(str(v) for v in (value if isinstance(value, list) else [value]))
            elif key in YEAR_KEYS and str(value).isdigit():
                year = int(value)
            elif isinstance(value, (str, int, float)) and len(str(value)) <= 60:
                facts.append(f"{key}: {value}")
        text = row.text if isinstance(row.text, str) else ""
        out[str(row.item_id)] = ItemFacts(
            str(row.item_id), str(row.title), item_caption(str(row.title), attrs, text), kinds, year, facts[:4]
        )
    return out


def history_chunks(items: Sequence[str], max_history: int, offset: int = 0) -> list[list[str]]:
    """Consecutive non-overlapping chunks of at most `max_history` items.

    With `offset` 0 the last chunk is full length (what inference sees); a non-zero offset ends the
    last chunk `offset` items earlier, so that over epochs every position is trained with a varying
    amount of context instead of always starting a chunk with none.
    """
    items = list(items)
    chunks = []
    end = len(items)
    if 0 < offset < end:
        chunks.append(items[end - offset :])
        end -= offset
    while end > 0:
        chunks.append(items[max(0, end - max_history) : end])
        end -= max_history
    return chunks[::-1]


# `train.template` "short": a prompt that carries nothing but the history (an empty instruction), for
# catalogs with no item text. There the instruction's 45 tokens were 63% of every Amazon Beauty
# pre-training example and said nothing the history does not (docs/experiments.md)
SHORT_TEMPLATE = "short"
SHORT_FILE = "next_item_short.j2"


def resolve_template(template: str | None, facts: Mapping[str, ItemFacts]) -> str | None:
    """The next-item template a training run uses: `template` as set, or for None ("auto") "short"
    when no catalog item has text beyond an id (no caption tasks: the history is all there is to
    say), else None (the three worded templates, the first one served)."""
    if template is not None:
        return template
    return None if any(f.has_content for f in facts.values()) else SHORT_TEMPLATE


def next_item_templates(template: str | None) -> list[str]:
    """The templates training draws next-item prompts from: the one set, or every worded one."""
    if template is None:
        return template_names("next_item")
    return [SHORT_FILE if template == SHORT_TEMPLATE else template]


def next_item_instruction(n: int, template: str | None = None) -> str:
    """The instruction that opens a next-item prompt for a history of `n` items."""
    return render(next_item_templates(template)[0], n=n)


def next_item_prompt(tokenizer, history_codes: Sequence[Sequence[int]], template: str | None = None) -> str:
    """The exact text the model continues with the next item's SID: chat prompt + history SIDs.

    Training, Hugging Face generation and the vLLM client all build prompts here.
    """
    return chat_prompt(tokenizer, next_item_instruction(len(history_codes), template)) + "".join(
        render_sid(c) for c in history_codes
    )


def next_item_examples(
    tokenizer,
    train: Mapping[str, Sequence[str]],
    codes: Mapping[str, Sequence[int]],
    max_history: int,
    rng: random.Random,
    shift: bool = False,
    template: str | None = None,
) -> list[Example]:
    """One example per user chunk: the instruction as prompt, every item's SID as target.

    With `shift`, chunk boundaries move by a random offset per user (see `history_chunks`). The
    prompt is drawn from `next_item_templates(template)`: what generation then serves.
    """
    templates = next_item_templates(template)
    out = []
    for user in sorted(train):
        items = [i for i in train[user] if i in codes]
        offset = rng.randrange(max_history) if shift and len(items) > max_history else 0
        for chunk in history_chunks(items, max_history, offset):
            prompt = chat_prompt(tokenizer, next_item_instruction(len(chunk), rng.choice(templates)))
            out.append(Example(prompt, "".join(render_sid(codes[i]) for i in chunk), "next_item", user))
    return out


def describe_query(facts: ItemFacts, rng: random.Random) -> str | None:
    """A request an item satisfies, from its real kinds and decade, e.g. "a 1990s Comedy, Sci-Fi item"."""
    parts = []
    if facts.kinds:
        picked = rng.sample(facts.kinds, k=min(len(facts.kinds), rng.randint(1, 2)))
        parts.append(", ".join(picked))
    if facts.year and (not parts or rng.random() < 0.6):
        parts.insert(0, f"{facts.year // 10 * 10}s")
    if not parts:
        return None
    phrase = " ".join(parts)
    article = "an" if phrase[0].lower() in "aeiou18" else "a"
    return f"{article} {phrase} item"


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


def aux_examples(
    tokenizer,
    train: Mapping[str, Sequence[str]],
    codes: Mapping[str, Sequence[int]],
    facts: Mapping[str, ItemFacts],
    count: int,
    rng: random.Random,
    tasks: Sequence[str] = AUX_TASKS,
) -> list[Example]:
    """`count` examples of the text tasks, drawn evenly over tasks, items and users."""
    eot = end_of_turn(tokenizer)
    content_items = [i for i in codes if i in facts and facts[i].has_content]
    users = [u for u in sorted(train) if len(train[u]) >= 2]
    if not content_items or count <= 0:
        return []
    templates = {task: template_names(task) for task in tasks}
    answers = template_names("explain_answer")
    out: list[Example] = []
    for n in range(count):
        task = tasks[n % len(tasks)]
        if task == "explain" and users:
            user = rng.choice(users)
            history = [facts[i] for i in train[user] if i in facts]
            if len(history) < 2 or not history[-1].has_content:
                continue
            target, past = history[-1], history[-6:-1]
            prompt = render(
                rng.choice(templates[task]),
                history=[h.title for h in past],
                sid=render_sid(codes[target.item_id]),
                title=target.title,
            )
            answer = explanation_target(target, past, rng.choice(answers)) + eot
            out.append(Example(chat_prompt(tokenizer, prompt), answer, task, user))
            continue
        item = facts[rng.choice(content_items)]
        sid = render_sid(codes[item.item_id])
        if task == "item_to_text":
            prompt, answer = render(rng.choice(templates[task]), sid=sid), item.caption + eot
        elif task == "text_to_item":
            prompt, answer = render(rng.choice(templates[task]), caption=item.caption, title=item.title), sid + eot
        else:
            query = describe_query(item, rng)
            if query is None:
                continue
            prompt, answer = render(rng.choice(templates[task]), query=query), sid + eot
        out.append(Example(chat_prompt(tokenizer, prompt), answer, task))
    return out


def corpus_texts(facts: Mapping[str, ItemFacts]) -> list[str]:
    """Texts the scratch tokenizer is trained on: titles, captions and every prompt template's words."""
    from finetune.templates import TEMPLATE_DIR

    texts = [f.caption for f in facts.values()] + [f.title for f in facts.values()]
    texts += [p.read_text(encoding="utf-8") for p in sorted(TEMPLATE_DIR.glob("*.j2"))]
    return texts
