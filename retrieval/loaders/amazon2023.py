"""Amazon Reviews 2023 JSONL: an item metadata file plus a reviews file (either may be `.jsonl.gz`).

meta lines:    parent_asin, title, features [..], description [..], categories [..], main_category,
               store, price, average_rating, rating_number, details {..}, images [{large, hi_res, thumb, variant}]
review lines:  user_id, parent_asin, timestamp (milliseconds), rating, ...
Items are keyed by `parent_asin`; review timestamps are stored in seconds like every other format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from genrec.errors import GenrecError
from retrieval.catalog import INTERACTION_COLUMNS, Catalog, make_interactions, make_items
from retrieval.loaders.common import (
    check_nonempty,
    check_unique,
    clean_text,
    image_root,
    read_jsonl,
    resolve_image,
    to_numbers,
    warn,
)

IMAGE_SIZES = ("large", "hi_res", "thumb")
MAX_TEXT_CHARS = 1500  # text encoders truncate far below this; longer text only costs time
PROGRESS_BYTES = 20_000_000  # show a progress bar when reading files larger than this


def is_amazon2023_meta(first: dict[str, Any]) -> bool:
    """True if a JSONL file's first object looks like Amazon Reviews 2023 (it has `parent_asin`)."""
    return "parent_asin" in first


def load_amazon2023(meta: Path, reviews: Path | None, images: str | None = None) -> Catalog:
    """Load Amazon Reviews 2023 item metadata and reviews (none: an empty history, with a warning)."""
    root = image_root(images, meta)
    records, lines = [], []
    for line, obj in read_jsonl(meta, progress=meta.stat().st_size > PROGRESS_BYTES):
        if "user_id" in obj:  # review lines have one, item metadata lines never do
            raise GenrecError(
                f"{meta}:{line}: this is a reviews file; pass the item metadata file as the dataset "
                "and this one as data.reviews (--reviews)"
            )
        records.append(item_record(obj, root))
        lines.append(line)
    ids = [r["item_id"] for r in records]
    check_nonempty(ids, lines, meta, "parent_asin")
    check_unique(ids, lines, meta, "parent_asin")
    items = make_items(records, str(meta))
    if reviews is None:
        warn(f"{meta}: no reviews file given (data.reviews); the catalog has no user histories")
        history = make_interactions(pd.DataFrame(columns=INTERACTION_COLUMNS), str(meta))
    else:
        history = read_reviews(reviews)
    return Catalog(items, history)


def item_record(obj: dict[str, Any], root: Path) -> dict[str, Any]:
    """One item from a metadata line: title, a descriptive text, filterable attributes, the main image."""
    item_id = str(obj.get("parent_asin") or "").strip()
    title = clean_text(obj.get("title")) or f"item {item_id}"
    categories = [clean_text(c) for c in obj.get("categories") or [] if clean_text(c)]
    attributes = {
        "store": clean_text(obj.get("store")) or None,
        "main_category": clean_text(obj.get("main_category")) or None,
        "categories": categories or None,
        "price": parse_price(obj.get("price")),
        "average_rating": number_or_none(obj.get("average_rating")),
        "rating_number": number_or_none(obj.get("rating_number")),
        "details": obj.get("details") or None,
    }
    attributes = {k: v for k, v in attributes.items() if v is not None}
    parts = [
        title,
        f"Category: {' > '.join(categories)}" if categories else "",
        f"Brand: {attributes['store']}" if "store" in attributes else "",
        clean_text(obj.get("features")),
        clean_text(obj.get("description")),
    ]
    text = ". ".join(p.rstrip(".") for p in parts if p) + "."
    return {
        "item_id": item_id,
        "title": title,
        "text": text[:MAX_TEXT_CHARS],
        "attributes": attributes,
        "image": resolve_image(main_image(obj.get("images")), root),
    }


def main_image(images: Any) -> str | None:
    """The best image reference: the MAIN variant (else the first), large before hi_res before thumb.

    Accepts the raw list-of-dicts form and the dict-of-lists form of the Hugging Face viewer.
    """
    if isinstance(images, dict):
        images = [dict(zip(images, values)) for values in zip(*images.values())]
    if not isinstance(images, list) or not images:
        return None
    images = [i for i in images if isinstance(i, dict)]
    images.sort(key=lambda i: i.get("variant") != "MAIN")  # stable: keeps file order otherwise
    for image in images:
        for size in IMAGE_SIZES:
            if image.get(size):
                return str(image[size])
    return None


def parse_price(value: Any) -> float | None:
    """A price as a float ("$12.99", 12.99); None for missing or unparsable ("None", "from 5 to 9")."""
    if isinstance(value, str):
        value = value.strip().lstrip("$").replace(",", "")
    return number_or_none(value)


def number_or_none(value: Any) -> float | None:
    """`value` as a float, or None when it is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is not a value


def read_reviews(path: Path) -> pd.DataFrame:
    """Interactions from a reviews JSONL: user_id, parent_asin (or asin), timestamp in ms, rating."""
    users, items, stamps, ratings, lines = [], [], [], [], []
    for line, obj in read_jsonl(path, progress=path.stat().st_size > PROGRESS_BYTES):
        for key in ("user_id", "timestamp"):
            if key not in obj:
                raise GenrecError(f"{path}:{line}: review has no {key!r}; fix or remove that line")
        users.append(str(obj["user_id"]).strip())
        items.append(str(obj.get("parent_asin") or obj.get("asin") or "").strip())
        stamps.append(str(obj["timestamp"]))
        ratings.append("" if obj.get("rating") is None else str(obj["rating"]))
        lines.append(line)
    check_nonempty(users, lines, path, "user_id")
    check_nonempty(items, lines, path, "parent_asin")
    millis = to_numbers(pd.Series(stamps, dtype=object), lines, path, "timestamp")
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": millis // 1000,
            "rating": to_numbers(pd.Series(ratings, dtype=object), lines, path, "rating", "float", True),
        }
    )
    return make_interactions(frame, str(path))
