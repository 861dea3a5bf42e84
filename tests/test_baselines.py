"""Baselines on a real slice of MovieLens-100K: each ranks the whole catalog under the protocol,
and they order as they should (random < popularity < SASRec, BSARec). The dense networks also
save and load with `from_pretrained`, score the catalog as log-probabilities, and refuse data they
cannot learn from in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from shared_data import ML100K, needs_ml100k

from eval.baselines import ContentNN, DenseBaseline, ItemKNN, Popularity, check_trainable, fit_baselines
from eval.evaluate import evaluate
from finetune.dense import TrainSettings, fit
from finetune.dense.build import build, resolve
from finetune.dense.train import training_examples
from genrec.config import DenseConfig, EvalConfig, load_config
from genrec.errors import GenrecError
from genrec.protocol import Recommender
from inference.dense import BSARec, SASRec, load_dense
from retrieval.catalog import make_interactions
from retrieval.split import leave_one_out

pytestmark = needs_ml100k


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


def _settings(**kw) -> TrainSettings:
    # one thread: much faster than two on a shared CI core pair
    settings = dict(lr=3e-3, batch_size=64, epochs=15, patience=15, eval_every=1, threads=1, progress=False)
    return TrainSettings(**(settings | kw))


def _small_sasrec(catalog, **kw) -> SASRec:
    # lr 3e-3 gets past the popularity plateau in ~10 epochs on 200 users
    return SASRec(catalog, hidden=64, layers=2, max_len=50, dropout=0.2, **kw)


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
    sasrec, stats = fit(_small_sasrec(catalog), split.train, split.valid, _settings())
    results = evaluate([pop, sasrec], split, catalog, ks=[10, 20], progress=False)
    assert results["sasrec"]["ndcg@10"] > results["popularity"]["ndcg@10"]
    assert results["sasrec"]["valid_rate"] == 1.0
    assert stats["targets_per_s"] > 0 and 1 <= stats["best_epoch"] <= stats["epochs"]
    assert stats["best_valid_ndcg@10"] == max(r["valid_ndcg@10"] for r in stats["history"])


def test_bsarec_trained_a_few_epochs_beats_popularity(movielens):
    split, catalog, _ = movielens
    train = {u: items[-20:] for u, items in split.train.items()}  # 20 targets a user keep the test short
    pop = Popularity(catalog)
    pop.fit(train)
    torch.manual_seed(0)  # initial weights (seeds 0-2: NDCG@10 0.037-0.045 against popularity's 0.033)
    model = BSARec(catalog, max_len=20, dropout=0.2)
    bsarec, stats = fit(model, train, split.valid, _settings(lr=2e-3, batch_size=128, epochs=4))
    results = evaluate([pop, bsarec], split, catalog, ks=[10], progress=False)
    assert results["bsarec"]["ndcg@10"] > results["popularity"]["ndcg@10"]
    assert stats["targets_per_epoch"] == sum(len(items) for items in train.values())


def test_sasrec_is_deterministic_for_a_seed(movielens):
    split, catalog, _ = movielens
    train = {u: items for u, items in list(split.train.items())[:40]}
    histories = [split.test[u][0] for u in sorted(split.test)[:20]]
    runs = []
    for _ in range(2):
        torch.manual_seed(7)  # initial weights
        model, _ = fit(_small_sasrec(catalog), train, None, _settings(epochs=2, seed=7))
        runs.append(model.recommend(histories, 10))
    assert runs[0] == runs[1]


def test_an_interrupted_training_resumes_from_its_checkpoint_as_if_never_stopped(movielens, tmp_path):
    split, catalog, _ = movielens
    train = {u: items for u, items in list(split.train.items())[:40]}
    histories = [split.test[u][0] for u in sorted(split.test)[:20]]
    torch.manual_seed(3)
    straight, stats = fit(_small_sasrec(catalog), train, split.valid, _settings(epochs=3, eval_every=2, seed=3))
    checkpoint = str(tmp_path / "sasrec.ckpt")
    torch.manual_seed(3)
    fit(_small_sasrec(catalog), train, split.valid, _settings(epochs=2, eval_every=2, seed=3, checkpoint=checkpoint))
    resumed, resumed_stats = fit(
        _small_sasrec(catalog),
        train,
        split.valid,  # fresh weights: the checkpoint wins
        _settings(epochs=3, eval_every=2, seed=3, checkpoint=checkpoint),
    )
    assert resumed.recommend(histories, 10) == straight.recommend(histories, 10)
    assert [r["loss"] for r in resumed_stats["history"]] == [r["loss"] for r in stats["history"]]


def test_a_causal_network_trains_each_user_once_and_a_filter_network_each_target(movielens):
    split, catalog, _ = movielens
    train = {"a": ["1", "2", "3"], "b": ["4"], "c": ["5", "6"]}
    assert training_examples(SASRec(catalog, max_len=50), train) == [([1, 2], [2, 3]), ([5], [6])]
    # BSARec's Fourier filter sees later positions, so every target of the last max_len items gets
    # its own prefix, the empty one included (as its reference code does)
    assert training_examples(BSARec(catalog, max_len=2), train) == [([], 2), ([2], 3), ([], 4), ([], 5), ([5], 6)]


@pytest.mark.parametrize("kind", [SASRec, BSARec])
def test_dense_scores_are_log_probabilities_over_the_catalog_in_index_order(movielens, kind):
    split, catalog, _ = movielens
    model = kind(catalog, max_len=20)
    histories = [split.test[u][0] for u in sorted(split.test)[:3]] + [[], ["not-a-film"]]
    scores = model.scores(histories)
    assert scores.shape == (len(histories), len(catalog))
    assert torch.allclose(scores.exp().sum(dim=1), torch.ones(len(histories)), atol=1e-4)
    top = model.recommend(histories, 5)
    for row, items in enumerate(top):  # the best-scored item outside the history comes first
        allowed = [j for j in range(len(catalog)) if catalog[j] not in set(histories[row])]
        assert float(scores[row, catalog.index(items[0])]) == max(float(scores[row, j]) for j in allowed)
        assert not set(items) & set(histories[row])


@pytest.mark.parametrize("kind", [SASRec, BSARec])
def test_dense_models_save_and_load_with_from_pretrained(movielens, tmp_path, kind):
    split, catalog, _ = movielens
    train = {u: items for u, items in list(split.train.items())[:30]}
    model, _ = fit(kind(catalog, max_len=20, heads=2), train, None, _settings(epochs=1))
    model.save_pretrained(tmp_path / "dense")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "dense").iterdir()}
    histories = [split.test[u][0] for u in sorted(split.test)[:8]]
    for loaded in (kind.from_pretrained(tmp_path / "dense"), load_dense(tmp_path / "dense")):
        assert type(loaded) is kind and loaded.item_ids == list(catalog) and loaded.heads == 2
        assert torch.allclose(loaded.scores(histories), model.scores(histories))
        assert loaded.recommend(histories, 10) == model.recommend(histories, 10)


def test_load_dense_names_a_missing_or_unknown_model(tmp_path):
    with pytest.raises(GenrecError, match="config.json: missing"):
        load_dense(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gru4rec"}')
    with pytest.raises(GenrecError, match="model_type 'gru4rec' is not one of sasrec, bsarec"):
        load_dense(tmp_path)


def test_fit_baselines_builds_the_configured_models(movielens):
    split, catalog, genres = movielens
    config = EvalConfig(baselines=["popularity", "itemknn", "content"], knn_neighbors=50)
    models = fit_baselines(split, catalog, config, item_vectors=genres, progress=False)
    assert [m.name for m in models] == ["popularity", "itemknn", "content"]
    assert [m.name for m in fit_baselines(split, catalog, config, progress=False)] == ["popularity", "itemknn"]


def test_a_dense_baseline_cut_by_the_clock_says_so(movielens):
    split, catalog, _ = movielens
    dense = DenseConfig()
    dense.sasrec = dense.sasrec.model_copy(update={"max_minutes": 1e-4, "epochs": 50, "max_len": 20})
    [model] = fit_baselines(split, catalog, EvalConfig(baselines=["sasrec"]), progress=False, dense=dense)
    assert isinstance(model, DenseBaseline) and model.name == "sasrec"
    stats = model.train_stats
    assert stats["stopped_by"] == "max_minutes" and stats["epochs"] == 1
    assert stats["best_valid_ndcg@10"] is not None  # the epoch the clock stopped was still validated


def test_dense_settings_follow_the_density_of_the_data():
    dense = {str(u): [str(i) for i in range(120)] for u in range(5)}  # MovieLens-like: long histories
    sparse = {str(u): [str(i) for i in range(8)] for u in range(5)}  # Amazon-like: a handful each
    config = DenseConfig()
    assert resolve("sasrec", config.sasrec, dense).max_len == 200
    assert (
        resolve("sasrec", config.sasrec, sparse).model_dump()
        == config.sasrec.model_copy(update={"max_len": 50, "dropout": 0.6, "lr": 5e-4, "batch_size": 512}).model_dump()
    )
    assert resolve("sasrec", config.sasrec.model_copy(update={"max_len": 64}), dense).max_len == 64  # configured wins
    model, settings, resolved = build("bsarec", ["1", "2"], config.bsarec, sparse)
    assert isinstance(model, BSARec) and (model.alpha, model.c, model.max_len) == (0.7, 5, 50)
    assert (settings.lr, settings.batch_size, settings.eval_every) == (resolved.lr, 256, 1)


@pytest.mark.parametrize(
    ("catalog", "train", "interactions", "reason"),
    [
        ([], {"u": ["1", "2"]}, None, "cannot rank an empty catalog"),
        (["1", "2"], {"u": ["1"], "v": ["2"]}, None, "every training history here has at most one item"),
        (["1", "2"], None, pd.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"]}), "have no timestamps"),
        (
            ["1", "2"],
            None,
            pd.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"], "timestamp": [7, 7]}),
            "share one timestamp",
        ),
    ],
)
def test_a_dense_baseline_refuses_data_it_cannot_learn_from_in_one_line(catalog, train, interactions, reason):
    with pytest.raises(GenrecError, match=reason) as err:
        check_trainable("sasrec", "toy-shop", catalog, train, interactions)
    assert str(err.value).startswith("toy-shop: sasrec ") and "\n" not in str(err.value)
    if train is not None:
        with pytest.raises(GenrecError, match=reason):
            DenseBaseline("bsarec", catalog, DenseConfig().bsarec, dataset="toy-shop").fit(train)


def test_old_sasrec_keys_in_a_run_config_point_to_their_new_place(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("eval:\n  sasrec_dropout: 0.3\n")
    with pytest.raises(GenrecError, match="eval.sasrec_dropout: SASRec settings moved to dense.sasrec.dropout"):
        load_config(path)
    path.write_text("dense:\n  sasrec:\n    dropout: 0.3\n  bsarec:\n    alpha: 0.5\n")
    config = load_config(path)
    assert config.dense.sasrec.dropout == 0.3 and config.dense.bsarec.alpha == 0.5
