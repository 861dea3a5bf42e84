"""`genrec eval offline --report`: one run's evaluation as `eval/report.md`, `eval/metrics.json` and PNG plots.

Everything is derived from per-user ranks and returned lists kept by `eval.run_eval`; ranking
numbers come from `genrec.metrics` (curves, popularity buckets, cold-start slice). Two list-level
measures are added here because no ranking metric covers them: intra-list diversity (1 - mean
pairwise cosine of the items' content embeddings within a top-10 list) and, when the run can
explain items, explanation faithfulness (`eval.faithfulness`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.run_eval import CURVE_KS, RunEvaluation, content_vectors
from genrec.atomic import atomic_path, write_text
from genrec.errors import GenrecError
from genrec.metrics import COLD_START_THRESHOLD, COVERAGE_K, cold_start_mask, ranking_metrics

POPULARITY_QUANTILES = 4  # buckets of (about) equal numbers of test users, from least to most popular target
DIVERSITY_K = COVERAGE_K
FAITHFULNESS_USERS = 50


def popularity_edges(seen: np.ndarray, buckets: int = POPULARITY_QUANTILES) -> list[tuple[int, int]]:
    """Inclusive ranges of training counts splitting the test targets into `buckets` quantiles
    (fewer when counts tie); quantiles rather than fixed cut-offs keep every bucket populated
    whatever the dataset's size."""
    if len(seen) == 0:
        return []
    cuts = np.unique(np.quantile(seen, np.linspace(0, 1, buckets + 1)[1:-1], method="lower").astype(int))
    edges, low = [], int(seen.min())
    for cut in cuts:
        if cut >= low:
            edges.append((low, int(cut)))
            low = int(cut) + 1
    if low <= int(seen.max()):
        edges.append((low, int(seen.max())))
    return edges


def curves(evaluation: RunEvaluation) -> dict[str, dict[str, list[float]]]:
    """Recall@K and NDCG@K for K = 1..20, per model."""
    out = {}
    for name, result in evaluation.results.items():
        m = ranking_metrics(result.ranks, CURVE_KS)
        out[name] = {
            "k": list(CURVE_KS),
            "recall": [m[f"recall@{k}"] for k in CURVE_KS],
            "ndcg": [m[f"ndcg@{k}"] for k in CURVE_KS],
        }
    return out


def popularity_buckets(evaluation: RunEvaluation) -> dict[str, dict[str, dict[str, float]]]:
    """Recall@10 / NDCG@10 per model for targets in each training-popularity bucket, plus the
    cold-start slice (targets seen fewer than `COLD_START_THRESHOLD` times in training)."""
    counts = evaluation.split.train_counts()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, result in evaluation.results.items():
        seen = np.array([counts.get(t, 0) for t in result.targets])
        rows: dict[str, dict[str, float]] = {}
        for low, high in popularity_edges(seen):  # same users for every model, so the same edges
            rows[f"{low}-{high}" if high > low else f"{low}"] = _slice(result.ranks, (seen >= low) & (seen <= high))
        rows["cold-start"] = _slice(result.ranks, cold_start_mask(result.targets, counts))
        out[name] = rows
    return out


