"""Probe: would a popularity term in the fusion help a trained run? (session 33, Amazon Beauty)

The run's served ranking gives each user's candidates with both scores (`Ranker.candidates`, misses
scored as the run's fusion says); a grid over (a, c) with

    score = (1 - a) g + a d - c log(1 + the candidate's training interactions)

is chosen on `--valid-users` validation users, then applied to every test user beside the served
setting (c = 0 at the run's own a). Ties count for the held-out item (both arms alike). Writes
bench/results/fusion_popularity.json.

    PYTHONPATH=. .venv/bin/python bench/fusion_popularity.py --run ~/.cache/genrec/bench/accuracy/beauty/seed0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "fusion_popularity.json"
WEIGHTS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
TERMS = (-0.1, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def candidate_rows(ranker, cases: dict, users: list[str], counts) -> list[tuple]:
    """(g, d, log(1 + count), the held-out item's position or -1) per user, history excluded."""
    from inference.ranking import generator_scores

    rows, started = [], time.time()
    for start in range(0, len(users), 256):
        batch = users[start : start + 256]
        histories = [list(cases[u][0]) for u in batch]
        for c, user in zip(ranker.candidates(histories, exclude=[set(h) for h in histories]), batch):
            g = generator_scores(c, ranker.fusion.miss_penalty, ranker.fusion.scored_misses)
            term = np.log1p(np.array([counts.get(i, 0) for i in c.items], dtype=float))
            target = cases[user][1]
            rows.append((g, c.dense, term, c.items.index(target) if target in c.items else -1))
        print(f"  {start + len(batch)}/{len(users)} users, {time.time() - started:.0f} s", flush=True)
    return rows


def ndcg10(rows: list[tuple], a: float, c: float) -> np.ndarray:
    """Each user's NDCG@10 under the setting (0 where the held-out item is no candidate)."""
    out = np.zeros(len(rows))
    for k, (g, d, term, target) in enumerate(rows):
        if target >= 0:
            score = (1 - a) * g + a * d - c * term
            place = int((score > score[target]).sum())
            out[k] = 1 / np.log2(place + 2) if place < 10 else 0.0
    return out


def main() -> None:
    from genrec.atomic import write_json
    from genrec.run import RunPaths
    from inference.ranker import open_ranker
    from retrieval.catalog import load_catalog
    from retrieval.split import leave_one_out

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run with a dense model")
    parser.add_argument("--valid-users", type=int, default=8000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    ranker, _ = open_ranker(args.run)
    split = leave_one_out(load_catalog(RunPaths(args.run)).interactions)
    counts = split.train_counts()
    rng = np.random.default_rng(0)
    valid_users = sorted(split.valid)
    valid_users = [valid_users[i] for i in rng.permutation(len(valid_users))[: args.valid_users]]
    print("validation candidates", flush=True)
    valid = candidate_rows(ranker, split.valid, valid_users, counts)
    grid = {(a, c): float(ndcg10(valid, a, c).mean()) for a in WEIGHTS for c in TERMS}
    best = max(grid, key=lambda key: (grid[key], -abs(key[1])))
    print("test candidates", flush=True)
    test = candidate_rows(ranker, split.test, sorted(split.test), counts)
    served, chosen = ndcg10(test, ranker.fusion.dense_weight, 0.0), ndcg10(test, *best)
    diff = chosen - served
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(1000)]
    result = {
        "what": (__doc__ or "").split("\n\n")[0],
        "run": str(args.run),
        "valid_users": len(valid_users),
        "test_users": len(test),
        "valid_grid": [{"dense_weight": a, "popularity_term": c, "valid_ndcg@10": v} for (a, c), v in grid.items()],
        "chosen": {"dense_weight": best[0], "popularity_term": best[1], "valid_ndcg@10": grid[best]},
        "test_ndcg@10": {"served": float(served.mean()), "chosen": float(chosen.mean())},
        "chosen_minus_served": {
            "diff": float(diff.mean()),
            "ci95": [float(np.percentile(boot, q)) for q in (2.5, 97.5)],
        },
        "test_ndcg@10_by_term_at_chosen_weight": {str(c): float(ndcg10(test, best[0], c).mean()) for c in TERMS},
    }
    write_json(args.out, result)
    print(json.dumps(result["chosen"]), json.dumps(result["test_ndcg@10"]), flush=True)


if __name__ == "__main__":
    main()
