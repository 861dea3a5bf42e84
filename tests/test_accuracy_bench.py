"""bench/accuracy.py: a seed's run lives under $GENREC_HOME, outside the checkout, and a seed that
was killed resumes from its last checkpoint and says what it resumed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# a generator and a dense model that train in seconds (`bench/accuracy.py --set`)
TINY = [
    "train.hidden_size=32",
    "train.num_heads=1",
    "train.num_layers=1",
    "train.intermediate_size=64",
    "train.vocab_size=400",
    "train.max_length=128",
    "train.tokens_per_batch=1024",
    "train.epochs=1",
    "generate.beam_width=10",
    "dense.candidates=20",
    "dense.sasrec.hidden=16",
    "dense.sasrec.epochs=2",
    "dense.sasrec.eval_every=1",
]


def tiny_amazon(folder: Path, users: int = 150, items: int = 120, seed: int = 0) -> Path:
    """An Amazon sequence file (`user item item ...`, time order) small enough to train in a minute."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for user in range(1, users + 1):
        start = rng.randrange(items)
        # neighbouring items follow each other, so there is a next item to learn
        history = [(start + step + rng.randrange(3)) % items + 1 for step in range(rng.randint(5, 9))]
        lines.append(" ".join(map(str, [user, *dict.fromkeys(history)])))
    (folder / "Beauty.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.timeout(1800)  # three processes load torch; on a machine shared five ways that alone takes minutes
def test_a_killed_accuracy_seed_resumes_from_its_checkpoints_under_genrec_home(tmp_path, own_genrec_home):
    """Killed after its first pre-training epoch, the seed's rerun (a fresh process, as after a lost
    session) lists what it resumes, goes on with the next epoch instead of the first, and finishes
    with the stage table; its run folder is under $GENREC_HOME, not in the checkout."""
    home = own_genrec_home
    data = tiny_amazon(tmp_path / "amazon")
    out = tmp_path / "accuracy.json"
    command = [sys.executable, "bench/accuracy.py", "--datasets", "beauty", "--seeds", "0"]
    command += ["--amazon-dir", str(data), "--amazon-pretrain-epochs", "6", "--out", str(out)]
    for setting in TINY:
        command += ["--set", setting]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GENREC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    seed = home / "bench" / "accuracy" / "beauty" / "seed0"
    checkpoint = seed / "checkpoints" / "pretrain" / "checkpoint.json"

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        first.kill()
        first.wait()
    assert checkpoint.exists(), (tmp_path / "first.log").read_text()[-2000:]
    done = json.loads(checkpoint.read_text())["epoch"]
    assert 1 <= done < 6
    before = torch.load(checkpoint.parent / "state.pt", weights_only=False)["progress"]["history"]

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    said = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, said[-3000:]
    assert "continuing its training from its checkpoints" in said
    assert f"pretrain: resumes from {checkpoint.parent} (pretrain: epoch {done} done)" in said

    result = json.loads(out.read_text())["datasets"]["beauty"]["per_seed"]["0"]
    train = result["train"]
    assert Path(train["run"]) == seed and not str(seed).startswith(str(ROOT))
    assert train["template"] == "short"  # the file has no item text: the history alone is the prompt
    assert train["resumed"] and any(f"epoch {done} done" in line for line in train["resumed_from"][0]["found"])
    # the epochs the killed process trained were not trained again: the rerun went on after them
    report = json.loads((seed / "model" / "train_report.json").read_text())
    assert report["pretrain_epochs"][:done] == before
    assert [e["epoch"] for e in report["pretrain_epochs"]] == list(range(1, len(report["pretrain_epochs"]) + 1))
    stages = {row["stage"].split(" (")[0]: row for row in train["stages"]}
    assert {"index", "pre-training", "LoRA", "dense model", "fusion", "test scoring"} <= set(stages)
    assert stages["pre-training"]["tokens_per_s"] > 0 and stages["test scoring"]["users"] == 150
    assert not list(seed.glob("checkpoints/*/checkpoint.json"))  # finished stages keep no checkpoint
