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
    images: int
    seconds: dict[str, float] = field(default_factory=dict)
    semantic_id_stats: dict = field(default_factory=dict)


def item_documents(catalog: Catalog) -> list[str]:
    """The text encoded for each item, in catalog order."""
    return [
        item_caption(row.title, json.loads(row.attributes), row.text)
        for row in catalog.items.itertuples(index=False)
    ]


def save_array(path: Path, array: np.ndarray) -> None:
    """Write a .npy array atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def encode_catalog(catalog: Catalog, paths: RunPaths, config: RunConfig) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[str]]:
    """Encode item texts (and images when an image model is configured); cached by content hash."""
    from retrieval.encoders import EmbeddingCache, cache_key, encode_images, encode_texts, load_encoder, resolve_model_path

    docs = item_documents(catalog)
    cache_dir = paths.embeddings / "cache"
    text_path = resolve_model_path(config.encoder.text_model)
    text_cache = EmbeddingCache.open(cache_dir / f"{cache_key(text_path, 'text')}.npz")
    text_model = None if text_cache.covers(docs) else load_encoder(text_path, config.encoder.device)
    text_vecs = encode_texts(text_model, docs, text_cache, config.encoder.batch_size)
    text_cache.save()
    image_vecs, mask = None, np.zeros(len(docs), dtype=bool)
    if config.encoder.image_model and catalog.items["image"].map(image_source).notna().any():
        image_path = resolve_model_path(config.encoder.image_model)
        image_cache = EmbeddingCache.open(cache_dir / f"{cache_key(image_path, 'image')}.npz")
        image_model = load_encoder(image_path, config.encoder.device)
        image_vecs, mask = encode_images(image_model, catalog.items["image"].tolist(), image_cache, config.encoder.batch_size)
        image_cache.save()
    save_array(paths.embeddings / "text.npy", text_vecs)
    if image_vecs is not None:
        save_array(paths.embeddings / "image.npy", image_vecs)
        save_array(paths.embeddings / "image_mask.npy", mask)
    return text_vecs, image_vecs, mask, docs


def content_vectors(text: np.ndarray, image: np.ndarray | None, mask: np.ndarray, image_weight: float) -> np.ndarray:
    """The content embedding semantic IDs are learned from: text, plus weighted image where there is one."""
    if image is None:
        return text
    return np.concatenate([text, image_weight * image * mask[:, None]], axis=1).astype(np.float32)


def index_catalog(
    catalog: Catalog, paths: RunPaths, config: RunConfig, seconds: dict[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Encode a catalog and upsert it into the run's Chroma collections; returns the vectors."""
    from retrieval.store import open_store, upsert_items

    seconds = {} if seconds is None else seconds
    t = time.perf_counter()
    text_vecs, image_vecs, mask, docs = encode_catalog(catalog, paths, config)
    seconds["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    store = open_store(paths, config.chroma, create=True, with_image=image_vecs is not None)
    upsert_items(store, catalog.items, docs, text_vecs, image_vecs, mask, config.chroma.batch_size)
    seconds["store"] = time.perf_counter() - t
    return text_vecs, image_vecs, mask


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
    console.print(f"loaded {len(catalog.items):,} items, {catalog.interactions['user_id'].nunique():,} users, "
                  f"{len(catalog.interactions):,} interactions")

    text_vecs, image_vecs, mask = index_catalog(catalog, paths, config, seconds)

    t = time.perf_counter()
    content = content_vectors(text_vecs, image_vecs, mask, config.encoder.image_weight)
    sids = build_semantic_ids(catalog, config.semantic_ids, content)
    save_semantic_ids(sids, paths)
    seconds["semantic_ids"] = time.perf_counter() - t

    report = IndexReport(
        items=len(catalog.items), users=int(catalog.interactions["user_id"].nunique()),
        interactions=len(catalog.interactions), images=int(mask.sum()), seconds=seconds,
        semantic_id_stats=sids.stats,
    )
    write_json(paths.root / "index.stats.json", report.__dict__)
    console.print(
        f"[green]indexed[/] {report.items:,} items ({report.images:,} with images) into {paths.root} in "
        + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    )
    return report
