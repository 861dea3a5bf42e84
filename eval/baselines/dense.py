"""The dense networks (CE-SASRec, BSARec) as evaluation rows: a thin adapter over `finetune.dense`.

The network, its training and its scoring live in `finetune.dense`; this adapter only checks that
the data can train one, builds it from the run's `dense` config (fields left at None follow the
density of the data), trains it on the split's training part with early stopping on its
validation part, and answers `recommend` like every other baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from finetune.dense import fit
from finetune.dense.build import build
from genrec.config import DenseModelConfig
from genrec.errors import GenrecError
from inference.dense import DenseRecommender
from retrieval.split import Case


def check_trainable(
    kind: str,
    dataset: str,
    catalog: Sequence[str],
    train: Mapping[str, Sequence[str]] | None = None,
    interactions: pd.DataFrame | None = None,
) -> None:
    """Fail in one line, naming the dataset and the reason, when `kind` cannot learn from the data:
    an empty catalog, interactions without an order (no timestamps, or one timestamp for all of a
    user's interactions), or no user with two training items (nothing follows anything)."""
    if not len(catalog):
        raise GenrecError(f"{dataset}: {kind} cannot rank an empty catalog")
    if interactions is not None:
        if "timestamp" not in interactions:
            raise GenrecError(f"{dataset}: {kind} is a sequential model and the interactions have no timestamps")
        per_user = interactions.groupby("user_id")["timestamp"].agg(["nunique", "size"])
        several = per_user[per_user["size"] > 1]
        if len(several) and (several["nunique"] == 1).all():
            raise GenrecError(
                f"{dataset}: {kind} is a sequential model and every user's interactions share one timestamp, "
                "so they have no order"
            )
    if train is not None and not any(len(items) >= 2 for items in train.values()):
        raise GenrecError(
            f"{dataset}: {kind} needs users with two or more training interactions in time order, "
            "and every training history here has at most one item"
        )


class DenseBaseline:
    """A dense next-item network under the evaluation protocol (`fit`, then `recommend`)."""

    def __init__(
        self,
        kind: str,
        catalog: Sequence[str],
        config: DenseModelConfig,
        dataset: str = "dataset",
        progress: bool = True,
    ):
        self.name = kind
        self.catalog = [str(i) for i in catalog]
        self.config = config
        self.dataset = dataset
        self.progress = progress
        self.model: DenseRecommender | None = None
        self.resolved: DenseModelConfig | None = None
        self.train_stats: dict = {}

    def fit(self, train: dict[str, list[str]], valid: Mapping[str, Case] | None = None) -> None:
        """Train on the training histories, early-stopping on `valid` when given."""
        check_trainable(self.name, self.dataset, self.catalog, train)
        model, settings, self.resolved = build(self.name, self.catalog, self.config, train, progress=self.progress)
        self.model, self.train_stats = fit(model, train, valid, settings)

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` catalog items for each history, history excluded."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: recommend called before fit")
        return self.model.recommend(histories, k)
