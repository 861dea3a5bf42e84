"""`genrec train` and `genrec recommend`: typer-annotated functions registered by `app/cli.py`.

Heavy libraries are imported inside the bodies so `genrec --help` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer


def _quiet_threads() -> None:
    # On a shared CPU, OpenMP threads that spin while waiting for a core cost several times what
    # they gain (measured 3x slower training); passive waiting must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train(
    run: Path = typer.Option(..., "--run", help="Run directory made by `genrec index`."),
    base: Optional[str] = typer.Option(
        None, "--base", help="'scratch', 'smollm2-135m', or a Hugging Face causal-LM folder (default: train.base)."
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="LoRA epochs (default: train.epochs)."),
    pretrain_epochs: Optional[int] = typer.Option(
        None, "--pretrain-epochs", help="Pre-training epochs of a scratch model (default: train.pretrain_epochs)."
    ),
) -> None:
    """Fine-tune the generative recommender (LoRA; a scratch base is pre-trained first) and save the best checkpoint to RUN/model."""
    _quiet_threads()
    from finetune.train import train as run_training

    run_training(run, base=base, epochs=epochs, pretrain_epochs=pretrain_epochs)


def recommend(
    run: Path = typer.Option(..., "--run", help="Run directory with a trained model (`genrec train`)."),
    user: str = typer.Option(..., "--user", help="User id, as in the run's interactions."),
    k: int = typer.Option(10, "-k", "--k", help="How many items."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    explain: bool = typer.Option(False, "--explain", help="Add an explanation per item (instruction-tuned model)."),
    where: Optional[str] = typer.Option(None, "--where", help='Metadata filter as JSON, e.g. \'{"genres": "Comedy"}\'.'),
) -> None:
    """Top-K items for a user: beam search constrained to valid semantic IDs, history excluded."""
    _quiet_threads()
    from rich.console import Console
    from rich.table import Table

    from transformers.utils import logging as hf_logging

    from finetune.recommend import RunRecommender
    from genrec.errors import GenrecError

    hf_logging.disable_progress_bar()  # keep the terminal (and --json output) to the answer

    try:
        filters = json.loads(where) if where else None
    except json.JSONDecodeError as exc:
        raise GenrecError(f"--where: not valid JSON ({exc.msg})") from None
    recs = RunRecommender(run).recommend(user, k, where=filters, explain=explain)
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in recs], ensure_ascii=False))
        return
    table = Table(title=f"top {k} for user {user}")
    table.add_column("#", justify="right")
    table.add_column("item_id")
    table.add_column("title")
    table.add_column("score", justify="right")
    if explain:
        table.add_column("why")
    for rank, r in enumerate(recs, 1):
        table.add_row(str(rank), r.item_id, r.title, f"{r.score:.3f}", *([r.explanation or ""] if explain else []))
    Console().print(table)
