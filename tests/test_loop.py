"""The one training loop (`finetune.loop`): resume, early stopping, budget and checkpoints, the same
for every stage. Shown here on a small SASRec (`finetune.dense.fit`) over 60 MovieLens-100K users;
`tests/test_finetune.py` shows it on pre-training and LoRA."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from shared_data import ML100K, needs_ml100k

from finetune.checkpoint import META_FILE, STATE_FILE, Checkpoints
from finetune.dense import TrainSettings, fit
from finetune.distributed import Processes
from finetune.loop import Record
from genrec.metrics import validation_ndcg
from inference.dense import SASRec
from retrieval.catalog import make_interactions
from retrieval.split import leave_one_out

pytestmark = needs_ml100k


@pytest.fixture(scope="module")
def movielens():
    """60 users' leave-one-out split over the whole catalog."""
    ratings = pd.read_csv(ML100K / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    split = leave_one_out(make_interactions(ratings[ratings["user_id"] <= 60], "u.data"))
    catalog = pd.read_csv(ML100K / "u.item", sep="|", header=None, encoding="latin-1")[0].astype(str).tolist()
    return split, catalog


def settings(**kw) -> TrainSettings:
    base = dict(lr=3e-3, batch_size=16, epochs=4, patience=10, eval_every=1, threads=1, progress=False, seed=5)
    return TrainSettings(**(base | kw))


def sasrec(catalog) -> SASRec:
    torch.manual_seed(5)  # the initial weights
    return SASRec(catalog, hidden=16, layers=1, max_len=30, dropout=0.2)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_resumed_run_goes_on_at_the_next_epoch_and_ends_with_the_weights_of_an_uninterrupted_one(
    movielens, tmp_path, capsys
):
    split, catalog = movielens
    straight, expected = fit(sasrec(catalog), split.train, split.valid, settings())
    folder = tmp_path / "dense"
    fit(sasrec(catalog), split.train, split.valid, settings(epochs=2, checkpoint=str(folder)))  # "killed" after 2
    assert json.loads((folder / META_FILE).read_text())["epoch"] == 2
    capsys.readouterr()
    resumed, stats = fit(sasrec(catalog), split.train, split.valid, settings(checkpoint=str(folder)))
    said = capsys.readouterr().out
    assert f"resuming sasrec from {folder} (dense: epoch 2 done)" in said
    assert [h["epoch"] for h in stats["history"]] == [1, 2, 3, 4]
    assert [h["loss"] for h in stats["history"]] == [h["loss"] for h in expected["history"]]
    assert stats["best_epoch"] == expected["best_epoch"] and same_weights(resumed, straight)


def test_early_stopping_ends_after_patience_validations_without_a_gain_and_keeps_the_best_epoch(movielens):
    split, catalog = movielens
    # a learning rate this high overshoots after a few epochs, so validation stops improving
    model, stats = fit(sasrec(catalog), split.train, split.valid, settings(lr=0.05, epochs=30, patience=2))
    scores = [h["valid_ndcg@10"] for h in stats["history"]]
    assert stats["stopped_by"] == "patience" and len(scores) < 30
    assert max(scores[-2:]) <= max(scores[:-2]) and max(scores[:-3] or [-1.0]) < max(scores[:-2])
    assert stats["best_valid_ndcg@10"] == max(scores) and stats["best_epoch"] == scores.index(max(scores)) + 1
    # the model handed back is the best epoch's, not the last one's: it scores what that epoch scored
    again = validation_ndcg(model, split.valid, model.item_ids, max_users=None, seed=5)
    assert again == pytest.approx(stats["best_valid_ndcg@10"], abs=1e-9)


def test_a_checkpoint_made_with_other_settings_is_not_resumed_and_says_so_in_one_line(movielens, tmp_path, capsys):
    split, catalog = movielens
    folder = tmp_path / "dense"
    fit(sasrec(catalog), split.train, split.valid, settings(epochs=1, checkpoint=str(folder)))
    capsys.readouterr()
    _, stats = fit(sasrec(catalog), split.train, split.valid, settings(lr=1e-3, epochs=2, checkpoint=str(folder)))
    said = [line for line in capsys.readouterr().err.splitlines() if str(folder) in line]
    assert len(said) == 1 and "made with other settings or data" in said[0] and "starts fresh" in said[0]
    assert [h["epoch"] for h in stats["history"]] == [1, 2]  # trained from the start, and saved over the old one
    assert json.loads((folder / META_FILE).read_text())["epoch"] == 2


def test_a_checkpoint_an_earlier_genrec_wrote_is_not_resumed_and_says_so_in_one_line(tmp_path, capsys):
    """Checkpoints from before the one loop carry no format; their record is laid out differently."""
    model = torch.nn.Linear(3, 3)
    optimizer = torch.optim.Adam(model.parameters())
    folder = tmp_path / "lora"
    Checkpoints(folder, "f" * 64, Processes()).save(model, optimizer, None, 1, None, None, vars(Record()), "lora")
    meta = json.loads((folder / META_FILE).read_text())
    del meta["format"]
    (folder / META_FILE).write_text(json.dumps(meta))
    torch.save({"progress": {"report": {}, "seen": {}}}, folder / STATE_FILE)  # the old layout of LoRA's record
    capsys.readouterr()
    assert Checkpoints(folder, "f" * 64, Processes()).load(model, optimizer) is None
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "earlier genrec" in said[0] and "starts fresh" in said[0] and str(folder) in said[0]


def test_a_run_cut_by_its_budget_resumes_under_a_larger_one(movielens, tmp_path):
    """Issue 29: a seed stopped by its minutes goes on from its checkpoint when given more of them
    (the budget is not part of the fingerprint), and the cut epoch was validated."""
    split, catalog = movielens
    folder = str(tmp_path / "dense")
    _, cut = fit(sasrec(catalog), split.train, split.valid, settings(max_minutes=1e-5, checkpoint=folder))
    assert cut["stopped_by"] == "max_minutes" and cut["epochs"] == 1 and "valid_ndcg@10" in cut["history"][0]
    _, same = fit(sasrec(catalog), split.train, split.valid, settings(max_minutes=1e-5, checkpoint=folder))
    assert same["epochs"] == 1 and same["stopped_by"] == "max_minutes"  # the same budget: nothing more to train
    _, more = fit(sasrec(catalog), split.train, split.valid, settings(checkpoint=folder))
    assert more["stopped_by"] == "epochs" and [h["epoch"] for h in more["history"]] == [1, 2, 3, 4]
    assert more["history"][0]["loss"] == cut["history"][0]["loss"]
