"""The Chroma item store: one collection of text vectors and, when items have images, one of image vectors.

Text and image vectors live in different spaces, so each has its own collection and each kind of
query searches the space it belongs to.

Embedded (`PersistentClient` under the run directory) by default, or a `chroma run` server. We
always hand Chroma our own vectors: its default embedding function would download a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from genrec.config import ChromaConfig
from genrec.errors import GenrecError
from genrec.run import RunPaths
from retrieval.catalog import image_source


@dataclass
class ItemStore:
    """Open handles on a run's collections (`image` is None when no item has an image)."""

    client: Any
    text: Any
    image: Any | None


def chroma_safe(raw: str) -> str:
    """A Chroma-legal collection name (3-63 characters of [a-zA-Z0-9._-], alphanumeric at both ends)."""
    name = re.sub(r"[^a-zA-Z0-9._-]", "-", raw).strip("-._")[:63].strip("-._")
    return name if len(name) >= 3 else f"gr-{name}"


def collection_name(config: ChromaConfig, kind: str) -> str:
    """The collection of one modality. `config.collection` is fixed when a run is indexed and saved with
    its config, so a copied or renamed run still finds its collections."""
    return chroma_safe(f"{config.collection}-{kind}")


def make_client(paths: RunPaths, config: ChromaConfig) -> Any:
    """A Chroma client: HTTP to `host:port` when a host is configured, else embedded in the run directory."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if config.host:
        try:
            client = chromadb.HttpClient(host=config.host, port=config.port, settings=settings)
            client.heartbeat()
        except Exception as exc:
            raise GenrecError(
                f"chroma server {config.host}:{config.port} does not answer ({exc.__class__.__name__}); "
                "start it with `chroma run --path DIR --host HOST --port PORT`"
            ) from None
        return client
    paths.chroma.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(paths.chroma), settings=settings)


def open_store(paths: RunPaths, config: ChromaConfig, create: bool = False, with_image: bool = False) -> ItemStore:
    """Open (or with `create`, create) the run's collections."""
    client = make_client(paths, config)
    names = {c if isinstance(c, str) else c.name for c in client.list_collections()}
    text_name, image_name = collection_name(config, "text"), collection_name(config, "image")
    if not create and text_name not in names:
        raise GenrecError(
            f"{paths.root}: no Chroma collection {text_name!r}; run `genrec index --run {paths.root}` first"
        )

    def get(name: str) -> Any:
        if create:
            return client.get_or_create_collection(
                name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
            )
        return client.get_collection(name, embedding_function=None)

    image = get(image_name) if (with_image or image_name in names) else None
    return ItemStore(client, get(text_name), image)


def item_metadata(row: pd.Series) -> dict[str, Any]:
    """Flatten an item's attributes into Chroma metadata: scalars, non-empty string/number lists, JSON for the rest."""
    meta: dict[str, Any] = {"title": row["title"]}
    if image_source(row.get("image")):
        meta["image"] = row["image"]
    for key, value in json.loads(row["attributes"]).items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (bool, int, float, str)):
            meta[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            meta[key] = [str(v) for v in value]
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            meta[key] = [float(v) for v in value]
        else:
            meta[key] = json.dumps(value, ensure_ascii=False)
    return meta


def _upsert(
    collection: Any, ids: list[str], vectors: np.ndarray, metas: list[dict], docs: list[str], batch: int, desc: str
) -> None:
    for start in tqdm(range(0, len(ids), batch), desc=desc, unit="batch", leave=False):
        end = start + batch
        collection.upsert(
            ids=ids[start:end],
            embeddings=vectors[start:end].tolist(),
            metadatas=metas[start:end],
            documents=docs[start:end],
        )


def _drop_stale(collection: Any, keep: set[str]) -> int:
    stale = [i for i in collection.get(include=[])["ids"] if i not in keep]
    for start in range(0, len(stale), 1000):
        collection.delete(ids=stale[start : start + 1000])
    return len(stale)


def upsert_items(
    store: ItemStore,
    items: pd.DataFrame,
    documents: list[str],
    text_vectors: np.ndarray,
    image_vectors: np.ndarray | None,
    image_mask: np.ndarray,
    batch_size: int = 512,
) -> None:
    """Write every item's vectors and metadata (idempotent) and remove items no longer in the catalog."""
    ids = items["item_id"].tolist()
    metas = [item_metadata(row) for _, row in items.iterrows()]
    _upsert(store.text, ids, text_vectors, metas, documents, batch_size, "chroma text")
    _drop_stale(store.text, set(ids))
    if store.image is not None and image_vectors is None:
        # no item has an image any more (or images were switched off): an old image space must not answer
        store.client.delete_collection(store.image.name)
        store.image = None
    if store.image is not None and image_vectors is not None:
        sel = np.flatnonzero(image_mask)
        _upsert(
            store.image,
            [ids[i] for i in sel],
            image_vectors[sel],
            [metas[i] for i in sel],
            [documents[i] for i in sel],
            batch_size,
            "chroma images",
        )
        _drop_stale(store.image, {ids[i] for i in sel})
