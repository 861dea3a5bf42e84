"""The agent's tools: typed plain functions over one run, usable without the graph, each declared once.

Each tool takes an `AgentContext` (the run's searcher, catalog, title index and optional models)
as its first argument and returns a JSON-ready dict whose `items` are catalog items: the only
items the agent may ever name. A tool's signature is its only declaration:

- the parameters between `ctx` and `*` are what a user can ask for, typed and bounded (their
  docstring lines describe them); `request_schema` turns them into the pydantic model that the chat
  model's binding, the rule planner's calls and the HTTP API's `/tools` all use, with this catalog's
  genres as an enum;
- the keyword-only parameters are what the agent fills in from the conversation (the catalog
  user, the items already shown or seen, the list length), never the model.

    ctx = AgentContext.open("runs/ml100k", ranker=open_ranker("runs/ml100k")[0])
    recommend(ctx, liked=["Star Wars", "Alien"], genres=["Comedy"], released_before=1990, k=5)["items"]
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import pandas as pd
from pydantic import BaseModel, Field, StringConstraints, ValidationError, create_model

from agent.lookup import TitleIndex
from genrec.errors import GenrecError
from genrec.run import RunPaths
from inference.ranking import Ranker
from retrieval.catalog import KIND_KEYS, YEAR_KEYS
from retrieval.search import Hit, Searcher
from retrieval.where import compile_where, filter_items

MAX_K = 20
MAX_GENRES = 3  # a list of every genre is a small model copying, not a user asking

# What a user can ask for, typed once. Lengths are bounded: under constrained decoding an unbounded
# list or string let a small model loop until its token limit.
Title = Annotated[str, StringConstraints(min_length=1, max_length=120)]
Titles = Annotated[list[Title], Field(max_length=20)]
Genres = Annotated[list[Annotated[str, StringConstraints(max_length=40)]], Field(max_length=MAX_GENRES)]
Year = Annotated[int, Field(ge=1000, le=2999)]
Decade = Annotated[str, StringConstraints(pattern=r"^[12][0-9]{2}0s$")]
Query = Annotated[str, StringConstraints(max_length=300)]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ItemExplainer(Protocol):
    """An instruction model explaining why an item suits someone who liked `liked` (grounded or replaced)."""

    def __call__(self, item_id: str, liked: Sequence[str]) -> Any: ...


@dataclass
class AgentContext:
    """Everything the tools need from one run; built once per process and shared by conversations."""

    paths: RunPaths
    searcher: Searcher
    interactions: pd.DataFrame
    titles: TitleIndex
    genre_key: str | None
    genres: dict[str, str]  # lower-case genre -> the catalog's spelling
    ranker: Ranker | None = None  # the served ranking (inference.ranking); None when the run has no trained model
    explainer: ItemExplainer | None = None  # writes the `explain` tool's text (see agent.explainer)
    lock: threading.RLock = field(default_factory=threading.RLock)
    year_key: str | None = None
    _items_seen: Any = field(default=None, repr=False)  # the searcher's item table the titles were built from

    def refresh(self) -> None:
        """Take the catalog of this moment: items added or retired by `genrec items` since the last
        turn get (or keep) their titles and genres; the searcher and the ranker check it themselves."""
        self.searcher.refresh()
        items = self.searcher.items
        if self._items_seen is None:
            self._items_seen = items
        if items is self._items_seen:
            return
        with self.lock:
            genre_key, genres = catalog_genres(items)
            self.titles = TitleIndex.build(items, self.interactions, reserved=_reserved_words(genres))
            self.genre_key, self.genres, self._items_seen = genre_key, genres, items
            update = getattr(self.explainer, "update", None)
            if update is not None:
                update(items)

    @classmethod
    def open(cls, run: str | Path, ranker: Ranker | None = None) -> AgentContext:
        """Open an indexed run: its Chroma store and encoders, its items and interactions."""
        searcher = Searcher.open(run)
        paths = searcher.paths
        interactions = (
            pd.read_parquet(paths.interactions)
            if paths.interactions.exists()
            else pd.DataFrame(columns=["user_id", "item_id", "timestamp", "rating"])
        )
        items = searcher.items
        genre_key, genres = catalog_genres(items)
        year_key = next((k for k in YEAR_KEYS if k in searcher.fields.keys), None)
        titles = TitleIndex.build(items, interactions, reserved=_reserved_words(genres))
        ctx = cls(paths, searcher, interactions, titles, genre_key, genres, ranker, year_key=year_key)
        ctx._items_seen = items
        return ctx

    def card(self, item_id: str, score: float = 0.0, explanation: str = "") -> dict[str, Any]:
        """The JSON form of a catalog item as every tool returns it."""
        hit = self.searcher.hit(item_id, score)
        return {
            "item_id": hit.item_id,
            "title": hit.title,
            "attributes": hit.attributes,
            "image": hit.image,
            "score": round(float(score), 4),
            "explanation": explanation,
        }

    def item_genres(self, item_id: str) -> list[str]:
        """The genres (or categories) of a catalog item."""
        if self.genre_key is None:
            return []
        return [str(g) for g in _as_list(self.searcher.hit(item_id).attributes.get(self.genre_key))]

    def known_genres(self, names: Sequence[str] | None) -> tuple[list[str], list[str]]:
        """Split genre names into the catalog's spelling of known ones and the unknown ones."""
        from agent.planner import genre_mentions

        known, unknown = [], []
        for name in names or []:
            match = self.genres.get(str(name).strip().lower())
            if match is None:  # "funny" -> Comedy, "science fiction" -> Sci-Fi
                said, _ = genre_mentions(str(name), self.genres)
                match = said[0] if len(said) == 1 else None
            (known.append(match) if match else unknown.append(str(name)))
        return list(dict.fromkeys(known)), unknown

    @property
    def has_years(self) -> bool:
        """True if the catalog's items have a year attribute (year filters then apply)."""
        return self.year_key is not None

    def item_year(self, item_id: str) -> int | None:
        """An item's year, when the catalog records one."""
        value = self.searcher.hit(item_id).attributes.get(self.year_key or "year")
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    def resolve(self, names: Sequence[str] | None) -> tuple[list[str], list[str]]:
        """Item ids of `names` (titles or ids) that the catalog has, and the names it does not."""
        found, unknown = [], []
        for name in names or []:
            item = self.titles.find(str(name))
            (found.append(item) if item is not None else unknown.append(str(name)))
        return list(dict.fromkeys(found)), unknown

    def users_of_both(self, a: str, b: str) -> int:
        """How many catalog users interacted with both items: the collaborative fact an explanation
        may cite when two items share no genre."""
        items = self.interactions["item_id"].astype(str)
        users = self.interactions["user_id"].astype(str)
        return len(set(users[items == str(a)]) & set(users[items == str(b)]))

    def user_items(self, user_id: str, n: int) -> list[str]:
        """The last `n` items of a catalog user, oldest first."""
        rows = self.interactions[self.interactions["user_id"].astype(str) == str(user_id)]
        return rows["item_id"].astype(str).tolist()[-n:]


