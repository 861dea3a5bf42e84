"""Where a stage computes (`train.device`, `dense.KIND.device`, `generate.device`): auto is a CUDA GPU
only where one is visible, cuda on a machine without one fails in one line naming the setting, and the
device changes nothing that is trained: the same weights and scores on a CPU, auto or named, and no
fingerprint (a run started on a CPU resumes on a GPU; a dense model trained on either is reused)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_accuracy_bench import tiny_amazon

from finetune.dense import fit
from finetune.dense.build import build, dense_fingerprint, resolve
from finetune.dense.train import resume_fingerprint, training_examples
from finetune.pretrain import fingerprint
from finetune.train import lora_fingerprint, train_ranking
from genrec.config import RunConfig, load_config, save_config
from genrec.device import resolve_device
from genrec.errors import GenrecError
from genrec.run import init_run
from inference.ranker import open_ranker

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a CUDA GPU does")

ITEMS = [str(i) for i in range(1, 31)]
TRAIN = {f"u{u}": [str((u + s) % 30 + 1) for s in range(5)] for u in range(12)}  # neighbours follow each other


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """An indexed Amazon-format run (items, interactions, collaborative semantic IDs), not trained."""
    from retrieval.catalog import save_catalog
    from retrieval.loaders import load_amazon_seq
    from retrieval.semantic_ids import build_semantic_ids, save_semantic_ids

    folder = tmp_path_factory.mktemp("device")
    config = RunConfig(name="device")
    config.semantic_ids.source, config.semantic_ids.method = "collaborative", "rkmeans"
    config.semantic_ids.levels, config.semantic_ids.codebook_size = 2, 8
    paths = init_run(folder / "run", config)
    catalog = load_amazon_seq(tiny_amazon(folder / "amazon", users=60, items=40) / "Beauty.txt")
    save_catalog(catalog, paths)
    save_semantic_ids(build_semantic_ids(catalog, config.semantic_ids, None), paths)
    return paths.root


def with_setting(run: Path, section: str, key: str, value: str) -> Path:
    """The run's config with one device setting changed (`section` may be dotted: dense.sasrec)."""
    config = load_config(run / "config.yaml")
    part = config
    for name in section.split("."):
        part = getattr(part, name)
    setattr(part, key, value)
    save_config(config, run / "config.yaml")
    return run


def test_auto_is_a_cuda_gpu_only_where_one_is_visible():
    config = RunConfig()
    here = "cuda" if torch.cuda.is_available() else "cpu"
    settings = {
        "train.device": config.train.device,
        "generate.device": config.generate.device,
        "dense.sasrec.device": config.dense.sasrec.device,
        "dense.bsarec.device": config.dense.bsarec.device,
    }
    for name, setting in settings.items():
        assert setting == "auto"
        assert resolve_device(setting, name).type == here
    assert resolve_device("cpu", "train.device") == torch.device("cpu")


def test_a_device_that_is_none_of_auto_cpu_cuda_is_a_config_error_naming_the_setting(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("generate:\n  device: gpu\n")
    with pytest.raises(GenrecError, match=r"config.yaml: generate.device: String should match pattern"):
        load_config(path)


@NO_GPU
@pytest.mark.parametrize("processes", [[], ["--processes", "2"]], ids=["one-process", "two-processes"])
def test_training_on_cuda_without_a_gpu_fails_in_one_line_naming_train_device(
    indexed, processes, tmp_path, monkeypatch, capsys
):
    """`genrec train` (its own entry point, `app.cli.main`) prints one line and exits 2 before it trains
    or, with several processes, before it starts them."""
    from app.cli import main

    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(indexed), str(run)], check=True)
    with_setting(run, "train", "device", "cuda")
    monkeypatch.setattr(sys, "argv", ["genrec", "train", "--run", str(run), *processes])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "error: train.device cuda: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
        "set it to auto or cpu"
    ), err[-2000:]
    assert not (run / "model").exists() or not any((run / "model").iterdir())  # nothing trained, nothing written


