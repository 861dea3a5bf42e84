"""Accuracy benchmark: the served genrec ranking against the strongest baselines, over seeds.

For each dataset the run is indexed once (items, interactions, semantic IDs); then, for each seed,
`genrec train` trains the generative model (pre-training and LoRA stop on validation), the dense
SASRec and their fusion (chosen on validation), exactly as a user's `genrec train` does, and
`eval.run_eval.evaluate_run` scores on the same test users:

- `genrec`      the served ranking (beams fused with the dense model), what every command serves;
- `genrec-gen`  pure generation (the beams alone), so the fusion's gain is visible;
- `sasrec`      the cross-entropy SASRec (the run's own dense model, trained with the validation-
                chosen settings), `itemknn`, `popularity`.

Per dataset: mean and spread over seeds, a paired bootstrap + t-test of genrec against SASRec on
per-user NDCG@10 for every seed and pooled over seeds, the ratio of genrec to the strongest
baseline, training minutes and tokens/s, and published figures where they exist.

    .venv/bin/python bench/accuracy.py --datasets ml-100k --seeds 0,1,2
    .venv/bin/python bench/accuracy.py --datasets beauty --seeds 0
    .venv/bin/python bench/accuracy.py --datasets ml-100k --trained runs/ml1   # score a run `genrec train` made
    .venv/bin/python bench/accuracy.py --merge other.json   # add seeds run elsewhere (with their own --out)
    .venv/bin/python bench/accuracy.py --datasets ml-100k --trained runs/ml1 --cold-items 0.05   # cold/warm slices

`--trained RUN` scores a run already trained by `genrec train` (its own config and seed, its
`train_report.json` for the training figures) as one seed of its dataset, without retraining.

Results are written to bench/results/accuracy.json after every (dataset, seed), and a finished
(dataset, seed) is not recomputed on the next call (`--force` recomputes); an unfinished one goes
on from its training checkpoints, so an interrupted benchmark resumes. Run folders and their
checkpoints live under `$GENREC_HOME/bench/accuracy/DATASET/seedN` (default `~/.cache/genrec`;
`genrec.home`), outside the checkout: the same command on the same machine, from any checkout,
lists what it resumes and goes on. Each seed's `train.stages` gives minutes and tokens/s per stage.

    .venv/bin/python bench/accuracy.py --datasets beauty --seeds 0 --budget-minutes 120
    .venv/bin/python bench/accuracy.py --datasets beauty --seeds 0 --set train.hidden_size=128 --set train.num_heads=2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
# ../shared/data beside the checkout (a git worktree may sit one level deeper)
DATA = (
    next(
        (p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
        ROOT.parent / "shared" / "data",
    )
    / "amazon-seq"
)
OUT = ROOT / "bench" / "results" / "accuracy.json"
AMAZON = {"beauty": "Beauty.txt", "sports": "Sports_and_Outdoors.txt", "toys": "Toys_and_Games.txt"}
MODELS = ["genrec", "genrec-gen", "sasrec", "itemknn", "popularity"]
# a fixed seeded sample of validation users for early stopping on Amazon data (all of them only for the
# fusion): a pass over all 22,363 Beauty users took 6.5 min (docs/experiments.md)
AMAZON_VAL_USERS = 2000
# shares of --budget-minutes per training stage; the rest is for the index, the fusion and test scoring
BUDGET_SHARES = {"pretrain": 0.55, "lora": 0.15, "dense": 0.15}
INDEX_STATS = "index_stats.json"  # what building the dataset's index took (seconds), beside it
HEADLINE = ("ndcg@5", "ndcg@10", "recall@5", "recall@10", "recall@20", "mrr", "valid_rate", "coverage")

# Published generative recommenders on the same S3-Rec Amazon files (leave-one-out, full ranking)
PUBLISHED_GENERATIVE = {
    "beauty": {
        "TIGER (Rajput et al., NeurIPS 2023)": {"recall@10": 0.0648, "ndcg@10": 0.0384},
        "GRAM (ACL 2025)": {"recall@5": 0.0641, "ndcg@5": 0.0451},
        "RPG (KDD 2025)": {"ndcg@10": 0.0464},
        "COBRA (2025)": {"ndcg@10": 0.0456},
    },
}


def dataset_config(name: str, args: argparse.Namespace):
    """The run config of a dataset: defaults, plus the schedule bounds of sparse Amazon data."""
    from genrec.config import RunConfig

    config = RunConfig(name=f"bench-{name}")
    config.eval.baselines = ["popularity", "itemknn", "sasrec"]
    config.train.val_users = args.val_users
    config.dense.sasrec.max_minutes = None  # to convergence on validation; the cap is for the demo
    if name in AMAZON:
        # no item text: collaborative residual-k-means codes; histories are short; pre-training is
        # bounded higher and stopped by validation (its curve was still rising at epoch 8)
        config.semantic_ids.source, config.semantic_ids.method = "collaborative", "rkmeans"
        config.train.max_history = 50
        # a checkpoint every 25 steps (~200k tokens), not only at an epoch's end: on a machine shared
        # five ways one Beauty epoch took hours, and a session ending mid-epoch lost all of it
        config.train.checkpoint_steps = 25
        config.train.pretrain_epochs, config.train.pretrain_val_start = args.amazon_pretrain_epochs, 4
        if args.val_users is None:  # early stopping on a fixed seeded sample; the fusion sees every user
            # a pass over the sample takes seconds, not minutes: every pre-training epoch is scored, so
            # the curve shows what stopping sooner (a budget) would give up
            config.train.val_users, config.train.pretrain_val_start = AMAZON_VAL_USERS, 1
        # the published CE-SASRec weight decay, as bench/baselines.py trains it: the same settings and
        # data give the same fingerprint, so a dense model either one trained is reused by the other
        config.dense.sasrec.weight_decay = 1e-8
    config = apply_settings(config, args.set or [])
    if args.budget_minutes is not None:  # every training stage gets its share of the seed's budget
        minutes = {stage: share * args.budget_minutes for stage, share in BUDGET_SHARES.items()}
        if config.train.epochs == 0:  # no LoRA stage (train.epochs=0): its share goes to pre-training
            minutes["pretrain"], minutes["lora"] = minutes["pretrain"] + minutes["lora"], None
        config.train.pretrain_max_minutes, config.train.max_minutes = minutes["pretrain"], minutes["lora"]
        config.dense.sasrec.max_minutes = config.dense.bsarec.max_minutes = minutes["dense"]
    return config


def apply_settings(config, settings: list[str]):
    """`--set section.key=value` (value read as YAML) over the dataset's config, validated; e.g.
    `--set train.hidden_size=128 --set train.num_heads=2` for a smaller generator."""
    import yaml

    from genrec.config import RunConfig

    raw = config.model_dump(mode="json")
    for setting in settings:
        key, sep, value = setting.partition("=")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not sep or not isinstance(node, dict) or leaf not in node:
            raise SystemExit(f"--set {setting}: expected SECTION.KEY=VALUE naming a setting of the run config")
        node[leaf] = yaml.safe_load(value)
    from pydantic import ValidationError

    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SystemExit(f"--set: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def index_once(name: str, work: Path, args: argparse.Namespace) -> Path:
    """The dataset's indexed run (items, interactions, semantic IDs), built once and reused by every seed."""
    from genrec.atomic import write_json
    from genrec.run import init_run

    base = work / name / "index"
    if (base / "semantic_ids.json").exists():
        return base
    started = time.perf_counter()
    config = dataset_config(name, args)
    if name == "ml-100k":
        if args.ml_run is not None:
            base.mkdir(parents=True, exist_ok=True)
            for f in ("items.parquet", "interactions.parquet", "semantic_ids.json", "semantic_ids.stats.json"):
                shutil.copy(args.ml_run / f, base / f)
            init_run(base, config)
        else:
            from retrieval.index import build_index

            build_index(base, config)
        write_json(base / INDEX_STATS, {"seconds": time.perf_counter() - started})
        return base
    from retrieval.catalog import save_catalog
    from retrieval.loaders import load_amazon_seq
    from retrieval.semantic_ids import build_semantic_ids, save_semantic_ids

    paths = init_run(base, config)
    catalog = load_amazon_seq((args.amazon_dir or DATA) / AMAZON[name])
    save_catalog(catalog, paths)
    save_semantic_ids(build_semantic_ids(catalog, config.semantic_ids, None), paths)
    write_json(base / INDEX_STATS, {"seconds": time.perf_counter() - started})
    return base


