"""The metric implementation and the leave-one-out split, on hand-computed cases and real-shaped data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eval.evaluate import evaluate, evaluate_detailed, evaluate_validation, save_results
from genrec.metrics import cold_start_mask, hit_ranks, ndcg_at, ranking_metrics, score_lists
from retrieval.catalog import make_interactions
from retrieval.split import leave_one_out, split_sequences

CATALOG = [f"i{n}" for n in range(20)]


def test_hit_rank_is_one_based_first_occurrence_and_zero_when_absent():
    ranked = [["i1", "i2", "i3"], ["i4", "i5", "i5"], ["i7", "i8"]]
    assert hit_ranks(ranked, ["i1", "i5", "i9"]).tolist() == [1, 2, 0]


def test_ndcg_recall_and_mrr_match_hand_computed_values():
    # targets at rank 1, rank 3, and absent
    ranked = [["i1", "i2", "i3"], ["i4", "i5", "i6"], ["i7", "i8", "i9"]]
    m = score_lists(ranked, ["i1", "i6", "i0"], CATALOG, ks=[2, 5])
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1.0 + 0.5) / 3)  # 1/log2(1+1) = 1, 1/log2(3+1) = 0.5
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1.0 + 1 / 3) / 3)


def test_ndcg_at_rank_two_and_six_is_one_over_log2_of_rank_plus_one():
    ranks = np.array([2, 6, 0])
    assert ndcg_at(ranks, 10).tolist() == pytest.approx([1 / math.log2(3), 1 / math.log2(7), 0.0])
    assert ndcg_at(ranks, 5).tolist() == pytest.approx([0.6309297535714575, 0.0, 0.0])


def test_curves_for_any_k_are_monotone_in_k():
    ranks = np.array([1, 3, 7, 12, 0, 20])
    recalls = [ranking_metrics(ranks, [k])[f"recall@{k}"] for k in range(1, 21)]
    assert recalls == sorted(recalls)
    assert recalls[-1] == pytest.approx(5 / 6)


def test_invalid_ids_lower_valid_rate_and_take_up_ranks():
    ranked = [["ghost", "i1", "i2"], ["i3", "also-ghost", "i4"]]
    m = score_lists(ranked, ["i1", "i4"], CATALOG, ks=[5])
    assert m["valid_rate"] == pytest.approx(4 / 6)
    assert hit_ranks(ranked, ["i1", "i4"]).tolist() == [2, 3]
    clean = score_lists([["i1", "i2"], ["i3", "i4"]], ["i1", "i4"], CATALOG, ks=[5])
    assert clean["valid_rate"] == 1.0


def test_coverage_counts_distinct_catalog_items_in_top_ten():
    ranked = [[f"i{n}" for n in range(12)], [f"i{n}" for n in range(5, 17)] + ["ghost"]]
    m = score_lists(ranked, ["i0", "i0"], CATALOG, ks=[10])
    # first list's top-10: i0..i9; second's: i5..i14; union i0..i14 = 15 of 20; items past rank 10 don't count
    assert m["coverage"] == pytest.approx(15 / 20)


def test_cold_start_slice_is_targets_seen_fewer_than_five_times_in_training():
    counts = {"i1": 4, "i2": 5, "i3": 100}
    assert cold_start_mask(["i1", "i2", "i3", "never"], counts).tolist() == [True, False, False, True]
    m = score_lists([["i1"], ["i2"], ["x"]], ["i1", "i2", "i3"], CATALOG, ks=[10], train_counts=counts)
    assert m["cold_users"] == 1
    assert m["cold_recall@10"] == 1.0


# ---- split -------------------------------------------------------------------------------------


def _interactions() -> pd.DataFrame:
    """A normalised interactions frame shaped like MovieLens: shuffled rows, a timestamp tie."""
    rows = [
        ("u1", "m3", 30), ("u1", "m1", 10), ("u1", "m2", 20), ("u1", "m4", 40), ("u1", "m5", 50),
        ("u2", "m1", 5), ("u2", "m2", 5), ("u2", "m6", 7),
        ("u3", "m2", 1), ("u3", "m4", 2),
        ("u4", "m9", 3),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).sample(frac=1.0, random_state=3)
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")  # as the loaders deliver it
    return make_interactions(frame, "test")


def test_leave_one_out_holds_out_last_item_for_test_and_second_to_last_for_validation():
    split = leave_one_out(_interactions())
    assert split.train["u1"] == ["m1", "m2", "m3"]
    assert split.valid["u1"] == (["m1", "m2", "m3"], "m4")
    assert split.test["u1"] == (["m1", "m2", "m3", "m4"], "m5")
    assert split.test["u2"][1] == "m6"


def test_users_with_fewer_than_three_interactions_are_train_only():
    split = leave_one_out(_interactions())
    assert split.train["u3"] == ["m2", "m4"] and split.train["u4"] == ["m9"]
    assert "u3" not in split.test and "u3" not in split.valid and "u4" not in split.test


def test_no_target_is_part_of_its_own_history_or_of_training():
    split = leave_one_out(_interactions())
    for user, (history, target) in split.test.items():
        assert history == split.train[user] + [split.valid[user][1]]
        assert target not in split.train[user]


def test_sequence_split_matches_the_frame_split_of_the_same_histories():
    sequences = {"1": ["10", "11", "12", "13"], "2": ["10", "14"], "3": ["15", "16", "17"]}
    rows = [(u, item, t) for u, items in sequences.items() for t, item in enumerate(items)]
    from_frame = leave_one_out(make_interactions(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), "t"))
    split = split_sequences(sequences)
    assert split == from_frame
    assert split.test["1"] == (["10", "11", "12"], "13")
    assert split.valid["3"] == (["15"], "16")
    assert "2" not in split.test
    assert split.train_counts()["10"] == 2


# ---- evaluate ----------------------------------------------------------------------------------


class _Fixed:
    """A real (trivial) recommender: the same fixed list for everyone, history not excluded."""

    def __init__(self, name: str, items: list[str]):
        self.name, self.items = name, items

    def fit(self, train):
        pass

    def recommend(self, histories, k):
        return [self.items[:k] for _ in histories]


def test_evaluate_scores_every_model_on_the_same_test_users_and_writes_json(tmp_path):
    split = leave_one_out(_interactions())
    catalog = sorted({f"m{n}" for n in range(1, 10)})
    models = [_Fixed("hits", ["m5", "m6"]), _Fixed("invalid", ["nope", "m6"])]
    results = evaluate(models, split, catalog, ks=[1, 2], progress=False)
    assert results["hits"]["recall@1"] == pytest.approx(0.5)  # u1's target m5 at rank 1, u2's m6 at rank 2
    assert results["hits"]["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert results["invalid"]["valid_rate"] == pytest.approx(0.5)
    assert results["hits"]["users"] == results["invalid"]["users"] == 2
    assert results["hits"]["coverage"] == pytest.approx(2 / 9)
    save_results(results, tmp_path / "eval" / "metrics.json")
    assert (tmp_path / "eval" / "metrics.json").read_text().startswith("{")
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")]


def test_evaluate_detailed_keeps_per_user_ranks_and_validation_uses_valid_targets():
    split = leave_one_out(_interactions())
    catalog = [f"m{n}" for n in range(1, 10)]
    detailed = evaluate_detailed([_Fixed("f", ["m4", "m5"])], split, catalog, ks=[2], progress=False)
    assert dict(zip(detailed["f"].users, detailed["f"].ranks.tolist())) == {"u1": 2, "u2": 0}
    valid = evaluate_validation(_Fixed("f", ["m4", "m5"]), split, catalog, ks=[2])
    assert valid["recall@2"] == pytest.approx(0.5)  # u1's validation target is m4


def test_paired_model_test_matches_users_and_tells_a_real_gap_from_noise():
    from eval.compare import paired_models
    from eval.evaluate import ModelEvaluation

    rng = np.random.default_rng(0)
    users = [str(u) for u in range(400)]
    targets = [f"i{u}" for u in range(400)]
    noise = rng.integers(0, 21, size=400)  # rank 0 = missed, else 1..20
    same = ModelEvaluation("b", {}, users[::-1], targets[::-1], noise[::-1].copy())  # other order: paired by user
    first = ModelEvaluation("a", {}, users, targets, noise.copy())
    tie = paired_models(first, same)
    assert tie["users"] == 400 and tie["diff"] == 0.0 and tie["bootstrap_p"] == 1.0
    better = ModelEvaluation(
        "a", {}, users, targets, np.where(noise > 1, noise - 1, noise)
    )  # every hit one place higher
    gap = paired_models(better, same)
    assert gap["diff"] > 0 and gap["ci95"][0] > 0 and gap["bootstrap_p"] < 0.01
    with pytest.raises(Exception, match="no common user"):
        paired_models(first, ModelEvaluation("c", {}, ["x"], ["y"], np.array([1])))
