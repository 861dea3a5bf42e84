"""The decoding constraint: a trie of the catalog's semantic IDs over tokenizer token ids.

Generation may only follow paths of this trie, so every generated code is a real item (LC-Rec's
per-position allowed-token sets can combine codes into tuples no item has; a trie cannot).
Per-request exclusions (the user's history) and metadata filters narrow the trie without copying
it: a prefix stays open while at least one allowed item lies under it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

from finetune.sid_tokens import CodeTrie, SidVocab


class SidTrie:
    """Valid semantic IDs as token-id paths, with leaf counts so subsets can be excluded cheaply."""

    def __init__(self, codes: Mapping[str, Sequence[int]], tokenizer):
        self.codes = CodeTrie(codes)
        self.depth = self.codes.depth
        self.code_of: dict[str, tuple[int, ...]] = {item: code for code, item in self.codes.item_of.items()}
        self.vocab = SidVocab.from_tokenizer(tokenizer, self.codes.codebook_sizes)
        # token id -> (level, code), and per level code -> token id, read on every decoding step
        self.code_of_token: dict[int, tuple[int, int]] = self.vocab.code_of
        self.token_id: list[dict[int, int]] = [
            {code: self.vocab.token_id(level, code) for code in range(size)}
            for level, size in enumerate(self.codes.codebook_sizes)
        ]
        self.leaves: Counter[tuple[int, ...]] = Counter()
        for code in self.codes.item_of:
            for level in range(self.depth + 1):
                self.leaves[code[:level]] += 1
        self._allowed_cache: dict[tuple[int, ...], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.codes)

    def item_ids(self) -> list[str]:
        """Every item the trie can produce."""
        return list(self.code_of)

    def tokens_of(self, item_id: str) -> list[int]:
        """The token ids that spell `item_id`'s semantic ID."""
        return [self.token_id[level][c] for level, c in enumerate(self.code_of[item_id])]

    def item_of(self, code: Sequence[int]) -> str | None:
        """The item whose code is `code`, or None."""
        return self.codes.item_of.get(tuple(code))

    def exclusion(self, item_ids: Iterable[str]) -> Counter[tuple[int, ...]]:
        """How many of `item_ids` lie under each prefix: what `allowed` subtracts to hide them."""
        removed: Counter[tuple[int, ...]] = Counter()
        for item in set(item_ids):
            code = self.code_of.get(item)
            if code is not None:
                for level in range(self.depth + 1):
                    removed[code[:level]] += 1
        return removed

    def allowed(self, prefix: tuple[int, ...], removed: Mapping[tuple[int, ...], int] | None = None) -> torch.Tensor:
        """Token ids that may follow `prefix` (a tuple of codes), skipping subtrees emptied by `removed`."""
        full = self._allowed_cache.get(prefix)
        if full is None:
            level = len(prefix)
            children = self.codes.children(prefix) if level < self.depth else []
            full = torch.tensor([self.token_id[level][c] for c in children], dtype=torch.long)
            self._allowed_cache[prefix] = full
        if not removed or removed.get(prefix, 0) == 0:
            return full
        level = len(prefix)
        keep = [
            self.token_id[level][c]
            for c in self.codes.children(prefix)
            if self.leaves[prefix + (c,)] - removed.get(prefix + (c,), 0) > 0
        ]
        return torch.tensor(keep, dtype=torch.long)

    def prefix_of(self, token_ids: Sequence[int]) -> tuple[int, ...] | None:
        """Codes spelled by generated `token_ids`, or None if they leave the trie."""
        code: list[int] = []
        for level, tid in enumerate(token_ids):
            found = self.code_of_token.get(int(tid))
            if found is None or found[0] != level:
                return None
            code.append(found[1])
        return tuple(code)


class TrieLogitsProcessor:
    """A Hugging Face logits processor that keeps `generate` on the trie (beam search or greedy).

    `removed[i]` (optional) narrows the trie for batch row `i`; rows are `batch * num_beams + beam`
    as in `generate`. Use with `length_penalty=0` so beam scores are plain sequence log-probs.
    """

    def __init__(self, trie: SidTrie, prompt_length: int, num_beams: int = 1, removed: Sequence[Mapping] | None = None):
        self.trie, self.prompt_length, self.num_beams, self.removed = trie, prompt_length, num_beams, removed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            prefix = self.trie.prefix_of(ids)
            if prefix is None or len(prefix) >= self.trie.depth:
                continue  # off the trie or complete: nothing further is allowed
            removed = self.removed[row // self.num_beams] if self.removed else None
            mask[row, self.trie.allowed(prefix, removed)] = 0.0
        return scores + mask
