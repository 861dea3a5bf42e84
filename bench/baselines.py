"""Baselines under the genrec protocol, at published strength, with the published figures beside ours.

Leave-one-out, full ranking over the whole catalog, history excluded, every metric from
`genrec.metrics`. Item-kNN's two knobs are picked on validation NDCG@10. The dense networks
(CE-SASRec, BSARec) train without a wall-clock cap, early-stopped on validation NDCG@10 over all
validation users; each runs a small sweep whose first point is the preset (the published
settings on Amazon data), and the point with the best validation NDCG@10 is the one reported. The
test split is scored for every sweep point (so the sweep can be read in full) but never used to
choose.

    .venv/bin/python bench/baselines.py --datasets beauty --models sasrec --max-configs 1
    .venv/bin/python bench/baselines.py --datasets ml-100k                   # every baseline, full sweeps

Resumable: every finished sweep point is written to bench/results/baselines.json at once, and a
later invocation skips the points already there; a point interrupted midway resumes from the
checkpoint its training saves after every epoch. Trained dense models are saved under
$GENREC_HOME/bench/dense/DATASET/MODEL-N (`inference.dense.load_dense`; `genrec.home`), and each is
shared by fingerprint (`finetune.dense.build.share`): a `genrec train` or `bench/accuracy.py` run
whose dense model has the same settings and training data reuses it instead of training it again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from eval.baselines import ContentNN, ItemKNN, Popularity  # noqa: E402
from eval.evaluate import evaluate, evaluate_validation, print_results  # noqa: E402
from finetune.dense import fit  # noqa: E402
from finetune.dense.build import build, dense_fingerprint, density, share  # noqa: E402
from finetune.loop import Record  # noqa: E402
from genrec.atomic import write_json  # noqa: E402
from genrec.config import DenseConfig, EvalConfig  # noqa: E402
from genrec.home import genrec_home  # noqa: E402
from retrieval.catalog import Catalog, item_caption  # noqa: E402
from retrieval.loaders import load_amazon_seq, load_movielens  # noqa: E402
from retrieval.split import leave_one_out  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout (a git worktree may sit one level deeper)
DATA = next(
    (p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent / "shared" / "data"
)
OUT = ROOT / "bench" / "results" / "baselines.json"
MODELS_DIR = genrec_home() / "bench" / "dense"  # outside the checkout: an interrupted point resumes
KS = [5, 10, 20]

DATASETS = {
    "ml-100k": lambda: load_movielens(DATA / "ml-100k"),
    "beauty": lambda: load_amazon_seq(DATA / "amazon-seq" / "Beauty.txt"),
    "sports": lambda: load_amazon_seq(DATA / "amazon-seq" / "Sports_and_Outdoors.txt"),
    "toys": lambda: load_amazon_seq(DATA / "amazon-seq" / "Toys_and_Games.txt"),
}

# Published figures on the same S3-Rec files, leave-one-out, full ranking, history excluded.
XU = (
    "Xu et al. 2024, arXiv 2402.06216 (CE loss); run log SASRec/benchmarks/beauty-ce-5 in MTandHJ/CE-SCE-LLMRec, "
    "seed 0, best validation NDCG@10 0.0729 at epoch 120 (seeds 0-4: test NDCG@10 0.0591-0.0601)"
)
SHIN = "Shin et al., AAAI 2024, arXiv 2312.10325; log src/output/BSARec_Beauty_best.log in yehjin-shin/BSARec"
PUBLISHED = {
    "beauty": {
        "sasrec": {"recall@5": 0.0702, "ndcg@5": 0.0503, "recall@10": 0.0977, "ndcg@10": 0.0591, "source": XU},
        "bsarec": {
            "recall@5": 0.0736,
            "ndcg@5": 0.0523,
            "recall@10": 0.1008,
            "ndcg@10": 0.0611,
            "recall@20": 0.1373,
            "ndcg@20": 0.0703,
            "source": SHIN,
        },
    },
}

# Sweep points: overrides of the `dense` config; the first point of each list is the preset.
SWEEPS: dict[tuple[str, str], list[dict]] = {
    ("sasrec", "sparse"): [
        {},  # the published CE-SASRec settings: dropout 0.6, lr 5e-4, 1 head, max_len 50, batch 512
        {"lr": 1e-3},
        {"dropout": 0.5},
        {"heads": 2},
        {"max_len": 100},
    ],
    ("sasrec", "dense"): [
        {},  # ML-100K: max_len 200, dropout 0.2, lr 5e-3, batch 128
        {"lr": 1e-3},
        {"dropout": 0.5},
        {"heads": 2},
        {"max_len": 100},
        {"batch_size": 512, "lr": 1e-3},
    ],
    ("bsarec", "sparse"): [
        {},  # the published BSARec settings: dropout 0.5, lr 5e-4, batch 256, alpha 0.7, c 5
    ],
    ("bsarec", "dense"): [
        {},  # ML-100K: max_len 50 as the paper, dropout 0.2, lr 1e-3, batch 256
    ],
}
# Training settings every sweep point shares: the published ones where they are published
# (weight decay 1e-8 as Xu et al.), no clock, all validation users.
BENCH_DENSE = {
    "sasrec": {"max_minutes": None, "val_users": None, "weight_decay": 1e-8, "eval_every": 5, "patience": 5},
    "bsarec": {"max_minutes": None, "val_users": None, "eval_every": 1, "patience": 10},
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


def sweep_key(overrides: dict) -> str:
    """A stable name for one sweep point."""
    return ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "preset"


def run_dense(kind: str, dataset: str, split, ids: list[str], entry: dict, args, save) -> None:
    """Train the sweep points of one dense network not yet in `entry`, saving after each, then
    report the point with the best validation NDCG@10."""
    shape = density(split.train)
    points = SWEEPS[(kind, shape)][: args.max_configs]
    done = {p["key"]: p for p in entry.setdefault("sweeps", {}).setdefault(kind, [])}
    base = getattr(DenseConfig(), kind).model_copy(update=BENCH_DENSE[kind] | {"threads": args.threads})
    for number, overrides in enumerate(points):
        key = sweep_key(overrides)
        if key in done:
            print(f"== {dataset} {kind} [{key}]: done before, valid {done[key]['valid_ndcg@10']:.4f}")
            continue
        print(f"== {dataset} {kind} [{key}] ({shape} data)")
        model, settings, resolved = build(kind, ids, base.model_copy(update=overrides), split.train)
        # saved every epoch: an interrupted point resumes where it stopped
        settings.checkpoint = str(MODELS_DIR / dataset / f"{kind}-{number}.ckpt")  # a folder
        model, stats = fit(model, split.train, split.valid, settings)
        test = evaluate([model], split, ids, ks=KS, progress=False)[kind]
        model.save_pretrained(MODELS_DIR / dataset / f"{kind}-{number}")
        shutil.rmtree(settings.checkpoint, ignore_errors=True)
        # `genrec train` (and bench/accuracy.py) with the same settings and data reuse it by fingerprint
        shared = share(
            model,
            {k: v for k, v in stats.items() if k != "history"}
            | {"kind": kind, "settings": resolved.model_dump(), "minutes": stats["total_seconds"] / 60},
            dense_fingerprint(kind, resolved, ids, split.train),
        )
        point = {
            "key": key,
            "config": resolved.model_dump(),
            "valid_ndcg@10": stats["best_valid_ndcg@10"],
            "best_epoch": stats["best_epoch"],
            "epochs": stats["epochs"],
            "stopped_by": stats["stopped_by"],
            "fit_minutes": stats["total_seconds"] / 60,
            "test": test,
            "training": stats,
            "load_at_end": os.getloadavg(),
            "shared_as": str(shared),
        }
        entry["sweeps"][kind] = [p for p in entry["sweeps"][kind] if p["key"] != key] + [point]
        done[key] = point
        print(
            f"   valid {point['valid_ndcg@10']:.4f} (epoch {point['best_epoch']}/{point['epochs']}), "
            f"test NDCG@10 {test['ndcg@10']:.4f}, {point['fit_minutes']:.1f} min"
        )
        choose(entry, kind)
        save()
    choose(entry, kind)


def report_partial(kind: str, dataset: str, split, ids: list[str], entry: dict, args) -> None:
    """Score the best validated weights of a sweep point still training (or interrupted), from its
    checkpoint, as a row marked partial: a figure for a run that has not stopped on its own, never
    mistaken for one that has. Finishing the point later replaces it."""
    points = SWEEPS[(kind, density(split.train))][: args.max_configs]
    done = {p["key"] for p in entry.get("sweeps", {}).get(kind, [])}
    for number, overrides in enumerate(points):
        checkpoint = MODELS_DIR / dataset / f"{kind}-{number}.ckpt" / "state.pt"  # `finetune.checkpoint`
        if sweep_key(overrides) in done or not checkpoint.exists():
            continue
        base = getattr(DenseConfig(), kind).model_copy(update=BENCH_DENSE[kind])
        model, _, resolved = build(kind, ids, base.model_copy(update=overrides), split.train)
        run = Record(**torch.load(checkpoint, weights_only=False)["progress"])  # `finetune.loop.Record`
        if run.best_weights is None:
            continue
        model.load_state_dict(run.best_weights)
        model.eval()
        test = evaluate([model], split, ids, ks=KS, progress=False)[kind]
        minutes = run.spent()[0] / 60
        entry.setdefault("partial", {})[kind] = {
            "key": sweep_key(overrides),
            "config": resolved.model_dump(),
            "epochs_done": run.epochs,
            "best_epoch": run.best_epoch,
            "valid_ndcg@10": run.best_score,
            "minutes_so_far": minutes,
            "history": run.history,
            "test": test,
        }
        if kind not in entry.get("chosen", {}):
            entry.setdefault("results", {})[kind] = test | {"fit_minutes": minutes, "partial": True}
        print(
            f"== {dataset} {kind} [{sweep_key(overrides)}] partial after {run.epochs} epochs: valid "
            f"{run.best_score:.4f} (epoch {run.best_epoch}), test NDCG@10 {test['ndcg@10']:.4f}"
        )
        return


def choose(entry: dict, kind: str) -> None:
    """Report the sweep point with the best validation NDCG@10 as the model's row."""
    points = entry.get("sweeps", {}).get(kind, [])
    if not points:
        return
    best = max(points, key=lambda p: p["valid_ndcg@10"])
    entry.setdefault("results", {})[kind] = best["test"] | {"fit_minutes": best["fit_minutes"]}
    entry.setdefault("chosen", {})[kind] = best["key"]
    entry.get("partial", {}).pop(kind, None)


