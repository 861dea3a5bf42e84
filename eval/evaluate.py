"""Score any number of models on the identical leave-one-out cases, through `genrec.metrics` only.

`evaluate([genrec, sasrec, popularity], split, catalog_ids)` asks every model for its top-max(K)
items for every test user (in batches, with a progress bar per model), and returns one flat dict of
metrics per model. `evaluate_detailed` also keeps the per-user ranks for slices and significance
tests. The ranking loop itself and `validation_ndcg` (early stopping in training) live in
`genrec.metrics`, below every room, so training never imports `eval`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrec.atomic import write_json
from genrec.errors import GenrecError
from genrec.metrics import rank_cases, sample_users
from genrec.protocol import Recommender
from retrieval.split import Split

DEFAULT_KS = (5, 10, 20)


@dataclass
class ModelEvaluation:
    """One model's result: the headline metrics and the per-user ranks they came from."""

    name: str
    summary: dict[str, float]
    users: list[str]
    targets: list[str]
    ranks: np.ndarray  # 1-based rank of each user's target in the returned list, 0 = not returned


def evaluate_detailed(
    models: Sequence[Recommender],
    split: Split,
    catalog_item_ids: Iterable[str],
    ks: Iterable[int] = DEFAULT_KS,
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    on: str = "test",
    progress: bool = True,
) -> dict[str, ModelEvaluation]:
    """Evaluate fitted models on the `on` split ("test" or "valid"), keeping per-user ranks."""
    if on not in ("test", "valid"):
        raise ValueError(f"on must be 'test' or 'valid', got {on!r}")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise GenrecError(f"evaluate: model names must be unique, got {names}")
    ks = sorted(set(ks))
    catalog = frozenset(catalog_item_ids)
    cases = split.test if on == "test" else split.valid
    users = sample_users(cases, max_users, seed)
    counts = split.train_counts()
    out: dict[str, ModelEvaluation] = {}
    for model in models:
        acc, seconds = rank_cases(model, cases, users, catalog, max(ks), batch_size, progress)
        summary = acc.summary(ks, counts)
        summary["users_per_s"] = len(users) / seconds if seconds > 0 else float("inf")
        out[model.name] = ModelEvaluation(model.name, summary, acc.users, acc.targets, acc.ranks)
    return out


def evaluate(
    models: Sequence[Recommender],
    split: Split,
    catalog_item_ids: Iterable[str],
    ks: Iterable[int] = DEFAULT_KS,
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Metrics of each fitted model on the test cases: `{model: {"recall@10": ..., "ndcg@10": ...,
    "mrr": ..., "valid_rate": ..., "coverage": ..., "users": ..., "users_per_s": ..., "cold_*": ...}}`."""
    detailed = evaluate_detailed(models, split, catalog_item_ids, ks, max_users, seed, batch_size, "test", progress)
    return {name: result.summary for name, result in detailed.items()}


def evaluate_validation(
    model: Recommender,
    split: Split,
    catalog_item_ids: Iterable[str],
    ks: Iterable[int] = (10,),
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of one model on the validation cases (history = train items, target = 2nd-to-last)."""
    detailed = evaluate_detailed([model], split, catalog_item_ids, ks, max_users, seed, batch_size, "valid", progress)
    return detailed[model.name].summary


def print_results(results: Mapping[str, Mapping[str, float]], title: str = "offline evaluation", console=None) -> None:
    """Print models as rows and headline metrics as columns (rich table; R@K = Recall@K, N@K = NDCG@K)."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: don't squeeze the table into 80 columns
            console.width = 160
    columns: list[str] = []
    for metrics in results.values():
        for key in metrics:
            if key not in columns and not key.startswith("cold_"):
                columns.append(key)
    table = Table(title=title)
    table.add_column("model", style="bold")
    for col in columns:
        table.add_column(_LABELS.get(col, col.replace("recall@", "R@").replace("ndcg@", "N@")), justify="right")
    for name, metrics in results.items():
        cells = []
        for col in columns:
            value = metrics.get(col)
            if value is None:
                cells.append("-")
            elif col == "users":
                cells.append(f"{int(value)}")
            elif col == "users_per_s":
                cells.append(f"{value:.1f}")
            else:
                cells.append(f"{value:.4f}")
        table.add_row(name, *cells)
    console.print(table)


_LABELS = {"mrr": "MRR", "valid_rate": "valid", "coverage": "cov", "users_per_s": "users/s"}


def save_results(results: Mapping, path: str | Path) -> None:
    """Write the results as JSON, atomically (a crash never leaves half a file)."""
    write_json(path, _jsonable(results))


def _jsonable(obj):
    """Plain JSON types: numpy scalars become Python numbers, infinities become null."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
