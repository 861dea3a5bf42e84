"""What every baseline shares: the item index of the catalog and top-K with the history excluded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.item_index import ItemIndex


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
