"""Collaborative item embeddings from interactions alone, for catalogs without text.

Items that appear close together in users' histories are related. Count those co-occurrences,
turn the counts into positive pointwise mutual information (PPMI, so popular items do not relate
to everything), and factorise the PPMI matrix by truncated SVD: rows of U * sqrt(S) are item
vectors (Levy & Goldberg 2014 show this matches word2vec-style embeddings; here, item2vec).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from threadpoolctl import threadpool_limits

from genrec.errors import GenrecError
from retrieval.catalog import Catalog


def training_histories(catalog: Catalog, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item row) of every interaction except each user's last `holdout`, in history order.

    Leaving out the items leave-one-out evaluation tests on (last) and validates on (second to
    last) keeps them from shaping the IDs the model is later scored with.
    """
    inter = catalog.interactions
    item_rows = inter["item_id"].map(item_positions(catalog))
    known = item_rows.notna().to_numpy()
    from_end = inter.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    keep = known & (from_end >= holdout)
    users = inter["user_id"].to_numpy()[keep]
    _, user_index = np.unique(users, return_inverse=True)
    return user_index.astype(np.int64), item_rows.to_numpy()[keep].astype(np.int64)


def item_positions(catalog: Catalog) -> dict[str, int]:
    """item_id -> row in the catalog's item order."""
    return {item: row for row, item in enumerate(catalog.items["item_id"].tolist())}


def cooccurrence(users: np.ndarray, items: np.ndarray, n_items: int, window: int) -> sp.csr_matrix:
    """Symmetric item x item counts of pairs at most `window` apart in one user's history (0: any distance).

    A pair at distance k counts 1/k: neighbours in time say more than items a session apart.
    """
    order = np.argsort(users, kind="stable")  # histories are already grouped; stable keeps time order
    users, items = users[order], items[order]
    if window == 0:
        window = int(np.bincount(users).max()) if len(users) else 0
    heads, tails, weights = [], [], []
    for k in range(1, window + 1):
        same_user = users[k:] == users[:-k]
        a, b = items[:-k][same_user], items[k:][same_user]
        distinct = a != b  # an item repeated in a history is not evidence about two items
        heads.append(a[distinct])
        tails.append(b[distinct])
        weights.append(np.full(int(distinct.sum()), 1.0 / k))
    if not heads:
        return sp.csr_matrix((n_items, n_items))
    a, b, w = np.concatenate(heads), np.concatenate(tails), np.concatenate(weights)
    rows, cols = np.concatenate([a, b]), np.concatenate([b, a])
    return sp.coo_matrix((np.concatenate([w, w]), (rows, cols)), (n_items, n_items)).tocsr()


def ppmi(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Positive pointwise mutual information of a symmetric count matrix (zeros stay zeros)."""
    counts = counts.tocoo()
    total = counts.sum()
    marginal = np.asarray(counts.sum(axis=1)).ravel()
    pmi = np.log(counts.data * total / (marginal[counts.row] * marginal[counts.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), counts.shape)


def collaborative_embeddings(
    catalog: Catalog, dim: int = 64, window: int = 5, holdout: int = 2, seed: int = 0
) -> np.ndarray:
    """Item vectors (n_items, dim) float32 from co-occurrence in user histories, rows in catalog order.

    Rows are L2-normalised; an item with no co-occurrence left after the holdout gets a zero row
    (its semantic ID then rests on the uniqueness level alone; use `source: fused` for such catalogs).
    """
    n_items = len(catalog.items)
    users, items = training_histories(catalog, holdout)
    matrix = ppmi(cooccurrence(users, items, n_items, window))
    if matrix.nnz == 0:
        raise GenrecError(
            "interactions: no two items co-occur in any user's history (after holding out each user's last "
            f"{holdout}); collaborative semantic IDs need interactions; use semantic_ids.source: content"
        )
    dim_eff = min(dim, n_items - 1)
    svd = TruncatedSVD(n_components=dim_eff, algorithm="randomized", n_iter=7, random_state=seed)
    with threadpool_limits(1):  # BLAS threads contending for 2 busy cores made this 5x slower
        u_s = svd.fit_transform(matrix)  # U * S
    vectors = u_s / np.sqrt(np.maximum(svd.singular_values_, 1e-12))  # U * sqrt(S)
    if dim_eff < dim:
        vectors = np.pad(vectors, ((0, 0), (0, dim - dim_eff)))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
