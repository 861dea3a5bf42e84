"""Item-kNN: items similar (cosine over co-occurrence) to the ones in a user's history.

sim(i, j) = |users with i and j| / sqrt(|users with i| * |users with j|), the diagonal removed,
optionally pruned to each item's `neighbors` most similar items. A history scores item j as
sum over history items h of w(h) * sim(h, j), where w decays with how long ago h was seen
(`recency` = 1.0 weighs the whole history equally), which suits sequential data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from eval.baselines.common import ItemIndex, item_counts, popularity_tiebreak, top_k_excluding


class ItemKNN:
    """Cosine item-item collaborative filtering with recency-weighted history scoring."""

    name = "itemknn"

    def __init__(self, catalog: Sequence[str], neighbors: int | None = None, recency: float = 0.7):
        if not 0.0 < recency <= 1.0:
            raise ValueError(f"recency must be in (0, 1], got {recency}")
        self.index = ItemIndex(catalog)
        self.neighbors = neighbors
        self.recency = recency
        self.sim: sp.csr_matrix | None = None
        self.tiebreak: np.ndarray | None = None

    def fit(self, train: dict[str, list[str]]) -> None:
        """Build the item-item cosine similarity matrix from who-interacted-with-what."""
        encoded = self.index.encode_train(train)
        n = len(self.index)
        rows, cols = [], []
        for u, items in enumerate(encoded.values()):
            uniq = np.unique(np.asarray(items, dtype=np.int64))
            rows.append(np.full(len(uniq), u, dtype=np.int64))
            cols.append(uniq)
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        users_items = sp.csr_matrix((np.ones(len(row)), (row, col)), shape=(len(encoded), n))
        co = (users_items.T @ users_items).tocsr()
        degree = np.sqrt(co.diagonal())
        co.setdiag(0.0)
        co.eliminate_zeros()
        co = co.tocoo()
        values = co.data / (degree[co.row] * degree[co.col])
        sim = sp.csr_matrix((values, (co.row, co.col)), shape=(n, n))
        if self.neighbors is not None:
            sim = _keep_top_per_row(sim, self.neighbors)
        self.sim = sim
        self.tiebreak = popularity_tiebreak(item_counts(self.index, encoded))

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` items by recency-weighted similarity to each history."""
        if self.sim is None or self.tiebreak is None:
            raise RuntimeError("ItemKNN.recommend called before fit")
        encoded = [self.index.encode(h) for h in histories]
        rows, cols, vals = [], [], []
        for r, items in enumerate(encoded):
            if not items:
                continue
            weights = self.recency ** np.arange(len(items) - 1, -1, -1, dtype=np.float64)
            rows.append(np.full(len(items), r))
            cols.append(np.asarray(items))
            vals.append(weights)
        if rows:
            weighted = sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(len(histories), len(self.index)),
            )  # duplicate entries (an item seen twice) are summed, as the formula says
            scores = np.asarray((weighted @ self.sim).todense())
        else:
            scores = np.zeros((len(histories), len(self.index)))
        return self.index.decode(top_k_excluding(scores + self.tiebreak, encoded, k))


def _keep_top_per_row(matrix: sp.csr_matrix, top: int) -> sp.csr_matrix:
    """Keep the `top` largest entries of each row: classic neighbourhood pruning, cuts noise and memory."""
    matrix = matrix.tocsr()
    indptr, data = matrix.indptr, matrix.data
    keep = np.zeros(len(data), dtype=bool)
    for r in range(matrix.shape[0]):
        start, end = indptr[r], indptr[r + 1]
        if end - start <= top:
            keep[start:end] = True
        else:
            best = np.argpartition(-data[start:end], top - 1)[:top]
            keep[start + best] = True
    coo = matrix.tocoo()
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape)
