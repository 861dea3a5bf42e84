"""genrec's generic catalog format: a JSONL or CSV item catalog plus an interactions CSV.

Documented in docs/formats.md. Items: `id` (or `item_id`), `title`, optional `text`, `attributes`
(a JSON object; in CSV also any extra column), optional `image` (a path, relative to the image root
or the catalog's folder, or a URL). Interactions: `user_id,item_id[,timestamp][,rating]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec.errors import GenrecError
from retrieval.catalog import INTERACTION_COLUMNS, Catalog, item_caption, make_interactions, make_items
from retrieval.loaders.common import (
    FIX,
    check_nonempty,
    check_unique,
    clean_text,
    image_root,
    read_csv,
    read_jsonl,
    resolve_image,
    to_numbers,
    warn,
)

ID_KEYS = ("id", "item_id")
CORE_KEYS = ("title", "text", "attributes", "image")


def load_generic(catalog: Path, interactions: Path | None, images: str | None = None) -> Catalog:
    """Load a generic JSONL/CSV catalog and its interactions CSV (none: an empty history, with a warning).

    `images` is the folder that relative image paths resolve against (default: the catalog's folder).
    """
    root = image_root(images, catalog)
    if catalog.suffix == ".csv":
        records, lines = csv_items(catalog)
    else:
        records, lines = jsonl_items(catalog)
    ids = [r["item_id"] for r in records]
    check_nonempty(ids, lines, catalog)
    check_unique(ids, lines, catalog)
    for record, line in zip(records, lines):
        if not record["title"]:
            raise GenrecError(f"{catalog}:{line}: item {record['item_id']!r} has no title; every item needs one")
        if not record["text"]:
            record["text"] = item_caption(record["title"], record["attributes"])
        record["image"] = resolve_image(record["image"], root)
    items = make_items(records, str(catalog))
    if interactions is None:
        warn(f"{catalog}: no interactions file given (data.interactions); the catalog has no user histories")
        history = make_interactions(pd.DataFrame(columns=INTERACTION_COLUMNS), str(catalog))
    else:
        history = read_interactions_csv(interactions)
    return Catalog(items, history)


def jsonl_items(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Item records of a JSONL catalog; keys beyond the core ones are merged into `attributes`."""
    records, lines = [], []
    for line, obj in read_jsonl(path):
        item_id = next((obj[k] for k in ID_KEYS if k in obj), None)
        if item_id is None:
            raise GenrecError(f"{path}:{line}: no 'id' key; every item needs an id")
        attributes = obj.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise GenrecError(f"{path}:{line}: 'attributes' must be a JSON object; {FIX}")
        extra = {k: v for k, v in obj.items() if k not in ID_KEYS + CORE_KEYS and v not in (None, "", [])}
        records.append(record(item_id, obj, {**extra, **attributes}))
        lines.append(line)
    return records, lines


def csv_items(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Item records of a CSV catalog; extra columns become attributes (numbers parsed, `a|b` -> a list)."""
    rows = read_csv(path)
    header = rows.header or []
    if "user_id" in header and "title" not in header:
        raise GenrecError(
            f"{path}:{rows.header_line}: this looks like an interactions file (user_id, no title); "
            "pass the item catalog as the dataset and this file as data.interactions (--interactions)"
        )
    id_key = next((k for k in ID_KEYS if k in header), None)
    if id_key is None:
        raise GenrecError(f"{path}:{rows.header_line}: no 'id' column in the header; see docs/formats.md")
    records = []
    for cells, line in zip(rows.fields, rows.lines):
        row = dict(zip(header, cells))
        attributes: dict[str, Any] = {}
        if row.get("attributes", "").strip():
            try:
                attributes = json.loads(row["attributes"])
            except json.JSONDecodeError as exc:
                raise GenrecError(f"{path}:{line}: 'attributes' is not valid JSON ({exc.msg}); {FIX}") from None
            if not isinstance(attributes, dict):
                raise GenrecError(f"{path}:{line}: 'attributes' must be a JSON object; {FIX}")
        extra = {k: cell_value(v) for k, v in row.items() if k not in ID_KEYS + CORE_KEYS and v.strip()}
        records.append(record(row[id_key], row, {**extra, **attributes}))
    return records, rows.lines


def record(item_id: Any, source: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    """One item record in the shape `make_items` takes."""
    return {
        "item_id": str(item_id).strip(),
        "title": clean_text(source.get("title")),
        "text": clean_text(source.get("text")),
        "attributes": attributes,
        "image": source.get("image"),
    }


def cell_value(cell: str) -> Any:
    """A CSV cell as an attribute value: an int or float when it is one, a list when `|`-separated."""
    cell = cell.strip()
    if "|" in cell:
        return [cell_value(part) for part in cell.split("|") if part.strip()]
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def read_interactions_csv(path: Path) -> pd.DataFrame:
    """Interactions from a CSV with columns user_id, item_id, optional timestamp and rating.

    Timestamps are integers (Unix seconds) or ISO 8601 dates; without the column, row order is time order.
    """
    rows = read_csv(path)
    header = rows.header or []
    missing = [c for c in ("user_id", "item_id") if c not in header]
    if missing:
        raise GenrecError(
            f"{path}:{rows.header_line}: header lacks {', '.join(missing)}; expected user_id,item_id,timestamp[,rating]"
        )
    frame = pd.DataFrame(rows.fields, columns=header)
    out = pd.DataFrame({"user_id": frame["user_id"].str.strip(), "item_id": frame["item_id"].str.strip()})
    check_nonempty(out["user_id"].tolist(), rows.lines, path, "user id")
    check_nonempty(out["item_id"].tolist(), rows.lines, path, "item id")
    if "timestamp" in header:
        out["timestamp"] = parse_timestamps(frame["timestamp"], rows.lines, path)
    else:
        out["timestamp"] = np.arange(len(out), dtype="int64")
    if "rating" in header:
        out["rating"] = to_numbers(frame["rating"], rows.lines, path, "rating", "float", allow_empty=True)
    return make_interactions(out, str(path))


def parse_timestamps(values: pd.Series, lines: list[int], path: Path) -> np.ndarray:
    """Unix seconds from integer cells, or from ISO 8601 dates when the column is not numeric."""
    text = values.str.strip()
    # the first cell decides, so that one bad cell is reported as such rather than switching modes
    if text.empty or pd.notna(pd.to_numeric(text.iloc[0], errors="coerce")):
        return to_numbers(text, lines, path, "timestamp")
    dates = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    if dates.isna().any():
        at = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise GenrecError(
            f"{path}:{lines[at]}: timestamp {text.iloc[at]!r} is neither Unix seconds nor an ISO 8601 date; {FIX}"
        )
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")
