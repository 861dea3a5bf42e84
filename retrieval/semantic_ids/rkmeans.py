"""Residual k-means: the fast alternative to the RQ-VAE.

Level 1 clusters the item vectors; level d clusters what is left after subtracting the centroids
of levels 1..d-1. No training, no decoder: about a second for tens of thousands of items.

The vectors are first reduced to their top principal components (as the RQ-VAE quantises a small
latent). In hundreds of dimensions the residuals of level 2 onwards are nearly orthogonal to each
other and k-means sends most of them to the few centroids nearest the origin, so many items
collide; too few components lose vectors whose variance is spread out (docs/experiments.md).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from retrieval.semantic_ids.quantizer import Quantizer, from_rkmeans


def kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster rows of `x` into at most `k` groups; return (centroids (k', d), labels (n,)).

    k' = min(k, n): a level cannot have more clusters than items. Deterministic for a seed.
    """
    k = min(k, len(x))
    # One thread: these problems are small, and on a busy machine OpenMP threads waiting for a
    # core cost far more than they gain (an RQ-VAE step ran 80x slower with 2 threads).
    with warnings.catch_warnings(), threadpool_limits(1):
        # Fewer distinct points than clusters (duplicate items) is expected; the extra centroids
        # simply stay unused, which the usage statistics report.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64)


def principal_components(x: np.ndarray, dim: int, seed: int) -> tuple[np.ndarray, PCA | None]:
    """Project rows of `x` onto their top `dim` principal components (unchanged if already that small);
    also the fitted projection (None when nothing was reduced)."""
    dim = min(dim, x.shape[1], len(x))
    if dim >= x.shape[1] or len(x) < 2:
        return x, None
    with threadpool_limits(1):
        pca = PCA(n_components=dim, random_state=seed)
        return pca.fit_transform(x), pca


def fit_residual_kmeans(
    x: np.ndarray, levels: int, codebook_size: int, seed: int, dim: int = 64, progress: bool = True
) -> tuple[np.ndarray, Quantizer]:
    """Quantise each row of `x` into `levels` codes by k-means on successive residuals: the codes
    (n, levels) int64 and the quantiser (projection + centroids) that codes new vectors the same way.

    Clustering happens on the top `dim` principal components of `x` (see the module docstring).
    """
    residual, pca = principal_components(np.asarray(x, dtype=np.float64), dim, seed)
    codes = np.zeros((len(residual), levels), dtype=np.int64)
    books = []
    for level in tqdm(range(levels), desc="residual k-means", unit="level", disable=not progress):
        centroids, labels = kmeans(residual, codebook_size, seed + level)
        codes[:, level] = labels
        books.append(centroids)
        residual = residual - centroids[labels]
    quantizer = from_rkmeans(None if pca is None else pca.mean_, None if pca is None else pca.components_, books)
    return codes, quantizer


def residual_kmeans(
    x: np.ndarray, levels: int, codebook_size: int, seed: int, dim: int = 64, progress: bool = True
) -> np.ndarray:
    """The codes of `fit_residual_kmeans` alone."""
    return fit_residual_kmeans(x, levels, codebook_size, seed, dim, progress)[0]
