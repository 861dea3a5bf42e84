"""Benchmark: constrained top-10 recommendations through vLLM and through Hugging Face, same model and prompts.

Measures, at 1 and 16 concurrent requests: recommendations per second and p50/p95 latency of a
trie-constrained beam search (width 20, top 10) through the vLLM server (`agent.llm_client`) and
through Hugging Face (`generate(num_beams=20, prefix_allowed_tokens_fn=trie)`, and
`finetune.generate.beam_search` when present); the vLLM/HF ratio; server start time; peak
memory; how often the two top-10 lists agree; and the cost of each `structured_outputs`
constraint shape (regex, choice, grammar) for catalogs of ~1.7k and 12k items.

Without `--run`, a synthetic model is built (Llama, hidden 256, 4 layers: the size of the default
scratch model) with SID tokens for 12,000 items (3 x 256 codes + a uniqueness level); the 1.7k
catalog is its first 1,682 items. With `--run DIR`, the run's model, codes and user histories.

Writes bench/results/serve.json. Run: .venv/bin/python bench/serve.py [--run runs/ml100k] [--requests 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
K, BEAM = 10, 20
HISTORY = 20


def percentile_ms(samples: list[float], q: float) -> float:
    """The q-th percentile of latencies given in seconds, in milliseconds."""
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 1)


def summary(latencies: list[float], wall_s: float) -> dict:
    """Throughput and latency figures of one measured configuration."""
    return {
        "requests": len(latencies),
        "recs_per_s": round(len(latencies) / wall_s, 2),
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "wall_s": round(wall_s, 2),
    }


class PeakMemory:
    """Samples the RSS of a process and its children every 0.2 s and keeps the maximum (MB)."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for proc in [self.process, *self.process.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ inputs


def synthetic_codes(n_items: int, seed: int = 0) -> dict[str, list[int]]:
    """RQ-VAE-shaped codes: three random levels of 256 codes plus a level that makes each code unique."""
    rng = random.Random(seed)
    codes: dict[str, list[int]] = {}
    used: dict[tuple[int, ...], int] = {}
    while len(codes) < n_items:
        prefix = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        suffix = used.get(prefix, 0)
        used[prefix] = suffix + 1
        codes[f"item{len(codes)}"] = [*prefix, suffix]
    return codes


def history_prompt(codes: list[list[int]]) -> str:
    """A next-item prompt over a history of codes (the shape of the SFT next-item task)."""
    from finetune.sid_tokens import render_sid

    return "User history: " + " ".join(render_sid(c) for c in codes) + ". Recommend the next item."


Prompt = list[int]  # token ids: both engines see exactly the same prompt


def synthetic_inputs(work: Path, n_prompts: int) -> tuple[Path, Path, dict[str, dict], list[Prompt], dict]:
    """Build the synthetic model; return base, adapter, catalogs by name, prompts, model facts."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_sid_model

    codes = synthetic_codes(12_000)
    catalogs = {"1682": dict(list(codes.items())[:1682]), "12000": codes}
    base, adapter = build_tiny_sid_model(work / "model", codes, hidden_size=256, num_layers=4, lora_rank=16)
    rng = random.Random(1)
    small = list(catalogs["1682"].values())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    prompts = [tokenizer(history_prompt(rng.sample(small, HISTORY))).input_ids for _ in range(n_prompts)]
    return base, adapter, catalogs, prompts, {"source": "synthetic", "hidden_size": 256, "layers": 4}


def run_inputs(run: Path, n_prompts: int) -> tuple[Path, Path, dict[str, dict], list[Prompt], dict]:
    """A trained run's model, its catalog, and the prompts it was trained on (`finetune.tasks.next_item_prompt`,
    the run's template and history length) for the histories of a seeded sample of its users."""
    import pandas as pd
    from transformers import AutoConfig, AutoTokenizer

    from finetune.tasks import next_item_prompt

    codes = json.loads((run / "semantic_ids.json").read_text())
    meta = json.loads((run / "model" / "genrec.json").read_text())
    base = run / "model" / "base"
    tokenizer = AutoTokenizer.from_pretrained(base)
    inter = pd.read_parquet(run / "interactions.parquet").sort_values(["user_id", "timestamp"])
    histories = [[i for i in g["item_id"].astype(str) if i in codes] for _, g in inter.groupby("user_id", sort=True)]
    rng = random.Random(0)
    prompts = []
    for items in rng.sample(histories, min(n_prompts, len(histories))):
        text = next_item_prompt(tokenizer, [codes[i] for i in items[:-1][-int(meta["max_history"]):]], meta.get("template"))
        prompts.append(tokenizer(text, add_special_tokens=False).input_ids)
    config = AutoConfig.from_pretrained(base)
    facts = {"source": str(run), "base": meta.get("base"), "hidden_size": config.hidden_size,
             "layers": config.num_hidden_layers, "max_history": meta["max_history"],
             "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1)}
    return base, run / "model" / "adapter", {str(len(codes)): codes}, prompts, facts


def padded(tokenizer, batch: list[Prompt]):
    """A left-padded batch of token-id prompts."""
    tokenizer.padding_side = "left"
    return tokenizer.pad({"input_ids": batch}, return_tensors="pt")


# ------------------------------------------------------------------ measurements


def measure_vllm(client, prompts: list[Prompt], trie, concurrency: int, n_requests: int) -> tuple[dict, list]:
    """Constrained top-K through the server at a given concurrency; also returns the results per prompt."""
    jobs = [prompts[i % len(prompts)] for i in range(n_requests)]
    latencies: list[float] = [0.0] * n_requests
    results: list = [None] * n_requests

    def one(i: int) -> None:
        t = time.perf_counter()
        results[i] = client.recommend_ids(jobs[i], trie, k=K, beam_width=BEAM)
        latencies[i] = time.perf_counter() - t

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(n_requests)))
    return summary(latencies, time.perf_counter() - start), results


