"""RecBole atomic files: NAME.inter (+ NAME.item, NAME.user), for any RecBole dataset.

Each file is tab-separated with a header of `field:type` tokens, e.g.
`user_id:token  item_id:token  rating:float  timestamp:float`. Types: token (a string), token_seq
(space-separated strings), float, float_seq (space-separated floats). The .user file holds user
features, which the normalised catalog does not keep, so it is not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec.errors import GenrecError
from retrieval.catalog import Catalog, item_caption, make_interactions, make_items
from retrieval.loaders.common import (
    FIX,
    check_nonempty,
    check_unique,
    describe_movie,
    parse_year,
    read_rows,
    title_with_year,
    to_numbers,
    year_from_title,
)

TYPES = ("token", "token_seq", "float", "float_seq")
TITLE_FIELDS = ("movie_title", "title", "name", "item_name")
YEAR_FIELDS = ("release_year", "year")
GENRE_FIELDS = ("class", "genre", "genres")
UNKNOWN_GENRE = "unknown"  # RecBole's MovieLens files mark "no genre known" with it


@dataclass
class AtomicFile:
    """A parsed atomic file: field names, their types and the raw rows."""

    path: Path
    names: list[str]
    types: list[str]
    fields: list[list[str]]
    lines: list[int]
    header_line: int

    def column(self, name: str) -> pd.Series:
        """The raw string cells of one field."""
        i = self.names.index(name)
        return pd.Series([f[i] for f in self.fields], dtype=object)


def atomic_prefix(path: Path) -> Path | None:
    """The `DIR/NAME` prefix of the RecBole dataset that `path` points at, or None if it is not one.

    `path` may be a folder holding one NAME.inter (or one named after the folder), the prefix itself,
    or one of the atomic files.
    """
    if path.suffix in (".inter", ".item", ".user") and path.is_file():
        return path.with_suffix("")
    if path.with_name(path.name + ".inter").is_file():
        return path
    if path.is_dir():
        named = path / (path.name + ".inter")
        if named.is_file():
            return named.with_suffix("")
        inters = sorted(path.glob("*.inter"))
        if len(inters) == 1:
            return inters[0].with_suffix("")
        if len(inters) > 1:
            listed = ", ".join(p.name for p in inters)
            raise GenrecError(f"{path}: several RecBole datasets here ({listed}); pass DIR/NAME to pick one")
    return None


def load_recbole(prefix: Path) -> Catalog:
    """Load the RecBole dataset at `DIR/NAME` (NAME.inter, NAME.item if present) into the catalog.

    The usual fields are mapped: `movie_title`/`title` -> title, `release_year`/`year` -> attribute
    `year` (int), `class`/`genre` -> attribute `genres` (list); every other item field is kept as an
    attribute. Without a timestamp field, file order is the time order.
    """
    inter = read_atomic(prefix.with_name(prefix.name + ".inter"))
    item_file = prefix.with_name(prefix.name + ".item")
    item = read_atomic(item_file) if item_file.is_file() else None
    item_field = find_item_field(inter, item)
    user_field = find_user_field(inter, item_field)
    interactions = read_interactions(inter, user_field, item_field)
    if item is None:
        items = items_from_ids(pd.unique(interactions["item_id"]), str(inter.path))
    else:
        items = read_items(item, item_field)
    return Catalog(items, interactions)


def read_atomic(path: Path) -> AtomicFile:
    """Parse one atomic file, checking the `field:type` header and the field count of every row."""
    rows = read_rows(path, "\t", "tab", header=True)
    names, types = [], []
    at = rows.header_line
    for token in rows.header or []:
        name, _, kind = token.partition(":")
        if kind not in TYPES:
            raise GenrecError(
                f"{path}:{at}: header field {token!r} is not NAME:TYPE with TYPE one of {', '.join(TYPES)}; "
                "fix the header"
            )
        names.append(name)
        types.append(kind)
    if len(set(names)) != len(names):
        raise GenrecError(f"{path}:{at}: repeated field names in the header; fix the header")
    return AtomicFile(path, names, types, rows.fields, rows.lines, at)


def find_item_field(inter: AtomicFile, item: AtomicFile | None) -> str:
    """`item_id`, else the first token field the .item and .inter files share (e.g. Yelp's business_id)."""
    if "item_id" in inter.names and (item is None or "item_id" in item.names):
        return "item_id"
    if item is not None:
        for name, kind in zip(item.names, item.types):
            if kind == "token" and name in inter.names:
                return name
    raise GenrecError(
        f"{inter.path}:{inter.header_line}: no item_id field in the header; name the item id field item_id:token"
    )


def find_user_field(inter: AtomicFile, item_field: str) -> str:
    """`user_id`, else the first token field of .inter that is not the item field."""
    if "user_id" in inter.names:
        return "user_id"
    for name, kind in zip(inter.names, inter.types):
        if kind == "token" and name != item_field:
            return name
    raise GenrecError(
        f"{inter.path}:{inter.header_line}: no user_id field in the header; name the user id field user_id:token"
    )


def read_interactions(inter: AtomicFile, user_field: str, item_field: str) -> pd.DataFrame:
    """The interactions of an .inter file, with validated ids, ratings and timestamps."""
    frame = pd.DataFrame(
        {"user_id": inter.column(user_field).str.strip(), "item_id": inter.column(item_field).str.strip()}
    )
    check_nonempty(frame["user_id"].tolist(), inter.lines, inter.path, user_field)
    check_nonempty(frame["item_id"].tolist(), inter.lines, inter.path, item_field)
    if "rating" in inter.names:
        frame["rating"] = to_numbers(inter.column("rating"), inter.lines, inter.path, "rating", "float", True)
    if "timestamp" in inter.names:
        seconds = to_numbers(inter.column("timestamp"), inter.lines, inter.path, "timestamp", "float")
        frame["timestamp"] = np.floor(seconds).astype("int64")
    else:
        frame["timestamp"] = np.arange(len(frame), dtype="int64")
    return make_interactions(frame, str(inter.path))


def read_items(item: AtomicFile, item_field: str) -> pd.DataFrame:
    """The items of an .item file: mapped title, year and genres, every other field as an attribute."""
    path, names = item.path, item.names
    id_index = names.index(item_field)
    ids = [f[id_index].strip() for f in item.fields]
    check_nonempty(ids, item.lines, path)
    check_unique(ids, item.lines, path)
    title_field = next((n for n in TITLE_FIELDS if n in names), None)
    year_field = next((n for n in YEAR_FIELDS if n in names), None)
    genre_field = next((n for n in GENRE_FIELDS if n in names), None)
    records = []
    for item_id, fields, line in zip(ids, item.fields, item.lines):
        attributes: dict[str, Any] = {}
        for name, kind, cell in zip(names, item.types, fields):
            if name in (item_field, title_field, year_field, genre_field):
                continue
            value = typed_value(cell, kind, path, line, name)
            if value not in (None, "", []):
                attributes[name] = value
        raw_title = " ".join(fields[names.index(title_field)].split()) if title_field else ""
        year = parse_year(fields[names.index(year_field)]) if year_field else None
        year = year or year_from_title(raw_title)  # RecBole's ml-100k has a few broken years ("V")
        if year is not None:
            attributes["year"] = year
        genres: list[str] = []
        if genre_field:
            genres = [g for g in fields[names.index(genre_field)].split() if g != UNKNOWN_GENRE]
            attributes["genres"] = genres
        title = title_with_year(raw_title, year) if raw_title else f"item {item_id}"
        if title_field == "movie_title":
            text = describe_movie(title, year, genres)
        else:
            text = item_caption(title, attributes)
        records.append({"item_id": item_id, "title": title, "text": text, "attributes": attributes, "image": None})
    return make_items(records, str(path))


def typed_value(cell: str, kind: str, path: Path, line: int, field: str) -> Any:
    """Convert one cell by its RecBole type (floats checked, naming file, line and field)."""
    cell = cell.strip()
    if kind == "token":
        return cell
    if kind == "token_seq":
        return cell.split()
    try:
        if kind == "float":
            return float(cell) if cell else None
        return [float(v) for v in cell.split()]
    except ValueError:
        raise GenrecError(f"{path}:{line}: field {field!r} ({kind}) is not numeric: {cell!r}; {FIX}") from None


def items_from_ids(ids: np.ndarray, source: str) -> pd.DataFrame:
    """Bare items (title `item <id>`) for datasets that only have interactions."""
    return make_items([{"item_id": i, "title": f"item {i}", "text": f"item {i}"} for i in ids], source)