def seed_run(name: str, base: Path, seed: int, args: argparse.Namespace) -> Path:
    """A copy of the indexed run whose training (generative, dense, fusion) uses `seed`: fresh, or the
    one an interrupted call left (its training then resumes; see `resumed_here`)."""
    from genrec.atomic import write_json
    from genrec.config import load_config
    from genrec.run import init_run

    run = base.parent / f"seed{seed}"
    config = dataset_config(name, args)
    config.train.seed = seed
    config.dense.sasrec.seed = seed
    saved = run / "config.yaml"
    if saved.exists() and not args.force:
        before, now = budgetless(load_config(saved).model_dump()), budgetless(config.model_dump())
        if before != now:  # hours of training are not thrown away because a default moved: say so instead
            changed = ", ".join(differences(before, now)[:6])
            raise SystemExit(
                f"{run}: an unfinished seed trained with other settings ({changed}); "
                "--force starts it over, or pass the options it was started with"
            )
        # a run this benchmark started and did not finish: `genrec train` resumes it from its checkpoints
        # (pre-training and LoRA epochs, the dense model's epochs), so hours of Amazon training survive a stop
        found = what_resumes(run)
        print(f"{run}: continuing its training from its checkpoints (--force starts over):")
        for line in found:
            print(f"  - {line}")
        marker = run / "resumed_here"  # its training minutes then count this call's part only
        earlier = json.loads(marker.read_text()) if marker.exists() and marker.read_text().strip() else []
        write_json(marker, [*earlier, {"at": time.time(), "found": found}])
        return run
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(
        base, run, ignore=shutil.ignore_patterns("chroma", "model", "dense", "pretrain", "eval", "ranking.json")
    )
    init_run(run, config)
    return run