def catalog_genres(items: pd.DataFrame) -> tuple[str | None, dict[str, str]]:
    """The attribute that holds the items' kinds, and its values (lower case -> the catalog's spelling)."""
    attrs = [json.loads(a) for a in items["attributes"]]
    for key in KIND_KEYS:  # the attribute names every room reads as an item's kinds
        values = {v for a in attrs for v in _as_list(a.get(key))}
        if values:
            return key, {str(v).lower(): str(v) for v in values}
    return None, {}


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _reserved_words(genres: dict[str, str]) -> set[str]:
    """Words that name a kind or a time, never a title: the catalog's genres and the lexicon's words for them."""
    from agent.planner import LEXICON

    words = set(genres)
    for genre, said in LEXICON.items():
        if genre.lower() in genres:
            words.update(said)
    return words


def _clip_k(k: int) -> int:
    return max(1, min(int(k), MAX_K))


# ----------------------------------------------------------------------------- what a request asks for


@dataclass
class Request:
    """A request's constraints, resolved against the catalog: the genres wanted (all of them) and
    unwanted, and an inclusive year range."""

    genres: list[str] = field(default_factory=list)
    exclude_genres: list[str] = field(default_factory=list)
    year_min: int | None = None
    year_max: int | None = None
    unknown_genres: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # a `same_decade_as` title the catalog lacks
    anchors: list[str] = field(default_factory=list)  # the item a `same_decade_as` names (not itself a pick)

    def as_dict(self) -> dict[str, Any]:
        """The request as tool results and memory keep it."""
        return {
            "genres": self.genres,
            "exclude_genres": self.exclude_genres,
            "year_min": self.year_min,
            "year_max": self.year_max,
        }

    def where(self, ctx: AgentContext) -> dict[str, Any] | None:
        """The request in `retrieval.where`'s language: the one filter of the store and the recommender."""
        parts: list[dict[str, Any]] = []
        if ctx.genre_key is not None:
            parts += [{ctx.genre_key: g} for g in self.genres]
            if self.exclude_genres:
                parts.append({ctx.genre_key: {"$nin": self.exclude_genres}})
        if ctx.year_key is not None:
            if self.year_min is not None:
                parts.append({ctx.year_key: {"$gte": int(self.year_min)}})
            if self.year_max is not None:
                parts.append({ctx.year_key: {"$lte": int(self.year_max)}})
        return None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}

    def describe(self) -> str:
        """The request in words: "Comedy, not Romance, from 1990 to 1999"."""
        said = []
        if self.genres:
            said.append(" and ".join(self.genres))
        if self.exclude_genres:
            said.append("not " + " or ".join(self.exclude_genres))
        lo, hi = self.year_min, self.year_max
        if lo is not None and hi is not None:
            said.append(f"from {lo}" if lo == hi else f"from {lo} to {hi}")
        elif lo is not None:
            said.append(f"from {lo} or later")
        elif hi is not None:
            said.append(f"from {hi} or earlier")
        return ", ".join(said)

    def breaks(self, ctx: AgentContext, item_id: str) -> list[str]:
        """What an item breaks of this request, in words (empty when it fits)."""
        why = []
        genres = set(ctx.item_genres(item_id))
        missing = [g for g in self.genres if g not in genres]
        if missing:
            why.append(f"is not {', '.join(missing)}")
        unwanted = [g for g in self.exclude_genres if g in genres]
        if unwanted:
            why.append(f"is {', '.join(unwanted)}")
        year = ctx.item_year(item_id) if (self.year_min is not None or self.year_max is not None) else None
        if (self.year_min is not None or self.year_max is not None) and (
            year is None
            or (self.year_min is not None and year < self.year_min)
            or (self.year_max is not None and year > self.year_max)
        ):
            why.append(f"is from {year}" if year is not None else "has no year")
        return why


