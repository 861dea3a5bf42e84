"""Benchmark: the whole `genrec demo --fresh` (the README's main command, setup excluded), timed.

Runs the command as a newcomer does (index, search, training, evaluation, the model servers and the
scripted chat), and records:

- wall minutes of the whole command, and per stage (the demo's own `RUN/logs/demo_stages.json`);
- peak memory: what the machine has in use above what it had before the demo (genrec and its vLLM
  servers), sampled every 2 s from /proc/meminfo. Per-process figures are not taken: a sum of RSS
  counts the libraries vLLM's three processes share three times, and reading every process's
  smaps for proportional sizes took 0.3 s per sample and slowed training by a third;
- the training figures of the run (pre-training tokens/s, pre-training and LoRA minutes);
- what the demo's evaluation showed (genrec, genrec-gen and SASRec NDCG@10 on all test users);
- the target of issue 16: 30 minutes on a 2-core machine that pre-trains at about 2,000 tokens/s.
  This machine's speed differs, so the JSON carries two projections to that machine, both from the
  figures of this run: only the token-bound training scales with tokens/s (`projected_minutes`),
  and, as the pessimistic bound, every stage scales by the same ratio (`projected_minutes_if_all_scales`).

    .venv/bin/python bench/demo.py [--run /tmp/genrec-bench/demo] [--reference-tokens-per-s 2000]

Writes bench/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "demo.json"
TARGET_MINUTES = 30.0


def used_memory() -> int:
    """Bytes of memory the machine has in use (total minus available)."""
    import psutil

    vm = psutil.virtual_memory()
    return vm.total - vm.available


def run_demo(run: Path, extra: list[str]) -> dict:
    """Run `genrec demo --fresh --run RUN`; return its wall seconds, exit code and peak memory (what
    the machine has in use above what it had before it started)."""
    genrec = Path(sys.executable).parent / "genrec"
    cmd = [str(genrec), "demo", "--fresh", "--run", str(run), *extra]
    print("$", " ".join(cmd), flush=True)
    machine_peak, before, done = [0], used_memory(), threading.Event()
    started = time.monotonic()
    proc = subprocess.Popen(cmd)

    def sample() -> None:
        while not done.wait(2.0):
            machine_peak[0] = max(machine_peak[0], used_memory() - before)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    return {
        "command": " ".join(cmd),
        "exit_code": code,
        "wall_s": time.monotonic() - started,
        "peak_machine_used_gb": machine_peak[0] / 2**30,
    }


def training_figures(run: Path) -> dict:
    """Pre-training tokens/s and the token-bound seconds (pre-training and LoRA epochs) of the run."""
    report = json.loads((run / "model" / "train_report.json").read_text())
    pre = report.get("pretrain_epochs") or []
    pre_s = sum(e["seconds"] for e in pre)
    pre_tokens = sum(e["seconds"] * e["tokens_per_s"] for e in pre)
    return {
        "pretrain_epochs": len(pre),
        "pretrain_tokens_per_s": pre_tokens / pre_s if pre_s else None,
        "pretrain_minutes": report["pretrain_seconds"] / 60,
        "lora_epochs": len([e for e in report.get("epochs", []) if e.get("loss") is not None]),
        "lora_minutes": report["train_seconds"] / 60,
        "lora_tokens_per_s": report.get("tokens_per_s"),
        "dense_minutes": (report.get("dense") or {}).get("minutes"),
        "best_valid_ndcg@10": report.get("best_valid_ndcg10"),
    }


def evaluation(run: Path) -> dict:
    """NDCG@10 on the test users of the models the demo's evaluation shows."""
    metrics = json.loads((run / "eval" / "metrics.json").read_text())["models"]
    return {m: metrics[m]["ndcg@10"] for m in ("genrec", "genrec-gen", "sasrec", "itemknn") if m in metrics}


def main() -> None:
    """Run the demo once and write bench/results/demo.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("/tmp/genrec-bench/demo"), help="the demo's run folder")
    parser.add_argument("--reference-tokens-per-s", type=float, default=2000.0, help="the target machine's speed")
    parser.add_argument("--out", type=Path, default=OUT)
    args, extra = parser.parse_known_args()

    load = os.getloadavg()
    measured = run_demo(args.run, extra)
    if measured["exit_code"] != 0:
        raise SystemExit(f"genrec demo exited with code {measured['exit_code']}; nothing written")
    stages = json.loads((args.run / "logs" / "demo_stages.json").read_text())
    train = training_figures(args.run)
    wall_min = measured["wall_s"] / 60
    ratio = train["pretrain_tokens_per_s"] / args.reference_tokens_per_s
    token_bound_min = train["pretrain_minutes"] + train["lora_minutes"]
    projected = wall_min + token_bound_min * (ratio - 1)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": {"start": load, "end": os.getloadavg()},
        **measured,
        "wall_minutes": wall_min,
        "stages_minutes": {k: v / 60 for k, v in stages["stages_s"].items()},
        "training": train,
        "evaluation_ndcg@10": evaluation(args.run),
        "target": {
            "minutes": TARGET_MINUTES,
            "reference_tokens_per_s": args.reference_tokens_per_s,
            "speed_ratio_here": ratio,
            "projected_minutes": projected,
            "projected_minutes_if_all_scales": wall_min * ratio,
            "met_here": wall_min <= TARGET_MINUTES,
            "met_projected": projected <= TARGET_MINUTES,
            "met_if_all_scales": wall_min * ratio <= TARGET_MINUTES,
        },
    }
    from genrec.atomic import write_json

    write_json(args.out, result)
    print(
        f"demo: {wall_min:.1f} min here at {train['pretrain_tokens_per_s']:.0f} tokens/s; projected at "
        f"{args.reference_tokens_per_s:.0f} tokens/s: {projected:.1f} min (every stage scaled: "
        f"{wall_min * ratio:.1f}); peak memory {measured['peak_machine_used_gb']:.1f} GB above the machine's "
        f"use before; wrote {args.out}"
    )


if __name__ == "__main__":
    from serving.server import sigterm_as_interrupt

    with sigterm_as_interrupt():  # `timeout`/`kill` stops the servers it started too
        main()
