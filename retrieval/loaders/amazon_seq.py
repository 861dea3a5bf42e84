"""The sequence text format of the Amazon review benchmarks (Beauty.txt, Sports_and_Outdoors.txt, ...).

One line per user: `user_id item_id item_id ...`, space-separated, items in time order. There are no
timestamps (a user's position in the sequence is used) and no item text (titles are `item <id>`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genrec.errors import GenrecError
from retrieval.catalog import Catalog, make_interactions, make_items
from retrieval.loaders.common import FIX, check_unique, read_text


def load_amazon_seq(path: Path) -> Catalog:
    """Load a `user item item ...` sequence file; the timestamp of an action is its position in the line."""
    users: list[str] = []
    lines: list[int] = []
    sequences: list[list[str]] = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise GenrecError(f"{path}:{number}: expected a user id followed by item ids, got 1 field; {FIX}")
        users.append(tokens[0])
        lines.append(number)
        sequences.append(tokens[1:])
    check_unique(users, lines, path, what="user id")
    lengths = np.fromiter((len(s) for s in sequences), dtype="int64", count=len(sequences))
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(np.array(users, dtype=object), lengths),
            "item_id": np.array([i for s in sequences for i in s], dtype=object),
            "timestamp": np.arange(int(lengths.sum()), dtype="int64") - starts,
        }
    )
    interactions = make_interactions(frame, str(path))
    ids = sorted(set(frame["item_id"]), key=natural_key)
    items = make_items([{"item_id": i, "title": f"item {i}", "text": f"item {i}"} for i in ids], str(path))
    return Catalog(items, interactions, has_text=False)


def natural_key(item_id: str) -> tuple[int, int | str]:
    """Sort numeric ids numerically (2 before 10), any others after them as text."""
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)
