"""Baselines on a real slice of MovieLens-100K: each ranks the whole catalog under the protocol,
and they order as they should (random < popularity < SASRec)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval.baselines import ContentNN, ItemKNN, Popularity, SASRec, fit_baselines
from eval.evaluate import evaluate
from genrec.protocol import Recommender
from retrieval.split import leave_one_out
from genrec.config import EvalConfig
from retrieval.catalog import make_interactions

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
pytestmark = pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="MovieLens-100K not present in ../shared")


@pytest.fixture(scope="module")
def movielens():
    """The first 200 users of u.data as a leave-one-out split, the full 1,682-film catalog and genre vectors."""
    ratings = pd.read_csv(ML100K / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    ratings = ratings[ratings["user_id"] <= 200]
    split = leave_one_out(make_interactions(ratings, "u.data"))
    films = pd.read_csv(ML100K / "u.item", sep="|", header=None, encoding="latin-1")
    catalog = films[0].astype(str).tolist()
    genres = films.iloc[:, 5:].to_numpy(dtype=np.float32)  # the 19 genre flags: real content vectors
    return split, catalog, genres


class RandomRanker:
    """Uniformly random items not in the history: the floor every baseline must clear."""

    name = "random"

    def __init__(self, catalog, seed=0):
        self.catalog, self.rng = list(catalog), np.random.default_rng(seed)

    def fit(self, train):
        pass

    def recommend(self, histories, k):
        out = []
        for history in histories:
            seen = set(history)
            order = self.rng.permutation(len(self.catalog))
            out.append([self.catalog[j] for j in order if self.catalog[j] not in seen][:k])
        return out


def _small_sasrec(catalog, **kw):
    # one thread: much faster than two on a shared CI core pair; lr 3e-3 gets past the popularity plateau in ~10 epochs
    settings = dict(hidden=64, layers=2, max_len=50, dropout=0.2, lr=3e-3, batch_size=64, epochs=15, patience=15)
    settings.update(threads=1, progress=False)
    settings.update(kw)
    return SASRec(catalog, **settings)


@pytest.mark.parametrize("make", [Popularity, ItemKNN, lambda c: ItemKNN(c, neighbors=20, recency=0.8)])
def test_recommend_never_returns_history_items_or_unknown_ids(movielens, make):
    split, catalog, _ = movielens
    model = make(catalog)
    model.fit(split.train)
    assert isinstance(model, Recommender)
    users = sorted(split.test)[:50]
    histories = [split.test[u][0] for u in users] + [["not-a-film", "1"]]
    known = set(catalog)
    for history, items in zip(histories, model.recommend(histories, 20)):
        assert len(items) == 20 and len(set(items)) == 20
        assert not set(items) & set(history)
        assert set(items) <= known


def test_full_ranking_covers_the_whole_catalog_except_the_history(movielens):
    split, catalog, _ = movielens
    model = ItemKNN(catalog)
    model.fit(split.train)
    history = split.test[sorted(split.test)[0]][0]
    ranked = model.recommend([history], len(catalog))[0]
    assert sorted(ranked) == sorted(set(catalog) - set(history))


def test_popularity_ranks_items_by_training_count(movielens):
    split, catalog, _ = movielens
    model = Popularity(catalog)
    model.fit(split.train)
    counts = split.train_counts()
    top = model.recommend([[]], 10)[0]
    assert [counts[i] for i in top] == sorted((counts[i] for i in top), reverse=True)
    assert counts[top[0]] == max(counts.values())


def test_itemknn_scores_are_summed_cosine_similarity_to_history_items(movielens):
    split, catalog, _ = movielens
    model = ItemKNN(catalog, neighbors=None)
    model.fit(split.train)
    # recompute one similarity from the raw co-occurrence counts
    users_of: dict[str, set[str]] = {}
    for user, items in split.train.items():
        for item in items:
            users_of.setdefault(item, set()).add(user)
    a, b = "50", "181"  # Star Wars and Return of the Jedi
    expected = len(users_of[a] & users_of[b]) / np.sqrt(len(users_of[a]) * len(users_of[b]))
    ia, ib = model.index.pos[a], model.index.pos[b]
    assert model.sim[ia, ib] == pytest.approx(expected)
    best = max((j for j in range(len(catalog)) if j != ia), key=lambda j: model.sim[ia, j])
    assert model.recommend([[a]], 1)[0] == [catalog[best]]


def test_content_nn_recommends_the_nearest_item_to_the_recent_history(movielens):
    split, catalog, genres = movielens
    model = ContentNN(catalog, genres, last_n=1)
    model.fit(split.train)
    unit = genres / np.linalg.norm(genres, axis=1, keepdims=True).clip(1e-12)
    history = ["1", "172"]  # Toy Story, then The Empire Strikes Back: only the last one counts
    top = model.recommend([history], 20)[0]
    cos = unit @ unit[catalog.index("172")]
    cos[[catalog.index(i) for i in history]] = -1.0
    got = [float(cos[catalog.index(i)]) for i in top]
    assert got == sorted(got, reverse=True)
    assert got[0] == pytest.approx(cos.max())
    assert got[-1] >= np.sort(cos)[-20] - 1e-6  # nothing closer was left out


def test_content_nn_rejects_vectors_that_do_not_cover_the_catalog(movielens):
    _, catalog, genres = movielens
    from genrec.errors import GenrecError

    with pytest.raises(GenrecError, match="one row per catalog item"):
        ContentNN(catalog, genres[:10])


def test_popularity_beats_random(movielens):
    split, catalog, _ = movielens
    pop = Popularity(catalog)
    pop.fit(split.train)
    results = evaluate([pop, RandomRanker(catalog)], split, catalog, ks=[10], progress=False)
    assert results["popularity"]["recall@10"] > results["random"]["recall@10"] + 0.03
    assert results["random"]["valid_rate"] == results["popularity"]["valid_rate"] == 1.0


def test_sasrec_trained_a_few_epochs_beats_popularity(movielens):
    split, catalog, _ = movielens
    pop = Popularity(catalog)
    pop.fit(split.train)
    sasrec = _small_sasrec(catalog)
    sasrec.fit(split.train, split.valid)
    results = evaluate([pop, sasrec], split, catalog, ks=[10, 20], progress=False)
    assert results["sasrec"]["ndcg@10"] > results["popularity"]["ndcg@10"]
    assert results["sasrec"]["valid_rate"] == 1.0
    stats = sasrec.train_stats
    assert stats["examples_per_s"] > 0 and 1 <= stats["best_epoch"] <= stats["epochs"]


def test_sasrec_is_deterministic_for_a_seed(movielens):
    split, catalog, _ = movielens
    train = {u: items for u, items in list(split.train.items())[:40]}
    histories = [split.test[u][0] for u in sorted(split.test)[:20]]
    runs = []
    for _ in range(2):
        model = _small_sasrec(catalog, epochs=2, seed=7)
        model.fit(train)
        runs.append(model.recommend(histories, 10))
    assert runs[0] == runs[1]


def test_fit_baselines_builds_the_configured_models(movielens):
    split, catalog, genres = movielens
    config = EvalConfig(baselines=["popularity", "itemknn", "content"], knn_neighbors=50)
    models = fit_baselines(split, catalog, config, item_vectors=genres, progress=False)
    assert [m.name for m in models] == ["popularity", "itemknn", "content"]
    assert [m.name for m in fit_baselines(split, catalog, config, progress=False)] == ["popularity", "itemknn"]


def test_sasrec_history_length_follows_the_density_of_the_data():
    from eval.baselines import sasrec_max_len
    from genrec.config import EvalConfig

    dense = {str(u): [str(i) for i in range(120)] for u in range(5)}  # MovieLens-like: long histories
    sparse = {str(u): [str(i) for i in range(8)] for u in range(5)}  # Amazon-like: a handful each
    assert sasrec_max_len(EvalConfig(), dense) == 200 and sasrec_max_len(EvalConfig(), sparse) == 50
    assert sasrec_max_len(EvalConfig(sasrec_max_len=64), dense) == 64  # a configured length wins
