"""What every baseline shares: the item index of the catalog and top-K with the history excluded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from genrec.errors import GenrecError


class ItemIndex:
    """Dense integer positions 0..N-1 for the catalog's item ids, and back."""

    def __init__(self, catalog: Sequence[str]):
        self.ids = [str(i) for i in catalog]
        self.pos = {item: i for i, item in enumerate(self.ids)}
        if len(self.pos) != len(self.ids):
            raise GenrecError("catalog: duplicate item ids; every item id must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, items: Iterable[str]) -> list[int]:
        """Positions of the known items, in order; ids outside the catalog are skipped
        (a history may name items a baseline cannot score, e.g. from another source)."""
        return [self.pos[i] for i in items if i in self.pos]

    def encode_train(self, train: dict[str, list[str]]) -> dict[str, list[int]]:
        """Encode training histories; an unknown item there is a broken split, so it is an error."""
        out = {}
        for user, items in train.items():
            for item in items:
                if item not in self.pos:
                    raise GenrecError(
                        f"training history of user {user!r} names item {item!r} that is not in the catalog; "
                        "build the split from the run's own interactions.parquet"
                    )
            out[user] = [self.pos[i] for i in items]
        return out

    def decode(self, rows: np.ndarray | Sequence[Sequence[int]]) -> list[list[str]]:
        """Item ids for rows of positions."""
        return [[self.ids[int(j)] for j in row] for row in rows]


def item_counts(index: ItemIndex, train: dict[str, list[int]]) -> np.ndarray:
    """How many training interactions each catalog item has (float, aligned with the index)."""
    counts = np.zeros(len(index), dtype=np.float64)
    for items in train.values():
        np.add.at(counts, np.asarray(items, dtype=np.int64), 1.0)
    return counts


def popularity_tiebreak(counts: np.ndarray) -> np.ndarray:
    """A tiny score bonus growing with popularity, below any real score difference.

    Models whose scores are zero for most items (no co-occurrence, no content overlap) would
    otherwise fill their lists in arbitrary index order; popularity order is the sensible fallback.
    """
    if counts.max(initial=0.0) <= 0:
        return np.zeros_like(counts)
    return 1e-6 * counts / counts.max()


def top_k_excluding(scores: np.ndarray, histories: Sequence[Sequence[int]], k: int) -> list[list[int]]:
    """Top-`k` positions of each row of `scores` (best first), never a position of that row's history."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    n = scores.shape[1]
    for row, hist in enumerate(histories):
        if len(hist):
            scores[row, np.asarray(hist, dtype=np.int64)] = -np.inf
    k_eff = min(k, n)
    if k_eff <= 0:
        return [[] for _ in histories]
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    out = []
    for row in range(scores.shape[0]):
        cand = part[row]
        order = cand[np.lexsort((cand, -scores[row, cand]))]  # score desc, then position: deterministic ties
        out.append([int(j) for j in order if np.isfinite(scores[row, j])])
    return out
