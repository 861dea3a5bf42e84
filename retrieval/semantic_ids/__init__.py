"""Semantic IDs: a short, unique code tuple per item, learned from its content and/or interactions.

    sids = build_semantic_ids(catalog, config.semantic_ids, content=embeddings)
    save_semantic_ids(sids, paths)            # RUN/semantic_ids.json + RUN/semantic_ids.stats.json
    codes = load_semantic_ids(paths)          # {"<item_id>": [c1, c2, c3, c4]}
    codebook_sizes(codes)                     # [256, 256, 256, 3]: tokens per level for the tokenizer

Modules: `rqvae` (TIGER's RQ-VAE), `rkmeans` (residual k-means), `collaborative` (PPMI + SVD item
vectors), `codes` (uniqueness level, statistics), `build` (the pipeline), `store` (files).
"""

from retrieval.semantic_ids.build import SemanticIds, build_semantic_ids, item_vectors, resolve_source
from retrieval.semantic_ids.codes import code_to_item, codebook_sizes
from retrieval.semantic_ids.collaborative import collaborative_embeddings
from retrieval.semantic_ids.store import load_semantic_ids, save_semantic_ids

__all__ = [
    "SemanticIds",
    "build_semantic_ids",
    "code_to_item",
    "codebook_sizes",
    "collaborative_embeddings",
    "item_vectors",
    "load_semantic_ids",
    "resolve_source",
    "save_semantic_ids",
]