def _slice(ranks: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    m = ranking_metrics(ranks[mask], [COVERAGE_K])
    return {
        "users": int(mask.sum()),
        f"recall@{COVERAGE_K}": m[f"recall@{COVERAGE_K}"],
        f"ndcg@{COVERAGE_K}": m[f"ndcg@{COVERAGE_K}"],
    }


def intra_list_diversity(
    lists: Sequence[Sequence[str]], item_ids: Sequence[str], vectors: np.ndarray, k: int = DIVERSITY_K
) -> float | None:
    """Mean over lists of 1 - mean pairwise cosine similarity of the top-`k` items' vectors.

    Lists with fewer than two known items have no pairs and are skipped; None if none has.
    """
    position = {item: i for i, item in enumerate(item_ids)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    values = []
    for items in lists:
        rows = [position[i] for i in items[:k] if i in position]
        n = len(rows)
        if n < 2:
            continue
        sims = unit[rows] @ unit[rows].T
        mean_pair = (sims.sum() - np.trace(sims)) / (n * (n - 1))
        values.append(1.0 - float(mean_pair))
    return float(np.mean(values)) if values else None


def diversity(evaluation: RunEvaluation) -> dict[str, float | None]:
    """Intra-list diversity of each model's top-10 lists (None when the run has no embeddings)."""
    vectors = content_vectors(evaluation.paths, len(evaluation.item_ids))
    if vectors is None:
        return {name: None for name in evaluation.results}
    return {name: intra_list_diversity(lists, evaluation.item_ids, vectors) for name, lists in evaluation.lists.items()}


def faithfulness(
    evaluation: RunEvaluation, users: int = FAITHFULNESS_USERS, explainer: str | None = "smollm2-135m"
) -> dict[str, Any] | None:
    """Faithfulness of explanations on a fixed sample of test users: the agent's catalog explanation
    of each model's top-1 item and, with `explainer` (a local instruction model such as
    `smollm2-135m`, or the URL of a served chat model), that model's explanations of genrec's top-1,
    raw and as shown after the grounding check. None when the run has no vector store."""
    import pandas as pd

    from agent.tools import AgentContext
    from eval.faithfulness import Vocabulary, agent_explanations, model_explanations, summarize

    if not evaluation.paths.chroma.exists():
        return None
    items = pd.read_parquet(evaluation.paths.items)
    vocab = Vocabulary.from_items(items)
    try:
        ctx = AgentContext.open(evaluation.paths.root)
    except GenrecError as exc:  # the ranking report stays useful without explanations
        return {"error": str(exc)}
    out: dict[str, Any] = {"source": "agent explain tool (catalog facts), top-1 item of each model", "models": {}}
    for name, result in evaluation.results.items():
        lists = evaluation.lists.get(name, [])
        picks = {u: ranked[0] for u, ranked in list(zip(result.users, lists))[:users] if ranked}
        scores = agent_explanations(ctx, evaluation.split.test, picks, vocab)
        out["models"][name] = summarize(scores)
        if scores:
            out["models"][name]["example"] = {
                "item_id": scores[0].item_id,
                "text": scores[0].text,
                "true": scores[0].true_claims,
                "false": scores[0].false_claims,
            }
        if name == "genrec" and explainer:
            try:
                write = explanation_writer(explainer)
                raw, shown, kept = model_explanations(write, items, evaluation.split.test, picks, vocab)
            except GenrecError as exc:
                out["model_error"] = str(exc)
                continue
            for label, group in ((f"genrec + {explainer} (raw)", raw), (f"genrec + {explainer} (shown)", shown)):
                out["models"][label] = summarize(group)
                out["models"][label]["example"] = {
                    "item_id": group[0].item_id,
                    "text": group[0].text,
                    "true": group[0].true_claims,
                    "false": group[0].false_claims,
                }
            out["model_kept_rate"] = kept / len(raw) if raw else None
    return out


def explanation_writer(explainer: str):
    """Chat messages -> text, from a served chat model (`http://HOST:PORT/v1`) or a local model (`smollm2-135m`, a folder)."""
    if explainer.startswith(("http://", "https://")):
        from agent.llm import ChatLLM

        chat = ChatLLM(explainer, timeout_s=60.0)
        return lambda messages: chat.reply(messages, max_tokens=60)
    from inference.explain import Explainer

    return Explainer(explainer, max_new_tokens=60).write


def plot_curves(data: Mapping[str, Mapping[str, list[float]]], path: Path) -> None:
    """Recall@K and NDCG@K against K, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in data.items():
        axes[0].plot(c["k"], c["recall"], marker=".", label=name)
        axes[1].plot(c["k"], c["ndcg"], marker=".", label=name)
    for ax, metric in zip(axes, ("Recall@K", "NDCG@K")):
        ax.set_xlabel("K")
        ax.set_ylabel(metric)
        ax.set_xticks(list(CURVE_KS)[::2] + [CURVE_KS[-1]])
        ax.grid(alpha=0.3)
    axes[1].legend()
    _save(fig, path)


def plot_buckets(data: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path) -> None:
    """NDCG@10 per item-popularity bucket (and cold start), grouped bars per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(data)
    buckets = list(next(iter(data.values())))
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(len(models), 1)
    for j, name in enumerate(models):
        ax.bar(
            np.arange(len(buckets)) + j * width,
            [data[name][b][f"ndcg@{COVERAGE_K}"] for b in buckets],
            width,
            label=name,
        )
    first = next(iter(data.values()))
    ax.set_xticks(np.arange(len(buckets)) + 0.4 - width / 2, [f"{b}\n({first[b]['users']} users)" for b in buckets])
    ax.set_xlabel("training interactions of the test item")
    ax.set_ylabel(f"NDCG@{COVERAGE_K}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_coverage_diversity(
    summaries: Mapping[str, Mapping[str, float]], div: Mapping[str, float | None], path: Path
) -> None:
    """Catalog coverage and intra-list diversity side by side, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summaries)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(models, [summaries[m].get("coverage", 0.0) for m in models], color="tab:blue")
    axes[0].set_ylabel(f"catalog coverage (top-{COVERAGE_K})")
    axes[1].bar(models, [div.get(m) or 0.0 for m in models], color="tab:green")
    axes[1].set_ylabel(f"intra-list diversity (top-{DIVERSITY_K})")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _fmt(value: Any, column: str = "") -> str:
    if column == "users_per_s" and value is not None:
        return f"{value:.1f}"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown(metrics: Mapping[str, Any], run: str) -> str:
    """The report text: headline table, slices, diversity, faithfulness, links to the plots."""
    models = metrics["models"]
    cols = [c for c in next(iter(models.values())) if not c.startswith("cold_")]
    lines = [
        f"# Evaluation of `{run}`",
        "",
        f"Leave-one-out, full ranking over {metrics['catalog_items']} items, {metrics['users']} test users; "
        "every ranking metric from `genrec.metrics`.",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    lines += [f"| {name} | " + " | ".join(_fmt(m.get(c), c) for c in cols) + " |" for name, m in models.items()]
    lines += [
        "",
        "## Recall and NDCG at K = 1..20",
        "",
        "![curves](curves.png)",
        "",
        f"## By item popularity (NDCG@{COVERAGE_K}; cold start = seen < {COLD_START_THRESHOLD} times in training)",
        "",
    ]
    buckets = metrics["popularity_buckets"]
    names = list(next(iter(buckets.values())))
    first = next(iter(buckets.values()))
    lines += [
        "| model | " + " | ".join(f"{b} ({first[b]['users']})" for b in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    lines += [
        f"| {m} | " + " | ".join(_fmt(buckets[m][b][f"ndcg@{COVERAGE_K}"]) for b in names) + " |" for m in buckets
    ]
    lines += [
        "",
        "![popularity](popularity.png)",
        "",
        "## Coverage and intra-list diversity",
        "",
        "| model | coverage | diversity |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {_fmt(models[m].get('coverage'))} | {_fmt(metrics['diversity'].get(m))} |" for m in models]
    lines += ["", "![coverage and diversity](coverage_diversity.png)", ""]
    faith = metrics.get("faithfulness")
    lines += ["## Explanation faithfulness", ""]
    if faith and faith.get("error"):
        lines.append(f"Not measured: {faith['error']}")
    elif faith:
        lines += [
            f"Source: {faith['source']}. Attribute precision = true attribute claims / claims; "
            "history share = explanations naming an item of the user's history.",
            "",
            "| model | explanations | claims | attribute precision | history share |",
            "|---|---|---|---|---|",
        ]
        for m, f in faith["models"].items():
            lines.append(
                f"| {m} | {f['explanations']} | {f['claims']} | {_fmt(f['attribute_precision'])} | {_fmt(f['history_share'])} |"
            )
        if faith.get("model_kept_rate") is not None:
            lines += [
                "",
                f"Model-written explanations kept after the grounding check: {faith['model_kept_rate']:.0%} "
                "(the rest were replaced by the catalog-facts template).",
            ]
        if faith.get("model_error"):
            lines += ["", f"Model-written explanations not measured: {faith['model_error']}"]
        for m, f in faith["models"].items():
            if f.get("example") and (m == "genrec" or "raw" in m):
                lines += ["", f'Example, {m} (item {f["example"]["item_id"]}): "{f["example"]["text"]}"']
    else:
        lines.append("No explanations could be generated (the run has no vector store; run `genrec index`).")
    return "\n".join(lines) + "\n"


def write_report(
    evaluation: RunEvaluation, with_faithfulness: bool = True, explainer: str | None = "smollm2-135m"
) -> Path:
    """Write `RUN/eval/report.md`, `RUN/eval/metrics.json` and the plots; returns the report path."""
    from eval.evaluate import save_results

    out = evaluation.paths.eval
    summaries = evaluation.summaries()
    div = diversity(evaluation)
    for name, value in div.items():
        summaries[name]["diversity"] = value
    metrics: dict[str, Any] = {
        "run": str(evaluation.paths.root),
        "catalog_items": len(evaluation.item_ids),
        "users": len(next(iter(evaluation.results.values())).users),
        "models": summaries,
        "curves": curves(evaluation),
        "popularity_buckets": popularity_buckets(evaluation),
        "diversity": div,
        "faithfulness": faithfulness(evaluation, explainer=explainer) if with_faithfulness else None,
    }
    plot_curves(metrics["curves"], out / "curves.png")
    plot_buckets(metrics["popularity_buckets"], out / "popularity.png")
    plot_coverage_diversity(summaries, div, out / "coverage_diversity.png")
    save_results(metrics, out / "metrics.json")
    report = out / "report.md"
    write_text(report, markdown(metrics, str(evaluation.paths.root)))
    return report