def decade_range(decade: str | int) -> tuple[int, int]:
    """ "1980s" (or 1980, "80s") -> (1980, 1989)."""
    digits = re.sub(r"\D", "", str(decade))
    start = int(digits) if len(digits) == 4 else 1900 + int(digits[:2] or 0)
    start -= start % 10
    return start, start + 9


def make_request(
    ctx: AgentContext,
    genres: Sequence[str] | None = None,
    exclude_genres: Sequence[str] | None = None,
    released_after: int | None = None,
    released_before: int | None = None,
    decade: str | None = None,
    same_decade_as: str | None = None,
) -> Request:
    """A request from a tool's arguments: genres in the catalog's spelling, the year bounds as one
    inclusive range ("before 1960" is up to 1959; every bound given applies)."""
    wanted, unknown_genres = ctx.known_genres(genres)
    avoid, _ = ctx.known_genres(exclude_genres)
    avoid = [g for g in avoid if g not in wanted]  # a small model fills exclude_genres with a copy of genres
    request = Request(wanted, avoid, unknown_genres=unknown_genres)
    bounds: list[tuple[str, int | None, int | None]] = []
    if released_after is not None:
        bounds.append((f"released_after={released_after}", int(released_after) + 1, None))
    if released_before is not None:
        bounds.append((f"released_before={released_before}", None, int(released_before) - 1))
    if decade:
        bounds.append((f"decade={decade}", *decade_range(decade)))
    if same_decade_as:
        item = ctx.titles.find(same_decade_as)
        year = ctx.item_year(item) if item is not None else None
        if year is None:
            request.unknown.append(same_decade_as)
        else:
            low, high = decade_range(year)  # named by its decade: a title here would be redacted from a reply
            bounds.append((f"same_decade_as (the {low}s)", low, high))
            request.anchors.append(item)
    if ctx.has_years:
        lows = [lo for _, lo, _ in bounds if lo is not None]
        highs = [hi for _, _, hi in bounds if hi is not None]
        request.year_min = max(lows) if lows else None
        request.year_max = min(highs) if highs else None
        if request.year_min is not None and request.year_max is not None and request.year_min > request.year_max:
            # "the same decade as Annie Hall" written as decade=1980s and same_decade_as=Annie Hall:
            # no year fits both; the model is told which arguments clash, and plans again
            raise GenrecError(
                f"the year arguments exclude each other ({', '.join(label for label, _, _ in bounds)}): "
                "keep only those the user asked for"
            )
    return request


