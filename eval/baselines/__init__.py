"""Baselines scored by the same protocol as genrec: popularity, item-kNN, content nearest-neighbour,
and the dense networks CE-SASRec and BSARec (trained by `finetune.dense`, adapted by `eval.baselines.dense`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from eval.baselines.content import ContentNN
from eval.baselines.dense import DenseBaseline, check_trainable
from eval.baselines.itemknn import ItemKNN
from eval.baselines.popularity import Popularity
from genrec.config import DenseConfig, EvalConfig
from genrec.protocol import Recommender
from inference.dense import DenseRecommender
from retrieval.split import Split

__all__ = ["ContentNN", "DenseBaseline", "ItemKNN", "Popularity", "check_trainable", "fit_baselines"]

DENSE = ("sasrec", "bsarec")


def fit_baselines(
    split: Split,
    catalog_item_ids: Sequence[str],
    config: EvalConfig | None = None,
    item_vectors: Mapping[str, Sequence[float]] | np.ndarray | None = None,
    progress: bool = True,
    dense: DenseConfig | None = None,
    dataset: str = "dataset",
    trained: Mapping[str, DenseRecommender] | None = None,
) -> list[Recommender]:
    """Build and fit the baselines named in `config.baselines` on `split.train`.

    The dense networks are set by `dense` (the run's `dense` section) and early-stop on
    `split.valid`; the content baseline is skipped when no item vectors are given (a catalog
    without text, such as amazon-seq files). `dataset` names the data in error messages. A dense
    network in `trained` (the run's own, trained on the same split by `genrec train` with the same
    settings) is used as it is instead of training it again.
    """
    config = config or EvalConfig()
    dense = dense or DenseConfig()
    models: list[Recommender] = []
    for name in config.baselines:
        if name in DENSE:
            model = DenseBaseline(name, catalog_item_ids, getattr(dense, name), dataset=dataset, progress=progress)
            if trained and name in trained:
                model.model = trained[name]
            else:
                model.fit(split.train, split.valid)
            models.append(model)
            continue
        if name == "popularity":
            model = Popularity(catalog_item_ids)
        elif name == "itemknn":
            model = ItemKNN(catalog_item_ids, neighbors=config.knn_neighbors, recency=config.knn_recency)
        else:
            if item_vectors is None:
                continue
            model = ContentNN(catalog_item_ids, item_vectors, last_n=config.content_last_n)
        model.fit(split.train)
        models.append(model)
    return models
