"""Accuracy benchmark: genrec against SASRec and popularity on MovieLens-100K and Amazon Beauty.

The issue's protocol: leave-one-out, full ranking over the whole catalog, history excluded, every
model scored by `eval.evaluate` on the same test users. genrec is trained with `finetune.train`
(scratch model pre-trained on the run's corpus, then LoRA) and ranks by beam search constrained
to the trie of valid semantic IDs.

    .venv/bin/python bench/accuracy.py                                   # both datasets, defaults
    .venv/bin/python bench/accuracy.py --datasets ml-100k --ml-run runs/ml100k
    .venv/bin/python bench/accuracy.py --datasets beauty --users 2000 --epochs 2 --pretrain-epochs 4

MovieLens uses content semantic IDs (MiniLM over titles/genres/years, RQ-VAE: `genrec index`);
Beauty has no item text, so its semantic IDs are collaborative (PPMI + SVD of co-occurrence in
the training histories). Beauty is big for 2 CPU cores: epochs, the user sample and SASRec's
time budget are flags, and the JSON records what was actually run.
Writes bench/results/accuracy.json (after each dataset, atomically).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

# before torch loads: passive OpenMP waiting (3x faster on a shared CPU), no hub
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genrec.atomic import write_json  # noqa: E402
from genrec.config import RunConfig  # noqa: E402
from genrec.run import init_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "accuracy.json"

PUBLISHED_BEAUTY = {
    "source": "Amazon Beauty, leave-one-out, full ranking",
    "TIGER (Rajput et al., NeurIPS 2023)": {"recall@10": 0.0648, "ndcg@10": 0.0384},
    "SASRec (as reported in the TIGER paper)": {"recall@10": 0.0605, "ndcg@10": 0.0318},
    "GRAM (ACL 2025)": {"recall@5": 0.0641, "ndcg@5": 0.0451},
}


def dataset_config(name: str, args: argparse.Namespace) -> RunConfig:
    """The run config of one dataset: genrec training settings and the baselines' settings."""
    config = RunConfig(name=f"bench-{name}")
    t = config.train
    if args.epochs is not None:
        t.epochs = args.epochs
    if args.pretrain_epochs is not None:
        t.pretrain_epochs = args.pretrain_epochs
    t.val_users = args.val_users
    e = config.eval
    e.baselines = ["popularity", "sasrec"]
    # SASRec with the settings chosen on validation for the data's density (finetune.dense.build)
    if name == "ml-100k":
        config.dense.sasrec.max_minutes = None
    else:
        config.dense.sasrec.max_minutes = args.sasrec_minutes
        config.semantic_ids.source = "collaborative"
        config.semantic_ids.method = args.beauty_sid_method
        t.max_history = 50
    return config


def prepare_ml100k(work: Path, config: RunConfig, existing: Path | None) -> Path:
    """A MovieLens-100K run: copied from an indexed run (`--ml-run`) or indexed here with `genrec index`."""
    run = work / "ml-100k"
    if existing is not None:
        run.mkdir(parents=True, exist_ok=True)
        for name in ("items.parquet", "interactions.parquet", "semantic_ids.json", "semantic_ids.stats.json"):
            shutil.copy(existing / name, run / name)
        init_run(run, config)
        return run
    from retrieval.index import build_index

    build_index(run, config)
    return run


def prepare_beauty(work: Path, config: RunConfig) -> Path:
    """A Beauty run: the amazon-seq file normalised, collaborative semantic IDs (no Chroma index needed)."""
    from retrieval.catalog import save_catalog
    from retrieval.loaders import load_amazon_seq
    from retrieval.semantic_ids import build_semantic_ids, save_semantic_ids

    run = work / "beauty"
    paths = init_run(run, config)
    catalog = load_amazon_seq(DATA / "amazon-seq" / "Beauty.txt")
    save_catalog(catalog, paths)
    save_semantic_ids(build_semantic_ids(catalog, config.semantic_ids, None), paths)
    return run


