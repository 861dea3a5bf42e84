"""Benchmark: constrained top-10 through vLLM, through genrec's in-process beam search, and through
Hugging Face `generate`, on a trained run's own prompts.

The three generation paths of the same model (base + LoRA) and the same prompts (the run's test
users' histories, built by `HistoryPrompt` as training builds them, history items excluded):

- vLLM: `genrec serve`'s recommender server, trie beam search inside the server
  (`serving.trie_search`), one HTTP request per recommendation (`inference.vllm_generator`);
- in-process: `inference.decoding.local.LocalGenerator` (tree-attention beam search, prompt encoded once);
- Hugging Face: `generate(num_beams=20)` kept on the trie by a logits processor (tests/hf_reference.py).

Each at 1 request at a time and at 16 concurrent requests (vLLM: 16 client threads, batched by the
server; in-process and HF: batches of 16 histories, how a process serves 16 waiting requests).
Reports recommendations/s, p50/p95 latency, the ratios vLLM/in-process and vLLM/HF measured in the
same run, whether the three top-10 lists agree on every prompt, server start time and peak memory.

    .venv/bin/python bench/serve.py --run runs/demo [--prompts 32]

Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "bench" / "results" / "serve.json"
K, WIDTH, CONCURRENT = 10, 20, 16


def latency_summary(latencies: list[float], wall_s: float, recs: int) -> dict:
    """Throughput and latency of one configuration (latencies in seconds, per request)."""
    ms = np.asarray(latencies) * 1000.0
    return {
        "recommendations": recs,
        "recs_per_s": round(recs / wall_s, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "wall_s": round(wall_s, 2),
    }


class PeakMemory:
    """Samples the resident size of a process tree every 0.2 s and keeps the maximum (MB)."""

    def __init__(self, pid: int):
        import psutil

        self.process, self.peak_mb, self._stop = psutil.Process(pid), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                self.peak_mb = max(self.peak_mb, sum(p.memory_info().rss for p in procs) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sequential(call, items: list) -> tuple[dict, list]:
    """One request at a time."""
    out, latencies = [], []
    started = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        out.append(call([item])[0])
        latencies.append(time.perf_counter() - t0)
    return latency_summary(latencies, time.perf_counter() - started, len(items)), out


def batched(call, items: list, size: int = CONCURRENT) -> tuple[dict, list]:
    """Requests served `size` at a time by one call (each request's latency is its batch's)."""
    out, latencies = [], []
    started = time.perf_counter()
    for start in range(0, len(items), size):
        t0 = time.perf_counter()
        out += call(items[start : start + size])
        latencies += [time.perf_counter() - t0] * len(items[start : start + size])
    return latency_summary(latencies, time.perf_counter() - started, len(items)), out


def concurrent(call, items: list, threads: int = CONCURRENT) -> tuple[dict, list]:
    """`threads` clients sending one request each at a time."""
    latencies: list[float] = [0.0] * len(items)
    out: list = [None] * len(items)

    def one(i: int) -> None:
        t0 = time.perf_counter()
        out[i] = call([items[i]])[0]
        latencies[i] = time.perf_counter() - t0

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(len(items))))
    return latency_summary(latencies, time.perf_counter() - started, len(items)), out


def engine_ceiling(url: str, client, local, histories: list[list[str]]) -> dict:
    """What bounds the in-server search on this machine: how many one-token engine requests one
    recommendation takes (the route reports it), and how many such requests per second the same
    server answers as plain completions of the same prompts, 1 and 32 at a time."""
    import requests

    from serving.trie_search import ROUTE

    root = url.rsplit("/v1", 1)[0]
    counts = []
    for history in histories[:8]:
        body = {
            "model": client.model,
            "prompt_token_ids": local.prompts.token_ids(history),
            "width": WIDTH,
            "k": K,
            "exclude": sorted(history),
        }
        counts.append(requests.post(root + ROUTE, json=body, timeout=300).json()["engine_requests"])
    prompts = [local.prompts.token_ids(h) for h in histories]

    def one(i: int) -> None:
        body = {
            "model": client.model,
            "prompt": prompts[i % len(prompts)] + [prompts[0][0]],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": 5,
        }
        requests.post(url + "/completions", json=body, timeout=300).raise_for_status()

    rates = {}
    for threads in (1, 32):
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, range(64)))
        rates[f"one_token_requests_per_s_{threads}"] = round(64 / (time.perf_counter() - started), 1)
    per_rec = float(np.mean(counts))
    return {
        "engine_requests_per_recommendation": round(per_rec, 1),
        **rates,
        "recs_per_s_ceiling": round(rates["one_token_requests_per_s_32"] / per_rec, 2),
    }


def agreement(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> dict:
    """How often two paths return the same top-K items in the same order, and their largest score gap."""
    same = sum([i for i, _ in x[:K]] == [i for i, _ in y[:K]] for x, y in zip(a, b))
    gap = max(abs(sx - sy) for x, y in zip(a, b) for (_, sx), (_, sy) in zip(x[:K], y[:K]))
    return {"identical_top10": same, "prompts": len(a), "max_score_gap": round(float(gap), 6)}


def main() -> None:
    """Start the run's recommender server, measure the three paths, write bench/results/serve.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained run (genrec train)")
    parser.add_argument("--prompts", type=int, default=32, help="test users whose histories are the prompts")
    parser.add_argument(
        "--hf-prompts", type=int, default=16, help="of those, how many Hugging Face generate runs (slow)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from hf_reference import hf_trie_topk

    from genrec.atomic import write_json
    from genrec.config import ServeConfig
    from genrec.metrics import sample_users
    from genrec.run import open_run
    from inference.client import LLMClient
    from inference.decoding.local import load_local_generator
    from inference.decoding.trie import SidTrie
    from inference.vllm_generator import VllmGenerator
    from retrieval.catalog import load_catalog
    from retrieval.semantic_ids import load_semantic_ids
    from retrieval.split import leave_one_out
    from serving.server import free_port, serve_run

    paths, config = open_run(args.run)
    codes = load_semantic_ids(paths)
    split = leave_one_out(load_catalog(paths).interactions)
    users = sample_users(split.test, args.prompts, seed=0)
    histories = [split.test[u][0] for u in users]

    local = load_local_generator(paths, codes, beam_width=WIDTH, batch_size=CONCURRENT)

    def in_process(batch: list[list[str]]) -> list:
        return [row[:K] for row in local.generate(batch, WIDTH, exclude=[set(h) for h in batch])]

    in_process([histories[0]])  # warm-up: first-call allocations
    report: dict = {
        "run": str(args.run),
        "k": K,
        "beam_width": WIDTH,
        "prompts": len(histories),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_at_start": os.getloadavg()},
    }
    report["in_process_1"], local_1 = sequential(in_process, histories)
    report["in_process_16"], _ = batched(in_process, histories)

    model, tokenizer = local.model, local.tokenizer
    hf_histories = histories[: args.hf_prompts]

    def hf(batch: list[list[str]]) -> list:
        return [
            hf_trie_topk(model, tokenizer, local.prompts.token_ids(h), local.trie, WIDTH, local.trie.exclusion(h))[:K]
            for h in batch
        ]

    report["hf_generate_1"], hf_1 = sequential(hf, hf_histories)

    serve_cfg: ServeConfig = config.serve.model_copy(update={"port": free_port(), "kv_cache_gib": 2})
    server = serve_run(args.run, serve_cfg)
    t0 = time.perf_counter()
    with server:
        report["vllm_start_s"] = round(time.perf_counter() - t0, 1)
        client = LLMClient(server.url, timeout_s=300)
        gen = VllmGenerator(client, SidTrie(codes), local.prompts, beam_width=WIDTH, concurrency=CONCURRENT)

        def vllm(batch: list[list[str]]) -> list:
            return [row[:K] for row in gen.generate(batch, WIDTH, exclude=[set(h) for h in batch])]

        vllm(histories[:2])  # warm-up: compile graphs for the first shapes
        with PeakMemory(server.process.pid) as memory:
            report["vllm_1"], vllm_1 = sequential(vllm, histories)
            report["vllm_16"], _ = concurrent(vllm, histories)
        report["vllm_peak_rss_mb"] = round(memory.peak_mb)
        gen.close()
        report["engine"] = engine_ceiling(server.url, client, local, histories)

    report["agreement"] = {
        "vllm_vs_in_process": agreement(vllm_1, local_1),
        "vllm_vs_hf_generate": agreement(vllm_1[: len(hf_1)], hf_1),
        "in_process_vs_hf_generate": agreement(local_1[: len(hf_1)], hf_1),
    }
    report["ratios"] = {
        "vllm_16_over_in_process_16": round(report["vllm_16"]["recs_per_s"] / report["in_process_16"]["recs_per_s"], 3),
        "vllm_16_over_hf_generate_1": round(report["vllm_16"]["recs_per_s"] / report["hf_generate_1"]["recs_per_s"], 3),
        "vllm_1_over_in_process_1": round(report["vllm_1"]["recs_per_s"] / report["in_process_1"]["recs_per_s"], 3),
    }
    report["machine"]["load_at_end"] = os.getloadavg()
    write_json(args.out, report)
    for key in ("in_process_1", "in_process_16", "hf_generate_1", "vllm_1", "vllm_16"):
        print(f"{key:15s} {report[key]['recs_per_s']:8.2f} recs/s  p50 {report[key]['p50_ms']:8.1f} ms")
    print("ratios", report["ratios"], "agreement", report["agreement"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from genrec.memory import keep_freed_memory, limit_onednn_cache
    from serving.server import sigterm_as_interrupt

    keep_freed_memory()
    limit_onednn_cache()
    with sigterm_as_interrupt():  # `timeout`/`kill` stops the servers it started too
        main()
