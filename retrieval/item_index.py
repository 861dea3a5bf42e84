"""Dense integer positions for a catalog's item ids: what every model that scores the whole catalog indexes by."""

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
