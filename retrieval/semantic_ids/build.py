"""From a catalog (and its content embeddings) to one unique code tuple per item, with statistics."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from genrec.config import SemanticIdConfig
from genrec.errors import GenrecError
from retrieval.catalog import Catalog
from retrieval.semantic_ids.codes import append_uniqueness_level, codebook_usage, collision_stats
from retrieval.semantic_ids.collaborative import collaborative_embeddings, cooccurrence, training_histories
from retrieval.semantic_ids.quantizer import Quantizer
from retrieval.semantic_ids.rkmeans import fit_residual_kmeans


@dataclass
class SemanticIds:
    """item_id -> code (levels learned + 1 uniqueness level, all distinct), and how they came about."""

    codes: dict[str, list[int]]
    stats: dict[str, Any]
    quantizer: Quantizer | None = None  # what codes items added later (`retrieval.live`), saved beside the codes


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def check_content(catalog: Catalog, content: np.ndarray | None, source: str) -> np.ndarray:
    """Validate the caller's content embeddings: present, (n_items, d), finite."""
    if content is None:
        raise GenrecError(
            f"semantic_ids.source={source} needs item content embeddings; encode the catalog first "
            "(genrec index) or use semantic_ids.source: collaborative"
        )
    content = np.asarray(content)
    if content.ndim != 2 or content.shape[0] != len(catalog.items):
        raise GenrecError(
            f"content embeddings: shape {content.shape} does not match the catalog's {len(catalog.items)} items; "
            "re-encode the catalog (genrec index)"
        )
    bad = ~np.isfinite(content).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise GenrecError(
            f"content embeddings: row {row} (item {catalog.items['item_id'].iloc[row]!r}) is not finite; re-encode"
        )
    return content.astype(np.float32)


def resolve_source(catalog: Catalog, config: SemanticIdConfig, content: np.ndarray | None) -> str:
    """The source `auto` stands for on this catalog (any other source is itself).

    Codes learned from content alone group items by what they are; next-item prediction also needs
    what is bought or watched together, so where both exist `auto` fuses them. A catalog whose items
    have no text of their own gets collaborative codes; one where no two items co-occur in a user's
    history (after the leave-one-out holdout) gets content codes.
    """
    if config.source != "auto":
        return config.source
    if content is None or not catalog.has_text:
        return "collaborative"
    users, items = training_histories(catalog, config.collaborative_holdout)
    pairs = cooccurrence(users, items, len(catalog.items), config.collaborative_window)
    return "fused" if pairs.nnz else "content"


def item_vectors(catalog: Catalog, config: SemanticIdConfig, content: np.ndarray | None) -> np.ndarray:
    """The matrix the quantiser sees, one row per catalog item, for `config.source` (`auto` resolved).

    Each part is L2-normalised so cosine geometry (what sentence and SVD embeddings mean) decides
    the clusters; `fused` concatenates content * content_weight and collaborative * collaborative_weight.
    """
    source = resolve_source(catalog, config, content)
    parts = []
    if source in ("content", "fused"):
        parts.append(l2_normalise(check_content(catalog, content, source)) * config.content_weight)
    if source in ("collaborative", "fused"):
        collab = collaborative_embeddings(
            catalog,
            dim=config.collaborative_dim,
            window=config.collaborative_window,
            holdout=config.collaborative_holdout,
            seed=config.seed,
        )
        parts.append(collab * config.collaborative_weight)
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def fit_quantizer(
    x: np.ndarray, config: SemanticIdConfig, progress: bool = True
) -> tuple[np.ndarray, Quantizer, dict[str, Any]]:
    """Train the configured quantiser on item vectors `x`: the learned codes (n, L), the quantiser
    and what training did."""
    if config.method == "rqvae":
        from retrieval.semantic_ids.quantizer import from_rqvae
        from retrieval.semantic_ids.rqvae import train_rqvae  # torch only when the RQ-VAE is used

        result = train_rqvae(x, config, progress=progress)
        return result.codes, from_rqvae(result.model), result.training
    codes, quantizer = fit_residual_kmeans(
        x, config.levels, config.codebook_size, config.seed, dim=config.rkmeans_dim, progress=progress
    )
    return codes, quantizer, {}


def build_semantic_ids(
    catalog: Catalog, config: SemanticIdConfig, content: np.ndarray | None = None, progress: bool = True
) -> SemanticIds:
    """Give every catalog item a unique semantic ID: L learned codes (RQ-VAE or residual k-means) + 1 suffix.

    `content` is (n_items, d) with rows in `catalog.items` order (needed for source content/fused).
    Same catalog, content and config (incl. seed) give the same codes.
    """
    if len(catalog.items) == 0:
        raise GenrecError("items: the catalog is empty; nothing to give semantic IDs to")
    source = resolve_source(catalog, config, content)
    x = item_vectors(catalog, config, content)
    start = time.perf_counter()
    prefix, quantizer, training = fit_quantizer(x, config, progress)
    seconds = time.perf_counter() - start
    codes = append_uniqueness_level(prefix)
    collisions = collision_stats(prefix)
    stats = {
        "method": config.method,
        "source": source,
        "seed": config.seed,
        "n_items": len(catalog.items),
        "input_dim": int(x.shape[1]),
        "levels": config.levels,
        "codebook_size": config.codebook_size,
        "code_length": config.levels + 1,
        "collisions": collisions,
        "final_level_size": collisions["final_level_size"],
        "max_suffix": collisions["max_suffix"],
        "codebook_usage": codebook_usage(prefix, [config.codebook_size] * config.levels),
        "items_without_vector": int((~x.any(axis=1)).sum()),
        "training_seconds": round(seconds, 3),
        "training": training,
        "config": config.model_dump(mode="json"),
    }
    usage = " ".join(f"{u['used']}/{u['size']}" for u in stats["codebook_usage"])
    if progress:
        tqdm.write(
            f"semantic IDs: {len(codes)} items, {config.method} on {source} ({x.shape[1]}-d) in {seconds:.1f}s; "
            f"codes used per level {usage}; {collisions['count']} collisions ({collisions['rate']:.1%}) "
            f"resolved by a final level of size {collisions['final_level_size']}",
            file=sys.stderr,
        )
    item_ids = catalog.items["item_id"].astype(str).tolist()
    return SemanticIds(
        codes={item: [int(c) for c in row] for item, row in zip(item_ids, codes)}, stats=stats, quantizer=quantizer
    )
