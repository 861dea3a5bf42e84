"""genrec's metrics agree with an independent, well-kept evaluator (ranx) on a real run's lists.

The lists are what the evaluation protocol itself collected (`evaluate_detailed` through the
`ListRecorder` that `genrec eval` uses) from a briefly trained SASRec, popularity (whose equal
counts make ties) and a model that returns ids outside the catalog; many targets are absent from
the lists. ranx reads the same lists as runs (score = list length - position, so its order is the
list's order) and the held-out items as qrels. Every metric the README reports must agree to 1e-9,
for the mean and for every user.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

ranx = pytest.importorskip("ranx")

from shared_data import ML100K, needs_ml100k  # noqa: E402

from eval.baselines import Popularity  # noqa: E402
from eval.evaluate import evaluate_detailed  # noqa: E402
from eval.run_eval import ListRecorder  # noqa: E402
from finetune.dense import TrainSettings, fit  # noqa: E402
from inference.dense import SASRec  # noqa: E402
from retrieval.catalog import make_interactions  # noqa: E402
from retrieval.split import leave_one_out  # noqa: E402

pytestmark = [
    needs_ml100k,
    pytest.mark.filterwarnings("ignore:unsafe cast"),  # numba, inside ranx
]

KS = (5, 10, 20)
# genrec metric -> ranx metric (Recall@K of one held-out item is ranx's hit rate and recall alike)
METRICS = {f"ndcg@{k}": f"ndcg@{k}" for k in KS} | {f"recall@{k}": f"recall@{k}" for k in KS} | {"mrr": "mrr"}


class WithGhosts:
    """A real model's lists with ids outside the catalog put at ranks 1 and 4 of every third list."""

    name = "ghosts"

    def __init__(self, model):
        self.model = model

    def recommend(self, histories, k):
        out = []
        for n, items in enumerate(self.model.recommend(histories, k)):
            if n % 3 == 0:
                items = list(items)
                items[0], items[3] = f"ghost-{n}-a", f"ghost-{n}-b"
            out.append(items)
        return out


@pytest.fixture(scope="module")
def scored_lists():
    """Lists the protocol collected from three real models on the first 300 users of ML-100K."""
    ratings = pd.read_csv(ML100K / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    split = leave_one_out(make_interactions(ratings[ratings["user_id"] <= 300], "u.data"))
    catalog = pd.read_csv(ML100K / "u.item", sep="|", header=None, encoding="latin-1")[0].astype(str).tolist()
    torch.manual_seed(0)
    sasrec, _ = fit(
        SASRec(catalog, max_len=50, dropout=0.2),
        split.train,
        None,
        TrainSettings(lr=3e-3, batch_size=64, epochs=4, threads=1, progress=False),
    )
    popularity = Popularity(catalog)
    popularity.fit(split.train)
    models = [ListRecorder(sasrec), ListRecorder(popularity), ListRecorder(WithGhosts(sasrec))]
    results = evaluate_detailed(models, split, catalog, ks=KS, progress=False)
    return {m.name: (m.lists, results[m.name]) for m in models}, split


def ranx_scores(lists, result) -> dict[str, np.ndarray]:
    """Per-user metrics of the lists computed by ranx."""
    users = [f"u{i:06d}" for i in range(len(lists))]  # ranx returns per-user scores in sorted id order
    qrels = ranx.Qrels({u: {t: 1} for u, t in zip(users, result.targets)})
    run = ranx.Run({u: {item: float(len(items) - r) for r, item in enumerate(items)} for u, items in zip(users, lists)})
    return ranx.evaluate(qrels, run, list(METRICS.values()), return_mean=False, make_comparable=True)


@pytest.mark.parametrize("model", ["sasrec", "popularity", "ghosts"])
def test_every_reported_metric_equals_ranx_on_the_same_lists(scored_lists, model):
    by_model, split = scored_lists
    lists, result = by_model[model]
    assert len(lists) == len(result.targets) == len(split.test)
    assert all(len(items) == len(set(items)) == max(KS) for items in lists)  # ranx runs cannot hold duplicates
    theirs = ranx_scores(lists, result)
    for ours, name in METRICS.items():
        assert result.summary[ours] == pytest.approx(float(np.mean(theirs[name])), abs=1e-9), ours
    ranks = result.ranks  # per user: the metrics are functions of the rank, so compare them user by user
    hit = (ranks > 0) & (ranks <= 10)
    assert np.allclose(np.where(hit, 1 / np.log2(ranks + 1.0), 0.0), theirs["ndcg@10"], atol=1e-9, rtol=0)
    assert np.allclose(np.where(ranks > 0, 1 / np.maximum(ranks, 1), 0.0), theirs["mrr"], atol=1e-9, rtol=0)


def test_the_lists_hold_ties_absent_targets_and_invalid_ids(scored_lists):
    by_model, split = scored_lists
    counts = split.train_counts()
    popular = by_model["popularity"][0]
    assert any(counts[a] == counts[b] for items in popular for a, b in zip(items, items[1:]))  # tied scores
    for model, (_, result) in by_model.items():
        assert (result.ranks == 0).any() and (result.ranks > 0).any(), model
    assert by_model["ghosts"][1].summary["valid_rate"] < 1.0 == by_model["sasrec"][1].summary["valid_rate"]