def measure_constraints(client, catalogs: dict[str, dict], prompt: Prompt, repeats: int = 3) -> dict:
    """First (compiling) and warm latency of each structured-output constraint shape, per catalog size."""
    from serving.client import LLMError
    from agent.sid_constraints import CONSTRAINT_KINDS, structured_outputs
    from finetune.sid_tokens import CodeTrie

    out: dict[str, dict] = {}
    for name, codes in catalogs.items():
        trie = CodeTrie(codes)
        per_kind: dict[str, dict] = {}
        for kind in CONSTRAINT_KINDS:
            spec_bytes = len(json.dumps(structured_outputs(trie, kind)))
            latencies, valid, returned = [], 0, 0
            error = None
            for r in range(1 + repeats):
                t = time.perf_counter()
                try:
                    res = client.recommend_ids(prompt, trie, k=K, beam_width=K, method="sample", constraint=kind, seed=r)
                except LLMError as exc:
                    error = str(exc)[:200]
                    break
                latencies.append(time.perf_counter() - t)
                returned += len(res)
                valid += sum(code in trie for code, _ in res)
            per_kind[kind] = {
                "spec_kb": round(spec_bytes / 1024, 1),
                "first_request_ms": round(latencies[0] * 1000, 1) if latencies else None,
                "warm_p50_ms": percentile_ms(latencies[1:], 50) if len(latencies) > 1 else None,
                "distinct_codes_per_request": round(returned / max(1, len(latencies)), 1),
                "valid_rate": round(valid / returned, 4) if returned else None,
                **({"error": error} if error else {}),
            }
        t = time.perf_counter()
        client.recommend_ids(prompt, trie, k=K, beam_width=BEAM)
        per_kind["client_trie_beam_ms"] = round((time.perf_counter() - t) * 1000, 1)
        out[name] = per_kind
    return out


def measure_hf_generate(model, tokenizer, prompts: list[Prompt], trie, concurrency: int, n_requests: int):
    """`generate` with a trie `prefix_allowed_tokens_fn`; 16 concurrent requests = one batch of 16."""
    import torch

    from finetune.sid_tokens import SidVocab, prefix_allowed_tokens_fn

    vocab = SidVocab.from_tokenizer(tokenizer, trie.codebook_sizes)
    jobs = [prompts[i % len(prompts)] for i in range(n_requests)]
    latencies: list[float] = []
    results: list = []
    start = time.perf_counter()
    for b in range(0, n_requests, concurrency):
        batch = jobs[b : b + concurrency]
        enc = padded(tokenizer, batch)
        n = enc.input_ids.shape[1]
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **enc,
                num_beams=BEAM,
                num_return_sequences=K,
                max_new_tokens=trie.depth,
                do_sample=False,
                length_penalty=0.0,
                prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(trie, vocab, n),
                pad_token_id=tokenizer.pad_token_id,
            )
        latencies += [time.perf_counter() - t] * len(batch)
        seqs = out.view(len(batch), K, -1)
        results += [[vocab.decode(s[n:].tolist()) for s in rows] for rows in seqs]
    return summary(latencies, time.perf_counter() - start), results


def measure_hf_finetune(model, tokenizer, prompts: list[Prompt], codes: dict, concurrency: int, n_requests: int):
    """`finetune.generate.beam_search` (prompt encoded once, KV fanned out to the beams), if present."""
    import torch

    from finetune.generate import beam_search
    from finetune.trie import SidTrie

    trie = SidTrie(codes, tokenizer)
    jobs = [prompts[i % len(prompts)] for i in range(n_requests)]
    latencies: list[float] = []
    start = time.perf_counter()
    for b in range(0, n_requests, concurrency):
        batch = jobs[b : b + concurrency]
        enc = padded(tokenizer, batch)
        t = time.perf_counter()
        with torch.no_grad():
            beam_search(model, enc.input_ids, enc.attention_mask, trie, BEAM)
        latencies += [time.perf_counter() - t] * len(batch)
    return summary(latencies, time.perf_counter() - start)


