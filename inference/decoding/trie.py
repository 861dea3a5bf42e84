"""The trie of the catalog's semantic IDs: the one decoding constraint every backend applies.

Generation may only follow paths of this trie, so every generated code is a real item (LC-Rec's
per-position allowed-token sets can combine codes into tuples no item has; a trie cannot).
Per-request exclusions (a user's history) and metadata filters narrow it without copying it:
`exclusion(items)` counts the hidden items under each prefix, and a prefix stays open while at
least one allowed item lies under it. With a `SidVocab` the trie also speaks token ids, which is
what the in-process beam search and the vLLM server need.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

from inference.sid_tokens import SidVocab, codebook_sizes

Code = tuple[int, ...]
Removed = Mapping[Code, int]  # prefix -> how many of its items are hidden
Scored = tuple[str, float]  # (item_id, score), higher is better
Histories = Sequence[Sequence[str]]  # item ids in time order, one sequence per request
Exclusions = Sequence[Collection[str]] | None  # per request: items never to return


class SidTrie:
    """Valid semantic IDs as a prefix tree: children of a prefix, the item of a complete code."""

    def __init__(self, item_codes: Mapping[str, Sequence[int]], vocab: SidVocab | None = None):
        if not item_codes:
            raise ValueError("no item codes to build a trie from")
        lengths = {len(code) for code in item_codes.values()}
        if len(lengths) != 1:
            raise ValueError(f"item codes have different lengths {sorted(lengths)}; semantic IDs must share one length")
        self.depth: int = lengths.pop()
        self.item_of: dict[Code, str] = {}
        self.code_of: dict[str, Code] = {}
        children: dict[Code, set[int]] = {}
        self.leaves: Counter[Code] = Counter()
        for item_id, code in item_codes.items():
            key = tuple(int(c) for c in code)
            if key in self.item_of:
                raise ValueError(f"items {self.item_of[key]!r} and {item_id!r} share the code {list(key)}")
            self.item_of[key] = str(item_id)
            self.code_of[str(item_id)] = key
            for level in range(self.depth):
                children.setdefault(key[:level], set()).add(key[level])
            for level in range(self.depth + 1):
                self.leaves[key[:level]] += 1
        self._children: dict[Code, list[int]] = {prefix: sorted(codes) for prefix, codes in children.items()}
        self.codebook_sizes: list[int] = codebook_sizes(self.item_of)
        self.vocab = vocab
        self._tokens: dict[Code, list[int]] = {}  # allowed tokens of un-narrowed prefixes, read every decoding step

    @classmethod
    def for_tokenizer(cls, item_codes: Mapping[str, Sequence[int]], tokenizer) -> SidTrie:
        """The trie with the token ids of `tokenizer`'s SID tokens (fails if it lacks any)."""
        trie = cls(item_codes)
        trie.vocab = SidVocab.from_tokenizer(tokenizer, trie.codebook_sizes)
        return trie

    def __len__(self) -> int:
        return len(self.item_of)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, tuple) and code in self.item_of

    def item_ids(self) -> list[str]:
        """Every item the trie can produce, in catalog order."""
        return list(self.code_of)

    def children(self, prefix: Sequence[int], removed: Removed | None = None) -> list[int]:
        """Codes allowed after `prefix` (empty for a complete or unknown prefix), skipping subtrees
        whose items `removed` hides entirely."""
        prefix = tuple(prefix)
        kids = self._children.get(prefix, [])
        if not removed or removed.get(prefix, 0) == 0:
            return kids
        return [c for c in kids if self.leaves[prefix + (c,)] - removed.get(prefix + (c,), 0) > 0]

    def exclusion(self, item_ids: Iterable[str]) -> Counter[Code]:
        """How many of `item_ids` lie under each prefix: what `children` subtracts to hide them.
        Ids outside the catalog are ignored."""
        removed: Counter[Code] = Counter()
        for item in set(item_ids):
            code = self.code_of.get(str(item))
            if code is not None:
                for level in range(self.depth + 1):
                    removed[code[:level]] += 1
        return removed

    def available(self, removed: Removed | None) -> int:
        """How many items remain once `removed` is hidden."""
        return len(self) - (removed.get((), 0) if removed else 0)

    # ---- token ids (needs a vocab) ------------------------------------------------------------

    def _vocab(self) -> SidVocab:
        if self.vocab is None:
            raise ValueError("this trie has no token ids; build it with SidTrie.for_tokenizer or pass a SidVocab")
        return self.vocab

    def allowed_tokens(self, prefix: Sequence[int], removed: Removed | None = None) -> list[int]:
        """Token ids that may follow `prefix`."""
        prefix = tuple(prefix)
        narrowed = bool(removed) and removed.get(prefix, 0) > 0
        if not narrowed and prefix in self._tokens:
            return self._tokens[prefix]
        vocab, level = self._vocab(), len(prefix)
        tokens = [vocab.token_id(level, c) for c in self.children(prefix, removed)]
        if not narrowed:
            self._tokens[prefix] = tokens
        return tokens

    def tokens_of(self, item_id: str) -> list[int]:
        """The token ids that spell `item_id`'s semantic ID."""
        return self._vocab().token_ids(self.code_of[item_id])

    def code_of_token(self, token_id: int) -> tuple[int, int] | None:
        """(level, code) of a SID token id, or None for any other token."""
        return self._vocab().code_of.get(int(token_id))
