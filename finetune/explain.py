"""Explanations of a recommendation, grounded in the item's real attributes and the user's history.

An instruction-tuned model (SmolLM2-135M-Instruct by default) is given only facts from the catalog
(the item's title, year, kinds, other attributes; the titles and kinds of the user's recent items)
and asked for one or two sentences. `grounded_explanation` is the template version of the same
facts, used as the training target of the explain task and when no instruction model is wanted.
"""

from __future__ import annotations

from collections.abc import Sequence

from finetune.tasks import ItemFacts, explanation_target
from finetune.templates import template_names

SYSTEM = (
    "You explain movie, book or product recommendations in one or two short sentences. "
    "Use only the facts given; never invent titles, years or genres."
)


def describe(item: ItemFacts) -> str:
    """One line of facts about an item: `Title (1995; Comedy, Drama; brand: X)`."""
    details = ([str(item.year)] if item.year else []) + ([", ".join(item.kinds)] if item.kinds else []) + item.facts[:2]
    return f"{item.title} ({'; '.join(details)})" if details else item.title


def explanation_messages(item: ItemFacts, history: Sequence[ItemFacts]) -> list[dict[str, str]]:
    """The chat messages asking an instruction model why `item` suits a user with `history`."""
    recent = "\n".join(f"- {describe(h)}" for h in list(history)[-5:]) or "- (nothing yet)"
    user = (
        f"The user recently enjoyed:\n{recent}\n\nWe recommend: {describe(item)}\n\n"
        f"In one or two sentences, tell the user why they may like {item.title}, using only these facts."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def grounded_explanation(item: ItemFacts, history: Sequence[ItemFacts]) -> str:
    """A template explanation from real attributes only (no model)."""
    return explanation_target(item, list(history)[-5:], template_names("explain_answer")[0])


class Explainer:
    """An instruction-tuned causal LM that writes explanations; loaded on first use."""

    def __init__(self, base: str = "smollm2-135m", max_new_tokens: int = 80):
        self.base, self.max_new_tokens = base, max_new_tokens
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from finetune.models import load_pretrained, resolve_base

        self._model, self._tokenizer = load_pretrained(resolve_base(self.base))
        self._model.eval()

    def explain(self, item: ItemFacts, history: Sequence[ItemFacts]) -> str:
        """One or two sentences on why `item` fits `history`; the template explanation if the model says nothing."""
        import torch

        if self._model is None:
            self._load()
        inputs = self._tokenizer.apply_chat_template(
            explanation_messages(item, history), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = self._model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, repetition_penalty=1.1,
                pad_token_id=self._tokenizer.pad_token_id,
            )
        text = self._tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        return text or grounded_explanation(item, history)
