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

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from finetune.tokenizer import end_of_turn
from inference.decoding.prompts import SHORT_TEMPLATE, chat_prompt, next_item_instruction, next_item_templates
from inference.explain import explanation_target
from inference.facts import ItemFacts
from inference.sid_tokens import render_sid
from inference.templates import render, template_names

AUX_TASKS = ("item_to_text", "text_to_item", "query_to_item", "explain")


@dataclass(frozen=True)
class Example:
    """One training example: the prompt text, the text to learn, and the task it came from."""

    prompt: str
    target: str
    task: str
    user: str | None = None  # whose history the example shows (next_item, explain)


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


def resolve_template(template: str | None, facts: Mapping[str, ItemFacts]) -> str | None:
    """The next-item template a training run uses: `template` as set, or for None ("auto") "short"
    when no catalog item has text beyond an id (no caption tasks: the history is all there is to
    say), else None (the three worded templates, the first one served)."""
    if template is not None:
        return template
    return None if any(f.has_content for f in facts.values()) else SHORT_TEMPLATE


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
    from inference.templates import TEMPLATE_DIR

    texts = [f.caption for f in facts.values()] + [f.title for f in facts.values()]
    texts += [p.read_text(encoding="utf-8") for p in sorted(TEMPLATE_DIR.glob("*.j2"))]
    return texts
