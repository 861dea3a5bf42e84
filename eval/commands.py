"""Command-line entry points of `eval/`: `genrec eval` and `genrec experiment` (registered in app/cli.py).

Heavy libraries (torch, transformers, chromadb, matplotlib) are imported inside the functions so
`genrec --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genrec.errors import GenrecError


def eval_command(
    run: Optional[Path] = typer.Option(None, "--run", help="Run directory to evaluate (genrec index / genrec train output)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON to this file."),
    report: bool = typer.Option(False, "--report", help="Also write RUN/eval/report.md, RUN/eval/metrics.json and PNG plots."),
    compare: Optional[list[Path]] = typer.Option(None, "--compare", help="Compare evaluated runs side by side (repeat: --compare A --compare B)."),
    conversations: int = typer.Option(0, "--conversations", help="Simulate this many agent conversations instead of offline ranking."),
    max_users: Optional[int] = typer.Option(None, "--max-users", help="Evaluate a fixed seeded sample of this many test users."),
    models: Optional[list[str]] = typer.Option(None, "--models", help="Models to evaluate, comma-separated: genrec, sasrec, popularity, itemknn, content (default: all available)."),
    turns: int = typer.Option(5, "--turns", help="With --conversations: turns per conversation before giving up."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url", help="With --conversations: the run's served recommender (default: a retrieval-only agent)."),
    chat_url: Optional[str] = typer.Option(None, "--chat-url", help="With --conversations: the served chat model (default: the run's, given --llm-url)."),
    simulator: str = typer.Option("template", "--simulator", help="With --conversations: template (default; speaks the rule planner's grammar), paraphrase (varied wordings) or llm (a chat model words the user)."),
    explainer: str = typer.Option("smollm2-135m", "--explainer", help="With --report: the instruction model whose explanations are scored for faithfulness: a local model (smollm2-135m, a folder), a served chat model's URL, or none."),
    more_runs: Optional[list[Path]] = typer.Argument(None, metavar="[RUNS]...", help="More runs for --compare: `genrec eval --compare RUN_A RUN_B RUN_C`."),
) -> None:
    """Offline evaluation of a run: genrec and the baselines on one leave-one-out split (a table, JSON,
    optionally a report), a comparison of runs with paired significance tests, or simulated chats."""
    from rich.console import Console

    console = Console(stderr=True)
    if more_runs and not compare:
        raise GenrecError(f"genrec eval: unexpected argument {more_runs[0]}; runs are given with --run DIR or --compare RUN_A RUN_B")
    if compare:
        from eval.compare import compare_runs, print_comparison

        runs = ([run] if run else []) + list(compare) + list(more_runs or [])
        result = compare_runs(runs, models=models, max_users=max_users)
        print_comparison(result)
        if json_out:
            _save(result, json_out)
        console.print(f"compared {len(runs)} runs on {result['users']} shared users")
        return
    if run is None:
        raise GenrecError("genrec eval: --run DIR is required (or --compare RUN_A --compare RUN_B)")
    if conversations:
        from eval.simulate import print_simulation, simulate_run

        result = simulate_run(run, conversations, max_turns=turns, llm_url=llm_url, chat_url=chat_url, simulator=simulator)
        print_simulation(result)
        if json_out:
            _save(result, json_out)
        console.print(f"{conversations} simulated conversations: success@10 {result['success@10']:.3f}, "
                      f"avg turns {result['avg_turns']:.2f}, grounding violations {result['grounding_violations']}")
        return

    evaluate_and_report(run, models=models, max_users=max_users, json_out=json_out, report=report, console=console,
                        explainer=None if explainer.lower() == "none" else explainer)


def evaluate_and_report(run: Path, models: Optional[list[str]] = None, max_users: Optional[int] = None,
                        json_out: Optional[Path] = None, report: bool = True, console=None,
                        explainer: Optional[str] = "smollm2-135m") -> dict:
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
    console.print(f"evaluated {len(results)} models on {users} users; best NDCG@10: {best} "
                  f"({results[best].get('ndcg@10', 0.0):.4f})")
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
        raise GenrecError(f"{file}: {result.failed} cell(s) failed ({result.first_error}); finished cells are saved in {result.out}")


def _save(obj, path: Path) -> None:
    from eval.evaluate import save_results

    save_results(obj, path)