def budgetless(config: dict) -> dict:
    """A run config without its stages' budgets: a stopped seed resumes under another --budget-minutes
    (its checkpoints' fingerprints leave budgets out too), any other change of settings does not."""
    from finetune.train import RESUME_IGNORES

    train = {k: v for k, v in config["train"].items() if k not in RESUME_IGNORES}
    dense = {  # (nor where it computes: a seed started on a CPU goes on on a GPU)
        kind: {k: v for k, v in d.items() if k not in ("max_minutes", "device")} if isinstance(d, dict) else d
        for kind, d in config["dense"].items()
    }
    return {**config, "train": train, "dense": dense}


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested config dicts, as `key: old -> new`."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x} -> {y}")
    return out


def what_resumes(run: Path) -> list[str]:
    """What an unfinished seed's folder holds that its training goes on from, one line per stage."""

    from finetune.checkpoint import describe_checkpoint

    found = []
    if (run / "pretrain" / "genrec_pretrain.json").exists():
        found.append(f"pre-training finished ({run / 'pretrain'}): kept")
    for stage in ("pretrain", "lora"):
        where = describe_checkpoint(run / "checkpoints" / stage)
        if where:
            found.append(f"{stage}: resumes from {where}")
    if (run / "model" / "train_report.json").exists():
        found.append(f"LoRA finished ({run / 'model'}): kept")
    where = describe_checkpoint(run / "checkpoints" / "dense")
    if where:
        found.append(f"dense model: resumes from {where}")
    if (run / "dense" / "train_stats.json").exists():
        found.append(f"dense model ({run / 'dense'}): kept if its settings and data are unchanged")
    return found or ["no stage had saved anything yet: training starts from the beginning"]


