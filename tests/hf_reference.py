"""The reference every constrained decoder is checked against: Hugging Face `generate` with beam
search kept on the trie by a logits processor. Test and benchmark code only (it is slow: beams
copy the prompt's cache), never a serving path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import LogitsProcessorList

from inference.decoding.trie import SidTrie


class TrieLogitsProcessor:
    """Keeps `generate` on the trie; rows are `batch * num_beams + beam`; use `length_penalty=0` so
    beam scores are plain sequence log-probs."""

    def __init__(
        self, trie: SidTrie, prompt_length: int, num_beams: int = 1, removed: Sequence[Mapping | None] | None = None
    ):
        self.trie, self.prompt_length, self.num_beams, self.removed = trie, prompt_length, num_beams, removed

    def prefix(self, ids: Sequence[int]) -> tuple[int, ...] | None:
        code = []
        for level, tid in enumerate(ids):
            found = self.trie.code_of_token(tid)
            if found is None or found[0] != level:
                return None
            code.append(found[1])
        return tuple(code)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            prefix = self.prefix(ids)
            if prefix is None or len(prefix) >= self.trie.depth:
                continue
            removed = self.removed[row // self.num_beams] if self.removed else None
            mask[row, self.trie.allowed_tokens(prefix, removed)] = 0.0
        return scores + mask


def hf_trie_topk(
    model, tokenizer, prompt_ids: Sequence[int], trie: SidTrie, width: int, removed: Mapping | None = None
) -> list[tuple[str, float]]:
    """Hugging Face beam search over the trie: (item_id, sequence log-prob), best first."""
    ids = torch.tensor([list(prompt_ids)])
    processor = TrieLogitsProcessor(trie, ids.shape[1], num_beams=width, removed=[removed])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        num_beams=width,
        num_return_sequences=width,
        do_sample=False,
        max_new_tokens=trie.depth,
        length_penalty=0.0,
        logits_processor=LogitsProcessorList([processor]),
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    found = []
    for seq, score in zip(out.sequences, out.sequences_scores):
        code = processor.prefix(seq[ids.shape[1] :].tolist())
        if code in trie and float(score) != float("-inf"):
            found.append((trie.item_of[code], float(score)))
    return found
