"""`genrec demo`: the whole pipeline on the bundled MovieLens-100K, from raw files to a chat.

index -> sample search -> train -> evaluate against baselines -> a scripted three-turn chat.
Stages whose artefacts already exist in the run directory are reused, so a second run is quick;
delete the run directory (or pass --fresh) to redo everything.

The demo trains a shorter schedule than the defaults (`demo_schedule`), so that a newcomer sees the
whole pipeline in about half an hour on two CPU cores; it says so when it starts, and `--full`
trains the default schedule that the benchmarks use.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from genrec.config import RunConfig

SAMPLE_QUERY = "science fiction adventure in space"  # ML-100K items carry titles, genres and years only
WARMING = "it warms up while the next stages run; the chat waits for it"


def demo_schedule(config: RunConfig) -> str:
    """Shorten `config`'s training to the demo's schedule (in place); return a one-line description.

    Pre-training and LoRA run a fixed, short count of epochs (the defaults early-stop on validation
    within up to 8 + 3), validation scores fewer users, and the dense model gets a shorter clock:
    the generative model is then weaker than a full run's, and the fusion chosen on validation
    leans on the dense model accordingly."""
    t, dense = config.train, config.dense
    t.pretrain_epochs, t.pretrain_val_start, t.epochs, t.val_users = 3, 3, 1, 500
    dense.sasrec.max_minutes = dense.bsarec.max_minutes = 4.0
    return (
        f"demo schedule: {t.pretrain_epochs} pre-training epochs and {t.epochs} LoRA epoch, validation on "
        f"{t.val_users} users, dense model capped at {dense.sasrec.max_minutes:g} min (the defaults, which "
        "`genrec demo --full` and the benchmarks train, early-stop within up to 8 + 3 epochs)"
    )


@dataclass
class StageClock:
    """Wall seconds per demo stage, so a newcomer (and bench/demo.py) sees where the time went."""

    started: float = field(default_factory=time.monotonic)
    stages: dict[str, float] = field(default_factory=dict)
    _current: str | None = None
    _since: float = 0.0

    def stage(self, name: str) -> None:
        """End the running stage (if any) and start `name`."""
        now = time.monotonic()
        if self._current is not None:
            self.stages[self._current] = self.stages.get(self._current, 0.0) + now - self._since
        self._current, self._since = name, now

    def total(self) -> float:
        """Seconds since the clock started."""
        return time.monotonic() - self.started

    def summary(self) -> str:
        """ "index 0.8 min, train 15.2 min, ..." for the stages that took at least a second."""
        return ", ".join(f"{k} {v / 60:.1f} min" for k, v in self.stages.items() if v >= 1.0)

    def save(self, path: Path) -> None:
        """Write the stage seconds and the total as JSON."""
        from genrec.atomic import write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(
            path, {"total_s": round(self.total(), 1), "stages_s": {k: round(v, 1) for k, v in self.stages.items()}}
        )


def demo(
    run: Path = typer.Option(Path("runs/demo"), "--run", help="Run directory for the demo's artefacts."),
    dataset: str = typer.Option(
        "ml-100k", "--dataset", help="Dataset to run on (default: the bundled MovieLens-100K)."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the run directory first and redo every stage."),
    max_users: int | None = typer.Option(
        None, "--max-users", help="Evaluate a seeded sample of this many users (default: all)."
    ),
    chat_with_model: bool = typer.Option(
        True, "--llm/--no-llm", help="Serve the trained model with vLLM for the chat."
    ),
    full: bool = typer.Option(False, "--full", help="Train the default schedule instead of the demo's shorter one."),
) -> None:
    """Run the whole pipeline on the bundled dataset: index, search, train, evaluate, chat."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console

    from genrec.run import RunPaths

    console = Console()
    paths = RunPaths(run)
    if fresh and run.exists():
        shutil.rmtree(run)
    clock = StageClock()
    with ExitStack() as servers:
        _pipeline(run, dataset, full, max_users, chat_with_model, console, paths, servers, clock)
    clock.stage("done")  # ends "stop servers"
    clock.save(paths.root / "logs" / "demo_stages.json")
    console.print(f"[bold]demo finished in {clock.total() / 60:.1f} min[/] ({clock.summary()})")
    console.print(
        f"\nNext: [bold]genrec chat --run {run}[/] (terminal), [bold]genrec ui --run {run}[/] (web page), "
        f"[bold]genrec api --run {run}[/] (HTTP), [bold]genrec eval offline --run {run} --report[/] (full report, "
        "with the check of model-written explanations)."
    )


