"""Benchmark: index MovieLens-100K from scratch and time every stage; Chroma vs brute force queries.

Writes bench/results/index.json. Run: .venv/bin/python bench/index.py [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

RESULTS = Path(__file__).parent / "results"


def percentile_ms(samples: list[float], q: float) -> float:
    """The q-th percentile of latencies given in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def main() -> None:
    """Index ML-100K into a fresh run directory and measure; write the figures as JSON."""
    from genrec.config import RunConfig
    from genrec.run import RunPaths
    from retrieval.index import build_index
    from retrieval.search import Searcher

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dataset", default="ml-100k")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bench-index"
        config = RunConfig(name="bench-index")
        config.data.dataset = args.dataset
        t0 = time.perf_counter()
        report = build_index(run, config)
        total = time.perf_counter() - t0
        t1 = time.perf_counter()
        build_index(run, config)  # unchanged items: the encoder cache must make this cheap
        reindex = time.perf_counter() - t1

        searcher = Searcher.open(run)
        text = np.load(RunPaths(run).embeddings / "text.npy")
        ids = searcher.items["item_id"].tolist()
        rng = np.random.default_rng(0)
        titles = searcher.items["title"].tolist()
        queries = [f"a film like {titles[i]}" for i in rng.integers(0, len(titles), args.queries)]
        qvecs = searcher.text_model.encode(queries, normalize_embeddings=True, convert_to_numpy=True)

        chroma_lat, brute_lat, overlap = [], [], []
        for q in qvecs:
            t = time.perf_counter()
            res = searcher.store.text.query(query_embeddings=[q.tolist()], n_results=10, include=["distances"])
            chroma_lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            top = np.argpartition(-(text @ q), 10)[:10]
            brute_lat.append(time.perf_counter() - t)
            overlap.append(len(set(res["ids"][0]) & {ids[i] for i in top}) / 10)

    stats = report.semantic_id_stats
    figures = {
        "dataset": args.dataset,
        "items": report.items,
        "interactions": report.interactions,
        "seconds": {**{k: round(v, 3) for k, v in report.seconds.items()}, "total": round(total, 3),
                    "reindex_unchanged": round(reindex, 3)},
        "query_top10_ms": {
            "chroma_p50": round(percentile_ms(chroma_lat, 50), 3), "chroma_p95": round(percentile_ms(chroma_lat, 95), 3),
            "numpy_bruteforce_p50": round(percentile_ms(brute_lat, 50), 3),
            "numpy_bruteforce_p95": round(percentile_ms(brute_lat, 95), 3),
            "ratio_chroma_over_numpy_p50": round(percentile_ms(chroma_lat, 50) / percentile_ms(brute_lat, 50), 2),
            "recall_of_chroma_vs_exact": round(float(np.mean(overlap)), 4),
            "queries": args.queries,
        },
        "semantic_ids": stats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
