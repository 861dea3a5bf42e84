"""`genrec train`: a typer-annotated function registered by `app/cli.py`.

Heavy libraries are imported inside the bodies so `genrec --help` stays fast.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer


def _quiet_threads() -> None:
    # On a shared CPU, OpenMP threads that spin while waiting for a core cost several times what
    # they gain; passive waiting must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train(
    run: Path = typer.Option(..., "--run", help="Run directory made by `genrec index`."),
    base: str | None = typer.Option(
        None, "--base", help="'scratch', 'smollm2-135m', or a Hugging Face causal-LM folder (default: train.base)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="LoRA epochs (default: train.epochs)."),
    pretrain_epochs: int | None = typer.Option(
        None, "--pretrain-epochs", help="Pre-training epochs of a scratch model (default: train.pretrain_epochs)."
    ),
    dense_only: bool = typer.Option(
        False,
        "--dense-only",
        help="Keep RUN/model; train only the dense model (kept if its settings and data are unchanged, unless "
        "--no-resume) and choose the fusion (RUN/dense, RUN/ranking.json).",
    ),
    processes: int | None = typer.Option(
        None,
        "--processes",
        min=1,
        help="Training processes on this machine, each on its share of every batch (default: train.distributed.processes, 1).",
    ),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Go on where an interrupted run stopped: from its last checkpoint (RUN/checkpoints), keeping a stage "
        "(LoRA, the dense model) that finished with the same settings and data; --no-resume trains them again.",
    ),
) -> None:
    """Train the served ranking: the generative recommender (LoRA; a scratch base is pre-trained first,
    best checkpoint in RUN/model), then the dense model (RUN/dense) and their fusion, chosen on validation (RUN/ranking.json).

    With --processes N (or under torchrun / accelerate launch) the generative model trains in N processes
    (DDP: GPUs when present, else CPU processes over gloo); the dense model and the fusion train in rank 0."""
    _quiet_threads()
    from finetune.launch import launch_training, launched
    from finetune.train import train as run_training
    from finetune.train import train_ranking
    from genrec.run import open_run

    if dense_only:
        train_ranking(run, resume=resume)
        return
    paths, config = open_run(run)
    wanted = processes if processes is not None else config.train.distributed.processes
    if wanted > 1 and not launched():
        from finetune.batches import check_world
        from finetune.distributed import check_settings
        from genrec.device import resolve_device

        # here, before N processes start, to fail in one line at once
        cuda = resolve_device(config.train.device, "train.device").type == "cuda"
        check_settings(config.train.distributed, wanted, cuda)
        check_world(config.train, config.train.tokens_per_batch, wanted)
        if not resume:
            shutil.rmtree(paths.checkpoints, ignore_errors=True)  # restarted processes must resume, so not passed on
        args = ["--run", str(run)]
        for flag, value in (("--base", base), ("--epochs", epochs), ("--pretrain-epochs", pretrain_epochs)):
            if value is not None:
                args += [flag, str(value)]
        launch_training(paths.root, wanted, args, config.train.distributed.max_restarts)
        return
    run_training(run, base=base, epochs=epochs, pretrain_epochs=pretrain_epochs, resume=resume)
