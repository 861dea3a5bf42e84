"""MovieLens-100K in GroupLens' original folder format (u.data, u.item, u.genre).

u.data  user id | item id | rating | timestamp, tab-separated
u.item  movie id | title | release date | video release date | IMDb URL | 19 genre flags, `|`-separated, Latin-1
u.genre genre name | flag index (optional: the standard 19 genres are assumed without it)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from genrec.errors import GenrecError
from retrieval.catalog import Catalog, make_interactions, make_items
from retrieval.loaders.common import (
    FIX,
    check_nonempty,
    check_unique,
    describe_movie,
    read_rows,
    to_numbers,
    year_from_title,
)

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
UNKNOWN_GENRE = "unknown"  # MovieLens' flag for "no genre known"; an item with it has no genres


def is_movielens_folder(path: Path) -> bool:
    """True if `path` is a folder holding GroupLens' u.data and u.item."""
    return path.is_dir() and (path / "u.data").is_file() and (path / "u.item").is_file()


def load_movielens(folder: Path) -> Catalog:
    """Load a GroupLens MovieLens-100K folder into the normalised catalog.

    Item ids are the MovieLens integer ids as strings; attributes are `genres` (names), `year`
    (from the title, else the release date), `release_date` (ISO), `imdb_url`.
    """
    genres = read_genres(folder / "u.genre")
    items = read_items(folder / "u.item", genres)
    interactions = read_ratings(folder / "u.data")
    return Catalog(items, interactions)


def read_genres(path: Path) -> list[str]:
    """Genre names in flag order, from u.genre (`name|index` lines); the standard list if absent."""
    if not path.exists():
        return list(GENRES)
    rows = read_rows(path, "|", "'|'", n_fields=2, encoding="latin-1")
    index = to_numbers(rows.column(1), rows.lines, path, "genre index")
    names = [""] * len(index)
    for name, i, line in zip(rows.column(0), index, rows.lines):
        if not 0 <= i < len(names) or names[i]:
            raise GenrecError(f"{path}:{line}: genre index {i} is out of range or repeated; {FIX}")
        names[i] = name.strip()
    return names


def read_items(path: Path, genres: list[str]) -> pd.DataFrame:
    """Parse u.item (Latin-1, `|`-separated, one flag per genre) into the items frame."""
    rows = read_rows(path, "|", "'|'", n_fields=5 + len(genres), encoding="latin-1")
    ids = [f[0].strip() for f in rows.fields]
    check_nonempty(ids, rows.lines, path)
    check_unique(ids, rows.lines, path)
    records = []
    for item_id, fields, line in zip(ids, rows.fields, rows.lines):
        title, release, video_release, url = (f.strip() for f in fields[1:5])
        flags = [f.strip() for f in fields[5:]]
        bad = next((f for f in flags if f not in ("0", "1")), None)
        if bad is not None:
            raise GenrecError(f"{path}:{line}: genre flags must be 0 or 1, got {bad!r}; {FIX}")
        names = [g for g, flag in zip(genres, flags) if flag == "1" and g != UNKNOWN_GENRE]
        release_date = parse_date(release, path, line)
        # the title's year is the film's; the release date is sometimes a later re-release (Taxi Driver: 1996)
        year = year_from_title(title) or (release_date.year if release_date else None)
        attributes = {
            "genres": names,
            "year": year,
            "release_date": release_date.date().isoformat() if release_date else None,
            "video_release_date": video_release or None,
            "imdb_url": url or None,
        }
        records.append(
            {
                "item_id": item_id,
                "title": title,
                "text": describe_movie(title, year, names),
                "attributes": {k: v for k, v in attributes.items() if v not in (None, "")},
                "image": None,
            }
        )
    return make_items(records, str(path))


def parse_date(value: str, path: Path, line: int) -> datetime | None:
    """A MovieLens date such as "01-Jan-1995" (None when blank)."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%d-%b-%Y")
    except ValueError:
        raise GenrecError(f"{path}:{line}: release date {value!r} is not like 01-Jan-1995; {FIX}") from None


def read_ratings(path: Path) -> pd.DataFrame:
    """Parse u.data (user, item, rating, timestamp; tab-separated integers) into the interactions frame."""
    rows = read_rows(path, "\t", "tab", n_fields=4)
    frame = pd.DataFrame(rows.fields, columns=["user_id", "item_id", "rating", "timestamp"])
    for column in ("user_id", "item_id"):
        frame[column] = frame[column].str.strip()
        check_nonempty(frame[column].tolist(), rows.lines, path, column.replace("_", " "))
    frame["rating"] = to_numbers(frame["rating"], rows.lines, path, "rating", kind="float")
    frame["timestamp"] = to_numbers(frame["timestamp"], rows.lines, path, "timestamp")
    return make_interactions(frame, str(path))