def allowed_items(ctx: AgentContext, request: Request) -> set[str]:
    """The catalog items that satisfy a request (through `retrieval.where`, as search and ranking filter)."""
    where = compile_where(request.where(ctx), ctx.searcher.fields)
    keep = filter_items(ctx.searcher.items, where)
    return set(ctx.titles.ids) if keep is None else keep


# ----------------------------------------------------------------------------- the tools


def search_items(
    ctx: AgentContext,
    query: Query | None = None,
    like_item: Title | None = None,
    genres: Genres | None = None,
    exclude_genres: Genres | None = None,
    released_after: Year | None = None,
    released_before: Year | None = None,
    decade: Decade | None = None,
    *,
    image: Any = None,
    skip: Sequence[str] = (),
    k: int = 5,
) -> dict[str, Any]:
    """Find catalog items by a description of what the user wants (a kind, a plot, a mood), items
    similar to one title, or items that look like the photo the user attached.

    Args:
        query: the description, in the user's words.
        like_item: a title: find items similar to it.
        genres: only items of every one of these genres.
        exclude_genres: leave out items of any of these genres.
        released_after: only items released after this year.
        released_before: only items released before this year.
        decade: only items from this decade, written like 1980s.
        image: a photo to find items that look like it (a path, URL, bytes or PIL image).
        skip: item ids never to return (already shown or seen).
        k: how many items to return (1-20).
    """
    k = _clip_k(k)
    request = make_request(ctx, genres, exclude_genres, released_after, released_before, decade)
    result: dict[str, Any] = {"tool": "search_items", "items": [], "unknown": [], "request": request.as_dict()}
    if request.unknown_genres:
        result["unknown_genres"] = request.unknown_genres
    excluded = set(skip)
    anchor = None
    if like_item:
        anchor = ctx.titles.find(like_item)
        if anchor is None:
            result["unknown"] = [like_item]
            result["note"] = f"no catalog item is called {like_item!r}"
            return result
        excluded.add(anchor)
        result["like"] = {"item_id": anchor, "title": ctx.titles.titles[anchor]}
    has_constraints = bool(request.genres or request.exclude_genres or request.year_min or request.year_max)
    if not (query and query.strip()) and image is None and anchor is None:
        if not has_constraints:
            result["note"] = "nothing to search for: give a description, a photo or an item"
            return result
        query = " ".join(request.genres) or "items"
    with ctx.lock:
        hits: list[Hit] = ctx.searcher.search(
            query=None if (image is not None or anchor) else query,
            image=image,
            item_id=None if image is not None else anchor,
            k=min(4 * k + len(excluded), 100),
            where=request.where(ctx),
        )
    if image is not None:
        result["by_photo"] = True
    why = (
        "looks like your photo"
        if image is not None
        else f"similar to {ctx.titles.titles[anchor]}"
        if anchor
        else "matches your description"
    )
    for hit in hits:
        if hit.item_id not in excluded and len(result["items"]) < k:
            result["items"].append(ctx.card(hit.item_id, hit.score, why))
    if not result["items"] and has_constraints:
        result["note"] = f"nothing in the catalog is {request.describe()}"
    return result


