"""Command-line entry points of `eval/`: `genrec eval offline|compare|chats` and `genrec experiment`
(registered in app/cli.py).

Heavy libraries (torch, transformers, chromadb, matplotlib) are imported inside the functions so
`genrec --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from genrec.errors import GenrecError

eval_app = typer.Typer(
    help="Evaluate on the leave-one-out split: `offline` (models x metrics, report), `compare` (runs, paired "
    "tests), `chats` (simulated conversations with the agent).",
    no_args_is_help=True,
)

MODELS_HELP = "Models, comma-separated: genrec, genrec-gen, sasrec, bsarec, popularity, itemknn, content (default: all available)."


@eval_app.command("offline")
def offline(
    run: Path = typer.Option(..., "--run", help="Run directory to evaluate (genrec index / genrec train output)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON to this file."),
    report: bool = typer.Option(
        False, "--report", help="Also write RUN/eval/report.md, RUN/eval/metrics.json and PNG plots."
    ),
    max_users: int | None = typer.Option(
        None, "--max-users", help="Evaluate a fixed seeded sample of this many test users."
    ),
    models: list[str] | None = typer.Option(None, "--models", help=MODELS_HELP),
    explainer: str = typer.Option(
        "smollm2-135m",
        "--explainer",
        help="With --report: the instruction model whose explanations are scored for faithfulness: a local model (smollm2-135m, a folder), a served chat model's URL, or none.",
    ),
    cold_items: float | None = typer.Option(
        None,
        "--cold-items",
        help="Hold this seeded fraction of items (e.g. 0.05) out of every training input, train a copy of the run "
        "without them (RUN-coldF-sS), add them with `genrec items add`, and score the cold and warm slices.",
    ),
    cold_seed: int = typer.Option(0, "--cold-seed", help="Seed of the held-out items (with --cold-items)."),
) -> None:
    """genrec (the served ranking), pure generation and the baselines on one leave-one-out split: a table,
    per-user ranks in RUN/eval/ranks.parquet, optionally JSON and a report with plots."""
    if cold_items is not None:
        from eval.cold import evaluate_cold, print_cold

        result = evaluate_cold(run, cold_items, cold_seed, max_users=max_users)
        print_cold(result)
        if json_out:
            _save(result, json_out)
        return
    evaluate_and_report(
        run,
        models=models,
        max_users=max_users,
        json_out=json_out,
        report=report,
        explainer=None if explainer.lower() == "none" else explainer,
    )


@eval_app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more evaluated runs: `genrec eval compare RUN_A RUN_B`."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the comparison as JSON to this file."),
    max_users: int | None = typer.Option(
        None, "--max-users", help="Compare on a fixed seeded sample of this many shared users."
    ),
    models: list[str] | None = typer.Option(None, "--models", help=MODELS_HELP),
) -> None:
    """Runs side by side on their shared test users, with a paired bootstrap and t-test of each run's
    NDCG@10 against the first."""
    from rich.console import Console

    from eval.compare import compare_runs, print_comparison

    if len(runs) < 2:
        raise GenrecError("genrec eval compare: give at least two runs")
    result = compare_runs(runs, models=models, max_users=max_users)
    print_comparison(result)
    if json_out:
        _save(result, json_out)
    Console(stderr=True).print(f"compared {len(runs)} runs on {result['users']} shared users")


@eval_app.command("chats")
def chats(
    run: Path = typer.Option(..., "--run", help="An indexed (and ideally trained) run."),
    conversations: int = typer.Option(50, "--conversations", "-n", help="How many simulated conversations."),
    turns: int = typer.Option(5, "--turns", help="Turns per conversation before giving up."),
    llm_url: str | None = typer.Option(
        None, "--llm-url", help="The run's served recommender (default: rank in process)."
    ),
    chat_url: str | None = typer.Option(
        None, "--chat-url", help="The served chat model (default: the run's, given --llm-url)."
    ),
    simulator: str = typer.Option(
        "template",
        "--simulator",
        help="template (default; speaks the rule planner's grammar), paraphrase (varied wordings) or llm (a chat model words the user).",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON to this file."),
) -> None:
    """Simulated users with a hidden target (their test item) chat with the agent: success@10, turns,
    grounding violations."""
    from rich.console import Console

    from eval.simulate import print_simulation, simulate_run

    result = simulate_run(run, conversations, max_turns=turns, llm_url=llm_url, chat_url=chat_url, simulator=simulator)
    print_simulation(result)
    if json_out:
        _save(result, json_out)
    Console(stderr=True).print(
        f"{conversations} simulated conversations: success@10 {result['success@10']:.3f}, "
        f"avg turns {result['avg_turns']:.2f}, grounding violations {result['grounding_violations']}"
    )


def evaluate_and_report(
    run: Path,
    models: list[str] | None = None,
    max_users: int | None = None,
    json_out: Path | None = None,
    report: bool = True,
    console=None,
    explainer: str | None = "smollm2-135m",
) -> dict:
    """Evaluate a run's models on the test split, print the table, save ranks (and JSON/report); return the summaries."""
    from rich.console import Console

    from eval.evaluate import print_results
    from eval.run_eval import evaluate_run, save_ranks

    console = console or Console(stderr=True)
    evaluation = evaluate_run(run, models=models, max_users=max_users)
    results = evaluation.summaries()
    print_results(results, title=f"offline evaluation of {run}")
    save_ranks(evaluation)
    if json_out:
        _save(results, json_out)
    if report:
        from eval.report import write_report

        path = write_report(evaluation, explainer=explainer)
        console.print(f"report: {path}")
    best = max(results, key=lambda m: results[m].get("ndcg@10", 0.0))
    users = int(next(iter(results.values()))["users"])
    console.print(
        f"evaluated {len(results)} models on {users} users; best NDCG@10: {best} "
        f"({results[best].get('ndcg@10', 0.0):.4f})"
    )
    return results


def experiment(
    file: Path = typer.Argument(..., help="Experiment YAML (see experiments/example.yaml)."),
    force: bool = typer.Option(False, "--force", help="Recompute every cell, ignoring cached results."),
) -> None:
    """Run a grid of prompt templates x decoding settings x models on a fixed user sample; cached per cell."""
    from rich.console import Console

    from eval.experiment import load_experiment, run_experiment

    spec = load_experiment(file)  # everything is validated before any computation
    result = run_experiment(spec, force=force)
    Console(stderr=True).print(
        f"{len(result.rows)} cells ({result.computed} computed, {result.cached} cached, {result.failed} failed): "
        f"{result.table_md}"
    )
    if result.failed:
        raise GenrecError(
            f"{file}: {result.failed} cell(s) failed ({result.first_error}); finished cells are saved in {result.out}"
        )


def _save(obj, path: Path) -> None:
    from eval.evaluate import save_results

    save_results(obj, path)