def train_and_score(name: str, run: Path, users: int | None, trained: bool = False) -> dict:
    """`genrec train` on the run (unless `trained`: it was, and its report says how), then every model
    on the same test users; the per-user ranks are kept."""
    from dataclasses import asdict

    from eval.compare import paired_models
    from eval.evaluate import print_results
    from eval.run_eval import evaluate_run, save_ranks
    from finetune.stages import stage_rows
    from finetune.train import train

    if trained:
        report = json.loads((run / "model" / "train_report.json").read_text())
        minutes = (report["pretrain_seconds"] + report["train_seconds"]) / 60 + (report["dense"].get("minutes") or 0)
    else:
        started = time.perf_counter()
        report = asdict(train(run))
        minutes = (time.perf_counter() - started) / 60
    scoring = time.perf_counter()
    evaluation = evaluate_run(run, models=MODELS, max_users=users)
    scoring = time.perf_counter() - scoring
    save_ranks(evaluation)
    results = evaluation.summaries()
    print_results(results, title=f"{name} ({run.name}): leave-one-out, full ranking")
    pre = report["pretrain_epochs"]
    index = run.parent / "index" / INDEX_STATS
    tested = max((r.get("users") or 0) for r in results.values())
    stages = [
        *([{"stage": "index", "minutes": json.loads(index.read_text())["seconds"] / 60}] if index.exists() else []),
        *stage_rows(report),
        {"stage": f"test scoring ({', '.join(MODELS)})", "minutes": scoring / 60, "users": tested},
    ]
    print_stages(stages)
    marker = run / "resumed_here"
    resumed = json.loads(marker.read_text()) if marker.exists() and marker.read_text().strip() else []
    return {
        "models": {m: {k: r.get(k) for k in (*HEADLINE, "users", "users_per_s")} for m, r in results.items()},
        "genrec_vs_sasrec": paired_models(evaluation.results["genrec"], evaluation.results["sasrec"]),
        "genrec_vs_genrec_gen": paired_models(evaluation.results["genrec"], evaluation.results["genrec-gen"]),
        "train": {
            "run": str(run),
            "trained_here": not trained,
            "resumed": marker.exists(),
            "resumed_from": resumed,
            "total_minutes": minutes,
            "stages": stages,
            "budgets": report.get("budgets"),
            # the next-item prompt trained and served ("short": the history alone; None: the worded ones)
            "template": served_template(run),
            "val_users": report["epochs"][-1].get("valid_users") if report["epochs"] else None,
            "pretrain_minutes": report["pretrain_seconds"] / 60,
            "lora_minutes": report["train_seconds"] / 60,
            "dense_minutes": 0.0 if report["dense"].get("reused_from") else report["dense"].get("minutes"),
            "dense_reused_from": report["dense"].get("reused_from"),
            "pretrain_epochs_run": len(pre),
            "pretrain_tokens_per_s": sum(e.get("tokens_per_s", 0) for e in pre) / len(pre) if pre else None,
            "pretrain_curve": [(e["epoch"], e.get("valid_ndcg@10")) for e in pre],
            "lora_curve": [(e["epoch"], e["valid_ndcg@10"]) for e in report["epochs"]],
            "dense_best_valid_ndcg@10": report["dense"].get("best_valid_ndcg@10"),
            "fusion": fusion_of(run),
        },
    }


def print_stages(stages: list[dict]) -> None:
    """Where the seed's time went, one line per stage."""
    for row in stages:
        rate = next((f", {v:,.0f} {k[:-6]}/s" for k, v in row.items() if k.endswith("_per_s") and v), "")
        print(f"  {row['stage']:<40} {row['minutes']:7.1f} min{rate}")


def served_template(run: Path) -> str | None:
    """The next-item template the run's model was trained with and is served with (RUN/model/genrec.json)."""
    meta = run / "model" / "genrec.json"
    return json.loads(meta.read_text()).get("template") if meta.exists() else None


def fusion_of(run: Path) -> dict:
    """The fusion the run serves (RUN/ranking.json), as chosen on validation."""
    path = run / "ranking.json"
    if not path.exists():
        return {}
    fusion = json.loads(path.read_text())
    keys = ("dense_weight", "miss_penalty", "scored_misses", "dense_candidates", "valid_ndcg10", "seconds", "users")
    return {k: fusion.get(k) for k in keys}


def per_user_ndcg_difference(run: Path, a: str = "genrec", b: str = "sasrec"):
    """Per-user NDCG@10 of model `a` minus model `b`, from the run's saved ranks (same users, same targets)."""
    import pandas as pd

    from genrec.metrics import ndcg_at

    ranks = pd.read_parquet(run / "eval" / "ranks.parquet")
    wide = ranks.pivot_table(index=["user_id", "target"], columns="model", values="rank")
    return ndcg_at(wide[a].to_numpy().astype(int), 10) - ndcg_at(wide[b].to_numpy().astype(int), 10)


