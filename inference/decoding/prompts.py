"""The one prompt a history turns into: what training teaches and every backend continues.

`HistoryPrompt` keeps the catalog items it knows, the last `max_history` of them, renders the
next-item template (`next_item_prompt`, the same function training builds its examples
with) and tokenizes it exactly as training does: no special tokens added by the
tokenizer, since the chat template writes whatever the model's conversations start with. Backends
receive token ids, never text, so a server whose tokenizer would add a BOS token cannot make the
served prompt differ from the trained one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inference.sid_tokens import render_sid
from inference.templates import render, template_names


def chat_prompt(tokenizer, instruction: str) -> str:
    """The text of a one-turn conversation ending where the assistant's answer starts."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
    )


# `train.template` "short": a prompt that carries nothing but the history (an empty instruction), for
# catalogs with no item text. There the instruction's 45 tokens were 63% of every Amazon Beauty
# pre-training example and said nothing the history does not (docs/experiments.md)
SHORT_TEMPLATE = "short"
SHORT_FILE = "next_item_short.j2"


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