def run_dataset(name: str, run: Path, config: RunConfig, users: int | None) -> dict:
    """Train genrec on the run, then score genrec, SASRec and popularity on the same test users."""
    import json

    from eval.compare import paired_models
    from eval.evaluate import print_results
    from eval.run_eval import evaluate_run
    from finetune.train import train

    init_run(run, config)
    started = time.perf_counter()
    report = train(run)
    train_minutes = (time.perf_counter() - started) / 60
    evaluation = evaluate_run(run, models=["genrec", "sasrec", "popularity"], max_users=users)
    results = evaluation.summaries()
    print_results(results, title=f"{name}: leave-one-out, full ranking")
    sids = json.loads((run / "semantic_ids.stats.json").read_text()) if (run / "semantic_ids.stats.json").exists() else {}
    return {
        "models": results,
        "genrec_train": {
            "base": report.base,
            "parameters": report.parameters,
            "trainable_parameters_lora": report.trainable_parameters,
            "pretrain_minutes": report.pretrain_seconds / 60,
            "lora_minutes": report.train_seconds / 60,
            "total_minutes": train_minutes,
            "train_examples_per_s": report.examples_per_s,
            "train_tokens_per_s": report.tokens_per_s,
            "best_epoch": report.best_epoch,
            "best_valid_ndcg@10": report.best_valid_ndcg10,
            "epochs": report.epochs,
            "pretrain_epochs": report.pretrain_epochs,
        },
        "genrec_vs_sasrec": paired_models(evaluation.results["genrec"], evaluation.results["sasrec"]),
        "genrec_eval_users_per_s": results["genrec"].get("users_per_s"),
        "semantic_ids": {k: sids.get(k) for k in ("method", "source", "levels", "codebook_size", "final_level_size")},
        "settings": {"train": config.train.model_dump(), "generate": config.generate.model_dump(),
                     "eval": config.eval.model_dump(), "users_evaluated": results["genrec"].get("users")},
    }


def main() -> None:
    """Parse flags, run the chosen datasets, write bench/results/accuracy.json after each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k,beauty", help="comma-separated: ml-100k, beauty")
    parser.add_argument("--work", type=Path, default=Path("/tmp/genrec-bench"), help="where run folders are built")
    parser.add_argument("--ml-run", type=Path, default=None, help="reuse an indexed ML-100K run (items, interactions, semantic IDs)")
    parser.add_argument("--epochs", type=int, default=None, help="LoRA epochs (default: the run config's)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="scratch pre-training epochs")
    parser.add_argument("--users", type=int, default=None, help="test users evaluated (default: all)")
    parser.add_argument("--val-users", type=int, default=1000, help="validation users scored per epoch")
    parser.add_argument("--sasrec-minutes", type=float, default=15.0, help="SASRec training budget on Beauty")
    parser.add_argument("--beauty-sid-method", default="rkmeans", choices=["rkmeans", "rqvae"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import torch

    out: dict = {
        "protocol": "leave-one-out (last item test, second-to-last validation), full ranking over the catalog, "
        "history items excluded; all models scored by eval.evaluate on the same users",
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "load_average_at_start": os.getloadavg()},
        "published_beauty": PUBLISHED_BEAUTY,
        "datasets": {},
    }
    if args.out.exists():  # keep the other dataset's figures when only one is re-run
        import json

        out["datasets"] = json.loads(args.out.read_text()).get("datasets", {})
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        config = dataset_config(name, args)
        if name == "ml-100k":
            run = prepare_ml100k(args.work, config, args.ml_run)
            users = args.users
        elif name == "beauty":
            run = prepare_beauty(args.work, config)
            users = args.users
        else:
            raise SystemExit(f"unknown dataset {name!r}: use ml-100k or beauty")
        out["datasets"][name] = run_dataset(name, run, config, users)
        write_json(args.out, out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    from genrec.memory import keep_freed_memory, limit_onednn_cache

    keep_freed_memory()  # see genrec/memory.py: training otherwise page-faults its tensors anew
    limit_onednn_cache()
    main()