def pooled(per_seed: dict[str, dict], runs: dict[str, Path]) -> dict:
    """Mean and spread of each model's metrics over seeds, and the paired test of genrec vs SASRec
    pooled over every (seed, user) pair."""
    import numpy as np

    from eval.compare import paired_bootstrap, paired_t

    out: dict = {"seeds": sorted(per_seed), "models": {}}
    for model in MODELS:
        rows = [s["models"][model] for s in per_seed.values() if model in s["models"]]
        out["models"][model] = {
            metric: {
                "mean": float(np.mean([r[metric] for r in rows])),
                "std": float(np.std([r[metric] for r in rows])),
                "values": [r[metric] for r in rows],
            }
            for metric in HEADLINE
            if rows and rows[0].get(metric) is not None
        }
    out["genrec_minus_sasrec_ndcg@10_per_seed"] = [s["genrec_vs_sasrec"]["diff"] for s in per_seed.values()]
    present = [runs[seed] for seed in per_seed if (runs[seed] / "eval" / "ranks.parquet").exists()]
    if present:
        diff = np.concatenate([per_user_ndcg_difference(run) for run in present])
        test = paired_bootstrap(diff)
        out["genrec_minus_sasrec_pooled"] = {
            "pairs": len(diff),
            "diff": float(diff.mean()),
            "ci95": [test["ci_low"], test["ci_high"]],
            "bootstrap_p": test["p"],
            "t_test_p": paired_t(diff),
        }
    baselines = {m: v["ndcg@10"]["mean"] for m, v in out["models"].items() if not m.startswith("genrec")}
    strongest = max(baselines, key=baselines.get)
    out["strongest_baseline"] = strongest
    out["genrec_over_strongest_baseline"] = out["models"]["genrec"]["ndcg@10"]["mean"] / baselines[strongest]
    out["genrec_over_sasrec"] = out["models"]["genrec"]["ndcg@10"]["mean"] / baselines["sasrec"]
    if present and strongest != "sasrec":  # the paired test against the strongest baseline of the same runs too
        diff = np.concatenate([per_user_ndcg_difference(run, "genrec", strongest) for run in present])
        test = paired_bootstrap(diff)
        out[f"genrec_minus_{strongest}_pooled"] = {
            "pairs": len(diff),
            "diff": float(diff.mean()),
            "ci95": [test["ci_low"], test["ci_high"]],
            "bootstrap_p": test["p"],
            "t_test_p": paired_t(diff),
        }
    return out


def merge(source: Path, out: Path, force: bool = False) -> None:
    """Add the per-seed results of `source` (written by this benchmark elsewhere: another machine, or a
    concurrent run with its own --out) to `out`, and pool each dataset's seeds again. A seed `out`
    already has is kept unless `force`."""
    from genrec.atomic import write_json

    theirs = json.loads(source.read_text())
    ours = json.loads(out.read_text()) if out.exists() else {k: v for k, v in theirs.items() if k != "datasets"}
    for name, entry in theirs.get("datasets", {}).items():
        if "per_seed" not in entry:
            continue
        mine = ours.setdefault("datasets", {}).setdefault(name, {"per_seed": {}, "runs": {}})
        for seed, result in entry["per_seed"].items():
            if seed in mine["per_seed"] and not force:
                print(f"{out}: {name} seed {seed} already there; kept (--force replaces it)")
                continue
            mine["per_seed"][seed], mine.setdefault("runs", {})[seed] = result, entry["runs"][seed]
            print(f"{out}: added {name} seed {seed} from {source}")
        mine["summary"] = pooled(mine["per_seed"], {s: Path(mine["runs"][s]) for s in mine["per_seed"]})
    write_json(out, ours)


def cold_rows(args: argparse.Namespace) -> None:
    """The cold section of accuracy.json: cold and warm slices of every model on one trained run
    (`eval.cold.evaluate_cold`: the copy trained without the cold items, the items added back, the run
    itself trained with every item as the warm slice's reference), same users, same metric code."""
    from eval.cold import evaluate_cold, print_cold
    from genrec.atomic import write_json

    if args.trained is None:
        raise SystemExit("--cold-items needs --trained RUN: an indexed and trained run")
    load = os.getloadavg()
    started = time.perf_counter()
    report = evaluate_cold(args.trained, args.cold_items, args.cold_seed, max_users=args.users)
    report["minutes"] = (time.perf_counter() - started) / 60
    report["load_average"] = {"start": load, "end": os.getloadavg()}
    print_cold(report)
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    name = args.datasets.split(",")[0]
    out.setdefault("cold", {}).setdefault(name, {})[f"F={args.cold_items:g},seed={args.cold_seed}"] = report
    write_json(args.out, out)
    print(f"wrote {args.out} (cold, {name})")