def recommend(
    ctx: AgentContext,
    liked: Titles | None = None,
    exclude: Titles | None = None,
    genres: Genres | None = None,
    exclude_genres: Genres | None = None,
    released_after: Year | None = None,
    released_before: Year | None = None,
    decade: Decade | None = None,
    same_decade_as: Title | None = None,
    *,
    user_id: str | None = None,
    skip: Sequence[str] = (),
    k: int = 5,
) -> dict[str, Any]:
    """Recommend items for this user from the titles they liked, ranked by the recommender model.
    Titles they liked earlier in the conversation are remembered.

    Args:
        liked: titles the user says they liked.
        exclude: titles the user has already seen or does not want.
        genres: only items of every one of these genres.
        exclude_genres: leave out items of any of these genres.
        released_after: only items released after this year.
        released_before: only items released before this year.
        decade: only items from this decade, written like 1980s.
        same_decade_as: a title: only items from the decade it was released in.
        user_id: a catalog user whose past interactions count as liked items.
        skip: item ids never to return (already shown).
        k: how many items to return (1-20).
    """
    # The ranking is the one `genrec eval` scores: semantic IDs generated from the liked items (or
    # the user's history) fused with the dense next-item model; the request filters its candidates.
    k = _clip_k(k)
    result: dict[str, Any] = {"tool": "recommend", "items": [], "liked": [], "unknown": []}
    seeds = _seeds(ctx, result, user_id, liked)
    request = make_request(ctx, genres, exclude_genres, released_after, released_before, decade, same_decade_as)
    if request.unknown_genres:
        result["unknown_genres"] = request.unknown_genres
    result["unknown"] += request.unknown
    if request.anchors:  # the title a `same_decade_as` named: the reply may name it, it is no pick
        result["anchor"] = [{"item_id": i, "title": ctx.titles.titles[i]} for i in request.anchors]
    result["request"] = request.as_dict()
    excluded, unknown_seen = ctx.resolve(exclude)
    if excluded:
        result["seen"] = [{"item_id": i, "title": ctx.titles.titles[i]} for i in excluded]
    result["unknown"] += unknown_seen
    avoid = set(seeds) | set(excluded) | set(skip) | set(request.anchors)
    has_constraints = bool(request.genres or request.exclude_genres or request.year_min or request.year_max)
    if not seeds and not has_constraints:
        result["note"] = "nothing to go on: name an item you liked, a user id, a genre or years"
        return result
    only = allowed_items(ctx, request) - avoid
    if not only:
        result["note"] = f"nothing in the catalog is {request.describe()}"
        return result
    if ctx.ranker is None:
        result["note"] = "this run has no trained recommender; showing the items most similar in content"
        return _similar_items(ctx, result, seeds, request, only, k)
    try:
        with ctx.lock:
            ranked = ctx.ranker.rank([seeds], k, exclude=[avoid], only=only)[0]
    except (GenrecError, ValueError) as exc:  # the model server is down or refused
        result["model_unavailable"] = str(exc)
        result["note"] = "the recommender is unavailable; showing the items most similar in content"
        return _similar_items(ctx, result, seeds, request, only, k)
    result["model"] = ctx.ranker.name
    for rank, (item, score) in enumerate(ranked):
        result["items"].append(ctx.card(item, score, reasons(ctx, item, seeds, request.genres, rank)))
    return result


