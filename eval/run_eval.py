"""Evaluate every model of one run directory on its leave-one-out split, keeping what reports need.

`genrec eval`, `--report` and `--compare` all start here: the run's interactions give the split,
its items the catalog, `embeddings/text.npy` the content vectors; the baselines named in the run's
config (or on the command line) are fitted, genrec is loaded when the run has a trained model, and
`eval.evaluate.evaluate_detailed` scores them all on the same users. Each model's returned lists
are kept too (diversity, explanations), and the per-user ranks are saved so later comparisons of
runs pair users without re-running any model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eval.evaluate import ModelEvaluation, evaluate_detailed
from genrec.atomic import write_parquet
from genrec.config import RunConfig
from genrec.errors import GenrecError
from genrec.protocol import Recommender
from genrec.run import RunPaths, open_run
from retrieval.split import Split, leave_one_out

KNOWN_MODELS = ("genrec", "genrec-gen", "sasrec", "bsarec", "popularity", "itemknn", "content")
RANKS_FILE = "ranks.parquet"
CURVE_KS = tuple(range(1, 21))  # lists of 20 let every K in 1..20 be scored from the same ranks


class ListRecorder:
    """A model that remembers the lists it returned, in call order (the order `evaluate` asks in).

    Diversity and explanations need the lists themselves; the metrics accumulator keeps only ranks.
    """

    def __init__(self, model: Recommender):
        self.model = model
        self.name = model.name
        self.lists: list[list[str]] = []

    def fit(self, train: dict[str, list[str]]) -> None:
        """Fit the wrapped model."""
        self.model.fit(train)

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """The wrapped model's lists, recorded."""
        ranked = [list(r) for r in self.model.recommend(histories, k)]
        self.lists.extend(r[:k] for r in ranked)
        return ranked


@dataclass
class RunEvaluation:
    """One run's models scored on its split: headline metrics, per-user ranks and returned lists."""

    paths: RunPaths
    config: RunConfig
    split: Split
    item_ids: list[str]
    results: dict[str, ModelEvaluation]
    lists: dict[str, list[list[str]]] = field(default_factory=dict)

    def summaries(self) -> dict[str, dict[str, float]]:
        """`{model: {metric: value}}` as `genrec eval offline --json` writes it."""
        return {name: dict(r.summary) for name, r in self.results.items()}


def load_split(paths: RunPaths) -> tuple[Split, list[str]]:
    """The run's leave-one-out split and its catalog item ids (items.parquet order)."""
    items = pd.read_parquet(paths.require(paths.items, f"genrec index --run {paths.root}"), columns=["item_id"])
    inter = pd.read_parquet(paths.require(paths.interactions, f"genrec index --run {paths.root}"))
    split = leave_one_out(inter)
    if not split.test:
        raise GenrecError(f"{paths.interactions}: no user has 3 or more interactions, so there is nothing to test")
    return split, items["item_id"].astype(str).tolist()


def content_vectors(paths: RunPaths, n_items: int) -> np.ndarray | None:
    """`embeddings/text.npy` (rows in items.parquet order), or None when the run has none."""
    path = paths.embeddings / "text.npy"
    if not path.exists():
        return None
    vectors = np.load(path)
    if vectors.shape[0] != n_items:
        raise GenrecError(
            f"{path}: {vectors.shape[0]} rows for {n_items} items; run `genrec index --run {paths.root}` again"
        )
    return vectors


def has_model(paths: RunPaths) -> bool:
    """True when `genrec train` has written a model into the run."""
    return (paths.model / "genrec.json").exists()


def parse_models(models: Sequence[str] | None) -> list[str] | None:
    """Model names from `--models a,b --models c`; None means every available model."""
    if not models:
        return None
    names = [n.strip().lower() for m in models for n in m.split(",") if n.strip()]
    unknown = [n for n in names if n not in KNOWN_MODELS]
    if unknown:
        raise GenrecError(f"--models: unknown model {unknown[0]!r}; choose from {', '.join(KNOWN_MODELS)}")
    return list(dict.fromkeys(names))