def machine() -> dict:
    """What a result was measured on: the CPUs, the platform and, where one is visible, the CUDA GPU
    (`auto` device settings train and score there: `bench/gpu_seed.sh`)."""
    import torch

    info = {"cpus": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info |= {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    return info


def main() -> None:
    """Run the chosen datasets and seeds; write bench/results/accuracy.json after each one."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k", help="comma-separated: ml-100k, beauty, sports, toys")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (semantic IDs stay those of the index)")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where run folders and their checkpoints live (default: $GENREC_HOME/bench/accuracy, outside the checkout)",
    )
    parser.add_argument(
        "--ml-run", type=Path, default=None, help="reuse an indexed ML-100K run (items, interactions, semantic IDs)"
    )
    parser.add_argument("--users", type=int, default=None, help="test users evaluated (default: all)")
    parser.add_argument(
        "--val-users",
        type=int,
        default=None,
        help=f"validation users for early stopping (default: all; {AMAZON_VAL_USERS} on Amazon data)",
    )
    parser.add_argument(
        "--amazon-pretrain-epochs", type=int, default=20, help="upper bound of pre-training on Amazon data"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="wall minutes for a seed: each training stage stops at its share (BUDGET_SHARES) and says so",
    )
    parser.add_argument("--amazon-dir", type=Path, default=None, help="folder of the Amazon sequence files")
    parser.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a setting of the dataset's run config (repeatable), e.g. train.hidden_size=128",
    )
    parser.add_argument("--force", action="store_true", help="recompute finished (dataset, seed) results")
    parser.add_argument(
        "--trained", type=Path, default=None, help="score this run, already trained by genrec train, as its seed"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="add the (dataset, seed) results of another run of this benchmark (its --out file) and re-pool",
    )
    parser.add_argument(
        "--cold-items",
        type=float,
        default=None,
        help="with --trained RUN (indexed with Chroma and embeddings): the cold-item rows, LIGER's slice "
        "(eval.cold): this seeded fraction held out of training, added back with `genrec items add`",
    )
    parser.add_argument("--cold-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.work is None:
        from genrec.home import genrec_home

        args.work = genrec_home() / "bench" / "accuracy"
    if args.merge is not None:
        merge(args.merge, args.out, args.force)
        return
    if args.cold_items is not None:
        cold_rows(args)
        return

    from genrec.atomic import write_json

    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.update(
        {
            "protocol": "leave-one-out (last item test, second-to-last validation), full ranking over the catalog, "
            "history items excluded; every model scored by eval.evaluate on the same users",
            "machine": machine(),
            "published_generative": PUBLISHED_GENERATIVE,
        }
    )
    out.setdefault("datasets", {})
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name != "ml-100k" and name not in AMAZON:
            raise SystemExit(f"unknown dataset {name!r}: use ml-100k, {', '.join(AMAZON)}")
        entry = out["datasets"].setdefault(name, {})
        if "per_seed" not in entry:  # figures of the code before the served ranking: kept apart, not pooled
            if entry:
                out.setdefault("before_served_ranking", {})[name] = dict(entry)
                entry.clear()
            entry["per_seed"] = {}
        runs = entry.setdefault("runs", {})
        if args.trained is not None:
            from genrec.run import open_run

            seeds, base = [open_run(args.trained)[1].train.seed], None
        else:
            seeds, base = [int(s) for s in args.seeds.split(",")], index_once(name, args.work, args)
        for seed in seeds:
            if str(seed) in entry["per_seed"] and not args.force:
                continue
            load = os.getloadavg()
            run = args.trained if base is None else seed_run(name, base, seed, args)
            result = train_and_score(name, run, args.users, trained=base is None)
            result["load_average"] = {"start": load, "end": os.getloadavg()}
            result["machine"] = machine()  # (kept with the seed when --merge brings it into another file)
            entry["per_seed"][str(seed)], runs[str(seed)] = result, str(run)
            entry["summary"] = pooled(entry["per_seed"], {s: Path(runs[s]) for s in entry["per_seed"]})
            write_json(args.out, out)
            print(f"wrote {args.out} ({name}, seed {seed})")


if __name__ == "__main__":
    from genrec.memory import keep_freed_memory, limit_onednn_cache

    keep_freed_memory()
    limit_onednn_cache()
    main()