def _seeds(ctx: AgentContext, result: dict[str, Any], user_id: str | None, liked: Titles | None) -> list[str]:
    """What a recommendation starts from: the catalog user's history, then the liked titles found in
    the catalog; `result` records both, and the names that are no catalog title."""
    seeds: list[str] = []
    if user_id:
        past = ctx.user_items(user_id, 10_000)
        if past:
            result["user_id"] = str(user_id)
            result["history"] = [{"item_id": i, "title": ctx.titles.titles[i]} for i in past[-20:]]
            seeds += past
        else:
            result["unknown_user"] = str(user_id)
    for name in liked or []:
        found = ctx.titles.find(str(name))
        if found is None:
            if not ctx.titles.reserved_word(str(name)):  # "Drama", "the 1950s": a kind or a time, not a title
                result["unknown"].append(str(name))
        elif found not in seeds:
            seeds.append(found)
            result["liked"].append({"item_id": found, "title": ctx.titles.titles[found]})
    return seeds


def _similar_items(
    ctx: AgentContext, result: dict[str, Any], seeds: list[str], request: Request, allowed: set[str], k: int
) -> dict[str, Any]:
    """The fallback when no recommender answers: nearest items in content to the liked ones, among
    those the request allows (the store filters by the same `where`)."""
    scores: dict[str, float] = {}
    where = request.where(ctx)
    with ctx.lock:
        for seed in seeds[-10:]:
            for hit in ctx.searcher.search(item_id=seed, k=min(6 * k + len(seeds), 200), where=where):
                scores[hit.item_id] = max(scores.get(hit.item_id, 0.0), hit.score)
        if not seeds:
            query = " ".join(request.genres) or "items"
            for hit in ctx.searcher.search(query=query, k=min(6 * k, 200), where=where):
                scores[hit.item_id] = hit.score
    ranked = sorted(((i, s) for i, s in scores.items() if i in allowed), key=lambda kv: (-kv[1], kv[0]))
    result["model"] = "content similarity (fallback)"
    for item, score in ranked[:k]:
        result["items"].append(ctx.card(item, score, reasons(ctx, item, seeds, request.genres, None)))
    return result


def item_details(ctx: AgentContext, item: Title) -> dict[str, Any]:
    """Look up one item: its genres, year and description.

    Args:
        item: the item's title, or 'id N'.
    """
    found = ctx.titles.find(str(item))
    if found is None:
        return {
            "tool": "item_details",
            "found": False,
            "query": str(item),
            "items": [],
            "note": f"no item called {str(item)!r} is in the catalog",
        }
    card = ctx.card(found)
    card["description"] = str(ctx.searcher.items.loc[found, "text"])[:600]
    card["explanation"] = describe(card["attributes"])
    return {"tool": "item_details", "found": True, "items": [card]}


