"""Leave-one-out split: every user's last item is the test target, the one before it validation.

Users with fewer than three interactions cannot give a train, a validation and a test item, so they
stay in training only. A validation case's history is the user's training items; a test case's
history is the training items plus the validation item, so no model ever sees its own target.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd

from genrec.errors import GenrecError

Case = tuple[list[str], str]  # (history in time order, held-out next item)


@dataclass
class Split:
    """The three views of one leave-one-out split, all keyed by user id."""

    train: dict[str, list[str]]  # user -> training items in time order
    valid: dict[str, Case]  # user -> (train items, second-to-last item)
    test: dict[str, Case]  # user -> (train items + validation item, last item)

    def train_counts(self) -> Counter[str]:
        """How often each item occurs in training: for popularity and cold-start slices."""
        counts: Counter[str] = Counter()
        for items in self.train.values():
            counts.update(items)
        return counts


def split_sequences(sequences: dict[str, list[str]]) -> Split:
    """Leave-one-out over per-user item sequences already in time order."""
    train: dict[str, list[str]] = {}
    valid: dict[str, Case] = {}
    test: dict[str, Case] = {}
    for user, items in sequences.items():
        items = [str(i) for i in items]
        if len(items) < 3:
            train[user] = items
            continue
        train[user] = items[:-2]
        valid[user] = (items[:-2], items[-2])
        test[user] = (items[:-1], items[-1])
    return Split(train=train, valid=valid, test=test)


def leave_one_out(interactions: pd.DataFrame) -> Split:
    """Leave-one-out over a normalised interactions frame (user_id, item_id, timestamp, ...).

    The frame is sorted by user then time with a stable sort, so ties keep file order, exactly as
    `retrieval.catalog.make_interactions` orders them; an already-sorted frame is unchanged.
    """
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in interactions]
    if missing:
        raise GenrecError(f"interactions: missing column(s) {', '.join(missing)}; run `genrec index` to normalise them")
    frame = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    sequences = {
        str(user): group.astype(str).tolist() for user, group in frame.groupby("user_id", sort=False)["item_id"]
    }
    return split_sequences(sequences)
