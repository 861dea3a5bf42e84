"""Benchmark: training step time and resident size of the default scratch model with the
process's default memory behaviour against genrec's settings (`genrec/memory.py`: glibc keeps
freed memory, oneDNN's kernel cache is capped), in the same run, alternating.

Each setting runs in its own process (both settings hold for a whole process): the default
5.8M-parameter Llama (hidden 256, 4 layers, 4.8k vocabulary) trains on 8192-token batches of a
new length at every step (100-512 tokens, as length-bucketed training produces), with bf16
autocast where the CPU has it.
Writes bench/results/allocator.json. Run: .venv/bin/python bench/allocator.py [--steps 24 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

WORKER = """
import json, random, resource, sys, time
if sys.argv[1] == "genrec":
    from genrec.memory import keep_freed_memory, limit_onednn_cache
    assert keep_freed_memory()
    limit_onednn_cache()
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from inference.decoding.beam import autocast
from inference.decoding.local import bf16_supported
from genrec.config import TrainConfig

t = TrainConfig()
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(
    vocab_size=4800, hidden_size=t.hidden_size, num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
    num_key_value_heads=t.num_heads, intermediate_size=t.intermediate_size, max_position_embeddings=t.max_length,
    attention_dropout=t.dropout)).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
bf16 = bf16_supported()
def minflt():
    return int(open("/proc/self/stat").read().split()[9])
steps, warm = int(sys.argv[2]), 4
times, faults, lengths = [], 0, random.Random(0)
for step in range(steps + warm):
    length = lengths.randint(100, 512)
    ids = torch.randint(0, 4800, (t.tokens_per_batch // length, length))
    f0, t0 = minflt(), time.perf_counter()
    with autocast(bf16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step >= warm:
        times.append(time.perf_counter() - t0)
        faults += minflt() - f0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"s_per_step": sum(times) / len(times), "minor_faults_per_step": faults / len(times),
                  "kernel_cpu_share": usage.ru_stime / (usage.ru_stime + usage.ru_utime),
                  "peak_rss_gb": usage.ru_maxrss / 1e6, "bf16": bf16}))
"""


def measure(mode: str, steps: int) -> dict:
    """One process training `steps` steps under `mode` ("default" or "genrec")."""
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Alternate the two settings `--rounds` times; write the medians and their ratio."""
    from genrec.atomic import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"default": [], "genrec": []}
    for r in range(args.rounds):
        for mode in ("default", "genrec") if r % 2 == 0 else ("genrec", "default"):
            runs[mode].append(measure(mode, args.steps))
            print(f"round {r + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)

    def median(mode: str, key: str) -> float:
        values = sorted(run[key] for run in runs[mode])
        return (
            values[len(values) // 2]
            if len(values) % 2
            else sum(values[len(values) // 2 - 1 : len(values) // 2 + 1]) / 2
        )

    keys = ("s_per_step", "minor_faults_per_step", "kernel_cpu_share", "peak_rss_gb")
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "steps_per_process": args.steps,
        "rounds": args.rounds,
        "tokens_per_step": 8192,
        "default": {k: median("default", k) for k in keys},
        "genrec_memory_settings": {k: median("genrec", k) for k in keys},
        "runs": runs,
    }
    result["speedup"] = result["default"]["s_per_step"] / result["genrec_memory_settings"]["s_per_step"]
    result["peak_rss_ratio"] = result["genrec_memory_settings"]["peak_rss_gb"] / result["default"]["peak_rss_gb"]
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "allocator.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
