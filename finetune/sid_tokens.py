"""Semantic-ID tokens: how a code tuple is written as text, read back, and laid out as a trie.

A code `[12, 7, 201, 0]` is written `<a_12><b_7><c_201><d_0>`: one token per (level, code), the
level named by a letter (`a` for level 0, `b` for level 1, ...). Training, Hugging Face generation,
the vLLM client and evaluation all go through these functions so that the three never disagree
on the format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

_TOKEN = re.compile(r"<([a-z])_(\d+)>")
_MAX_LEVELS = 26  # one letter per level


def level_letter(level: int) -> str:
    """The letter naming `level` (0 -> 'a', 1 -> 'b', ...)."""
    if not 0 <= level < _MAX_LEVELS:
        raise ValueError(f"semantic-ID level {level} out of range 0..{_MAX_LEVELS - 1}")
    return chr(ord("a") + level)


def sid_token(level: int, code: int) -> str:
    """The token string of one code at one level, e.g. `sid_token(1, 7) == '<b_7>'`."""
    if code < 0:
        raise ValueError(f"semantic-ID code must be >= 0, got {code}")
    return f"<{level_letter(level)}_{code}>"


def render_sid(code: Sequence[int]) -> str:
    """Write a code tuple as its tokens: `[12, 7, 201, 0]` -> `<a_12><b_7><c_201><d_0>`."""
    return "".join(sid_token(level, int(c)) for level, c in enumerate(code))


def parse_sids(text: str) -> list[tuple[int, ...]]:
    """Read every complete code tuple written in `text`, in order.

    A tuple starts at an `<a_..>` token and takes the following tokens while their letters go
    b, c, d, ... in order; anything between tokens (spaces, words) ends nothing and is ignored,
    so `"<a_1> <b_2>"` is still `(1, 2)`. A token out of sequence starts a fresh tuple if it is
    an `a`, and is dropped otherwise. Callers that need a fixed length filter on `len`.
    """
    codes: list[tuple[int, ...]] = []
    current: list[int] = []
    for match in _TOKEN.finditer(text):
        level = ord(match.group(1)) - ord("a")
        value = int(match.group(2))
        if level == 0:
            if current:
                codes.append(tuple(current))
            current = [value]
        elif current and level == len(current):
            current.append(value)
        else:
            if current:
                codes.append(tuple(current))
            current = []
    if current:
        codes.append(tuple(current))
    return codes


def sid_token_strings(codebook_sizes: Sequence[int]) -> list[str]:
    """All SID token strings for codebooks of these sizes, level by level: the tokens to add to a tokenizer."""
    return [sid_token(level, code) for level, size in enumerate(codebook_sizes) for code in range(int(size))]


def codebook_sizes(codes: Iterable[Sequence[int]]) -> list[int]:
    """The smallest codebook size per level that holds every code given (max code + 1 per level)."""
    sizes: list[int] = []
    for code in codes:
        if len(code) > len(sizes):
            sizes.extend([0] * (len(code) - len(sizes)))
        for level, c in enumerate(code):
            sizes[level] = max(sizes[level], int(c) + 1)
    return sizes


class CodeTrie:
    """The prefix tree of valid code tuples, the constraint used by every constrained decoder.

    `children(prefix)` is the sorted list of codes that may follow `prefix`; a full-length
    prefix maps to its item id. Built once per catalog; lookups are dict reads.
    """

    def __init__(self, item_codes: Mapping[str, Sequence[int]]):
        if not item_codes:
            raise ValueError("no item codes to build a trie from")
        lengths = {len(code) for code in item_codes.values()}
        if len(lengths) != 1:
            raise ValueError(f"item codes have different lengths {sorted(lengths)}; semantic IDs must share one length")
        self.depth: int = lengths.pop()
        self.item_of: dict[tuple[int, ...], str] = {}
        children: dict[tuple[int, ...], set[int]] = {}
        for item_id, code in item_codes.items():
            key = tuple(int(c) for c in code)
            if key in self.item_of:
                raise ValueError(f"items {self.item_of[key]!r} and {item_id!r} share the code {list(key)}")
            self.item_of[key] = str(item_id)
            for level in range(self.depth):
                children.setdefault(key[:level], set()).add(key[level])
        self._children = {prefix: sorted(codes) for prefix, codes in children.items()}
        self.codebook_sizes: list[int] = codebook_sizes(self.item_of)

    def children(self, prefix: Sequence[int]) -> list[int]:
        """Codes allowed after `prefix` (empty for a complete or unknown prefix)."""
        return self._children.get(tuple(prefix), [])

    def __contains__(self, code: object) -> bool:
        return isinstance(code, tuple) and code in self.item_of

    def __len__(self) -> int:
        return len(self.item_of)

    def codes(self) -> list[tuple[int, ...]]:
        """Every valid code tuple, sorted."""
        return sorted(self.item_of)

    def without(self, codes: Iterable[Sequence[int]]) -> CodeTrie:
        """A trie of the same items minus `codes` (e.g. a user's history), so no beam is spent on them."""
        drop = {tuple(int(c) for c in code) for code in codes}
        kept = {item: list(code) for code, item in self.item_of.items() if code not in drop}
        if not kept:
            raise ValueError("excluding these codes leaves no item to recommend")
        return CodeTrie(kept)


class SidVocab:
    """Token ids of the SID tokens in one tokenizer: (level, code) <-> token id.

    Built from any `token_to_id` lookup, so the same class serves a local Hugging Face tokenizer
    and a remote vLLM server (whose `/tokenize` endpoint gives the ids).
    """

    def __init__(self, ids: Mapping[tuple[int, int], int]):
        self.id_of: dict[tuple[int, int], int] = dict(ids)
        self.code_of: dict[int, tuple[int, int]] = {tid: key for key, tid in self.id_of.items()}
        if len(self.code_of) != len(self.id_of):
            raise ValueError("two SID tokens share one token id: the tokenizer does not have the SID tokens")

    @classmethod
    def from_tokenizer(cls, tokenizer, sizes: Sequence[int]) -> SidVocab:
        """Look the SID tokens up in a Hugging Face tokenizer; fail if any is missing."""
        ids: dict[tuple[int, int], int] = {}
        unk = getattr(tokenizer, "unk_token_id", None)
        for level, size in enumerate(sizes):
            for code in range(int(size)):
                tid = tokenizer.convert_tokens_to_ids(sid_token(level, code))
                if tid is None or tid == unk:
                    raise ValueError(f"tokenizer has no token {sid_token(level, code)}; add the SID tokens first")
                ids[(level, code)] = int(tid)
        return cls(ids)

    def token_id(self, level: int, code: int) -> int:
        """The token id of `code` at `level`."""
        return self.id_of[(level, code)]

    def token_ids(self, code: Sequence[int]) -> list[int]:
        """Token ids of a whole (or partial) code tuple."""
        return [self.id_of[(level, int(c))] for level, c in enumerate(code)]

    def decode(self, token_ids: Sequence[int]) -> tuple[int, ...]:
        """Codes of a run of SID token ids, in order (ids that are not SID tokens are skipped)."""
        return tuple(self.code_of[t][1] for t in token_ids if t in self.code_of)


def prefix_allowed_tokens_fn(trie: CodeTrie, vocab: SidVocab, prompt_length: int, eos_token_id: int | None = None):
    """A Hugging Face `generate(prefix_allowed_tokens_fn=...)` callback that walks the trie.

    After `prompt_length` tokens, each step allows only the SID tokens of the codes that may follow
    the codes generated so far; once a code is complete it allows only `eos_token_id`. Without an
    EOS, call `generate(max_new_tokens=trie.depth)` so that no step comes after a complete code.
    Prompts in a batch must be left-padded to the same `prompt_length`.
    """

    def allowed(batch_id: int, input_ids) -> list[int]:
        generated = input_ids[prompt_length:].tolist()
        prefix = vocab.decode(generated)
        if len(prefix) != len(generated) or len(prefix) >= trie.depth:  # complete (or padded after EOS)
            return [eos_token_id] if eos_token_id is not None else []
        return [vocab.token_id(len(prefix), c) for c in trie.children(prefix)]

    return allowed
