"""Tokenizers: a small byte-level BPE trained on the catalog (scratch models), and SID tokens for any.

The scratch tokenizer is byte-level, so any text (other languages, emoji, typos in a user's
request) encodes without unknown tokens; its vocabulary is learned from the run's own texts,
so ~4k merges cover titles and prompts well. It carries a chat template like any instruct model,
so the SFT tasks and vLLM's chat endpoint format conversations the same way for every base.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from inference.sid_tokens import sid_token_strings

# One role token each, closed by <|end|>: a template short enough for a 4-layer model to learn fast.
SCRATCH_SPECIAL = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SCRATCH_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_scratch_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast` with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SCRATCH_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    tokenizer.chat_template = SCRATCH_CHAT_TEMPLATE
    return tokenizer


def add_sid_tokens(tokenizer, codebook_sizes: Sequence[int]) -> list[int]:
    """Add one token per (level, code) to `tokenizer` (those it lacks); return the ids of all SID tokens.

    They are added as normal (not special) tokens so `decode(skip_special_tokens=True)` keeps them,
    yet they are matched whole before BPE, so `<a_12>` is always exactly one token.
    """
    strings = sid_token_strings(codebook_sizes)
    vocab = tokenizer.get_vocab()
    missing = [s for s in strings if s not in vocab]
    if missing:
        tokenizer.add_tokens(missing)
    return tokenizer.convert_tokens_to_ids(strings)


def end_of_turn(tokenizer) -> str:
    """What the chat template writes after an assistant message (e.g. `<|im_end|>\\n`): the answer's stop text."""
    marker = "\x00ANSWER\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    tail = text[text.rindex(marker) + len(marker) :]
    return tail or (tokenizer.eos_token or "")
