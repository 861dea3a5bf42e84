"""The README's results figure, drawn from the benchmarks' JSON (nothing typed in by hand).

Left: ML-100K, the served ranking (`genrec`), pure generation and the baselines of the same runs
(`bench/results/accuracy.json`, mean over the seeds run, with their spread). Right: Amazon Beauty,
the baselines at published strength (`bench/results/baselines.json`) beside the published figures
they are checked against.

    .venv/bin/python bench/plot.py          # writes docs/results.png
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "results.png"
ORDER = ["genrec", "genrec-gen", "bsarec", "sasrec", "itemknn", "popularity", "content"]


def ml100k_bars(accuracy: dict) -> tuple[list[str], list[float], list[float], str]:
    """(models, mean NDCG@10, spread, caption) of the ML-100K served-ranking runs."""
    summary = accuracy["datasets"]["ml-100k"]["summary"]
    models = [m for m in ORDER if m in summary["models"]]
    means = [summary["models"][m]["ndcg@10"]["mean"] for m in models]
    spread = [summary["models"][m]["ndcg@10"]["std"] for m in models]
    seeds = len(summary["seeds"])
    return models, means, spread, f"ML-100K, {seeds} seed{'s' if seeds > 1 else ''} (accuracy.json)"


def beauty_bars(baselines: dict) -> tuple[list[str], list[float], list[float | None]]:
    """(models, our NDCG@10, published NDCG@10 or None) on Amazon Beauty."""
    entry = baselines["datasets"]["beauty"]
    results = entry["results"]
    models = [m for m in ORDER if m in results]
    published = [entry.get("vs_published", {}).get(m, {}).get("ndcg@10", {}).get("published") for m in models]
    return models, [results[m]["ndcg@10"] for m in models], published


def main() -> None:
    """Draw both panels into docs/results.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = json.loads((RESULTS / "accuracy.json").read_text())
    baselines = json.loads((RESULTS / "baselines.json").read_text())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))

    models, means, spread, caption = ml100k_bars(accuracy)
    colors = ["tab:red" if m == "genrec" else "tab:orange" if m == "genrec-gen" else "tab:gray" for m in models]
    left.bar(models, means, yerr=spread, color=colors, capsize=3)
    for x, value in enumerate(means):
        left.text(x, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
    left.set_title(caption, fontsize=10)
    left.set_ylabel("test NDCG@10")

    models, ours, published = beauty_bars(baselines)
    right.bar(models, ours, color="tab:gray", label="ours")
    marks = [(x, p) for x, p in enumerate(published) if p is not None]
    if marks:
        right.scatter([x for x, _ in marks], [p for _, p in marks], marker="_", s=600, color="black", label="published")
    for x, value in enumerate(ours):
        right.text(x, value, f"{value:.4f}", ha="center", va="bottom", fontsize=8)
    right.set_title("Amazon Beauty baselines (baselines.json)", fontsize=10)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
