"""The one prompt a history turns into: what training teaches and every backend continues.

`HistoryPrompt` keeps the catalog items it knows, the last `max_history` of them, renders the
next-item template (`finetune.tasks.next_item_prompt`, the same function training builds its
examples with) and tokenizes it exactly as training does: no special tokens added by the
tokenizer, since the chat template writes whatever the model's conversations start with. Backends
receive token ids, never text, so a server whose tokenizer would add a BOS token cannot make the
served prompt differ from the trained one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from finetune.tasks import next_item_prompt


@dataclass
class HistoryPrompt:
    """Builds next-item prompts for one model: its tokenizer, the run's codes, its prompt settings."""

    tokenizer: object
    codes: Mapping[str, Sequence[int]]
    max_history: int
    template: str | None = None

    def known(self, history: Sequence[str]) -> list[str]:
        """The history items the model can read (catalog items with a code), the last `max_history`."""
        return [str(i) for i in history if str(i) in self.codes][-self.max_history :]

    def text(self, history: Sequence[str]) -> str:
        """The exact prompt text for a history of item ids."""
        return next_item_prompt(self.tokenizer, [self.codes[i] for i in self.known(history)], self.template)

    def token_ids(self, history: Sequence[str]) -> list[int]:
        """The prompt's token ids, tokenized as training tokenizes (`add_special_tokens=False`)."""
        return list(self.tokenizer(self.text(history), add_special_tokens=False)["input_ids"])

    def batch_token_ids(self, histories: Sequence[Sequence[str]]) -> list[list[int]]:
        """`token_ids` of many histories in one tokenizer call."""
        texts = [self.text(h) for h in histories]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
