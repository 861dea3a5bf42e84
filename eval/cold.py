"""The cold-item slice, LIGER's way (arXiv 2411.18814): items no training input has ever seen.

    genrec eval offline --run runs/ml100k --cold-items 0.05

1. A seeded fraction F of the run's items is held out: a copy of the run (`RUN-coldF-sS/`) is
   indexed and trained without them, so they are in no training input: not in the semantic-ID
   quantiser, the corpus, the SFT tasks, the dense model or the fusion's validation. Every user's
   history simply skips them there.
2. The held-out items are added to the trained copy with `genrec items add` (`retrieval.live`):
   codes from the trained quantiser, Chroma, the trie. The offset of the served ranking's cold term
   is chosen on the original validation cases, whose held-out items include cold ones.
3. Every model is scored on the original run's test cases (history = all but the last item, cold
   items included; target = the last item), same users, same metric code, and the ranks are split
   into the cold slice (target held out) and the warm slice. The baselines are fitted on the same
   training inputs (original training histories without the cold items). When the run itself is
   trained, its served ranking (`genrec-all-items`, trained with every item) is the reference the
   warm slice is compared with.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from eval.evaluate import evaluate_detailed
from genrec.atomic import write_json
from genrec.config import RunConfig
from genrec.errors import GenrecError
from genrec.metrics import ndcg_at, recall_at, sample_users
from genrec.run import RunPaths, init_run, open_run
from retrieval.split import Split, leave_one_out


def sample_cold(item_ids: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded `fraction` of the items (at least one), in catalog order."""
    if not 0 < fraction < 1:
        raise GenrecError(f"--cold-items: expected a fraction between 0 and 1, got {fraction}")
    n = max(1, int(round(fraction * len(item_ids))))
    chosen = set(np.random.default_rng(seed).choice(len(item_ids), size=n, replace=False).tolist())
    return [item for j, item in enumerate(item_ids) if j in chosen]


def cold_run_path(run: Path, fraction: float, seed: int) -> Path:
    """Where the copy trained without the cold items lives: beside the run."""
    return run.parent / f"{run.name}-cold{fraction:g}-s{seed}"


def build_cold_run(
    run: str | Path, fraction: float, seed: int = 0, console: Console | None = None
) -> tuple[Path, list[str]]:
    """Index and train a copy of `run` without a seeded `fraction` of its items, with the run's own
    config (its training schedule included), then add those items back as new ones; returns the
    copy's path and the cold item ids. Reuses a finished copy."""
    from finetune.train import train
    from retrieval.catalog import Catalog, save_catalog
    from retrieval.index import content_vectors, index_catalog
    from retrieval.semantic_ids import build_semantic_ids, save_semantic_ids

    console = console or Console(stderr=True)
    paths, config = open_run(run)
    items = pd.read_parquet(paths.items)
    inter = pd.read_parquet(paths.interactions)
    cold = sample_cold(items["item_id"].astype(str).tolist(), fraction, seed)
    dest = cold_run_path(paths.root, fraction, seed)
    done, plan = dest / "cold.json", dest / "cold.plan.json"
    if done.exists() and json.loads(done.read_text())["cold"] == cold:
        return dest, cold
    if plan.exists() and json.loads(plan.read_text())["cold"] == cold:  # interrupted while training: resume
        console.print(f"cold items: resuming the training of {dest}")
        train(dest)
        return _add_back(dest, items, cold, done, paths.root, fraction, seed)
    if dest.exists():
        shutil.rmtree(dest)
    config = config.model_copy(deep=True)
    config.name = dest.name
    match_dense_epochs(paths, config)
    config.chroma.collection = f"{config.chroma.collection}-cold"
    cold_set = set(cold)
    cold_paths = init_run(dest, config)
    if (paths.embeddings / "cache").exists():  # the same encoders: vectors come from the cache
        shutil.copytree(paths.embeddings / "cache", cold_paths.embeddings / "cache")
    catalog = Catalog(
        items[~items["item_id"].isin(cold_set)].reset_index(drop=True),
        inter[~inter["item_id"].isin(cold_set)].reset_index(drop=True),
    )
    save_catalog(catalog, cold_paths)
    encoded = index_catalog(catalog, cold_paths, config)
    content = content_vectors(encoded.text, encoded.image, encoded.mask, config.encoder.image_weight)
    save_semantic_ids(build_semantic_ids(catalog, config.semantic_ids, content), cold_paths)
    write_json(plan, {"cold": cold})  # from here on, an interrupted copy resumes its training
    console.print(f"cold items: {len(cold)} of {len(items)} held out of every training input; training {dest}")
    train(dest)
    return _add_back(dest, items, cold, done, paths.root, fraction, seed)


