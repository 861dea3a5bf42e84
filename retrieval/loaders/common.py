"""Helpers every loader shares: line-numbered readers, typed columns, image paths, item text.

Every reader keeps the 1-based line number of each row so that any problem found later, even in
a vectorised pass, can be reported as `FILE:LINE: what is wrong`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec.errors import GenrecError

FIX = "fix or remove that line"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^data:")
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class Rows:
    """The non-blank rows of a delimited text file, split into fields, with their line numbers."""

    path: Path
    header: list[str] | None
    fields: list[list[str]]
    lines: list[int]
    header_line: int = 0  # line of the header row (0 without one)

    def column(self, index: int) -> pd.Series:
        """Field `index` of every row, as a string Series."""
        return pd.Series([f[index] for f in self.fields], dtype=object)


def warn(message: str) -> None:
    """Print a yellow one-line warning on stderr (the run goes on)."""
    from rich.console import Console

    # soft_wrap keeps the message on one line however narrow the terminal (or log) is
    Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/] {message}", highlight=False)


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text; a missing file, a decoding error or an empty file is a GenrecError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GenrecError(f"{path}: file not found") from None
    except OSError as exc:
        raise GenrecError(f"{path}: cannot read ({exc.strerror})") from None
    if not raw.strip():
        raise GenrecError(f"{path}: empty file; expected data rows")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise GenrecError(f"{path}:{line}: not valid {encoding} text; save the file as {encoding}") from None


def read_rows(
    path: Path,
    sep: str,
    sep_name: str,
    n_fields: int | None = None,
    header: bool = False,
    encoding: str = "utf-8",
) -> Rows:
    """Split a delimited file into rows, checking that every row has the expected number of fields.

    With `header`, the first non-blank line is the header and fixes the field count.
    Blank lines are skipped (they carry no data); a wrong field count names file and line.
    """
    text = read_text(path, encoding)
    head: list[str] | None = None
    header_line = 0
    fields: list[list[str]] = []
    lines: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split(sep)
        if header and head is None:
            head = [p.strip() for p in parts]
            n_fields, header_line = len(head), number
            continue
        if n_fields is not None and len(parts) != n_fields:
            raise GenrecError(
                f"{path}:{number}: expected {n_fields} {sep_name}-separated fields, got {len(parts)}; {FIX}"
            )
        fields.append(parts)
        lines.append(number)
    if not fields:
        raise GenrecError(f"{path}: empty file; expected data rows{' after the header' if header else ''}")
    return Rows(path, head, fields, lines, header_line)


def read_csv(path: Path) -> Rows:
    """Read a CSV file with a header row (quoted fields may span lines); every row must match the header."""
    text = read_text(path, "utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    head: list[str] | None = None
    header_line = 0
    fields: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        for row in reader:
            number, start = start, reader.line_num + 1
            if not row or not any(cell.strip() for cell in row):
                continue
            if head is None:
                head, header_line = [cell.strip() for cell in row], number
                continue
            if len(row) != len(head):
                raise GenrecError(
                    f"{path}:{number}: expected {len(head)} comma-separated fields (as in the header), "
                    f"got {len(row)}; {FIX}"
                )
            fields.append(row)
            lines.append(number)
    except csv.Error as exc:
        raise GenrecError(f"{path}:{reader.line_num}: not valid CSV ({exc}); {FIX}") from None
    if not fields:
        raise GenrecError(f"{path}: empty file; expected a header row and data rows")
    return Rows(path, head, fields, lines, header_line)


def open_text(path: Path):
    """Open a text file for reading, transparently un-gzipping `.gz` files."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_jsonl(path: Path, progress: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line of a JSON Lines file (`.gz` allowed).

    A line that is not a JSON object is an error naming file and line; a file with no object is an error.
    """
    from tqdm import tqdm

    if not path.exists():
        raise GenrecError(f"{path}: file not found")
    seen = False
    with open_text(path) as handle:
        lines = tqdm(handle, desc=f"reading {path.name}", unit=" lines", disable=not progress, leave=False)
        try:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise GenrecError(f"{path}:{number}: not valid JSON ({exc.msg}); {FIX}") from None
                if not isinstance(obj, dict):
                    raise GenrecError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}; {FIX}")
                seen = True
                yield number, obj
        except UnicodeDecodeError:
            raise GenrecError(f"{path}: not valid UTF-8 text; save the file as UTF-8") from None
    if not seen:
        raise GenrecError(f"{path}: empty file; expected one JSON object per line")


def first_json_object(path: Path) -> dict[str, Any]:
    """The first JSON object of a JSON Lines file (used to detect its format)."""
    for _, obj in read_jsonl(path):
        return obj
    raise AssertionError("unreachable: read_jsonl raises on an empty file")


def to_numbers(
    values: pd.Series,
    lines: list[int] | np.ndarray,
    path: Path,
    field: str,
    kind: str = "int",
    allow_empty: bool = False,
) -> np.ndarray:
    """Parse a string column as numbers in one vectorised pass; the first bad cell names file and line.

    `kind` is "int" (int64) or "float" (float64). Empty cells become NaN when `allow_empty` (floats only).
    """
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    empty = text == ""
    bad = numbers.isna() & ~(empty & allow_empty)
    if kind == "int":
        # floats such as "881250949.0" (RecBole writes timestamps as floats) are fine when whole
        bad |= numbers.notna() & (numbers != np.floor(numbers))
    if bad.any():
        at = int(np.flatnonzero(bad.to_numpy())[0])
        noun = "an integer" if kind == "int" else "a number"
        raise GenrecError(f"{path}:{lines[at]}: field {field!r} is not {noun}: {text.iloc[at]!r}; {FIX}")
    if kind == "int":
        return numbers.to_numpy(dtype="float64").astype("int64")
    return numbers.to_numpy(dtype="float64")


def check_unique(ids: list[str], lines: list[int], path: Path, what: str = "item id") -> None:
    """Fail on the first repeated id, naming both lines."""
    first: dict[str, int] = {}
    for item_id, line in zip(ids, lines):
        if item_id in first:
            raise GenrecError(
                f"{path}:{line}: duplicate {what} {item_id!r} (first on line {first[item_id]}); "
                "every id must appear once"
            )
        first[item_id] = line


def check_nonempty(ids: list[str], lines: list[int], path: Path, what: str = "item id") -> None:
    """Fail on the first blank id."""
    for item_id, line in zip(ids, lines):
        if not item_id.strip():
            raise GenrecError(f"{path}:{line}: empty {what}; {FIX}")


def is_url(value: str) -> bool:
    """True for `scheme://...` and `data:` references, which are stored as they are."""
    return bool(_URL.match(value))


def resolve_image(value: Any, root: Path) -> str | None:
    """An item's image as an absolute path (relative ones resolved against `root`) or an unchanged URL.

    The image is not opened here: a missing file is the encoder's warning, not a loading error.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(value).strip()
    if not value:
        return None
    if is_url(value):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = root / path
    return str(path.resolve())