def _search(run: Path, console: Any) -> None:
    """The store's top 5 for the sample query, as a table."""
    from rich.table import Table

    from retrieval.search import Searcher

    console.print(f"query: [italic]{SAMPLE_QUERY}[/]")
    table = Table("rank", "item_id", "title", "score")
    for rank, hit in enumerate(Searcher.open(run).search(SAMPLE_QUERY, k=5), 1):
        table.add_row(str(rank), hit.item_id, hit.title, f"{hit.score:.3f}")
    console.print(table)


def _pipeline(
    run: Path,
    dataset: str,
    full: bool,
    max_users: int | None,
    chat_with_model: bool,
    console: Any,
    paths: Any,
    servers: ExitStack,
    clock: StageClock,
) -> None:
    """The demo's five stages. Model servers start as soon as what they serve exists (the chat model
    before training, the recommender before evaluation) and compile while the CPU-bound stages run,
    so the chat does not wait for them; `servers` stops them at the end."""
    from agent.commands import DEFAULT_LLM_URL, model_server, resolve_chat_url
    from genrec.errors import GenrecError

    clock.stage("index")
    console.rule("[bold]1/5 index: load, encode, Chroma, semantic IDs")
    if (paths.root / "index.stats.json").exists():  # written last by `genrec index`
        console.print(f"{run} is already indexed; reusing it (pass --fresh to redo)")
    else:
        from retrieval.index import build_index

        config = RunConfig(name=run.name)
        config.data.dataset = dataset
        if not full:
            console.print(f"[yellow]{demo_schedule(config)}")
        build_index(run, config, console)

    url = DEFAULT_LLM_URL if chat_with_model else None
    talk = resolve_chat_url(run, url, None)
    early = servers.enter_context(  # a separate chat model needs nothing trained: it compiles during training
        model_server(run, url, True, console, chat_url=talk, recommender=False, meanwhile=WARMING)
    )

    clock.stage("search")
    console.rule("[bold]2/5 search the Chroma store")
    _search(run, console)

    clock.stage("train")
    console.rule("[bold]3/5 train the generative recommender (semantic-ID LM + LoRA)")
    from finetune.train import train

    if (paths.model / "adapter").exists():
        console.print(f"{paths.model} already holds a trained model; reusing it")
    else:
        train(run)
    early = [*early, *servers.enter_context(model_server(run, url, True, console, meanwhile=WARMING))]

    clock.stage("evaluate")
    console.rule("[bold]4/5 evaluate against baselines (leave-one-out, full ranking)")
    from eval.commands import evaluate_and_report

    # the report's check of model-written explanations (SmolLM2 writing 50 of them in process, the
    # slowest part of the report on a CPU) is left to `genrec eval offline --report`
    evaluate_and_report(run, max_users=max_users, console=console, explainer=None)

    console.rule("[bold]5/5 chat with the agent")
    from agent.chat_terminal import demo_conversation
    from agent.commands import open_agent

    clock.stage("wait for servers")
    for server in early:  # started above; a server that failed is started again below
        try:
            server.wait_healthy()
        except GenrecError:
            pass
    with model_server(run, url, True, console, wait=True, chat_url=talk):
        clock.stage("chat")
        with open_agent(run, url, 60.0, talk) as agent:
            demo_conversation(agent)
    clock.stage("stop servers")