def match_dense_epochs(paths: RunPaths, config: RunConfig) -> None:
    """Give the copy's dense model as many epochs as the run's own got when a wall-clock cap
    (`max_minutes`) ended the run's: minutes buy different epochs on a machine whose load differs
    (ML-100K, session 30: 30 epochs for the run, 18 for its copy), and the warm slice compares the two."""
    stats_path = paths.dense / "train_stats.json"
    if config.dense.ranker == "none" or not stats_path.exists():
        return
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    if stats.get("stopped_by") != "max_minutes" or stats.get("kind") != config.dense.ranker:
        return
    model = getattr(config.dense, config.dense.ranker)
    model.epochs, model.max_minutes = int(stats["epochs"]), None


def _add_back(
    dest: Path, items: pd.DataFrame, cold: list[str], done: Path, run: Path, fraction: float, seed: int
) -> tuple[Path, list[str]]:
    """Add the held-out items to the trained copy with `genrec items add`, then mark the copy done."""
    from retrieval.live import add_items

    new = dest / "cold_items.jsonl"
    rows = items[items["item_id"].isin(set(cold))]
    with open(new, "w", encoding="utf-8") as fh:
        for r in rows.itertuples(index=False):
            obj = {"id": r.item_id, "title": r.title, "text": r.text, "attributes": json.loads(r.attributes)}
            if isinstance(r.image, str) and r.image:
                obj["image"] = r.image
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
    add_items(dest, new)
    write_json(done, {"run": str(run), "fraction": fraction, "seed": seed, "cold": cold})
    return dest, cold