def image_root(configured: str | None, catalog_file: Path) -> Path:
    """Where relative image paths point: the configured image root, else the catalog file's folder."""
    return Path(configured).expanduser().resolve() if configured else catalog_file.resolve().parent


def year_from_title(title: str) -> int | None:
    """The year in a trailing "(1977)" of a MovieLens-style title, if any."""
    match = _TITLE_YEAR.search(title)
    return int(match.group(1)) if match else None


def parse_year(value: Any) -> int | None:
    """A four-digit year from a value such as 1977, "1977" or "1977.0"; None if there is none."""
    try:
        year = int(float(str(value).strip()))
    except ValueError:
        return None
    return year if 1000 <= year <= 9999 else None


def title_with_year(title: str, year: int | None) -> str:
    """`Star Wars` + 1977 -> `Star Wars (1977)`, as MovieLens writes titles (unchanged if already there)."""
    if year is None or year_from_title(title) is not None:
        return title
    return f"{title} ({year})"


def describe_movie(title: str, year: int | None, genres: list[str]) -> str:
    """A short natural description of a movie, the text that gets embedded.

    e.g. "Star Wars (1977). A 1977 Action, Adventure, Romance, Sci-Fi, War movie."
    """
    words = " ".join(w for w in (str(year) if year else "", ", ".join(genres)) if w)
    phrase = f"{words} movie" if words else "movie"
    article = "An" if phrase[0].lower() in "aeiou" or phrase.startswith(("8", "11", "18")) else "A"
    return f"{title.strip()}. {article} {phrase}."


def clean_text(value: Any) -> str:
    """Join a string or a list of strings into one whitespace-normalised string."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    return " ".join(str(value).split())
