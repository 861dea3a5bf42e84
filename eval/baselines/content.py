"""Content nearest-neighbour: items whose content embedding is closest to the user's recent items.

The user is the mean of the unit-normalised vectors of the last `last_n` history items; items are
ranked by cosine similarity to it. It needs no interactions beyond popularity for tie-breaks, so it
is the reference point for cold-start items that collaborative models cannot rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from eval.baselines.common import ItemIndex, item_counts, popularity_tiebreak, top_k_excluding
from genrec.errors import GenrecError


class ContentNN:
    """Cosine nearest neighbours of the mean of the last few history items' content vectors."""

    name = "content"

    def __init__(
        self,
        catalog: Sequence[str],
        vectors: Mapping[str, Sequence[float]] | np.ndarray,
        last_n: int = 5,
    ):
        self.index = ItemIndex(catalog)
        self.last_n = last_n
        if isinstance(vectors, Mapping):
            missing = [i for i in self.index.ids if i not in vectors]
            if missing:
                raise GenrecError(
                    f"content vectors: no embedding for {len(missing)} catalog item(s), e.g. {missing[0]!r}; "
                    "re-run `genrec index` so every item is encoded"
                )
            matrix = np.stack([np.asarray(vectors[i], dtype=np.float32) for i in self.index.ids])
        else:
            matrix = np.asarray(vectors, dtype=np.float32)
            if matrix.ndim != 2 or matrix.shape[0] != len(self.index):
                raise GenrecError(
                    f"content vectors: expected a matrix with one row per catalog item ({len(self.index)}), "
                    f"got shape {matrix.shape}"
                )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.unit = matrix / np.maximum(norms, 1e-12)
        self.tiebreak = np.zeros(len(self.index))

    def fit(self, train: dict[str, list[str]]) -> None:
        """Only learns popularity, used to order items the content cannot tell apart."""
        self.tiebreak = popularity_tiebreak(item_counts(self.index, self.index.encode_train(train)))

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` items by cosine to the mean vector of each history's last `last_n` items."""
        encoded = [self.index.encode(h) for h in histories]
        users = np.zeros((len(histories), self.unit.shape[1]), dtype=np.float32)
        for r, items in enumerate(encoded):
            if items:
                users[r] = self.unit[items[-self.last_n :]].mean(axis=0)
        users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
        scores = users @ self.unit.T
        return self.index.decode(top_k_excluding(scores + self.tiebreak, encoded, k))
