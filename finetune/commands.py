"""`genrec train`: a typer-annotated function registered by `app/cli.py`.

Heavy libraries are imported inside the bodies so `genrec --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def _quiet_threads() -> None:
    # On a shared CPU, OpenMP threads that spin while waiting for a core cost several times what
    # they gain; passive waiting must be set before torch loads.
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
    dense_only: bool = typer.Option(
        False, "--dense-only", help="Keep RUN/model; train only the dense model and choose the fusion (RUN/dense, RUN/ranking.json)."
    ),
) -> None:
    """Train the served ranking: the generative recommender (LoRA; a scratch base is pre-trained first,
    best checkpoint in RUN/model), then the dense model (RUN/dense) and their fusion, chosen on validation (RUN/ranking.json)."""
    _quiet_threads()
    from finetune.train import train as run_training
    from finetune.train import train_ranking

    if dense_only:
        train_ranking(run)
    else:
        run_training(run, base=base, epochs=epochs, pretrain_epochs=pretrain_epochs)
