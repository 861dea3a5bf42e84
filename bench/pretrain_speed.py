"""Benchmark: ways to pre-train the scratch model faster on a 2-core CPU, each against the eager
two-thread step of `genrec train`, in the same run, on the same examples and batches.

Two ideas were measured here before they were built, and both lost; this keeps the evidence:

- `threads1`: one torch thread. If one thread trained nearly as fast as two, the dense model
  (SASRec, one thread) could train beside pre-training instead of after it (4 of the demo's
  minutes). It is only worth it if 1-thread pre-training loses less than the dense minutes.
- `compiled`: `torch.compile(model, dynamic=True)` of the training step (forward and backward).

Each mode trains a fresh model (seed 0) on a warm-up slice, then a measured slice, of the demo's
own data (MovieLens-100K, default model and batch size, epoch 0's examples shuffled once); the
compiled warm-up holds the compile. The JSON has tokens/s, ratios to eager, the compile's one-off
seconds, and the losses (the modes must train the same model).

    .venv/bin/python bench/pretrain_speed.py [--run /tmp/genrec-bench/pretrain-speed] [--warmup 400] [--measure 800]

Writes bench/results/pretrain_speed.json. The inductor cache (/tmp/torchinductor_$USER) makes a
second compile faster: `inductor_cache_empty_at_start` says which case was measured.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "pretrain_speed.json"


def indexed_run(run: Path) -> Path:
    """`run`, indexed from the bundled MovieLens-100K by `genrec index` unless it already is."""
    if not (run / "semantic_ids.json").exists():
        genrec = Path(sys.executable).parent / "genrec"
        subprocess.run([str(genrec), "index", "--dataset", "ml-100k", "--run", str(run)], check=True)
    return run


def train_slices(run: Path, compiled: bool, threads: int, warmup: int, measure: int) -> dict:
    """A fresh scratch model trained on `warmup` then `measure` examples of epoch 0 (the same examples
    and batches in every mode) with `threads` torch threads; seconds, tokens and loss of each slice."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    from finetune.batches import batch_budgets, cosine_schedule, tokenise, train_epoch
    from finetune.tasks import corpus_texts
    from finetune.tokenizer import add_sid_tokens, train_scratch_tokenizer
    from finetune.train import example_maker, load_run_data
    from inference.decoding.local import bf16_supported
    from inference.models import build_scratch_model
    from inference.sid_tokens import codebook_sizes

    data = load_run_data(run)
    config = data.config.train
    tokenizer = train_scratch_tokenizer(corpus_texts(data.facts), config.vocab_size)
    add_sid_tokens(tokenizer, codebook_sizes(data.codes.values()))
    model = build_scratch_model(config, tokenizer)
    rows = tokenise(tokenizer, example_maker(data, tokenizer, config)(0), config.max_length, loss_on_prompt=True)
    random.Random(0).shuffle(rows)
    budget, micro = batch_budgets(config, len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_lr, weight_decay=0.01)
    scheduler = cosine_schedule(optimizer, 10_000, warmup=100)
    stepping = torch.compile(model, dynamic=True) if compiled else model
    bf16 = bf16_supported() if config.bf16 is None else config.bf16
    out = {}
    for name, part in (("warmup", rows[:warmup]), ("measure", rows[warmup : warmup + measure])):
        began = time.perf_counter()
        stats = train_epoch(
            stepping, part, optimizer, scheduler, tokenizer.pad_token_id, budget, random.Random(1), bf16, name, False,
            micro_tokens=micro,
        )  # fmt: skip
        seconds = time.perf_counter() - began
        out[name] = {
            "seconds": seconds,
            "tokens": stats.tokens,
            "loss": stats.loss,
            "tokens_per_s": stats.tokens / seconds,
        }
    torch.set_num_threads(previous)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path(tempfile.gettempdir()) / "genrec-bench" / "pretrain-speed")
    parser.add_argument("--warmup", type=int, default=400, help="examples trained before measuring (holds the compile)")
    parser.add_argument("--measure", type=int, default=800, help="examples measured after the warm-up")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import torch

    run = indexed_run(args.run)
    cache = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
    cache_was_empty = not cache.exists() or not any(cache.iterdir())
    load = os.getloadavg()
    modes = {}
    threads = torch.get_num_threads()
    for name, compiled, n in (("eager", False, threads), ("threads1", False, 1), ("compiled", True, threads)):
        print(f"{name}: {args.warmup} + {args.measure} examples, {n} thread(s)", flush=True)
        modes[name] = train_slices(run, compiled, n, args.warmup, args.measure)
        print(json.dumps(modes[name]), flush=True)
    eager, compiled = modes["eager"], modes["compiled"]
    rate_e, rate_c = eager["measure"]["tokens_per_s"], compiled["measure"]["tokens_per_s"]
    compile_s = compiled["warmup"]["seconds"] - compiled["warmup"]["tokens"] / rate_c
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": threads,
        },
        "load_average": {"start": load, "end": os.getloadavg()},
        "run": str(run),
        "examples": {"warmup": args.warmup, "measure": args.measure},
        "inductor_cache_empty_at_start": cache_was_empty,
        "modes": modes,
        "ratio_to_eager": {k: m["measure"]["tokens_per_s"] / rate_e for k, m in modes.items()},
        "compile_seconds": compile_s,
        "loss_relative_gap_to_eager": {
            k: abs(m["measure"]["loss"] - eager["measure"]["loss"]) / eager["measure"]["loss"] for k, m in modes.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in result["ratio_to_eager"].items())
    print(f"eager {rate_e:.0f} tokens/s; {ratios}; compile {compile_s:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