def explain(
    ctx: AgentContext,
    item: Title,
    *,
    liked: Sequence[str] | None = None,
    user_id: str | None = None,
    genres: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Explain why an item suits this user, from its facts and the titles they liked.

    Args:
        item: the item's title, or 'id N'.
        liked: titles or ids of items the user liked.
        user_id: a catalog user whose history counts as liked items.
        genres: genres the user asked for.
    """
    found = ctx.titles.find(str(item))
    if found is None:
        return {
            "tool": "explain",
            "found": False,
            "query": str(item),
            "items": [],
            "note": f"no item called {str(item)!r} is in the catalog",
        }
    seeds = [s for name in liked or [] if (s := ctx.titles.find(str(name)))]
    if user_id:
        seeds += ctx.user_items(user_id, 20)
    wanted, _ = ctx.known_genres(genres)
    card = ctx.card(found, explanation=reasons(ctx, found, seeds, wanted, None, detailed=True))
    card["explained_by"] = "catalog"
    if ctx.explainer is not None:
        written = ctx.explainer(found, seeds)
        card["model_explanation"] = written.raw  # kept for evaluation, even when not shown
        if written.source == "model":
            card["explanation"], card["explained_by"] = written.text, "model"
    liked_cards = [{"item_id": s, "title": ctx.titles.titles[s]} for s in dict.fromkeys(seeds)][:10]
    return {"tool": "explain", "found": True, "items": [card], "liked": liked_cards}


def user_history(ctx: AgentContext, user_id: UserId, *, n: int = 10) -> dict[str, Any]:
    """The items a catalog user interacted with most recently. When the user gives their catalog id,
    call this; recommend then uses their history.

    Args:
        user_id: the user's catalog id.
        n: how many items (1-20).
    """
    items = ctx.user_items(str(user_id), _clip_k(n))
    if not items:
        return {
            "tool": "user_history",
            "found": False,
            "user_id": str(user_id),
            "items": [],
            "note": f"no user {str(user_id)!r} in this catalog's interactions",
        }
    cards = [ctx.card(i, explanation="in your history") for i in reversed(items)]
    return {"tool": "user_history", "found": True, "user_id": str(user_id), "items": cards}


TOOLS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f for f in (search_items, recommend, item_details, explain, user_history)
}


# ----------------------------------------------------------------------------- explanations


def describe(attributes: dict[str, Any]) -> str:
    """One line of an item's attributes: "Action, Sci-Fi; 1977"."""
    parts = []
    for key in sorted(attributes):
        value = attributes[key]
        if value in (None, "", []):
            continue
        parts.append(
            ", ".join(map(str, value)) if isinstance(value, list) else f"{key} {value}" if key != "year" else str(value)
        )
    return "; ".join(parts)


def reasons(
    ctx: AgentContext,
    item_id: str,
    seeds: Sequence[str],
    wanted: Sequence[str],
    model_rank: int | None,
    detailed: bool = False,
) -> str:
    """Why an item was chosen, in facts the catalog holds: shared genres with liked items (else how many
    users had both), asked-for genres, and the model's rank. Names only the item's own attributes and
    the liked items."""
    genres = ctx.item_genres(item_id)
    said: list[str] = []
    shared_with = [(s, sorted(set(genres) & set(ctx.item_genres(s)))) for s in seeds]
    shared_with = [(s, g) for s, g in shared_with if g]
    if shared_with:
        shared_with.sort(key=lambda sg: -len(sg[1]))
        top = shared_with[:2]
        if len(top) == 2 and top[0][1] == top[1][1]:
            said.append(
                f"shares {', '.join(top[0][1])} with {ctx.titles.titles[top[0][0]]} and {ctx.titles.titles[top[1][0]]}"
            )
        else:  # each liked item with the genres it really has in common (a union would credit Alien with Romance)
            said.append("shares " + " and ".join(f"{', '.join(g)} with {ctx.titles.titles[s]}" for s, g in top))
    elif seeds:  # no genre in common: the catalog's other fact is who had both (never an unmeasured "similar")
        both = {s: ctx.users_of_both(item_id, s) for s in dict.fromkeys(seeds)}
        seed = max(both, key=both.__getitem__)
        if both[seed]:
            people = "1 person" if both[seed] == 1 else f"{both[seed]} people"
            said.append(f"{people} who had {ctx.titles.titles[seed]} also had it")
    asked = [g for g in wanted if g in genres]
    if asked:
        said.append(f"is {', '.join(asked)} as you asked")
    if model_rank is not None:
        said.append(f"the recommender ranks it #{model_rank + 1} for your history")
    if detailed or not said:
        attrs = describe(ctx.searcher.hit(item_id).attributes)
        if attrs:
            said.append(f"it is {attrs}")
    text = "; ".join(said)
    return text[:1].upper() + text[1:]


# ----------------------------------------------------------------------------- schemas and running a tool


def request_schema(name: str, ctx: AgentContext | None = None) -> type[BaseModel]:
    """The arguments a user's request can give tool `name`: its parameters between `ctx` and `*`,
    typed and described by its signature and docstring. For a catalog (`ctx`), genres become an
    enum of the catalog's own genres, year arguments exist only where items have years, and a user
    id is digits only where every catalog user id is (so constrained decoding cannot write a
    placeholder such as "user_id")."""
    func = TOOLS[name]
    hints = typing.get_type_hints(func, include_extras=True)
    doc, described = _docstring(func)
    fields: dict[str, Any] = {}
    for field_name, param in inspect.signature(func).parameters.items():
        if field_name == "ctx" or param.kind is param.KEYWORD_ONLY:
            continue
        annotation = hints[field_name]
        default = ... if param.default is param.empty else param.default
        info = Field(default, description=described.get(field_name, ""))
        if ctx is not None:
            if field_name in _YEAR_ARGS and not ctx.has_years:
                continue
            if field_name in ("genres", "exclude_genres") and ctx.genres:
                names = tuple(sorted(g for g in ctx.genres.values() if g.lower() != "unknown"))
                annotation = Annotated[list[Literal[names]], Field(max_length=MAX_GENRES)] | None  # type: ignore[valid-type]
            if field_name == "user_id" and _digit_users(ctx):
                annotation = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]
        fields[field_name] = (annotation, info)
    return create_model(name, __doc__=doc, **fields)


