"""Most-popular baseline: the items with the most training interactions, minus the user's history."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eval.baselines.common import ItemIndex, item_counts


class Popularity:
    """Ranks the whole catalog by training interaction count (ties: catalog order)."""

    name = "popularity"

    def __init__(self, catalog: Sequence[str]):
        self.index = ItemIndex(catalog)
        self.order: np.ndarray | None = None

    def fit(self, train: dict[str, list[str]]) -> None:
        """Count interactions per item; unseen catalog items rank last."""
        counts = item_counts(self.index, self.index.encode_train(train))
        # stable sort keeps catalog order among equally popular items, so results are reproducible
        self.order = np.argsort(-counts, kind="stable")

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """The `k` most popular items not in each history."""
        if self.order is None:
            raise RuntimeError("Popularity.recommend called before fit")
        out = []
        for history in histories:
            seen = set(self.index.encode(history))
            picks = []
            for j in self.order:
                if j not in seen:
                    picks.append(self.index.ids[j])
                    if len(picks) == k:
                        break
            out.append(picks)
        return out