def main() -> None:
    """Serve one model with vLLM, measure, stop it, measure Hugging Face on the same files; write JSON."""
    import psutil
    import torch

    from serving.client import LLMClient
    from serving.server import ServerSpec, VllmServer, free_port
    from finetune.sid_tokens import CodeTrie
    from genrec.atomic import write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a trained run directory (default: synthetic model)")
    parser.add_argument("--requests", type=int, default=32, help="requests per configuration")
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        if args.run is None:
            base, adapter, catalogs, prompts, model_facts = synthetic_inputs(work, n_prompts=16)
        else:
            base, adapter, catalogs, prompts, model_facts = run_inputs(args.run, n_prompts=16)
        print(f"inputs ready in {time.perf_counter() - t:.1f} s: {len(prompts)} prompts, catalogs {list(catalogs)}")
        main_catalog = next(iter(catalogs.values()))
        trie = CodeTrie(main_catalog)
        spec = ServerSpec(
            base_dir=base,
            adapter_dir=adapter if (adapter / "adapter_config.json").is_file() else None,
            log_path=work / "vllm.log",
            port=free_port(),
            kv_cache_gib=args.kv_cache_gib,
            max_model_len=min(2048, json.loads((base / "config.json").read_text()).get("max_position_embeddings", 2048)),
        )
        report: dict = {
            "model": {**model_facts, "catalog_items": len(main_catalog), "prompt_history_items": HISTORY},
            "k": K,
            "beam_width": BEAM,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": os.getloadavg()},
        }
        vllm_results: list = []
        server = VllmServer(spec, startup_timeout_s=600)
        with server:
            report["server_start_s"] = round(server.startup_s, 1)
            print(f"vLLM healthy after {server.startup_s:.1f} s")
            with PeakMemory(server.process.pid) as memory, LLMClient(spec.url, timeout_s=300) as client:
                for p in prompts[:2]:
                    client.recommend_ids(p, trie, k=K, beam_width=BEAM)  # warm-up
                report["vllm"] = {}
                for conc in (1, 16):
                    figures, results = measure_vllm(client, prompts, trie, conc, args.requests)
                    report["vllm"][f"concurrency_{conc}"] = figures
                    print(f"vLLM c={conc}: {figures}")
                    if conc == 1:
                        vllm_results = results[: len(prompts)]
                report["constraints"] = measure_constraints(client, catalogs, prompts[0])
                print(f"constraints: {json.dumps(report['constraints'])}")
            report["peak_rss_mb"] = {"vllm_server": round(memory.peak_mb)}

        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with PeakMemory(os.getpid()) as memory:
            tokenizer = AutoTokenizer.from_pretrained(base, padding_side="left")
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            if spec.adapter_dir is not None:
                model = PeftModel.from_pretrained(model, spec.adapter_dir).merge_and_unload()
            model.eval()
            report["hf_generate"] = {}
            hf_results: list = []
            for conc in (1, 16):
                figures, results = measure_hf_generate(model, tokenizer, prompts, trie, conc, args.requests)
                report["hf_generate"][f"concurrency_{conc}"] = figures
                print(f"HF generate c={conc}: {figures}")
                if conc == 1:
                    hf_results = results[: len(prompts)]
            try:
                report["hf_finetune_beam_search"] = {
                    f"concurrency_{conc}": measure_hf_finetune(model, tokenizer, prompts, main_catalog, conc, args.requests)
                    for conc in (1, 16)
                }
                print(f"HF finetune.generate.beam_search: {report['hf_finetune_beam_search']}")
            except ImportError as exc:
                report["hf_finetune_beam_search"] = {"unavailable": str(exc)}
        report["peak_rss_mb"]["hf_process"] = round(memory.peak_mb)
        report["peak_rss_mb"]["bench_process_max_rss"] = round(psutil.Process().memory_info().rss / 2**20)

        for baseline in ("hf_generate", "hf_finetune_beam_search"):
            if "unavailable" in report.get(baseline, {"unavailable": True}):
                continue
            report[f"ratio_vllm_over_{baseline}"] = {
                key: {
                    "recs_per_s": round(report["vllm"][key]["recs_per_s"] / report[baseline][key]["recs_per_s"], 2),
                    "p50_latency": round(report["vllm"][key]["p50_ms"] / report[baseline][key]["p50_ms"], 2),
                }
                for key in report["vllm"]
            }
        same = [
            [code for code, _ in v] == list(h) for v, h in zip(vllm_results, hf_results)
        ]
        report["top10_identical_to_hf_rate"] = round(sum(same) / max(1, len(same)), 3)
        report["machine"]["load_avg_at_end"] = os.getloadavg()
    write_json(args.out, report)
    print(
        f"wrote {args.out}: vLLM {report['vllm']['concurrency_16']['recs_per_s']} recs/s vs HF "
        f"{report['hf_generate']['concurrency_16']['recs_per_s']} at 16 concurrent; server start {report['server_start_s']} s; "
        f"top-10 identical to HF on {report['top10_identical_to_hf_rate']:.0%} of prompts"
    )


if __name__ == "__main__":
    main()
