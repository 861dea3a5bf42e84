"""`genrec eval compare RUN_A RUN_B ...`: runs side by side, with differences and paired tests.

Each run's per-user ranks come from `RUN/eval/ranks.parquet` (written by `genrec eval`; the run is
evaluated first when the file is missing). Runs are compared on the users they share with the same
test target, so a difference is never an artefact of different users. Metrics come from
`genrec.metrics`; the significance of each run's NDCG@10 difference to the first run is tested over
users, pairwise: a paired bootstrap (resampling users, 10,000 draws) and a paired t-test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eval.evaluate import ModelEvaluation
from eval.run_eval import RANKS_FILE, evaluate_run, parse_models, save_ranks
from genrec.errors import GenrecError
from genrec.metrics import ndcg_at, ranking_metrics

TEST_METRIC_K = 10
BOOTSTRAP_DRAWS = 10_000
HEADLINE = ("recall@10", "ndcg@10", "mrr")


def load_ranks(run: Path, models: Sequence[str] | None = None, max_users: int | None = None) -> pd.DataFrame:
    """The per-user ranks of a run (model, user_id, target, rank), evaluating it if never evaluated."""
    path = Path(run) / "eval" / RANKS_FILE
    if not path.exists():
        if not Path(run).is_dir():
            raise GenrecError(f"{run}: no such run directory")
        save_ranks(evaluate_run(run, models=models, max_users=max_users))
    frame = pd.read_parquet(path)
    frame["user_id"] = frame["user_id"].astype(str)
    return frame


def paired_bootstrap(diff: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, float]:
    """Two-sided p-value and 95% interval of the mean of per-user differences, resampling users."""
    if len(diff) == 0:
        return {"p": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(axis=1)
    # share of resampled means on the other side of zero, doubled (the usual two-sided bootstrap test)
    p = 2.0 * min((means <= 0).mean(), (means >= 0).mean())
    low, high = np.quantile(means, [0.025, 0.975])
    return {"p": float(min(p, 1.0)), "ci_low": float(low), "ci_high": float(high)}


def paired_models(a: ModelEvaluation, b: ModelEvaluation, k: int = TEST_METRIC_K) -> dict[str, Any]:
    """Is model `a`'s NDCG@k different from model `b`'s on the same users? Mean per-user difference
    (a - b), its 95% bootstrap interval and p-values: on a few hundred users a gap of 0.01 can be noise."""
    users_b = {(u, t): r for u, t, r in zip(b.users, b.targets, b.ranks)}
    shared = [(i, (u, t)) for i, (u, t) in enumerate(zip(a.users, a.targets)) if (u, t) in users_b]
    if not shared:
        raise GenrecError(f"models {a.name!r} and {b.name!r} were scored on no common user")
    ranks_a = np.asarray([a.ranks[i] for i, _ in shared])
    ranks_b = np.asarray([users_b[key] for _, key in shared])
    diff = ndcg_at(ranks_a, k) - ndcg_at(ranks_b, k)
    test = paired_bootstrap(diff)
    return {
        "metric": f"ndcg@{k}",
        "users": len(diff),
        "diff": float(diff.mean()),
        "ci95": [test["ci_low"], test["ci_high"]],
        "bootstrap_p": test["p"],
        "t_test_p": paired_t(diff),
    }


def paired_t(diff: np.ndarray) -> float:
    """Two-sided p-value of a paired t-test (mean per-user difference against zero)."""
    from scipy import stats

    if len(diff) < 2 or np.allclose(diff, diff[0]):
        return 1.0 if len(diff) and np.allclose(diff, 0) else float("nan")
    return float(stats.ttest_1samp(diff, 0.0).pvalue)


def compare_runs(
    runs: Sequence[Path], models: Sequence[str] | None = None, max_users: int | None = None
) -> dict[str, Any]:
    """Metrics of each model in each run on the shared users; differences to the first run and
    paired tests on per-user NDCG@10. Returns a JSON-ready dict."""
    if len(runs) < 2:
        raise GenrecError("--compare: give at least two runs (genrec eval compare RUN_A RUN_B)")
    names = [str(r) for r in runs]
    if len(set(names)) != len(names):
        raise GenrecError(f"--compare: a run is named twice ({names})")
    wanted = parse_models(models)
    frames = {name: load_ranks(Path(r), wanted, max_users) for name, r in zip(names, runs)}
    common = set.intersection(*(set(f["model"]) for f in frames.values()))
    if wanted:
        common &= set(wanted)
    if not common:
        raise GenrecError(
            f"--compare: the runs share no evaluated model ({', '.join(names)}); evaluate the same models in each"
        )
    out: dict[str, Any] = {"runs": names, "baseline": names[0], "models": {}, "users": 0}
    for model in sorted(common):
        per_run = {n: f[f["model"] == model].set_index(["user_id", "target"])["rank"] for n, f in frames.items()}
        shared = sorted(set.intersection(*(set(s.index) for s in per_run.values())))
        if not shared:
            raise GenrecError(
                f"--compare: runs share no test user with the same target for model {model!r}; "
                "they must be built from the same interactions"
            )
        ranks = {n: s.loc[shared].to_numpy() for n, s in per_run.items()}
        base = ndcg_at(ranks[names[0]], TEST_METRIC_K)
        entry: dict[str, Any] = {"users": len(shared), "metrics": {}, "tests": {}}
        for name in names:
            entry["metrics"][name] = ranking_metrics(ranks[name], [5, 10, 20])
        for name in names[1:]:
            diff = ndcg_at(ranks[name], TEST_METRIC_K) - base
            test = paired_bootstrap(diff)
            entry["tests"][name] = {
                "metric": f"ndcg@{TEST_METRIC_K}",
                "diff": float(diff.mean()),
                "bootstrap_p": test["p"],
                "ci95": [test["ci_low"], test["ci_high"]],
                "t_test_p": paired_t(diff),
                "differences": {m: entry["metrics"][name][m] - entry["metrics"][names[0]][m] for m in HEADLINE},
            }
        out["models"][model] = entry
        out["users"] = max(out["users"], len(shared))
    return out


def print_comparison(result: dict[str, Any], console=None) -> None:
    """One rich table per model: runs as rows, headline metrics, difference to the first run, p-values."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: keep the columns readable
            console.width = 160
    for model, entry in result["models"].items():
        table = Table(title=f"{model}: {entry['users']} shared users (difference and tests vs {result['baseline']})")
        table.add_column("run", style="bold")
        for m in HEADLINE:
            table.add_column(m, justify="right")
        for col in ("Δ ndcg@10", "bootstrap p", "95% CI", "t-test p"):
            table.add_column(col, justify="right")
        for name, metrics in entry["metrics"].items():
            test = entry["tests"].get(name)
            extra = (
                ["", "", "", ""]
                if test is None
                else [
                    f"{test['diff']:+.4f}",
                    f"{test['bootstrap_p']:.4f}",
                    f"[{test['ci95'][0]:+.4f}, {test['ci95'][1]:+.4f}]",
                    f"{test['t_test_p']:.4f}",
                ]
            )
            table.add_row(name, *(f"{metrics[m]:.4f}" for m in HEADLINE), *extra)
        console.print(table)
