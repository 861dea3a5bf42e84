"""Pure functions on code tuples: the uniqueness level, collision and codebook-usage figures.

Learned levels (RQ-VAE or residual k-means) give items with near-identical content the same
prefix. TIGER's fix is one more level: items sharing a prefix are numbered 0, 1, 2, ... in catalog
order, so every item's full code is distinct and the map code -> item is a function.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genrec.errors import GenrecError


def append_uniqueness_level(prefix: np.ndarray) -> np.ndarray:
    """Return (n, L+1) codes: `prefix` (n, L) plus a suffix counting items that share the prefix.

    The first item (in row order) with a given prefix gets 0, the next 1, and so on, so the result
    depends only on the prefix codes and the catalog order.
    """
    prefix = np.asarray(prefix, dtype=np.int64)
    _, group = np.unique(prefix, axis=0, return_inverse=True)
    group = group.reshape(-1)
    suffix = np.zeros(len(prefix), dtype=np.int64)
    seen: dict[int, int] = {}
    for row, g in enumerate(group.tolist()):
        suffix[row] = seen.get(g, 0)
        seen[g] = suffix[row] + 1
    return np.concatenate([prefix, suffix[:, None]], axis=1)


def collision_stats(prefix: np.ndarray) -> dict[str, Any]:
    """Collisions of the learned levels, before the uniqueness level is added.

    `count` is the number of items that need a non-zero suffix (n_items - distinct prefixes) and
    `rate` is count / n_items; `shared_prefix_items` counts every item whose prefix some other item
    also has; `final_level_size` (largest group) is the size of the uniqueness level.
    """
    prefix = np.asarray(prefix, dtype=np.int64)
    n = len(prefix)
    _, counts = np.unique(prefix, axis=0, return_counts=True)
    count = int(n - len(counts))
    largest = int(counts.max()) if n else 0
    return {
        "count": count,
        "rate": count / n if n else 0.0,
        "distinct_prefixes": int(len(counts)),
        "colliding_groups": int((counts > 1).sum()),
        "shared_prefix_items": int(counts[counts > 1].sum()),
        "final_level_size": largest,
        "max_suffix": largest - 1,
    }


def codebook_usage(codes: np.ndarray, sizes: list[int]) -> list[dict[str, Any]]:
    """Per level: how many of the codebook's codes are used, and the perplexity of their use.

    Perplexity is exp(entropy) of the code histogram: it equals the codebook size when items are
    spread evenly and 1 when all share a code, so it exposes a few codes hoarding most items even
    when every code is used once.
    """
    codes = np.asarray(codes, dtype=np.int64)
    usage = []
    for level, size in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        used = int((counts > 0).sum())
        usage.append(
            {
                "level": level + 1,
                "used": used,
                "size": int(size),
                "usage": used / size,
                "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            }
        )
    return usage


def codebook_sizes(codes: dict[str, list[int]]) -> list[int]:
    """Size of every level, including the final uniqueness level: the largest code used + 1.

    The tokenizer creates one token per (level, code) from these sizes (`<a_0>`..`<a_{n-1}>`, ...),
    so every code in the map has a token and no level gets tokens beyond what is used.
    """
    if not codes:
        raise GenrecError("semantic IDs: the code map is empty; run `genrec index` to build it")
    matrix = np.array(list(codes.values()), dtype=np.int64)
    return [int(v) + 1 for v in matrix.max(axis=0)]


def code_to_item(codes: dict[str, list[int]]) -> dict[tuple[int, ...], str]:
    """The inverse map: code tuple -> item id (codes are unique, so it is a function)."""
    inverse = {tuple(code): item for item, code in codes.items()}
    if len(inverse) != len(codes):
        raise GenrecError("semantic IDs: two items share a code; rebuild them with `genrec index`")
    return inverse