def compare_published(name: str, entry: dict) -> None:
    """Put each published figure beside ours with the ratio ours / published, and name the strongest baseline."""
    published = PUBLISHED.get(name, {})
    entry["published"] = published
    entry["vs_published"] = {
        model: {
            metric: {
                "ours": entry["results"][model][metric],
                "published": value,
                "ratio": entry["results"][model][metric] / value,
            }
            for metric, value in figures.items()
            if metric != "source" and metric in entry["results"][model]
        }
        | {"source": figures["source"]}
        for model, figures in published.items()
        if model in entry.get("results", {})
    }
    if entry.get("results"):
        model = max(entry["results"], key=lambda m: entry["results"][m]["ndcg@10"])
        entry["strongest"] = {"model": model, "ndcg@10": entry["results"][model]["ndcg@10"]}


def run_dataset(name: str, report: dict, args, save) -> None:
    """Fit the requested baselines on one dataset's split and score them on its test users."""
    catalog = DATASETS[name]()
    split = leave_one_out(catalog.interactions)
    ids = catalog.items["item_id"].tolist()
    entry = report["datasets"].setdefault(name, {})
    entry["stats"] = {
        "users": len(split.train),
        "items": len(ids),
        "interactions": len(catalog.interactions),
        "test_users": len(split.test),
        "density": density(split.train),
    }
    print(f"== {name}: {entry['stats']}")
    fit_seconds = entry.setdefault("fit_seconds", {})
    quick = []
    if "popularity" in args.models and not args.report_partial:
        t0 = time.perf_counter()
        popularity = Popularity(ids)
        popularity.fit(split.train)
        fit_seconds["popularity"] = time.perf_counter() - t0
        quick.append(popularity)
    if "itemknn" in args.models and not args.report_partial:
        t0 = time.perf_counter()
        itemknn, entry["itemknn_tuning"] = tune_itemknn(split, ids)
        fit_seconds["itemknn (grid of 9)"] = time.perf_counter() - t0
        quick.append(itemknn)
    if "content" in args.models and catalog.has_text and not args.report_partial:
        t0 = time.perf_counter()
        content = ContentNN(ids, content_vectors(catalog), last_n=EvalConfig().content_last_n)
        content.fit(split.train)
        fit_seconds["content (incl. encoding)"] = time.perf_counter() - t0
        quick.append(content)
    if quick:
        entry.setdefault("results", {}).update(evaluate(quick, split, ids, ks=KS, progress=False))
        save()
    for kind in ("sasrec", "bsarec"):
        if kind in args.models and args.report_partial:
            report_partial(kind, name, split, ids, entry, args)
            save()
        elif kind in args.models:
            run_dense(kind, name, split, ids, entry, args, save)
    entry["load_at_end"] = os.getloadavg()
    save()
    print_results(
        entry["results"], title=f"{name}: leave-one-out, full ranking ({entry['stats']['test_users']} test users)"
    )


