"""Benchmark: constrained top-10 through vLLM, through genrec's in-process beam search, and through
Hugging Face `generate`, on a trained run's own prompts.

The three generation paths of the same model (base + LoRA) and the same prompts (the run's test
users' histories, built by `HistoryPrompt` as training builds them, history items excluded):

- vLLM, engine search: `genrec serve`'s recommender server as it starts by default, the pooling
  architecture `serving.trie_engine`: one engine request per recommendation, genrec's beam search
  in the engine's pooler on every request of an engine step at once;
- vLLM, steps search: the same server started with `serve.search: steps` (what a server that also
  chats runs), one one-token engine request per live beam and level (`serving.trie_search`);
- in-process: `inference.decoding.local.LocalGenerator` (tree-attention beam search, prompt encoded once);
- Hugging Face: `generate(num_beams=20)` kept on the trie by a logits processor (tests/hf_reference.py).

Each at 1 request at a time and at 16 concurrent requests (vLLM: 16 client threads, one HTTP request
per recommendation through `inference.vllm_generator`'s payload, batched by the server; in-process and
HF: batches of 16 histories, how a process serves 16 waiting requests; HF at 1 only, it is slow).
The in-process path is measured again just before each engine-search measurement (`*_beside_engine`):
on a shared machine the load changes by the minute, and those are the ratios to read.
Reports recommendations/s, p50/p95 latency, the ratios vLLM/in-process and vLLM/HF measured in the
same run, whether the top-10 lists agree on every prompt, server start time and peak memory, and
where the vLLM routes' time goes: the steps search's engine requests per recommendation and the
one-token requests/s the engine answers; the engine search's batch per engine step and the share of
the wall time its pooler spent searching (the rest: HTTP, the API process, the engine's scheduling);
and for both, how many cores each of the server's processes (API server, engine core, worker) and
the benchmark's own client threads kept busy while it was measured.

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


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of a vLLM server's processes by role, and of this process
    (the benchmark's client threads while a server is measured)."""
    import psutil

    roles: dict[str, float] = {"api_server": 0.0, "engine_core": 0.0, "worker": 0.0, "other": 0.0}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            name, times = proc.name(), proc.cpu_times()
        except psutil.Error:
            continue
        role = (
            "api_server"
            if proc.pid == pid
            else "worker"
            if "Worker" in name
            else "engine_core"
            if "Engine" in name  # "VLLM::EngineCore", cut to 15 characters
            else "other"
        )
        roles[role] += times.user + times.system
    mine = psutil.Process().cpu_times()
    roles["benchmark_client"] = mine.user + mine.system
    return roles


