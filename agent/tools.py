"""The agent's tools: typed plain functions over one run, usable without the graph.

Each tool takes an `AgentContext` (the run's searcher, catalog, title index and optional models)
as its first argument and returns a JSON-ready dict whose `items` are catalog items: the only
items the agent may ever name. `agent.model_tools` gives them the short schemas the chat model sees
and the wrappers the graph's tool node runs.

    ctx = AgentContext.open("runs/ml100k", ranker=open_ranker("runs/ml100k")[0])
    recommend(ctx, liked=["Star Wars", "Alien"], genres=["Comedy"], k=5)["items"]
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from agent.lookup import TitleIndex
from finetune.ranking import Ranker
from genrec.errors import GenrecError
from genrec.run import RunPaths
from retrieval.search import Hit, Searcher

GENRE_KEYS = ("genres", "genre", "categories", "category")  # attribute names that hold an item's kinds
MAX_K = 20


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
    ranker: Ranker | None = None  # the served ranking (finetune.ranking); None when the run has no trained model
    explainer: ItemExplainer | None = None  # writes the `explain` tool's text (see agent.explainer)
    lock: threading.RLock = field(default_factory=threading.RLock)
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
            self.titles = TitleIndex.build(items, self.interactions)
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
        ctx = cls(paths, searcher, interactions, TitleIndex.build(items, interactions), genre_key, genres, ranker)
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
        """True if the catalog's items have a `year` attribute (year filters then apply)."""
        return "year" in self.searcher.fields.keys

    def item_year(self, item_id: str) -> int | None:
        """An item's year, when the catalog records one."""
        value = self.searcher.hit(item_id).attributes.get("year")
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

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
    for key in GENRE_KEYS:
        values = {v for a in attrs for v in _as_list(a.get(key))}
        if values:
            return key, {str(v).lower(): str(v) for v in values}
    return None, {}


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _clip_k(k: int) -> int:
    return max(1, min(int(k), MAX_K))


def _filter_where(
    ctx: AgentContext, genres: list[str], year_from: int | None, year_to: int | None
) -> dict[str, Any] | None:
    """The vector store filter of wanted genres and a year range (None when there is none)."""
    parts: list[dict[str, Any]] = []
    if genres and ctx.genre_key is not None:
        parts.append({ctx.genre_key: genres[0]} if len(genres) == 1 else {ctx.genre_key: {"$in": genres}})
    if ctx.has_years:
        if year_from is not None:
            parts.append({"year": {"$gte": int(year_from)}})
        if year_to is not None:
            parts.append({"year": {"$lte": int(year_to)}})
    return None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}


def _in_years(ctx: AgentContext, item_id: str, year_from: int | None, year_to: int | None) -> bool:
    if not ctx.has_years or (year_from is None and year_to is None):
        return True
    year = ctx.item_year(item_id)
    return year is not None and (year_from is None or year >= year_from) and (year_to is None or year <= year_to)


def _keep(ctx: AgentContext, item_id: str, avoid: list[str], exclude: set[str]) -> bool:
    return item_id not in exclude and not (set(avoid) & set(ctx.item_genres(item_id)))