@NO_GPU
def test_the_dense_model_and_the_generator_on_cuda_without_a_gpu_fail_in_one_line_naming_their_setting(
    indexed, tmp_path
):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(indexed), str(run)], check=True)
    with_setting(run, "dense.sasrec", "device", "cuda")
    with pytest.raises(GenrecError) as dense:
        train_ranking(run, progress=False)
    assert str(dense.value).startswith("dense.sasrec.device cuda: no CUDA GPU is visible here")
    assert not (run / "dense").exists()
    with_setting(run, "generate", "device", "cuda")  # before the model (there is none yet) is even looked for
    with pytest.raises(GenrecError) as generate:
        open_ranker(run)
    assert str(generate.value).startswith("generate.device cuda: no CUDA GPU is visible here")
    assert "\n" not in str(dense.value) + str(generate.value)


def test_the_dense_model_trains_and_scores_the_same_with_device_cpu_and_with_auto_on_a_cpu():
    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    histories = [TRAIN[u] for u in sorted(TRAIN)[:6]]
    trained = {}
    for device in ("cpu", "auto"):
        config = RunConfig().dense.sasrec.model_copy(update={"device": device, "epochs": 3, "eval_every": 1})
        model, settings, _ = build("sasrec", ITEMS, config, TRAIN, progress=False)
        valid = {u: (items[:-1], items[-1]) for u, items in TRAIN.items()}
        model, stats = fit(model, TRAIN, valid, settings)
        trained[device] = (model, stats)
    (cpu, cpu_stats), (auto, auto_stats) = trained["cpu"], trained["auto"]
    assert auto.device == cpu.device == torch.device("cpu")
    for key, weight in cpu.state_dict().items():
        assert torch.equal(weight, auto.state_dict()[key]), key
    assert torch.equal(cpu.scores(histories), auto.scores(histories))
    assert cpu.recommend(histories, 5) == auto.recommend(histories, 5)
    assert [h["loss"] for h in cpu_stats["history"]] == [h["loss"] for h in auto_stats["history"]]


def test_no_fingerprint_holds_the_device_and_none_changed_when_the_device_settings_came():
    """The values pinned here are what genrec computed before these settings existed: a run, a
    checkpoint or a shared dense model made then is still found, resumed and reused."""
    before = {  # RunConfig() defaults; the dense model's on ITEMS/TRAIN
        "dense": "0e0186cfc88e5be62299f3b6458e7e3e601866e3ed822976b759499c5e96d150",
        "dense-resume": "23a9331125d04f63dded720f2667d61d3241867b27b9dff072e173db43ff032e",
        "lora": "35eb98505355d89b2d4d1e28e41fd94bb1815d15463b57788d37a8ec853cd0de",
        "pretrain": "1b4f78beff4c6555dbd012864497a18e83e2aed8f309c4c59e3d0b9c21589fcd",
    }
    for device in ("auto", "cpu", "cuda", "cuda:1"):  # (named, not resolved: no GPU is needed to fingerprint)
        config = RunConfig()
        config.train.device = config.dense.sasrec.device = device
        resolved = resolve("sasrec", config.dense.sasrec, TRAIN)
        model, settings, _ = build("sasrec", ITEMS, config.dense.sasrec, TRAIN, progress=False)
        assert settings.device == device
        assert {
            "dense": dense_fingerprint("sasrec", resolved, ITEMS, TRAIN),
            "dense-resume": resume_fingerprint(model, training_examples(model, TRAIN), settings),
            "lora": lora_fingerprint(config.train, "data"),
            "pretrain": fingerprint(config.train, "data"),
        } == before


def test_the_gpu_seed_scripts_parse_and_a_call_without_the_carried_folder_says_what_to_run(tmp_path):
    for script in ("bench/gpu_seed.sh", "bench/gpu_wheels.sh"):
        subprocess.run(["bash", "-n", script], cwd=ROOT, check=True)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GENREC_GPU_CARRY": str(tmp_path / "not-carried")}
    done = subprocess.run(["bash", "bench/gpu_seed.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "not-carried/amazon-seq/Beauty.txt missing: run bench/gpu_wheels.sh" in done.stdout
    assert (tmp_path / "out" / "gpu_seed.log").read_text() == done.stdout  # the log comes back with $OUT
