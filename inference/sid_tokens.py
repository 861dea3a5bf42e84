"""Semantic-ID tokens: how a code tuple is written as text, read back, and mapped to token ids.

A code `[12, 7, 201, 0]` is written `<a_12><b_7><c_201><d_0>`: one token per (level, code), the
level named by a letter (`a` for level 0, `b` for level 1, ...). Training, decoding (the trie in
`inference.decoding.trie`), serving and evaluation all go through these functions so that they
never disagree on the format.
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
