"""The normalised catalog every loader produces and every later stage reads.

items.parquet        item_id (str), title (str), text (str), attributes (JSON object as str), image (str|None)
interactions.parquet user_id (str), item_id (str), timestamp (int64), rating (float, NaN if unknown)

Interactions are sorted by user, then time (ties keep file order), so a user's rows are their history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from genrec.atomic import write_parquet
from genrec.errors import GenrecError
from genrec.run import RunPaths

ITEM_COLUMNS = ["item_id", "title", "text", "attributes", "image"]
# attribute keys read as the "kinds" of an item (genres, categories ...) by every room that talks
# about them: SFT tasks, explanations, the agent's genre filters, the faithfulness checker
KIND_KEYS = ("genres", "genre", "categories", "category", "class", "tags")
YEAR_KEYS = ("year", "release_year")  # attribute keys read as an item's year
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "rating"]


@dataclass
class Catalog:
    """A loaded dataset: the items and who interacted with them, when."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    has_text: bool = True  # False where items have no text of their own (amazon-seq: titles are "item <id>")

    def attributes(self, item_id: str) -> dict[str, Any]:
        """The decoded attribute mapping of one item."""
        row = self.items.loc[self.items["item_id"] == item_id]
        if row.empty:
            raise GenrecError(f"unknown item id {item_id!r}")
        return json.loads(row.iloc[0]["attributes"])


def make_items(records: list[dict[str, Any]], source: str) -> pd.DataFrame:
    """Build a validated items frame from dicts with keys item_id, title, text, attributes, image.

    `source` names the file the records came from, for error messages.
    """
    rows = []
    for r in records:
        attrs = r.get("attributes") or {}
        rows.append(
            {
                "item_id": str(r["item_id"]),
                "title": str(r.get("title") or ""),
                "text": str(r.get("text") or ""),
                "attributes": json.dumps(attrs, ensure_ascii=False, sort_keys=True),
                "image": (str(r["image"]) if r.get("image") not in (None, "") else None),
            }
        )
    items = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    return validate_items(items, source)


def make_interactions(records: list[dict[str, Any]] | pd.DataFrame, source: str) -> pd.DataFrame:
    """Build a validated, time-sorted interactions frame (user_id, item_id, timestamp, rating)."""
    frame = pd.DataFrame(records)
    if "rating" not in frame:
        frame["rating"] = np.nan
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in frame]
    if missing:
        raise GenrecError(f"{source}: interactions lack field(s) {', '.join(missing)}")
    frame = frame[INTERACTION_COLUMNS].copy()
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    frame["timestamp"] = frame["timestamp"].astype("int64")
    frame["rating"] = frame["rating"].astype("float64")
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return frame


def validate_items(items: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check the items frame: required columns, non-empty unique ids."""
    missing = [c for c in ITEM_COLUMNS if c not in items]
    if missing:
        raise GenrecError(f"{source}: items lack column(s) {', '.join(missing)}")
    empty = items["item_id"].astype(str).str.strip() == ""
    if empty.any():
        raise GenrecError(f"{source}: item row {int(np.flatnonzero(empty.to_numpy())[0]) + 1} has an empty item id")
    dup = items["item_id"].duplicated()
    if dup.any():
        raise GenrecError(f"{source}: duplicate item id {items['item_id'][dup].iloc[0]!r}")
    return items.reset_index(drop=True)


def restrict_to_catalog(catalog: Catalog, source: str) -> Catalog:
    """Drop interactions on items the catalog does not have (and say how many)."""
    known = set(catalog.items["item_id"])
    mask = catalog.interactions["item_id"].isin(known)
    if not mask.all():
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(
            f"[yellow]warning:[/] {source}: {int((~mask).sum())} interactions name items not in the catalog; dropped"
        )
    return Catalog(catalog.items, catalog.interactions[mask].reset_index(drop=True), catalog.has_text)


def save_catalog(catalog: Catalog, paths: RunPaths) -> None:
    """Write items.parquet and interactions.parquet into the run directory (atomically)."""
    write_parquet(paths.items, catalog.items)
    write_parquet(paths.interactions, catalog.interactions)


def load_catalog(paths: RunPaths) -> Catalog:
    """Read the normalised catalog of a run; errors say to run `genrec index` first."""
    paths.require(paths.items, f"genrec index --run {paths.root}")
    paths.require(paths.interactions, f"genrec index --run {paths.root}")
    items = pd.read_parquet(paths.items)
    inter = pd.read_parquet(paths.interactions)
    return Catalog(items, inter)


def image_source(value: Any) -> str | None:
    """An item's image path or URL, or None (parquet and pandas may hand back NaN for missing)."""
    return value if isinstance(value, str) and value else None


def item_caption(title: str, attributes: dict[str, Any], text: str = "", max_chars: int = 400) -> str:
    """A one-paragraph description of an item from its title, attributes and text.

    Used to encode items and as the target of the item -> caption task, so it only states facts
    the catalog holds.
    """
    parts = [title.strip()]
    for key in sorted(attributes):
        value = attributes[key]
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key}: {value}")
    caption = ". ".join(p for p in parts if p)
    if text and text.strip() and text.strip() != title.strip():
        caption = f"{caption}. {text.strip()}"
    return caption[:max_chars]
