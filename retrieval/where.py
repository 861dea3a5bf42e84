"""The one `where` filter language, for the vector store and for the recommender alike.

    {"genre": "Comedy"}                                 a list attribute matches if it contains the value
    {"year": {"$gte": 1990}}                            $eq $ne $gt $gte $lt $lte $in $nin $contains
    {"$and": [{"genres": "Comedy"}, {"year": {"$lt": 2000}}]}    also $or

Keys are `title` and the catalog's attribute names; a key may also name an attribute by its
singular (`genre` for `genres`). An unknown key or operator is a one-line error naming the valid
ones. `compile_where` checks a filter once; the result both matches item records in Python (the
recommender narrows its trie with `filter_items`) and translates to Chroma's syntax (`to_chroma`),
so a filter can never mean one thing in search and another in recommendations.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from genrec.errors import GenrecError

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains")
_COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


@dataclass(frozen=True)
class Fields:
    """The filterable fields of a catalog: every key, and those whose values are lists."""

    keys: frozenset[str]
    list_keys: frozenset[str]

    def resolve(self, key: str) -> str:
        """The field a filter key names (`genre` -> `genres`), or a one-line error."""
        for name in (key, f"{key}s"):
            if name in self.keys:
                return name
        raise GenrecError(f"where: unknown field {key!r}; known fields: {', '.join(sorted(self.keys))}")


def catalog_fields(items: pd.DataFrame) -> Fields:
    """The fields of an items frame (items.parquet): `title` and every attribute key."""
    keys, list_keys = {"title"}, set()
    for raw in items["attributes"]:
        for key, value in (json.loads(raw) if raw else {}).items():
            keys.add(key)
            if isinstance(value, list):
                list_keys.add(key)
    return Fields(frozenset(keys), frozenset(list_keys))


@dataclass(frozen=True)
class Where:
    """A checked filter: conditions on resolved field names, combined with $and/$or."""

    tree: dict[str, Any]  # {"$and"|"$or": [Where.tree ...]} or {field: {op: value}}
    fields: Fields

    def matches(self, record: Mapping[str, Any]) -> bool:
        """True if `record` (an item's attributes and title) satisfies the filter."""
        return _matches(self.tree, record)

    def to_chroma(self) -> dict[str, Any]:
        """The filter in Chroma's syntax (list fields use $contains / $not_contains)."""
        return _to_chroma(self.tree, self.fields)


def compile_where(where: Mapping[str, Any] | None, fields: Fields) -> Where | None:
    """Check `where` against `fields`; None for an empty filter. Errors name the key or operator."""
    if not where:
        return None
    if not isinstance(where, Mapping):
        raise GenrecError('where: expected a JSON object such as {"genre": "Comedy"}')
    return Where(_compile(where, fields), fields)


def _compile(where: Mapping[str, Any], fields: Fields) -> dict[str, Any]:
    clauses = []
    for key, cond in where.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond or not all(isinstance(c, Mapping) for c in cond):
                raise GenrecError(f"where: {key} takes a non-empty list of filters")
            clauses.append({key: [_compile(c, fields) for c in cond]})
            continue
        field = fields.resolve(key)
        ops = dict(cond) if isinstance(cond, Mapping) else {"$eq": cond}
        for op, value in ops.items():
            if op not in OPERATORS:
                raise GenrecError(f"where: unknown operator {op!r} on {key!r}; use {' '.join(OPERATORS)} $and $or")
            if op in ("$in", "$nin") and not isinstance(value, list):
                raise GenrecError(f"where: {op} on {key!r} takes a list")
        clauses.append({field: ops})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


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
    try:
        return any(v is not None and _COMPARE[op](v, expected) for v in values)
    except TypeError:
        return False


def _matches(tree: dict[str, Any], record: Mapping[str, Any]) -> bool:
    for key, cond in tree.items():
        if key in ("$and", "$or"):
            results = [_matches(c, record) for c in cond]
            if not (all(results) if key == "$and" else any(results)):
                return False
        elif not all(_match_value(record.get(key), op, value) for op, value in cond.items()):
            return False
    return True


def _to_chroma(tree: dict[str, Any], fields: Fields) -> dict[str, Any]:
    clauses = []
    for key, cond in tree.items():
        if key in ("$and", "$or"):
            clauses.append({key: [_to_chroma(c, fields) for c in cond]})
            continue
        for op, value in cond.items():
            if key not in fields.list_keys:
                clauses.append({key: {op: value}})
            elif op in ("$eq", "$contains"):
                clauses.append({key: {"$contains": value}})
            elif op == "$ne":
                clauses.append({key: {"$not_contains": value}})
            elif op in ("$in", "$nin"):
                word = "$contains" if op == "$in" else "$not_contains"
                parts = [{key: {word: v}} for v in value]
                clauses.append(parts[0] if len(parts) == 1 else {("$or" if op == "$in" else "$and"): parts})
            else:
                raise GenrecError(f"where: {op} does not apply to the list field {key!r}")
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def filter_items(items: pd.DataFrame, where: Where | None) -> set[str] | None:
    """Ids of the items that satisfy `where` (None when there is no filter: every item)."""
    if where is None:
        return None
    keep = set()
    for row in items.itertuples(index=False):
        record = {**(json.loads(row.attributes) if row.attributes else {}), "title": row.title}
        if where.matches(record):
            keep.add(str(row.item_id))
    return keep