def _docstring(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """A Google-style docstring's description (the text before `Args:`, one line) and its argument lines."""
    text = inspect.getdoc(func) or ""
    head, _, args = text.partition("\nArgs:\n")
    described: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        m = re.match(r"^\s{2,8}(\w+):\s*(.*)$", line)
        if m:
            current = m.group(1)
            described[current] = m.group(2).strip()
        elif current and line.strip():
            described[current] += " " + line.strip()
    return " ".join(head.split()), described


_YEAR_ARGS = ("released_after", "released_before", "decade", "same_decade_as")


def _digit_users(ctx: AgentContext) -> bool:
    ids = ctx.interactions["user_id"].astype(str) if len(ctx.interactions) else []
    return bool(len(ids)) and all(i.isdigit() for i in ids.unique()[:10_000])


def request_args(name: str, args: dict[str, Any], ctx: AgentContext | None = None) -> dict[str, Any]:
    """`args` validated by the tool's request schema (those equal to their defaults left out).
    Raises `ToolArgumentError`, whose text says which argument was wrong and how, in a sentence."""
    try:
        return request_schema(name, ctx).model_validate(args).model_dump(exclude_defaults=True)
    except ValidationError as exc:
        raise ToolArgumentError(argument_problem(name, exc)) from None


class ToolArgumentError(GenrecError):
    """A tool call whose arguments do not fit its schema."""


def argument_problem(name: str, exc: ValidationError) -> str:
    """A validation error as one sentence for the model to correct (no exception text)."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "the arguments"
        parts.append(f"{where}: {err['msg'].rstrip('.').lower()}")
    return f"{name} could not use those arguments ({'; '.join(parts)})"


def run_tool(ctx: AgentContext, name: str, args: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Run tool `name` on a request's `args` (validated by its schema; arguments outside it are an
    error) and the conversation's `context` (its keyword-only parameters). A user-facing error
    becomes a result the reply can report (`error`, one sentence), never a crash."""
    ctx.refresh()  # items added or retired by `genrec items` since the last call
    try:
        request = request_args(name, args, ctx)
        return TOOLS[name](ctx, **request, **context)
    except GenrecError as exc:
        return {"tool": name, "items": [], "error": str(exc)}