def markdown_table(report: dict) -> str:
    """The README's table: every baseline's figures, and the published ones with ours / published."""
    rows = [
        "| dataset | model | NDCG@10 | NDCG@5 | HR@10 | fit (min, 2 CPU cores) | published NDCG@10 (ours / published) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["datasets"].items():
        results = entry.get("results", {})
        for model in sorted(results, key=lambda m: -results[m]["ndcg@10"]):
            r = results[model]
            versus = entry.get("vs_published", {}).get(model, {}).get("ndcg@10")
            published = f"{versus['published']:.4f} ({versus['ratio']:.2f})" if versus else ""
            fit_min = f"{r['fit_minutes']:.1f}" if "fit_minutes" in r else ""
            if r.get("partial"):
                fit_min += f" (partial: {entry['partial'][model]['epochs_done']} epochs, not yet stopped)"
            rows.append(
                f"| {name} | {model} | {r['ndcg@10']:.4f} | {r['ndcg@5']:.4f} | {r['recall@10']:.4f} | "
                f"{fit_min} | {published} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty"], choices=list(DATASETS))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["popularity", "itemknn", "content", "sasrec", "bsarec"],
        choices=["popularity", "itemknn", "content", "sasrec", "bsarec"],
    )
    parser.add_argument("--max-configs", type=int, default=None, help="train only the first N sweep points")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    parser.add_argument(
        "--report-partial",
        action="store_true",
        help="score the best weights so far of dense sweep points still training, from their checkpoints",
    )
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return

    report: dict = {
        "protocol": "leave-one-out (last item test, second-to-last validation), full ranking over the whole "
        "catalog, history items excluded; metrics from genrec.metrics",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "datasets": {},
    }
    if args.out.exists():  # resume: keep every dataset, result and sweep point measured before
        report["datasets"] = json.loads(args.out.read_text()).get("datasets", {})

    def save() -> None:
        for name, entry in report["datasets"].items():
            compare_published(name, entry)
        report["strongest"] = {n: e["strongest"] for n, e in report["datasets"].items() if "strongest" in e}
        write_json(args.out, report)

    for name in args.datasets:
        run_dataset(name, report, args, save)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from genrec.memory import keep_freed_memory, limit_onednn_cache

    keep_freed_memory()  # see genrec/memory.py: training otherwise page-faults its tensors anew
    limit_onednn_cache()
    main()
