"""`genrec eval` and its report and comparison, on a real slice of MovieLens-100K."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
import yaml
from eval_run import shared_eval_run
from typer.testing import CliRunner

HEADLINE = ("recall@10", "ndcg@10", "mrr", "valid_rate", "coverage")


def cli() -> typer.Typer:
    """The eval commands as `genrec` registers them."""
    from eval.commands import eval_app

    app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    return app


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_eval_run(tmp_path_factory)


@pytest.fixture(scope="module")
def evaluated(run, tmp_path_factory):
    """`genrec eval offline --run RUN --json OUT --report`, once for the module."""
    out = tmp_path_factory.mktemp("eval") / "results.json"
    result = CliRunner().invoke(cli(), ["eval", "offline", "--run", str(run), "--json", str(out), "--report"])
    assert result.exit_code == 0, result.output
    return run, json.loads(out.read_text()), result.output


def test_eval_json_has_headline_metrics_for_every_baseline(evaluated):
    _, results, output = evaluated
    assert set(results) == {"popularity", "itemknn", "content"}
    for model, metrics in results.items():
        for key in HEADLINE:
            assert 0.0 <= metrics[key] <= 1.0, (model, key)
        assert metrics["valid_rate"] == 1.0  # baselines only ever return catalog items
        assert metrics["users"] == results["popularity"]["users"]  # the identical split for all
    assert "best NDCG@10" in output


def test_report_curves_agree_with_the_headline_metrics(evaluated):
    run, results, _ = evaluated
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for model, curve in metrics["curves"].items():
        assert curve["k"] == list(range(1, 21))
        assert curve["recall"] == sorted(curve["recall"])  # Recall@K never falls as K grows
        assert curve["ndcg"][9] == pytest.approx(results[model]["ndcg@10"])
        assert curve["recall"][19] == pytest.approx(results[model]["recall@20"])


def test_report_writes_markdown_json_and_real_pngs(evaluated):
    run, results, _ = evaluated
    out = run / "eval"
    report = (out / "report.md").read_text()
    for name in ("curves.png", "popularity.png", "coverage_diversity.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in report
    metrics = json.loads((out / "metrics.json").read_text())
    for model, buckets in metrics["popularity_buckets"].items():
        quantiles = [b for name, b in buckets.items() if name != "cold-start"]
        assert sum(b["users"] for b in quantiles) == results[model]["users"]  # buckets partition the users
    for value in metrics["diversity"].values():
        assert 0.0 < value < 1.0
    faith = metrics["faithfulness"]["models"]["itemknn"]
    assert faith["explanations"] > 0 and faith["claims"] > 0
    assert faith["attribute_precision"] == 1.0  # the agent explains from the catalog's own attributes
    assert "Explanation faithfulness" in report


def test_intra_list_diversity_is_zero_for_clones_and_one_for_orthogonal_items():
    from eval.report import intra_list_diversity

    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    ids = ["a", "b", "c"]
    assert intra_list_diversity([["a", "b"]], ids, vectors) == pytest.approx(0.0)
    assert intra_list_diversity([["a", "c"]], ids, vectors) == pytest.approx(1.0)
    assert intra_list_diversity([["a"]], ids, vectors) is None  # one item has no pairs


def test_compare_pairs_users_and_tests_the_difference(evaluated, tmp_path):
    run, _, _ = evaluated
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("eval"))
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["eval"]["content_last_n"] = 1  # a different content baseline on the same split
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "compare.json"
    result = CliRunner().invoke(
        cli(), ["eval", "compare", str(run), str(other), "--models", "content,popularity", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    comparison = json.loads(out.read_text())
    pop = comparison["models"]["popularity"]["tests"][str(other)]
    assert pop["diff"] == 0.0 and pop["bootstrap_p"] == 1.0  # same model, same users: no difference
    content = comparison["models"]["content"]
    test = content["tests"][str(other)]
    assert test["diff"] == pytest.approx(
        content["metrics"][str(other)]["ndcg@10"] - content["metrics"][str(run)]["ndcg@10"]
    )
    assert 0.0 <= test["bootstrap_p"] <= 1.0 and 0.0 <= test["t_test_p"] <= 1.0
    assert test["ci95"][0] <= test["diff"] <= test["ci95"][1]


def test_faithfulness_flags_a_genre_the_item_does_not_have(run):
    import pandas as pd

    from eval.faithfulness import Vocabulary, score_explanation

    items = pd.read_parquet(run / "items.parquet")
    vocab = Vocabulary.from_items(items)
    star_wars = items.loc[items["title"] == "Star Wars (1977)", "item_id"].item()
    fargo = items.loc[items["title"] == "Fargo (1996)", "item_id"].item()
    score = score_explanation(
        "Star Wars (1977) is Sci-Fi and Romance from the 1970s, like Fargo (1996).", star_wars, [fargo], vocab
    )
    assert sorted(score.true_claims) == ["1970s", "romance", "sci-fi"]  # ML-100K lists Star Wars as Romance too
    assert score.history_mentions == [fargo]
    wrong = score_explanation("Star Wars is a Horror film from 1985.", star_wars, [], vocab)
    assert sorted(wrong.false_claims) == ["1985", "horror"] and wrong.precision == 0.0


def test_explanations_a_real_instruction_model_writes_are_scored_raw_and_as_shown(run):
    import pandas as pd

    from eval.faithfulness import Vocabulary, model_explanations
    from inference.explain import Explainer
    from retrieval.split import leave_one_out

    items = pd.read_parquet(run / "items.parquet")
    split = leave_one_out(pd.read_parquet(run / "interactions.parquet"))
    picks = {user: target for user, (_, target) in list(split.test.items())[:3]}
    raw, shown, kept = model_explanations(
        Explainer("smollm2-135m", max_new_tokens=40).write, items, split.test, picks, Vocabulary.from_items(items)
    )
    assert len(raw) == len(shown) == 3 and all(r.text for r in raw) and 0 <= kept <= 3
    for r, s in zip(raw, shown):
        # what users read is the model's answer when it passed the grounding check, else the template,
        # which only states the item's own attributes
        assert s.text == r.text or not s.false_claims


def test_eval_errors_are_one_line(run, tmp_path):
    runner = CliRunner()
    from genrec.errors import GenrecError

    result = runner.invoke(cli(), ["eval", "offline", "--run", str(run), "--models", "bert4rec"])
    assert isinstance(result.exception, GenrecError) and "bert4rec" in str(result.exception)
    result = runner.invoke(cli(), ["eval", "offline", "--run", str(tmp_path / "nope")])
    assert isinstance(result.exception, GenrecError) and "genrec index" in str(result.exception)
    result = runner.invoke(cli(), ["eval", "offline", "--run", str(run), "--models", "genrec"])
    assert isinstance(result.exception, GenrecError) and "genrec train" in str(result.exception)
