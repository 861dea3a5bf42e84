"""Baselines scored by the same protocol as genrec: popularity, item-kNN, content nearest-neighbour, SASRec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from eval.baselines.content import ContentNN
from eval.baselines.itemknn import ItemKNN
from eval.baselines.popularity import Popularity
from finetune.dense.sasrec import SASRec
from genrec.protocol import Recommender
from retrieval.split import Split
from genrec.config import EvalConfig

__all__ = ["ContentNN", "ItemKNN", "Popularity", "SASRec", "fit_baselines"]


def sasrec_max_len(config: EvalConfig, train: Mapping[str, Sequence[str]]) -> int:
    """SASRec's history length: the configured one, else 200 for dense data and 50 for sparse data
    (Kang & McAuley's settings for MovieLens and for Amazon)."""
    if config.sasrec_max_len is not None:
        return config.sasrec_max_len
    lengths = sorted(len(items) for items in train.values())
    return 200 if lengths and lengths[len(lengths) // 2] > 50 else 50


def fit_baselines(
    split: Split,
    catalog_item_ids: Sequence[str],
    config: EvalConfig | None = None,
    item_vectors: Mapping[str, Sequence[float]] | np.ndarray | None = None,
    progress: bool = True,
) -> list[Recommender]:
    """Build and fit the baselines named in `config.baselines` on `split.train`.

    SASRec early-stops on `split.valid`; the content baseline is skipped when no item vectors are
    given (a catalog without text, such as amazon-seq files).
    """
    config = config or EvalConfig()
    models: list[Recommender] = []
    for name in config.baselines:
        if name == "popularity":
            model: Recommender = Popularity(catalog_item_ids)
        elif name == "itemknn":
            model = ItemKNN(catalog_item_ids, neighbors=config.knn_neighbors, recency=config.knn_recency)
        elif name == "content":
            if item_vectors is None:
                continue
            model = ContentNN(catalog_item_ids, item_vectors, last_n=config.content_last_n)
        else:
            model = SASRec(
                catalog_item_ids,
                hidden=config.sasrec_hidden,
                layers=config.sasrec_layers,
                heads=config.sasrec_heads,
                max_len=sasrec_max_len(config, split.train),
                dropout=config.sasrec_dropout,
                lr=config.sasrec_lr,
                batch_size=config.sasrec_batch_size,
                epochs=config.sasrec_epochs,
                patience=config.sasrec_patience,
                val_users=config.sasrec_val_users,
                max_minutes=config.sasrec_max_minutes,
                seed=config.seed,
                threads=config.sasrec_threads,
                progress=progress,
            )
            model.fit(split.train, split.valid)
            models.append(model)
            continue
        model.fit(split.train)
        models.append(model)
    return models