def slice_metrics(ranks: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Recall@10 and NDCG@10 over the users in `mask` (the protocol's metric functions)."""
    part = ranks[mask]
    if not len(part):
        return {"users": 0}
    return {
        "users": int(len(part)),
        "recall@10": float(recall_at(part, 10).mean()),
        "ndcg@10": float(ndcg_at(part, 10).mean()),
    }


def slices(ranks: Sequence[int], targets: Sequence[str], cold: set[str]) -> dict[str, dict[str, float]]:
    """One model's metrics on the cold slice (target held out), the warm slice and all users."""
    is_cold = np.array([t in cold for t in targets], dtype=bool)
    ranks = np.asarray(ranks)
    return {
        "cold": slice_metrics(ranks, is_cold),
        "warm": slice_metrics(ranks, ~is_cold),
        "all": slice_metrics(ranks, np.ones(len(ranks), dtype=bool)),
    }


def evaluate_cold(
    run: str | Path,
    fraction: float = 0.05,
    seed: int = 0,
    max_users: int | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> dict:
    """Cold and warm slices of genrec, genrec-gen, SASRec, content nearest neighbours and popularity,
    all on the original run's test users; also writes `RUN-coldF-sS/eval/cold.json`."""
    from eval.baselines import ContentNN, DenseBaseline, Popularity
    from inference.dense import load_dense
    from inference.ranker import open_ranker
    from inference.ranking import Ranker, tune_cold_offset
    from retrieval.live import base_content

    console = console or Console(stderr=True)
    paths, config = open_run(run)
    dest, cold = build_cold_run(run, fraction, seed, console)
    cold_paths, cold_config = open_run(dest)
    cold_set = set(cold)
    item_ids = pd.read_parquet(paths.items, columns=["item_id"])["item_id"].astype(str).tolist()
    split = leave_one_out(pd.read_parquet(paths.interactions))
    # the training inputs: the original training histories without the cold items
    train = {u: [i for i in h if i not in cold_set] for u, h in split.train.items()}
    split = Split(train=train, valid=split.valid, test=split.test)

    served, notice = open_ranker(dest)
    if notice:
        console.print(f"note: {notice}")
    ranker = served.current()
    fusion, grid = ranker.fusion, []
    if ranker.hybrid:  # with a dense weight of 0 the served ranking is generation alone: no term to weigh
        valid_users = sample_users(split.valid, cold_config.train.val_users, cold_config.eval.seed)
        fusion = tune_cold_offset(ranker, split.valid, valid_users, progress=progress)
        grid = fusion.grid[-1]["cold"]
        write_json(cold_paths.ranking, fusion.to_json())  # the served ranking now uses it
        served, _ = open_ranker(dest)
    served.name = "genrec"
    generation = Ranker(served.current().generator, name="genrec-gen")
    sasrec = DenseBaseline("sasrec", load_dense(cold_paths.dense).item_ids, cold_config.dense.sasrec)
    sasrec.model = load_dense(cold_paths.dense)
    content = ContentNN(item_ids, base_content(paths, config))
    popularity = Popularity(item_ids)
    for model in (content, popularity):
        model.fit(train)
    models = [served, generation, sasrec, content, popularity]
    if (paths.model / "genrec.json").exists():  # the run trained with every item: the warm slice's reference
        everything, _ = open_ranker(paths.root)
        everything.name = "genrec-all-items"
        models.append(everything)
    results = evaluate_detailed(
        models,
        split,
        item_ids,
        ks=(10,),
        max_users=max_users,
        seed=config.eval.seed,
        batch_size=config.eval.batch_size,
        progress=progress,
    )
    report: dict = {
        "run": str(paths.root),
        "cold_run": str(dest),
        "fraction": fraction,
        "seed": seed,
        "cold_items": len(cold),
        "dense_weight": fusion.dense_weight,
        "cold_offset": fusion.cold_offset if ranker.hybrid else None,
        "cold_beams": fusion.cold_beams if ranker.hybrid else None,
        "cold_offset_grid": grid,
    }
    report["models"] = {name: slices(r.ranks, r.targets, cold_set) for name, r in results.items()}
    write_json(cold_paths.eval / "cold.json", report)
    return report


def print_cold(report: dict, console: Console | None = None) -> None:
    """The cold and warm slices as a table."""
    from rich.table import Table

    console = console or Console()
    table = Table(
        "model", "cold Recall@10", "cold NDCG@10", "warm Recall@10", "warm NDCG@10",
        title=f"cold items: {report['cold_items']} held out of training (F={report['fraction']:g}, seed {report['seed']}); "
        + (
            f"cold offset {report['cold_offset']:g}, beams {'may' if report.get('cold_beams') else 'may not'} "
            "reach cold items (chosen on validation)"
            if report.get("cold_offset") is not None
            else "served by generation alone (dense weight 0): no content term"
        ),
    )  # fmt: skip
    for name, m in report["models"].items():
        c, w = m["cold"], m["warm"]
        table.add_row(
            name,
            f"{c.get('recall@10', 0):.4f}",
            f"{c.get('ndcg@10', 0):.4f}",
            f"{w.get('recall@10', 0):.4f}",
            f"{w.get('ndcg@10', 0):.4f}",
        )
    console.print(table)
    users = next(iter(report["models"].values()))
    console.print(f"{users['cold']['users']} test users with a cold target, {users['warm']['users']} with a warm one")