def cpu_share(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Cores each role kept busy on average over `wall_s` (of the machine's 2 here)."""
    return {role: round((after[role] - before[role]) / wall_s, 2) for role in before}


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
    """What bounds the steps search on this machine: how many one-token engine requests one
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


def route_caller(url: str, local, model: str, stats: list):
    """One recommendation through the server's route, as `LLMClient.recommend` sends it; the route's
    own figures (search kind, engine requests, batch, search seconds) are appended to `stats`."""
    import requests

    from serving.trie_search import ROUTE

    root = url.rsplit("/v1", 1)[0]
    session = threading.local()

    def call(batch: list[list[str]]) -> list:
        if not hasattr(session, "http"):
            session.http = requests.Session()
        out = []
        for history in batch:
            body = {
                "model": model,
                "prompt_token_ids": local.prompts.token_ids(history),
                "width": WIDTH,
                "k": K,
                "exclude": sorted(set(history)),
            }
            answer = session.http.post(root + ROUTE, json=body, timeout=600)
            answer.raise_for_status()
            reply = answer.json()
            stats.append({key: value for key, value in reply.items() if key != "items"})
            out.append([(row["item_id"], row["logprob"]) for row in reply["items"]])
        return out

    return call


def engine_breakdown(stats: list[dict], wall_s: float) -> dict:
    """Where the engine search's time went: requests per engine step, and the pooler's search time
    (each step's seconds shared by the requests it searched) against the wall time."""
    search_s = sum(s["search_s"] / s["batch"] for s in stats)
    return {
        "engine_requests_per_recommendation": float(np.mean([s["engine_requests"] for s in stats])),
        "mean_batch_per_engine_step": round(float(np.mean([s["batch"] for s in stats])), 2),
        "search_s_total": round(search_s, 2),
        "search_share_of_wall": round(search_s / wall_s, 3),
        "search_ms_per_recommendation": round(1000 * search_s / len(stats), 1),
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
    from inference.client import ADAPTER_MODEL, LLMClient
    from inference.decoding.local import load_local_generator
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

    routes = {}
    for search in ("engine", "steps"):
        serve_cfg: ServeConfig = config.serve.model_copy(
            update={"port": free_port(), "kv_cache_gib": 2, "search": search}
        )
        server = serve_run(args.run, serve_cfg)
        t0 = time.perf_counter()
        with server:
            report[f"vllm_{search}_start_s"] = round(time.perf_counter() - t0, 1)
            stats: list[dict] = []
            vllm = route_caller(server.url, local, ADAPTER_MODEL, stats)
            vllm(histories[:2])  # warm-up: first shapes
            with PeakMemory(server.process.pid) as memory:
                # the machine's load changes by the minute: the in-process baseline is measured again
                # just before each engine measurement (the idle server costs ~1% of a core)
                if search == "engine":
                    report["in_process_1_beside_engine"], _ = sequential(in_process, histories)
                stats.clear()
                cpu = cpu_seconds(server.process.pid)
                report[f"vllm_{search}_1"], routes[search] = sequential(vllm, histories)
                cpu_1 = cpu_share(cpu, cpu_seconds(server.process.pid), report[f"vllm_{search}_1"]["wall_s"])
                one = list(stats)
                if search == "engine":
                    report["in_process_16_beside_engine"], _ = batched(in_process, histories)
                stats.clear()
                cpu = cpu_seconds(server.process.pid)
                report[f"vllm_{search}_16"], routes[f"{search}_16"] = concurrent(vllm, histories)
                cpu_16 = cpu_share(cpu, cpu_seconds(server.process.pid), report[f"vllm_{search}_16"]["wall_s"])
                sixteen = list(stats)
            report[f"vllm_{search}_cores_busy"] = {"at_1": cpu_1, "at_16": cpu_16}
            report[f"vllm_{search}_peak_rss_mb"] = round(memory.peak_mb)
            if search == "engine":
                report["engine_search"] = {
                    "at_1": engine_breakdown(one, report["vllm_engine_1"]["wall_s"]),
                    "at_16": engine_breakdown(sixteen, report["vllm_engine_16"]["wall_s"]),
                }
            else:
                client = LLMClient(server.url, timeout_s=300)
                report["steps_search"] = engine_ceiling(server.url, client, local, histories)
                client.close()

    report["agreement"] = {
        "vllm_engine_vs_in_process": agreement(routes["engine"], local_1),
        "vllm_engine_16_vs_in_process": agreement(routes["engine_16"], local_1),
        "vllm_steps_vs_in_process": agreement(routes["steps"], local_1),
        "vllm_engine_vs_hf_generate": agreement(routes["engine"][: len(hf_1)], hf_1),
        "in_process_vs_hf_generate": agreement(local_1[: len(hf_1)], hf_1),
    }

    def ratio(a: str, b: str) -> float:
        return round(report[a]["recs_per_s"] / report[b]["recs_per_s"], 3)

    report["ratios"] = {
        "vllm_engine_16_over_in_process_16_beside": ratio("vllm_engine_16", "in_process_16_beside_engine"),
        "vllm_engine_1_over_in_process_1_beside": ratio("vllm_engine_1", "in_process_1_beside_engine"),
        "vllm_engine_16_over_in_process_16": ratio("vllm_engine_16", "in_process_16"),
        "vllm_engine_1_over_in_process_1": ratio("vllm_engine_1", "in_process_1"),
        "vllm_engine_16_over_vllm_steps_16": ratio("vllm_engine_16", "vllm_steps_16"),
        "vllm_engine_16_over_hf_generate_1": ratio("vllm_engine_16", "hf_generate_1"),
        "vllm_steps_16_over_in_process_16": ratio("vllm_steps_16", "in_process_16"),
    }
    report["machine"]["load_at_end"] = os.getloadavg()
    write_json(args.out, report)
    keys = ("in_process_1", "in_process_16", "hf_generate_1", "in_process_1_beside_engine", "vllm_engine_1")
    for key in (*keys, "in_process_16_beside_engine", "vllm_engine_16", "vllm_steps_1", "vllm_steps_16"):
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
