"""Explanations written by the served chat model, from the catalog's facts only.

The `explain` tool asks the chat model why an item suits the user, giving it the item's real
attributes, the titles the user liked with their own attributes, and what they share. Its answer is
kept only when the claim checker (`inference.explain.is_grounded`: every number and name comes from
those facts, no kind the item does not have, and it names a real shared kind or liked title)
passes it; otherwise the user gets the catalog-facts explanation. Either way the tool records which
one it was and the model's raw answer, which evaluation scores for faithfulness.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from agent.llm import ChatLLM
from inference.client import LLMError
from inference.explain import Explanation, describe, explain_with, grounded_explanation
from inference.facts import ItemFacts, item_facts

MAX_TOKENS = 70
SYSTEM = (
    "You explain recommendations in one or two short sentences. Use only the facts given: "
    "never add a year, a person, a place or a genre that is not given."
)


def explanation_prompt(item: ItemFacts, history: Sequence[ItemFacts]) -> list[dict[str, str]]:
    """The chat messages asking why `item` suits someone who liked `history` (facts only): what the
    item shares with each liked title is spelled out, so the model need not work it out (a 1.5B
    credited every liked title with every shared genre)."""
    liked = list(history)[-5:]
    lines = [f"Item: {describe(item)}"]
    if liked:
        lines.append("The user liked: " + "; ".join(describe(h) for h in liked))
        shared = [(h, [k for k in item.kinds if k in h.kinds]) for h in liked]
        lines += [f"{item.title} shares with {h.title}: {', '.join(kinds)}" for h, kinds in shared if kinds]
    lines.append(
        f'Write one sentence to the user, calling them "you", on why they may like {item.title}: name '
        "a liked title and only the genres it shares with it, as listed above."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


class ChatExplainer:
    """`explainer(item_id, liked_ids)` -> an `Explanation`; never raises for a model that is down."""

    def __init__(self, chat: ChatLLM, items: pd.DataFrame, max_tokens: int = MAX_TOKENS):
        self.update(items)
        self.chat = chat
        self.max_tokens = max_tokens

    def update(self, items: pd.DataFrame) -> None:
        """Know the items of this catalog (the agent calls it when items are added)."""
        frame = items.reset_index() if "item_id" not in items.columns else items
        facts: dict[str, ItemFacts] = item_facts(frame)
        self.facts, self.kinds = facts, {k for f in facts.values() for k in f.kinds}

    def __call__(self, item_id: str, liked: Sequence[str]) -> Explanation:
        item = self.facts[item_id]
        history = [self.facts[i] for i in liked if i in self.facts and i != item_id][-5:]
        try:
            return explain_with(
                lambda messages: self.chat.reply(messages, max_tokens=self.max_tokens),
                item,
                history,
                self.kinds,
                messages=explanation_prompt,
            )
        except LLMError:
            return Explanation(grounded_explanation(item, history), "template")
