"""`genrec experiment`: validation before computation, per-cell cache, failures that keep finished cells.

The model is real: a tiny scratch decoder with LoRA trained for one epoch on a MovieLens-100K slice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from eval_run import shared_eval_run

from genrec.errors import GenrecError

TEMPLATE = "Here are {{ n }} items a user chose, oldest first. Continue with the next one.\n"


@pytest.fixture(scope="module")
def trained(trained_run):
    """The session's small trained run (conftest); experiments only read it."""
    return trained_run


def write_experiment(folder: Path, run: Path, **overrides) -> Path:
    """An experiment file with one template of its own beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plain.j2").write_text(TEMPLATE)
    spec = {
        "run": str(run),
        "users": 12,
        "templates": ["plain.j2"],
        "decoding": {"beam_width": 10, "k": 10, "temperature": [1.0, 0.5]},
        "models": [{"name": "tiny", "path": str(run / "model")}],
        "output": "out",
    }
    spec.update(overrides)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_unknown_key_is_a_one_line_error_naming_file_and_key(tmp_path, tmp_path_factory):
    from eval.experiment import load_experiment

    run = shared_eval_run(tmp_path_factory)
    path = write_experiment(tmp_path, run, decoding={"beam_width": 10, "top_p": 0.9})
    with pytest.raises(GenrecError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and "decoding.top_p" in str(err.value) and "\n" not in str(err.value)


def test_template_that_fails_to_render_is_rejected_before_any_computation(tmp_path, trained):
    from eval.experiment import load_experiment

    path = write_experiment(tmp_path, trained, templates=["plain.j2", "broken.j2"])
    (tmp_path / "broken.j2").write_text("History of {{ n }} items by {{ user_name }}.")
    with pytest.raises(GenrecError) as err:
        load_experiment(path)
    assert "templates[1]" in str(err.value) and str(path) in str(err.value)
    (tmp_path / "broken.j2").write_text("{% for x in %}")  # a syntax error, not just an undefined value
    with pytest.raises(GenrecError, match=r"templates\[1\]"):
        load_experiment(path)
    assert not (tmp_path / "out").exists()


def test_model_path_that_does_not_exist_is_rejected(tmp_path, trained):
    from eval.experiment import load_experiment

    path = write_experiment(tmp_path, trained, models=[{"name": "gone", "path": str(tmp_path / "no-model")}])
    with pytest.raises(GenrecError, match=r"models\[0\]\.path"):
        load_experiment(path)


def test_rerun_computes_only_the_cells_that_changed(tmp_path, trained):
    from eval.experiment import load_experiment, run_experiment

    path = write_experiment(tmp_path, trained)
    first = run_experiment(load_experiment(path), progress=False)
    assert (first.computed, first.cached, first.failed) == (2, 0, 0)
    again = run_experiment(load_experiment(path), progress=False)
    assert (again.computed, again.cached) == (0, 2)
    assert [r["ndcg@10"] for r in again.rows] == [r["ndcg@10"] for r in first.rows]
    (tmp_path / "plain.j2").write_text(TEMPLATE.replace("Continue", "Go on"))
    spec = yaml.safe_load(path.read_text())
    spec["decoding"]["temperature"] = [1.0, 0.5, 2.0]
    path.write_text(yaml.safe_dump(spec))
    changed = run_experiment(load_experiment(path), progress=False)
    assert (changed.computed, changed.cached) == (3, 0)  # new template text: every cell is new
    out = tmp_path / "out"
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3 and csv_lines[0].startswith("model,template,beam_width,k,temperature")
    for row in changed.rows:
        assert row["valid_rate"] == 1.0 and 0.0 <= row["ndcg@10"] <= 1.0
        assert "Go on" in row["example_prompt"] and "<a_" in row["example_prompt"]  # the exact rendered prompt
    assert "Go on" in (out / "results.md").read_text()


def test_a_failing_cell_never_loses_the_cells_already_computed(tmp_path, trained):
    from eval.commands import experiment
    from eval.experiment import load_experiment

    broken = tmp_path / "broken-model"
    shutil.copytree(trained / "model", broken)
    for weights in (broken / "base").glob("*.safetensors"):
        weights.write_bytes(b"not a tensor file")  # passes validation (the files exist), fails to load
    path = write_experiment(
        tmp_path,
        trained,
        models=[{"name": "tiny", "path": str(trained / "model")}, {"name": "broken", "path": str(broken)}],
    )
    load_experiment(path)  # valid file
    with pytest.raises(GenrecError, match="2 cell\\(s\\) failed"):
        experiment(path, force=False)
    rows = list((tmp_path / "out" / "cells").glob("*.json"))
    assert len(rows) == 2 and all(json.loads(r.read_text())["model"] == "tiny" for r in rows)
    assert "failed: broken" in (tmp_path / "out" / "results.md").read_text()


def test_temperature_changes_beam_scores_as_rescaled_logits(trained):
    import torch

    from inference.decoding.beam import beam_search
    from inference.ranker import open_ranker

    genrec = open_ranker(trained)[0].generator
    enc = genrec.tokenizer([genrec.prompts.text(["1", "2"])], return_tensors="pt", add_special_tokens=False)
    hot = beam_search(genrec.model, enc.input_ids, enc.attention_mask, genrec.trie, 5, temperature=0.5)[0]
    # the score of a code is the sum over its levels of log-softmax(logits / T) at each step
    item, score = hot[0]
    tokens = genrec.trie.tokens_of(item)
    ids = torch.cat([enc.input_ids, torch.tensor([tokens[:-1]])], dim=1)
    with torch.no_grad():
        logits = genrec.model(input_ids=ids).logits[0, enc.input_ids.shape[1] - 1 :]
    expected = sum(torch.log_softmax(logits[i] / 0.5, -1)[t].item() for i, t in enumerate(tokens))
    assert abs(score - expected) < 1e-3
    plain = beam_search(genrec.model, enc.input_ids, enc.attention_mask, genrec.trie, 5)[0]
    assert [s for _, s in plain] != [s for _, s in hot]


@pytest.mark.vllm
def test_a_served_endpoint_cell_scores_like_the_same_model_run_locally(tmp_path, recommender_server, monkeypatch):
    """The experiment grid against a live vLLM server of the trained run: same model, same prompts,
    both exact trie beam search, so the served cell's metrics match the local cell's. The server
    wants an API key: the endpoint cell sends GENREC_API_KEY, the variable `genrec serve` reads."""
    from eval.experiment import load_experiment, run_experiment

    trained = recommender_server.run
    monkeypatch.setenv("GENREC_API_KEY", recommender_server.api_key)
    path = write_experiment(
        tmp_path,
        trained,
        decoding={"beam_width": 10, "k": 10},
        models=[
            {"name": "local", "path": str(trained / "model")},
            {"name": "served", "endpoint": recommender_server.url},
        ],
    )
    result = run_experiment(load_experiment(path), progress=False)
    assert result.failed == 0 and len(result.rows) == 2
    local, served = sorted(result.rows, key=lambda r: r["model"])
    assert served["model"] == "served" and local["users"] == served["users"] == 12
    metrics = [m for m in local if m.startswith(("recall@", "ndcg@"))]
    assert "ndcg@10" in metrics
    for metric in metrics:
        assert served[metric] == pytest.approx(local[metric], abs=1e-6), metric
    assert served["valid_rate"] == 1.0
