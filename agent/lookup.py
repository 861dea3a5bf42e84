"""Find catalog items by what a user calls them: an id, an exact title, a title without its year,
a MovieLens-style inverted title ("Godfather, The"), or a near-miss spelling.

Semantic search would always return *something*; naming an item needs a stricter match, so that
"Zorblax 3000" is reported as missing instead of silently becoming the closest film. Words for a
kind or a time ("Drama", "the 1950s", "a family film") are never titles: the caller passes the
catalog's genre words as `reserved`, and such a name finds nothing instead of "A Family Thing".
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd
from rapidfuzz import fuzz, process

_YEAR = re.compile(r"\s*\((?:\d{4}|\d{4}\s*-\s*\d{0,4})\)\s*$")
_ARTICLES = ("the", "a", "an", "le", "la", "les", "il", "el", "das", "der", "die")
_INVERTED = re.compile(r"^(.*),\s*(" + "|".join(_ARTICLES) + r")$", re.IGNORECASE)
_NON_WORD = re.compile(r"[^\w]+")
_ID_TAG = re.compile(r"^(.*?)\s*\[\s*id\s*[:#]?\s*([^\]\s]+)\s*\]\s*$", re.IGNORECASE)
# words that go with a kind or a time in a request but never make a title on their own
_FILLER = frozenset(
    "a an the some any good great old older new newer classic film films movie movies picture pictures one ones "
    "something anything from of in era decade years year early late mid stuff kind type genre".split()
)
_TIME_WORD = re.compile(
    r"^(?:(?:1[89]|20)?\d0'?s|(?:1[89]|20)\d\d|twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties)$"
)
_ROMAN = {"2": "ii", "3": "iii", "4": "iv", "5": "v", "6": "vi", "7": "vii"}
MISSPELLING_SCORE = 85  # rapidfuzz ratio (0-100) at which a near-miss spelling names a title ("Star Wors")


def normalize_title(title: str) -> str:
    """Lower-case words of a title without its year, leading article or punctuation.

    "Godfather, The (1972)", "The Godfather" and "the godfather!" all give "godfather".
    """
    text = unicodedata.normalize("NFKC", title).strip()
    text = _YEAR.sub("", text).strip()
    inverted = _INVERTED.match(text)
    if inverted:
        text = inverted.group(1)
    words = _NON_WORD.sub(" ", text.lower()).split()
    if words and words[0] in _ARTICLES and len(words) > 1:
        words = words[1:]
    return " ".join(words)


def display_title(title: str) -> str:
    """A title as people say it: "Godfather, The (1972)" -> "The Godfather (1972)"."""
    year = _YEAR.search(title)
    core = _YEAR.sub("", title).strip()
    inverted = _INVERTED.match(core)
    if inverted:
        core = f"{inverted.group(2)} {inverted.group(1)}"
    return core + (f" {year.group(0).strip()}" if year else "")


@dataclass
class TitleIndex:
    """Normalised titles of a catalog, with popularity to break ties between remakes and sequels."""

    ids: set[str]
    by_norm: dict[str, list[str]]
    titles: dict[str, str]
    popularity: dict[str, int]
    by_subtitle: dict[str, list[str]] = field(default_factory=dict)  # "curse of michael myers" -> Halloween 6
    reserved: frozenset[str] = frozenset()  # words for kinds ("drama", "family"): never a title alone
    by_loose: dict[str, list[str]] = field(default_factory=dict)  # "godfather part ii" for "Godfather part 2"

    @classmethod
    def build(
        cls, items: pd.DataFrame, interactions: pd.DataFrame | None = None, reserved: set[str] | None = None
    ) -> TitleIndex:
        """Index the `item_id`/`title` columns of a catalog's items; `reserved`: words that name a kind."""
        by_norm: dict[str, list[str]] = defaultdict(list)
        by_subtitle: dict[str, list[str]] = defaultdict(list)
        titles: dict[str, str] = {}
        for item_id, title in zip(items["item_id"].astype(str), items["title"].astype(str)):
            titles[item_id] = title
            norm = normalize_title(title)
            if norm:
                by_norm[norm].append(item_id)
            _, colon, after = title.partition(":")
            subtitle = normalize_title(after) if colon else ""
            if len(subtitle.split()) >= 2:  # "Episode IV", not "II"
                by_subtitle[subtitle].append(item_id)
        popularity: dict[str, int] = {}
        if interactions is not None and len(interactions):
            popularity = interactions["item_id"].astype(str).value_counts().to_dict()
        by_loose: dict[str, list[str]] = defaultdict(list)
        for norm, ids in by_norm.items():
            by_loose[_loose(norm)].extend(ids)
        words = frozenset(w.lower() for w in reserved or ())
        return cls(set(titles), dict(by_norm), titles, popularity, dict(by_subtitle), words, dict(by_loose))

    def reserved_word(self, name: str) -> bool:
        """True if `name` only names a kind or a time ("Drama", "1950s", "a family film", "90s comedies")."""
        text = unicodedata.normalize("NFKC", name).lower()
        for phrase in sorted((w for w in self.reserved if " " in w), key=len, reverse=True):
            text = text.replace(phrase, " ")
        words = _NON_WORD.sub(" ", text.replace("'", "")).split()
        stems = {w[:-1] if w.endswith("s") else w for w in self.reserved} | self.reserved
        return bool(name.strip()) and all(
            w in _FILLER
            or _TIME_WORD.match(w)
            or w in stems
            or (w.endswith("s") and w[:-1] in stems)
            or (w.endswith("ies") and w[:-3] + "y" in stems)
            for w in words
        )

    def _best(self, ids: list[str]) -> str:
        return max(ids, key=lambda i: (self.popularity.get(i, 0), -len(self.titles[i]), i))

    def find(self, name: str) -> str | None:
        """The item id a user most likely means by `name`, or None when nothing in the catalog fits.

        Order: an item id; an exact normalised title (the most popular on ties, e.g. the 1977
        Star Wars over a re-release); a title the name is the whole start of ("Alien" does not
        match "Aliens", but "Star Wars" matches "Star Wars: Episode IV" when no exact title
        exists); the whole part after a title's colon ("The Curse of Michael Myers" for "Halloween:
        The Curse of Michael Myers", as a model splitting a list at colons passes it); the title
        without "and" and with roman numerals; a run of two or more whole words inside one title
        ("Holy Grail"); then a close spelling (rapidfuzz ratio >= 85). A name made only of words for
        a kind or a time finds nothing.
        """
        name = name.strip().strip("\"'“”‘’").strip()
        if not name:
            return None
        tagged = _ID_TAG.match(name)  # "Alien (1979) [id 183]", as answers write items
        if tagged:
            title, item = tagged.group(1).strip(), tagged.group(2)
            if item in self.ids and (not title or normalize_title(self.titles[item]) == normalize_title(title)):
                return item
            name = title or name  # a wrong id beside a real title: the title decides
        explicit = re.fullmatch(r"(?:id\s*[:#]?\s*|#)(\S+)", name, re.IGNORECASE)
        if explicit and explicit.group(1) in self.ids:
            return explicit.group(1)
        # A bare id counts unless a title is spelled the same way ("1984", "Seven").
        if name in self.ids and normalize_title(name) not in self.by_norm:
            return name
        norm = normalize_title(name)
        if not norm or self.reserved_word(name):
            return None
        if norm in self.by_norm:
            exact_with_year = [i for i in self.by_norm[norm] if self.titles[i].strip().lower() == name.lower()]
            return exact_with_year[0] if exact_with_year else self._best(self.by_norm[norm])
        prefixed = [i for key, ids in self.by_norm.items() if key.startswith(norm + " ") for i in ids]
        if prefixed and len(norm) >= 4:
            return self._best(prefixed)
        if norm in self.by_subtitle:
            return self._best(self.by_subtitle[norm])
        loose = _loose(norm)
        if loose in self.by_loose:  # "Godfather part 2", "Wallace and Gromit" without its subtitle
            return self._best(self.by_loose[loose])
        inside = [i for key, ids in self.by_loose.items() if f" {loose} " in f" {key} " for i in ids]
        if inside and (len(loose.split()) >= 2 or len(loose) >= 6):  # "the Holy Grail", "Strangelove"
            return self._best(inside)
        close = process.extractOne(norm, list(self.by_norm), scorer=fuzz.ratio, score_cutoff=MISSPELLING_SCORE)
        if close:  # a near-miss spelling of a whole title ("Star Wors", "Braveheat")
            return self._best(self.by_norm[close[0]])
        return None


def _loose(norm: str) -> str:
    """A normalised title without "and"/"&", with small numbers as roman numerals: the words people
    drop or write differently ("Wallace and Gromit", "Godfather part 2")."""
    return " ".join(_ROMAN.get(w, w) for w in norm.split() if w not in ("and", "the"))
