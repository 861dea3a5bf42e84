"""Search the item store by text, by photo, or by item (more like this), with metadata filters.

A `Searcher` holds the encoders and collections of one run, so an agent or a UI pays for loading
them once. Words search the text collection (and, with a CLIP/SigLIP image model, the image
collection too); a photo searches the image collection ("items that look like this photo").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec.config import RunConfig
from genrec.errors import GenrecError
from genrec.run import RunPaths, open_run
from retrieval.catalog import image_source
from retrieval.encoders import LazyEncoder, centre, encode_query_image, joins_text, load_encoder, load_image_encoder
from retrieval.store import ItemStore, open_store
from retrieval.where import Fields, catalog_fields, compile_where


@dataclass
class Hit:
    """One search result: a catalog item and its similarity to the query (higher is closer)."""

    item_id: str
    title: str
    score: float
    attributes: dict[str, Any] = field(default_factory=dict)
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "score": round(self.score, 6),
            "attributes": self.attributes,
            "image": self.image,
        }


@dataclass
class Searcher:
    """Encoders + collections of one run."""

    paths: RunPaths
    config: RunConfig
    store: ItemStore
    text_model: Any
    image_model: Any | None  # loaded on the first query that needs it
    items: pd.DataFrame
    fields: Fields  # what `where` filters may name
    image_mean: np.ndarray | None = None  # image queries are centred as the indexed images were
    words_search_images: bool = False  # True with a CLIP/SigLIP image model; dinov2-s has no text tower
    catalog: Any = None  # retrieval.live.Watched: the catalog of the moment (items added or retired since indexing)
    active: frozenset[str] | None = None  # the items a search may return (None: every item of `items`)

    @classmethod
    def open(cls, run: str | Path) -> Searcher:
        """Load a run's encoders and open its Chroma collections."""
        paths, config = open_run(run)
        from retrieval.live import Watched

        paths.require(paths.items, f"genrec index --run {paths.root}")
        store = open_store(paths, config.chroma)
        catalog = Watched(paths, lambda state: (state.items, catalog_fields(state.items), state.active))
        items, fields, active = catalog.get()
        text_model = load_encoder(config.encoder.text_model, config.encoder.device)
        image_model, image_mean, words_search_images = None, None, False
        name = config.encoder.image_model
        if store.image is not None and name:
            image_model = LazyEncoder(lambda: load_image_encoder(name, config.encoder.device))
            mean_path = paths.embeddings / "image_mean.npy"
            image_mean = np.load(mean_path) if mean_path.exists() else None
            words_search_images = joins_text(name)
        return cls(
            paths,
            config,
            store,
            text_model,
            image_model,
            items,
            fields,
            image_mean,
            words_search_images,
            catalog,
            active,
        )

    def refresh(self) -> None:
        """Take the catalog of this moment (items added or retired since the last call)."""
        if self.catalog is not None:
            self.items, self.fields, self.active = self.catalog.get()

    def search(
        self,
        query: str | None = None,
        *,
        image: str | Path | bytes | Any | None = None,
        item_id: str | None = None,
        k: int = 10,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Top-`k` catalog items for a text query, a photo, or an item id (more like this).

        `image` is a file path, an http(s) URL, the bytes of an image file or a PIL image; the items
        returned are those whose images look most like it.
        """
        if sum(x is not None for x in (query, image, item_id)) != 1:
            raise GenrecError("search: give exactly one of a text query, --image FILE or an item id")
        if k < 1:
            raise GenrecError("search: k must be at least 1")
        self.refresh()
        active = self.active
        checked = compile_where(where, self.fields)
        chroma_where = checked.to_chroma() if checked is not None else None
        scores: dict[str, float] = {}
        pool = max(4 * k, 20)
        weight = self.config.encoder.image_weight
        if query is not None:
            if not query.strip():
                raise GenrecError("search: the query is empty")
            vec = self.text_model.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
            self._collect(self.store.text, vec, pool, chroma_where, scores, 1.0)
            if self.words_search_images and self.image_model is not None and self.store.image is not None:
                clip = self.image_model.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
                self._collect(self.store.image, clip, pool, chroma_where, scores, weight)
        elif image is not None:
            if self.image_model is None or self.store.image is None:
                raise GenrecError(
                    f"{self.paths.root}: this run has no image index (no item image was read, or encoder.image_model "
                    "is none); give items images and run `genrec index` again"
                )
            vec = encode_query_image(self.image_model, image)
            if self.image_mean is not None:
                vec = centre(vec, self.image_mean)[0]
            self._collect(self.store.image, vec, pool, chroma_where, scores, 1.0)
        else:
            assert item_id is not None
            got = self.store.text.get(ids=[item_id], include=["embeddings"])
            if not got["ids"]:
                raise GenrecError(f"search: unknown item id {item_id!r}")
            self._collect(self.store.text, np.asarray(got["embeddings"][0]), pool + 1, chroma_where, scores, 1.0)
            if self.store.image is not None:
                img = self.store.image.get(ids=[item_id], include=["embeddings"])
                if img["ids"]:
                    self._collect(
                        self.store.image, np.asarray(img["embeddings"][0]), pool + 1, chroma_where, scores, weight
                    )
            scores.pop(item_id, None)
        if active is not None:  # Chroma may still hold a retired item, or one of an add that did not commit
            scores = {i: s for i, s in scores.items() if i in active}
        best = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
        return [self.hit(i, s) for i, s in best]

    def hit(self, item_id: str, score: float = 0.0) -> Hit:
        """A `Hit` for a catalog item, with its attributes."""
        items = self.items
        if item_id not in items.index:
            self.refresh()
            items = self.items
        row = items.loc[item_id]
        return Hit(item_id, row["title"], float(score), json.loads(row["attributes"]), image_source(row["image"]))

    @staticmethod
    def _collect(
        collection: Any, vec: np.ndarray, n: int, where: dict | None, scores: dict[str, float], weight: float
    ) -> None:
        n = min(n, collection.count())
        if n == 0:
            return
        res = collection.query(
            query_embeddings=[np.asarray(vec, dtype=np.float32).tolist()],
            n_results=n,
            where=where,
            include=["distances"],
        )
        for item, dist in zip(res["ids"][0], res["distances"][0]):
            scores[item] = scores.get(item, 0.0) + weight * (1.0 - float(dist))