def _resolve(ctx: AgentContext, names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Item ids of `names` (titles or ids) that the catalog has, and the names it does not."""
    found, unknown = [], []
    for name in names or []:
        item = ctx.titles.find(str(name))
        (found.append(item) if item is not None else unknown.append(str(name)))
    return list(dict.fromkeys(found)), unknown


# ----------------------------------------------------------------------------- the tools


def search_items(
    ctx: AgentContext,
    query: str | None = None,
    image: Any = None,
    like_item: str | None = None,
    genres: list[str] | None = None,
    avoid_genres: list[str] | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    exclude: list[str] | None = None,
    where: dict[str, Any] | None = None,
    k: int = 5,
) -> dict[str, Any]:
    """Search the catalog by a description, a photo, or an item (more like it).

    Args:
        query: what the user is looking for, in words.
        image: a photo to find items that look like it (a path, URL, bytes or PIL image).
        like_item: an item id or title: find items similar to it.
        genres: only items of at least one of these genres.
        avoid_genres: leave out items of any of these genres.
        year_from: only items from this year on.
        year_to: only items up to this year.
        exclude: titles or ids never to return.
        where: a metadata filter in `retrieval.where`'s language (replaces genres and years).
        k: how many items to return (1-20).
    """
    k = _clip_k(k)
    wanted, unknown_genres = ctx.known_genres(genres)
    avoid, _ = ctx.known_genres(avoid_genres)
    result: dict[str, Any] = {"tool": "search_items", "items": [], "unknown": []}
    if unknown_genres:
        result["unknown_genres"] = unknown_genres
    filt = where if where else _filter_where(ctx, wanted, year_from, year_to)
    skip, _ = _resolve(ctx, exclude)
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
    if not (query and query.strip()) and image is None and anchor is None:
        if not wanted and year_from is None and year_to is None:
            result["note"] = "nothing to search for: give a description, a photo or an item"
            return result
        query = " ".join(wanted) or "items"
    with ctx.lock:
        hits: list[Hit] = ctx.searcher.search(
            query=None if (image is not None or anchor) else query,
            image=image,
            item_id=None if image is not None else anchor,
            k=min(4 * k + len(excluded), 100),
            where=filt,
        )
    if image is not None:
        result["by_photo"] = True
    for hit in hits:
        if _keep(ctx, hit.item_id, avoid, excluded) and len(result["items"]) < k:
            why = (
                "looks like your photo"
                if image is not None
                else f"similar to {ctx.titles.titles[anchor]}"
                if anchor
                else "matches your description"
            )
            result["items"].append(ctx.card(hit.item_id, hit.score, why))
    result["request"] = {"genres": wanted, "avoid_genres": avoid, "year_from": year_from, "year_to": year_to}
    if skip:
        result["excluded"] = [{"item_id": i, "title": ctx.titles.titles[i]} for i in skip]
    return result


def recommend(
    ctx: AgentContext,
    liked: list[str] | None = None,
    user_id: str | None = None,
    genres: list[str] | None = None,
    avoid_genres: list[str] | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    exclude: list[str] | None = None,
    k: int = 5,
) -> dict[str, Any]:
    """Recommend catalog items for someone who liked some items, ranked by the fine-tuned recommender.

    The ranking is the one `genrec eval` scores: semantic IDs generated from the liked items (or
    the user's history) fused with the dense next-item model. Genres and years act as filters on
    its candidates; liked items, the user's history and excluded items are never recommended.

    Args:
        liked: titles or ids of items the user liked, oldest first.
        user_id: a catalog user whose past interactions count as liked items.
        genres: only items of at least one of these genres.
        avoid_genres: leave out items of any of these genres.
        year_from: only items from this year on.
        year_to: only items up to this year.
        exclude: titles or ids not to recommend (already seen or already shown).
        k: how many items to return (1-20).
    """
    k = _clip_k(k)
    result: dict[str, Any] = {"tool": "recommend", "items": [], "liked": [], "unknown": []}
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
            result["unknown"].append(str(name))
        elif found not in seeds:
            seeds.append(found)
            result["liked"].append({"item_id": found, "title": ctx.titles.titles[found]})
    wanted, unknown_genres = ctx.known_genres(genres)
    avoid, _ = ctx.known_genres(avoid_genres)
    if unknown_genres:
        result["unknown_genres"] = unknown_genres
    result["request"] = {"genres": wanted, "avoid_genres": avoid, "year_from": year_from, "year_to": year_to}
    excluded, _ = _resolve(ctx, exclude)
    if excluded:
        result["excluded"] = [{"item_id": i, "title": ctx.titles.titles[i]} for i in excluded]
    skip = set(seeds) | set(excluded)
    if not seeds and not wanted:
        result["note"] = "nothing to go on: name an item you liked, a user id, or a genre"
        return result
    only = {
        i
        for i in ctx.titles.ids
        if _keep(ctx, i, avoid, set())
        and _in_years(ctx, i, year_from, year_to)
        and (not wanted or set(wanted) & set(ctx.item_genres(i)))
    }
    if ctx.ranker is None:
        result["note"] = "this run has no trained recommender; showing the items most similar in content"
        return _similar_items(ctx, result, seeds, wanted, only - skip, k)
    try:
        with ctx.lock:
            ranked = ctx.ranker.rank([seeds], k, exclude=[skip], only=only)[0]
    except (GenrecError, ValueError) as exc:  # the model server is down or refused
        result["model_unavailable"] = str(exc)
        result["note"] = "the recommender is unavailable; showing the items most similar in content"
        return _similar_items(ctx, result, seeds, wanted, only - skip, k)
    result["model"] = ctx.ranker.name
    for rank, (item, score) in enumerate(ranked):
        result["items"].append(ctx.card(item, score, reasons(ctx, item, seeds, wanted, rank)))
    return result


def _similar_items(
    ctx: AgentContext, result: dict[str, Any], seeds: list[str], wanted: list[str], allowed: set[str], k: int
) -> dict[str, Any]:
    """The fallback when no recommender answers: nearest items in content to the liked ones."""
    scores: dict[str, float] = {}
    with ctx.lock:
        for seed in seeds[-10:]:
            for hit in ctx.searcher.search(item_id=seed, k=min(6 * k + len(seeds), 200)):
                scores[hit.item_id] = max(scores.get(hit.item_id, 0.0), hit.score)
        if not seeds:
            for hit in ctx.searcher.search(query=" ".join(wanted), k=min(6 * k, 200)):
                scores[hit.item_id] = hit.score
    ranked = sorted(((i, s) for i, s in scores.items() if i in allowed), key=lambda kv: (-kv[1], kv[0]))
    result["model"] = "content similarity (fallback)"
    for item, score in ranked[:k]:
        result["items"].append(ctx.card(item, score, reasons(ctx, item, seeds, wanted, None)))
    return result


def item_details(ctx: AgentContext, item: str) -> dict[str, Any]:
    """Look up one catalog item by id or title: its title, attributes, description and image.

    Args:
        item: the item's id or its title.
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
    item: str,
    liked: list[str] | None = None,
    user_id: str | None = None,
    genres: list[str] | None = None,
) -> dict[str, Any]:
    """Explain why an item suits the user, from its real attributes and what the user liked.

    Args:
        item: id or title of the item to explain.
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


def user_history(ctx: AgentContext, user_id: str, n: int = 10) -> dict[str, Any]:
    """The most recent items a catalog user interacted with, newest first.

    Args:
        user_id: the user's id in the catalog's interactions.
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


# ----------------------------------------------------------------------------- running a tool


def run_tool(ctx: AgentContext, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run the tool `name` with those of `args` its signature has (model-facing arguments such as
    `by_photo` have no plain counterpart and are left out)."""
    func = TOOLS[name]
    params = set(inspect.signature(func).parameters) - {"ctx"}
    return _run_tool(func, ctx, **{k: v for k, v in args.items() if k in params})


def _run_tool(func: Callable[..., dict[str, Any]], ctx: AgentContext, **kwargs: Any) -> dict[str, Any]:
    """Run a tool; a user-facing error becomes a result the reply can report, not a crash."""
    ctx.refresh()
    try:
        return func(ctx, **kwargs)
    except GenrecError as exc:
        return {"tool": func.__name__, "items": [], "error": str(exc)}
