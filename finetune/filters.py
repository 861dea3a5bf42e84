"""`where` metadata filters on catalog items, in Chroma's syntax, applied by narrowing the trie.

    {"genres": "Comedy"}                               list attributes match if they contain the value
    {"year": {"$gte": 1990}}                           $eq $ne $gt $gte $lt $lte $in $nin $contains
    {"$and": [{"genres": "Comedy"}, {"year": {"$lt": 2000}}]}     also $or

Keys are item attributes, plus `title` and `item_id`.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from typing import Any

import pandas as pd

from genrec.errors import GenrecError

_COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _match_value(actual: Any, op: str, expected: Any) -> bool:
    values = actual if isinstance(actual, list) else [actual]
    if op == "$eq":
        return expected in values
    if op == "$ne":
        return expected not in values
    if op == "$in":
        return any(v in expected for v in values)
    if op == "$nin":
        return not any(v in expected for v in values)
    if op == "$contains":
        return any(str(expected).lower() in str(v).lower() for v in values)
    if op in _COMPARE:
        try:
            return any(v is not None and _COMPARE[op](v, expected) for v in values)
        except TypeError:
            return False
    raise GenrecError(f"where: unknown operator {op!r} (use $eq $ne $gt $gte $lt $lte $in $nin $contains $and $or)")


def matches(record: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """True if `record` (an item's attributes, title and id) satisfies `where`."""
    for key, condition in where.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list):
                raise GenrecError(f"where: {key} takes a list of conditions")
            results = [matches(record, c) for c in condition]
            if not (all(results) if key == "$and" else any(results)):
                return False
            continue
        actual = record.get(key)
        if isinstance(condition, Mapping):
            if not all(_match_value(actual, op, value) for op, value in condition.items()):
                return False
        elif not _match_value(actual, "$eq", condition):
            return False
    return True


def filter_items(items: pd.DataFrame, where: Mapping[str, Any]) -> set[str]:
    """Ids of the items that satisfy `where`."""
    keep = set()
    for row in items.itertuples(index=False):
        record = {**(json.loads(row.attributes) if row.attributes else {}), "title": row.title, "item_id": row.item_id}
        if matches(record, where):
            keep.add(str(row.item_id))
    return keep
