"""Where cold items go in the served ranking: a trace over the users whose held-out item is cold.

    .venv/bin/python bench/cold_trace.py --run RUN            # RUN: the run `eval.cold` copied
    .venv/bin/python bench/cold_trace.py --run RUN --on test  # the test users (report once, at the end)

For every validation (or test) user whose target is one of the copy's cold items (`RUN-coldF-sS`,
made by `genrec eval offline --cold-items F`), it prints how the target reached the candidates (a
beam, the cold items with the best stand-in dense scores, or not at all), its rank among the cold
items by that score, its fused score and rank among the candidates for each offset traced, and the
fused score of the 10th item; then how the cold items' semantic IDs spread over the first level
(where beams start). Read-only: nothing under RUN is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main() -> None:
    from eval.cold import cold_run_path
    from genrec.metrics import sample_users
    from genrec.run import open_run
    from inference.ranker import open_ranker
    from inference.ranking import fused_order
    from retrieval.split import leave_one_out

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the run trained with every item")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--on", choices=("valid", "test"), default="valid")
    parser.add_argument("--all-valid", action="store_true", help="every validation user, not the tuning sample")
    parser.add_argument("--offset", type=float, action="append", help="cold offset c to trace (repeatable)")
    parser.add_argument("--json", type=Path, help="write the per-user rows here")
    args = parser.parse_args()

    paths, _ = open_run(args.run)
    dest = cold_run_path(paths.root, args.fraction, args.seed)
    cold = set(json.loads((dest / "cold.json").read_text())["cold"])
    _, cold_config = open_run(dest)
    split = leave_one_out(pd.read_parquet(paths.interactions))
    cases = split.valid if args.on == "valid" else split.test
    users = sorted(cases)
    if args.on == "valid" and not args.all_valid:
        users = sample_users(split.valid, cold_config.train.val_users, cold_config.eval.seed)
    users = [u for u in users if cases[u][1] in cold]
    served, _ = open_ranker(dest)
    ranker = served.current()
    f = ranker.fusion
    print(f"{len(cold)} cold items; {len(users)} {args.on} users with a cold target")
    print(
        f"fusion: a={f.dense_weight} penalty={f.miss_penalty} c={f.cold_offset} "
        f"cold_candidates={f.cold_candidates} cold_neighbours={f.cold_neighbours}"
    )
    histories = [list(cases[u][0]) for u in users]
    found = ranker.candidates(histories, exclude=[set(h) for h in histories])
    offsets = args.offset or [f.cold_offset]
    stand_in = np.asarray(ranker.dense.scores_with(histories, ranker.cold.embeddings))[:, len(ranker.dense.item_ids) :]
    rows = []
    cold_in_beams = 0
    for n, (u, h, c) in enumerate(zip(users, histories, found)):
        target = cases[u][1]
        n_beams = int((~np.isnan(c.generated)).sum())
        cold_in_beams += sum(1 for i in c.items[:n_beams] if i in cold)
        warm = ~np.isnan(c.dense)
        row = {
            "user": u,
            "target": target,
            "history": len(h),
            "beams": n_beams,
            "cold_candidates": int(np.isnan(c.dense).sum()),
            "d_top": float(c.dense[warm].max()),
            "d_10th_warm": float(np.sort(c.dense[warm])[::-1][min(9, warm.sum() - 1)]),
        }
        own = stand_in[n][[j for j, i in enumerate(ranker.cold.ids) if i not in set(h)]]
        mine = stand_in[n][ranker.cold.ids.index(target)]
        row.update({"stand_in": float(mine), "stand_in_rank_among_cold": int(1 + (own > mine).sum())})
        if target in c.items:
            j = c.items.index(target)
            row["via"] = "beam" if j < n_beams else "stand-in"
            row["g"] = None if np.isnan(c.generated[j]) else float(c.generated[j])
            for off in offsets:
                order, score = fused_order(c, f.dense_weight, f.miss_penalty, off, f.scored_misses)
                pos = int(np.where(order == j)[0][0])
                row[f"rank@c={off:g}"] = pos + 1
                row[f"fused@c={off:g}"] = float(score[pos])
                row[f"fused10th@c={off:g}"] = float(score[min(9, len(score) - 1)])
                row[f"cold_in_top10@c={off:g}"] = sum(1 for i in order[:10] if np.isnan(c.dense[i]))
        else:
            row["via"] = "none"
        rows.append(row)
    frame = pd.DataFrame(rows)
    pd.set_option("display.width", 250, "display.max_columns", 40)
    print(frame.drop(columns=["user"]).round(3).to_string(index=False))
    print(f"\ntarget in candidates: {(frame.via != 'none').sum()} of {len(frame)} (beam {(frame.via == 'beam').sum()})")
    print(f"cold items reached by beams, all these users: {cold_in_beams}")
    ranks = frame.stand_in_rank_among_cold
    print(
        f"target's rank among the cold items by stand-in score: median {ranks.median():.0f}, top 1 {(ranks <= 1).sum()}, top 10 {(ranks <= 10).sum()}"
    )
    for off in offsets:
        key = f"rank@c={off:g}"
        if key in frame:
            print(f"c={off:g}: target in the top 10 for {(frame[key] <= 10).sum()} of {len(frame)}")
    codes = [ranker.generator.trie.code_of[i] for i in ranker.cold.ids]
    first = pd.Series([c[0] for c in codes]).value_counts()
    print(
        f"cold items' first semantic-ID level: {len(first)} distinct codes, the commonest holds {first.iloc[0]} of {len(codes)}"
    )
    print(
        f"d_top - d_10th_warm (the dense range the top 10 spans): median {(frame.d_top - frame.d_10th_warm).median():.3f}"
    )
    if args.json:
        args.json.write_text(frame.to_json(orient="records", indent=1))


if __name__ == "__main__":
    main()
