"""`genrec train --processes N`: N training processes on this machine, started by torch's elastic
launcher (the engine behind `torchrun`), each running `python -m app train ...` as one rank.

A process that fails says why in one line: a genrec error is written by the process to a file the
launcher reads (instead of N copies on the terminal); a process that dies (killed, out of memory)
is named with its exit, and the last checkpoint, which stays usable, with the command that resumes
from it. `train.distributed.max_restarts` lets the launcher restart every process after a death;
each resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from genrec.errors import GenrecError

ERROR_DIR_ENV = "GENREC_ERROR_DIR"  # where a launched process writes its one-line error (rank<N>.txt)


def launched() -> bool:
    """True inside a process that a launcher started as one of several (torchrun, accelerate launch, genrec)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def report_error(message: str) -> bool:
    """In a process `launch_training` started, leave `message` for the launcher to print once; True if so."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder or not launched():
        return False
    Path(folder, f"rank{os.environ.get('RANK', '0')}.txt").write_text(message, encoding="utf-8")
    return True


def last_checkpoint(run: Path) -> str:
    """Where the interrupted run's checkpoint left off, for the error message."""
    from finetune.checkpoint import describe_checkpoint

    for stage in ("dense", "lora", "pretrain"):
        found = describe_checkpoint(run / "checkpoints" / stage)
        if found:
            return found
    if (run / "model" / "genrec.json").exists():
        return f"{run / 'model'} (the best model exported so far; no training checkpoint yet)"
    return "none yet"


def launch_training(run: Path, processes: int, args: list[str], max_restarts: int = 0) -> None:
    """Run `genrec train ARGS` in `processes` processes on this machine; return when all have finished."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # each process gets its share of the cores (torch would start one thread per core in each)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    errors = Path(tempfile.mkdtemp(prefix="genrec-train-errors-"))
    os.environ[ERROR_DIR_ENV] = str(errors)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"genrec-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # as `torchrun --standalone`: a free port
        max_restarts=max_restarts,
        monitor_interval=1.0,
        start_method="spawn",
    )
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report is ours to give
    try:
        elastic_launch(config, sys.executable)("-m", "app", "train", *args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        said = sorted(errors.glob("rank*.txt"))
        if said:
            raise GenrecError(said[0].read_text(encoding="utf-8")) from None
        how = (
            f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
        )
        raise GenrecError(
            f"training process {rank} of {processes} (--processes) {how}; last checkpoint: {last_checkpoint(run)}; "
            f"run the same command to resume (train.distributed.max_restarts restarts by itself)"
        ) from None
    finally:
        os.environ.pop(ERROR_DIR_ENV, None)
        shutil.rmtree(errors, ignore_errors=True)