def genrec_models(paths: RunPaths, names: list[str] | None, console=None) -> list[Recommender]:
    """The served ranking (`genrec`, exactly what `genrec recommend`, the agent and the API rank with)
    and pure generation (`genrec-gen`) beside it, so the dense model's gain is visible."""
    from inference.ranker import open_ranker

    wanted = [n for n in ("genrec", "genrec-gen") if (names is None and has_model(paths)) or (names and n in names)]
    if not wanted:
        return []
    paths.require(paths.model / "genrec.json", f"genrec train --run {paths.root}")
    served, notice = open_ranker(paths.root)
    if notice:
        (console.print if console is not None else print)(f"note: {notice}")
    models: list[Recommender] = []
    if "genrec" in wanted:
        served.name = "genrec"
        models.append(served)
    if "genrec-gen" in wanted and (served.hybrid or "genrec" not in wanted):
        from inference.ranking import Ranker, SharedBeams

        # pure generation ranks the served ranking's own beams: each user's beam search runs once
        generator = SharedBeams(served.generator) if "genrec" in wanted else served.generator
        served.generator = generator
        models.append(Ranker(generator, name="genrec-gen"))
    return models


def run_dense_model(paths: RunPaths, config: RunConfig, item_ids: list[str]) -> dict:
    """The run's own dense network (`RUN/dense`, trained by `genrec train` on this split), by kind, when
    it was trained with the run's current settings for that kind over this catalog: the baseline row
    of that name is then that very model, not a second training."""
    import json

    from finetune.dense.build import NOT_FINGERPRINTED
    from inference.dense import load_dense

    stats_path = paths.dense / "train_stats.json"
    if not stats_path.exists():
        return {}
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    kind = stats.get("kind")
    current = getattr(config.dense, kind, None) if kind else None
    model = load_dense(paths.dense, current.device if current else "cpu", f"dense.{kind}.device")
    settings = stats.get("settings", {})
    trained = current.model_dump(exclude=NOT_FINGERPRINTED) if current is not None else {}  # (not where it ran)
    same = current is not None and all(settings.get(k) == v for k, v in trained.items() if v is not None)
    return {kind: model} if same and model.item_ids == list(item_ids) else {}


def build_models(
    paths: RunPaths,
    config: RunConfig,
    split: Split,
    item_ids: list[str],
    names: list[str] | None,
    progress: bool = True,
) -> list[Recommender]:
    """Fitted models: genrec and genrec-gen first (if trained, or asked for), then the baselines in config order."""
    from eval.baselines import fit_baselines

    models: list[Recommender] = genrec_models(paths, names)
    baselines = [b for b in config.eval.baselines if names is None or b in names]
    baselines += [b for b in (names or []) if b not in baselines and not b.startswith("genrec")]
    eval_config = config.eval.model_copy(update={"baselines": baselines})
    vectors = content_vectors(paths, len(item_ids)) if "content" in baselines else None
    if vectors is None and names is not None and "content" in names:
        raise GenrecError(
            f"{paths.embeddings / 'text.npy'}: missing, so the content baseline has no item vectors; "
            f"run `genrec index --run {paths.root}` first"
        )
    models += fit_baselines(
        split,
        item_ids,
        eval_config,
        vectors,
        progress=progress,
        dense=config.dense,
        dataset=config.data.dataset,
        trained=run_dense_model(paths, config, item_ids),
    )
    return models


def evaluate_run(
    run: str | Path, models: Sequence[str] | None = None, max_users: int | None = None, progress: bool = True
) -> RunEvaluation:
    """Fit and score the run's models on its test users (the same users for every model)."""
    paths, config = open_run(run)
    split, item_ids = load_split(paths)
    fitted = [ListRecorder(m) for m in build_models(paths, config, split, item_ids, parse_models(models), progress)]
    ks = sorted(set(config.eval.ks) | {max(CURVE_KS)})
    results = evaluate_detailed(
        fitted,
        split,
        item_ids,
        ks=ks,
        max_users=max_users or config.eval.max_users,
        seed=config.eval.seed,
        batch_size=config.eval.batch_size,
        progress=progress,
    )
    for r in results.values():  # the headline table keeps the configured Ks; curves use the ranks
        for k in set(ks) - set(config.eval.ks):
            r.summary.pop(f"recall@{k}", None)
            r.summary.pop(f"ndcg@{k}", None)
    return RunEvaluation(paths, config, split, item_ids, results, {m.name: m.lists for m in fitted})


def save_ranks(evaluation: RunEvaluation, path: Path | None = None) -> Path:
    """Per-user ranks of every model (`RUN/eval/ranks.parquet`): what `--compare` pairs users on."""
    path = path or evaluation.paths.eval / RANKS_FILE
    frames = [
        pd.DataFrame({"model": name, "user_id": r.users, "target": r.targets, "rank": r.ranks})
        for name, r in evaluation.results.items()
    ]
    write_parquet(path, pd.concat(frames, ignore_index=True))
    return path
