"""Baselines under the genrec protocol on MovieLens-100K and Amazon Beauty.

Leave-one-out, full ranking over the whole catalog, history excluded, every metric from
`genrec.metrics`. Item-kNN's two knobs are picked on validation NDCG@10; SASRec (full cross-entropy)
early-stops on validation NDCG@10; everything is then scored once on the test split.

    .venv/bin/python bench/baselines.py                       # both datasets
    .venv/bin/python bench/baselines.py --datasets ml-100k --threads 2

Writes bench/results/baselines.json (figures, settings, SASRec training curve and throughput,
published reference numbers for Beauty).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from eval.baselines import ContentNN, ItemKNN, Popularity, SASRec  # noqa: E402
from eval.evaluate import evaluate, evaluate_validation, print_results, save_results  # noqa: E402
from retrieval.split import leave_one_out  # noqa: E402
from genrec.config import EvalConfig  # noqa: E402
from retrieval.catalog import Catalog, item_caption  # noqa: E402
from retrieval.loaders import load_amazon_seq, load_movielens  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "baselines.json"

PUBLISHED_BEAUTY = {
    "source": "leave-one-out, full ranking; TIGER (Rajput et al., NeurIPS 2023) table 2; GRAM (ACL 2025)",
    "SASRec (TIGER paper)": {"recall@10": 0.0605, "ndcg@10": 0.0318},
    "TIGER": {"recall@10": 0.0648, "ndcg@10": 0.0384},
    "GRAM": {"recall@5": 0.0641, "ndcg@5": 0.0451},
}

# per-dataset SASRec settings: the paper's max_len (200 dense MovieLens, 50 sparse Amazon) and
# dropout (0.2 / 0.5); lr picked on ML-100K validation (3e-3 and 5e-3 tie, 5e-3 stops sooner);
# wall-clock caps keep each dataset within ~10 minutes on 2 shared CPU cores
SETTINGS = {
    "ml-100k": EvalConfig(
        sasrec_max_len=200, sasrec_dropout=0.2, sasrec_lr=5e-3, sasrec_patience=10, sasrec_max_minutes=8.0
    ),
    "beauty": EvalConfig(
        sasrec_max_len=50, sasrec_dropout=0.5, sasrec_lr=2e-3, sasrec_patience=5, sasrec_val_users=5000,
        sasrec_max_minutes=9.0,
    ),
}
KNN_GRID = [(n, r) for n in (50, 200, None) for r in (1.0, 0.7, 0.4)]


def content_vectors(catalog: Catalog) -> np.ndarray:
    """MiniLM embeddings of each item's caption (title + attributes), in catalog order."""
    from retrieval.encoders import encode_texts, load_encoder

    captions = [item_caption(r.title, json.loads(r.attributes), r.text) for r in catalog.items.itertuples()]
    return encode_texts(load_encoder("all-MiniLM-L6-v2"), captions, batch_size=64, progress=True)


def tune_itemknn(split, catalog_ids: list[str]) -> tuple[ItemKNN, dict]:
    """Pick neighbours and recency decay by validation NDCG@10 (the test split is never looked at)."""
    best, best_score, grid = None, -1.0, []
    for neighbors, recency in KNN_GRID:
        model = ItemKNN(catalog_ids, neighbors=neighbors, recency=recency)
        model.fit(split.train)
        score = evaluate_validation(model, split, catalog_ids)["ndcg@10"]
        grid.append({"neighbors": neighbors, "recency": recency, "valid_ndcg@10": score})
        if score > best_score:
            best, best_score = model, score
    return best, {"grid": grid, "chosen": {"neighbors": best.neighbors, "recency": best.recency}}


def run_dataset(name: str, catalog: Catalog, config: EvalConfig, threads: int | None, with_content: bool) -> dict:
    """Fit every baseline on one dataset's split and score them on its test users."""
    split = leave_one_out(catalog.interactions)
    ids = catalog.items["item_id"].tolist()
    stats = {
        "users": len(split.train),
        "items": len(ids),
        "interactions": len(catalog.interactions),
        "test_users": len(split.test),
    }
    print(f"== {name}: {stats}")
    fit_seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    popularity = Popularity(ids)
    popularity.fit(split.train)
    fit_seconds["popularity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    itemknn, knn_tuning = tune_itemknn(split, ids)
    fit_seconds["itemknn (grid of 9)"] = time.perf_counter() - t0
    models = [popularity, itemknn]

    if with_content:
        t0 = time.perf_counter()
        content = ContentNN(ids, content_vectors(catalog), last_n=config.content_last_n)
        content.fit(split.train)
        fit_seconds["content (incl. encoding)"] = time.perf_counter() - t0
        models.append(content)

    sasrec = SASRec(
        ids,
        hidden=config.sasrec_hidden,
        layers=config.sasrec_layers,
        heads=config.sasrec_heads,
        max_len=config.sasrec_max_len,
        dropout=config.sasrec_dropout,
        lr=config.sasrec_lr,
        batch_size=config.sasrec_batch_size,
        epochs=config.sasrec_epochs,
        patience=config.sasrec_patience,
        val_users=config.sasrec_val_users,
        max_minutes=config.sasrec_max_minutes,
        seed=config.seed,
        threads=threads,
    )
    t0 = time.perf_counter()
    sasrec.fit(split.train, split.valid)
    fit_seconds["sasrec"] = time.perf_counter() - t0
    models.append(sasrec)

    results = evaluate(models, split, ids, ks=config.ks, seed=config.seed, batch_size=config.batch_size)
    print_results(results, title=f"{name}: leave-one-out, full ranking ({stats['test_users']} test users)")
    return {
        "stats": stats,
        "results": results,
        "fit_seconds": fit_seconds,
        "itemknn_tuning": knn_tuning,
        "sasrec_settings": {
            k.removeprefix("sasrec_"): v for k, v in config.model_dump().items() if k.startswith("sasrec_")
        }
        | {"threads": threads, "seed": config.seed},
        "sasrec_training": sasrec.train_stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty"], choices=["ml-100k", "beauty"])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for SASRec (1: fastest on a shared 2-core machine)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    report: dict = {
        "protocol": "leave-one-out (last item test, second-to-last validation), full ranking over the whole "
        "catalog, history items excluded; metrics from eval.metrics",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_at_start": os.getloadavg()},
        "datasets": {},
    }
    if args.out.exists():  # keep datasets measured by an earlier invocation
        report["datasets"] = json.loads(args.out.read_text()).get("datasets", {})
    for name in args.datasets:
        if name == "ml-100k":
            entry = run_dataset(name, load_movielens(DATA / "ml-100k"), SETTINGS[name], args.threads, with_content=True)
        else:
            catalog = load_amazon_seq(DATA / "amazon-seq" / "Beauty.txt")
            entry = run_dataset(name, catalog, SETTINGS[name], args.threads, with_content=False)
            entry["published"] = PUBLISHED_BEAUTY
        entry["load_at_end"] = os.getloadavg()
        report["datasets"][name] = entry
        save_results(report, args.out)  # after each dataset, so a later failure loses nothing
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from genrec.memory import keep_freed_memory, limit_onednn_cache

    keep_freed_memory()  # see genrec/memory.py: training otherwise page-faults its tensors anew
    limit_onednn_cache()
    main()
