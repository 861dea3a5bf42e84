"""`genrec index`: load a dataset into a run directory, encode it, fill Chroma, learn semantic IDs.

Each stage writes its artefact atomically and records its wall time in `RUN/index.stats.json`, which
the benchmark reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from genrec.atomic import atomic_path, write_json
from genrec.config import ChromaConfig, RunConfig
from genrec.run import RunPaths, init_run
from retrieval.catalog import Catalog, image_source, item_caption, save_catalog


@dataclass
class IndexReport:
    """What one indexing run did and how long each stage took."""

    items: int
    users: int
    interactions: int
    images: int  # items indexed with an image vector
    image_failures: int  # items naming an image that could not be read (indexed text-only)
    seconds: dict[str, float] = field(default_factory=dict)
    semantic_id_stats: dict = field(default_factory=dict)


def item_documents(catalog: Catalog) -> list[str]:
    """The text encoded for each item, in catalog order."""
    return [
        item_caption(row.title, json.loads(row.attributes), row.text) for row in catalog.items.itertuples(index=False)
    ]


def save_array(path: Path, array: np.ndarray) -> None:
    """Write a .npy array atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


IMAGE_ARRAYS = ("image.npy", "image_mask.npy", "image_mean.npy")


@dataclass
class Encoded:
    """A catalog's vectors: text for every item; image (centred, L2-normalised) where an item has one."""

    text: np.ndarray
    image: np.ndarray | None
    mask: np.ndarray  # True where the item's image was read and encoded
    image_mean: np.ndarray | None  # the raw mean image vector that image queries are centred with
    documents: list[str]
    image_failures: int = 0  # items that name an image which could not be read


def encode_catalog(catalog: Catalog, paths: RunPaths, config: RunConfig) -> Encoded:
    """Encode item texts, and images when an image model is configured; cached by content hash.

    Writes embeddings/text.npy and, when any image was read, image.npy (centred), image_mask.npy and
    image_mean.npy. Models load only when something is not in the cache.
    """
    from retrieval.encoders import (
        EmbeddingCache,
        LazyEncoder,
        cache_key,
        centre_images,
        encode_images,
        encode_texts,
        image_model_key,
        load_encoder,
        load_image_encoder,
        resolve_model_path,
    )

    docs = item_documents(catalog)
    cache_dir = paths.embeddings / "cache"
    text_path = resolve_model_path(config.encoder.text_model)
    text_cache = EmbeddingCache.open(cache_dir / f"{cache_key(text_path, 'text')}.npz")
    text_model = None if text_cache.covers(docs) else load_encoder(text_path, config.encoder.device)
    text_vecs = encode_texts(
        text_model, docs, text_cache, config.encoder.batch_size, processes=config.encoder.processes
    )
    text_cache.save()
    save_array(paths.embeddings / "text.npy", text_vecs)
    encoded = Encoded(text_vecs, None, np.zeros(len(docs), dtype=bool), None, docs)
    for stale in IMAGE_ARRAYS:  # vectors of an earlier indexing must not outlive its images
        (paths.embeddings / stale).unlink(missing_ok=True)
    sources = catalog.items["image"].map(image_source)
    name = config.encoder.image_model
    if not name or sources.isna().all():
        return encoded
    image_cache = EmbeddingCache.open(cache_dir / f"{cache_key(image_model_key(name), 'image')}.npz")
    model = LazyEncoder(lambda: load_image_encoder(name, config.encoder.device))
    raw, mask = encode_images(
        model,
        sources.tolist(),
        image_cache,
        config.encoder.batch_size,
        item_ids=catalog.items["item_id"].astype(str).tolist(),
    )
    image_cache.save()
    encoded.mask, encoded.image_failures = mask, int(sources.notna().sum() - mask.sum())
    if raw is not None:
        encoded.image, encoded.image_mean = centre_images(raw, mask)
        save_array(paths.embeddings / "image.npy", encoded.image)
        save_array(paths.embeddings / "image_mask.npy", mask)
        save_array(paths.embeddings / "image_mean.npy", encoded.image_mean)
    return encoded


def content_vectors(text: np.ndarray, image: np.ndarray | None, mask: np.ndarray, image_weight: float) -> np.ndarray:
    """The content embedding semantic IDs are learned from: the text vector, then the centred image
    vector times `image_weight` (zeros for an item without an image). Both parts are unit length, so
    the fused cosine of two items with images is (text cosine + weight^2 x image cosine) / (1 + weight^2)."""
    if image is None:
        return text
    return np.concatenate([text, image_weight * image * mask[:, None]], axis=1).astype(np.float32)


def index_catalog(
    catalog: Catalog, paths: RunPaths, config: RunConfig, seconds: dict[str, float] | None = None
) -> Encoded:
    """Encode a catalog and upsert it into the run's Chroma collections; returns the vectors."""
    from retrieval.store import open_store, upsert_items

    seconds = {} if seconds is None else seconds
    t = time.perf_counter()
    encoded = encode_catalog(catalog, paths, config)
    seconds["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    store = open_store(paths, config.chroma, create=True, with_image=encoded.image is not None)
    upsert_items(
        store, catalog.items, encoded.documents, encoded.text, encoded.image, encoded.mask, config.chroma.batch_size
    )
    seconds["store"] = time.perf_counter() - t
    return encoded


def build_index(run: str | Path, config: RunConfig, console: Console | None = None) -> IndexReport:
    """Run the whole indexing pipeline for `config.data.dataset` into the run directory `run`."""
    from retrieval.datasets import load_dataset
    from retrieval.semantic_ids import build_semantic_ids, save_semantic_ids
    from retrieval.store import chroma_safe

    console = console or Console(stderr=True)
    if config.chroma.collection == ChromaConfig().collection:
        # one name per run, so that runs sharing a Chroma server never overwrite each other
        config.chroma.collection = chroma_safe(f"items-{Path(run).resolve().name}")
    paths = init_run(run, config)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    catalog = load_dataset(config.data)
    save_catalog(catalog, paths)
    seconds["load"] = time.perf_counter() - t
    console.print(
        f"loaded {len(catalog.items):,} items, {catalog.interactions['user_id'].nunique():,} users, "
        f"{len(catalog.interactions):,} interactions"
    )

    encoded = index_catalog(catalog, paths, config, seconds)

    t = time.perf_counter()
    content = content_vectors(encoded.text, encoded.image, encoded.mask, config.encoder.image_weight)
    sids = build_semantic_ids(catalog, config.semantic_ids, content)
    save_semantic_ids(sids, paths)
    seconds["semantic_ids"] = time.perf_counter() - t

    report = IndexReport(
        items=len(catalog.items),
        users=int(catalog.interactions["user_id"].nunique()),
        interactions=len(catalog.interactions),
        images=int(encoded.mask.sum()),
        image_failures=encoded.image_failures,
        seconds=seconds,
        semantic_id_stats=sids.stats,
    )
    write_json(paths.root / "index.stats.json", report.__dict__)
    console.print(
        f"[green]indexed[/] {report.items:,} items ({report.images:,} with images"
        + (f", {report.image_failures:,} whose image could not be read: text-only" if report.image_failures else "")
        + f") into {paths.root} in "
        + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    )
    return report
