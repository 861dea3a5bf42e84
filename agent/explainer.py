"""Explanations written by the served chat model, from the catalog's facts only.

The `explain` tool asks the chat model (SmolLM2-135M-Instruct by default) why an item suits the
user, giving it the item's real attributes and the titles the user liked. A 135M model often
invents studios, dates and sequels, so its answer is kept only when `finetune.explain.is_grounded`
finds nothing in it beyond those facts; otherwise the user gets the template explanation. Either
way the tool records which one it was and the model's raw answer, which is what evaluation
scores for faithfulness.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from agent.chat_model import ChatModel
from serving.client import LLMError
from finetune.explain import Explanation, explain_with, grounded_explanation
from finetune.tasks import ItemFacts, item_facts

MAX_TOKENS = 60


class ChatExplainer:
    """`explainer(item_id, liked_ids)` -> an `Explanation`; never raises for a model that is down."""

    def __init__(self, chat: ChatModel, items: pd.DataFrame, max_tokens: int = MAX_TOKENS):
        frame = items.reset_index() if "item_id" not in items.columns else items
        self.facts: dict[str, ItemFacts] = item_facts(frame)
        self.kinds = {k for f in self.facts.values() for k in f.kinds}
        self.chat = chat
        self.max_tokens = max_tokens

    def __call__(self, item_id: str, liked: Sequence[str]) -> Explanation:
        item = self.facts[item_id]
        history = [self.facts[i] for i in liked if i in self.facts and i != item_id][-5:]
        try:
            return explain_with(lambda messages: self.chat.reply(messages, max_tokens=self.max_tokens), item, history,
                                self.kinds)
        except LLMError:
            return Explanation(grounded_explanation(item, history), "template")
