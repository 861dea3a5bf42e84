"""Resumable training state: `RUN/checkpoints/STAGE/` (pretrain, lora, dense), written by rank 0.

The exported model (`RUN/model/`, the best epoch so far) is what serving uses; this is what a run
that stopped (Ctrl-C, a dead process, a lost machine) needs to go on where it was: the trainable
weights, the optimizer and schedule, the batch order's random state, how far the epoch got, and the
stage's own record (losses, validation scores, the best pre-training weights). It is written at
the end of every epoch and, with `train.checkpoint_steps`, every N steps, atomically (an
interrupted write keeps the previous one), and removed when its stage finishes. A checkpoint
whose settings or data differ from the run's (its fingerprint) is never resumed: the stage starts
fresh, says so in one line, and its next save replaces it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from finetune.distributed import Processes
from genrec.atomic import atomic_dir, write_json

STATE_FILE = "state.pt"
META_FILE = "checkpoint.json"
ENGINE_DIR = "accelerate"  # FSDP / DeepSpeed: model and optimizer shards as accelerate saves them
# 2: one loop for every stage (`finetune.loop`), its record in `progress`; 1 (unmarked): a record per stage
FORMAT = 2


@dataclass
class EpochPosition:
    """How far an epoch got: optimizer steps done and this process's running sums, to resume it."""

    step: int = 0
    loss_sum: float = 0.0  # loss x target tokens
    target_tokens: int = 0
    examples: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0


def fingerprint_of(settings: Any, data_hash: str) -> str:
    """The fingerprint a checkpoint carries: a hash of the JSON-able settings that shape what a stage
    computes and of the data it sees. A checkpoint resumes only a run with the same fingerprint."""
    return hashlib.sha256(json.dumps([settings, data_hash], sort_keys=True).encode()).hexdigest()


@dataclass
class Resumed:
    """Where a checkpoint left its stage."""

    epoch: int  # epochs finished
    position: EpochPosition | None  # how far the next epoch got (None: it had not begun)
    rng_state: Any  # the batch-order generator's state at the start of that epoch
    progress: Any  # the stage's record (`finetune.loop.Record`)


class Checkpoints:
    """Save and resume one training stage in `folder` (every process calls; rank 0 writes)."""

    def __init__(self, folder: Path, fingerprint: str, processes: Processes, every_steps: int | None = None):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.processes = processes
        self.every_steps = every_steps

    def describe(self) -> str:
        """Where the last checkpoint left off, for messages ("" when there is none)."""
        return describe_checkpoint(self.folder)

    def load(self, model, optimizer, scheduler=None) -> Resumed | None:
        """Restore the saved state into the (prepared) model, optimizer and schedule; None when there is
        no checkpoint of these settings and data."""
        meta_path = self.folder / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        why = None
        if meta.get("format", 1) != FORMAT:
            why = f"written by an earlier genrec (checkpoint format {meta.get('format', 1)}, now {FORMAT})"
        elif meta.get("fingerprint") != self.fingerprint:
            why = (
                f"made with other settings or data (fingerprint {str(meta.get('fingerprint'))[:12]}, "
                f"now {self.fingerprint[:12]})"
            )
        if why is not None:
            if self.processes.main:
                print(
                    f"{describe_checkpoint(self.folder)}: {why}; not resumed, this stage starts fresh", file=sys.stderr
                )
            return None
        state = torch.load(self.folder / STATE_FILE, map_location="cpu", weights_only=False)
        if self.processes.sharded:
            self.processes.accelerator.load_state(str(self.folder / ENGINE_DIR))
        else:
            own = self.processes.unwrap(model)
            missing = set(state["weights"]) - {name for name, _ in own.named_parameters()}
            if missing:
                return None
            own.load_state_dict(state["weights"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        position = EpochPosition(**state["position"]) if state["position"] else None
        if (
            position is not None and not self.processes.main
        ):  # the sums saved are over every process: rank 0 carries them
            position = EpochPosition(step=position.step, seconds=position.seconds)
        return Resumed(meta["epoch"], position, state["rng_state"], state["progress"])

    def save(
        self,
        model,
        optimizer,
        scheduler,
        epoch: int,
        position: EpochPosition | None,
        rng_state: Any,
        progress: Any,
        stage: str,
    ) -> None:
        """Write the state after `epoch` epochs (and `position.step` steps of the next one)."""
        processes = self.processes
        if position is not None:  # an epoch's running sums over every process
            sums = processes.sum([position.loss_sum, position.target_tokens, position.examples, position.padded_tokens])
            position = EpochPosition(position.step, sums[0], int(sums[1]), int(sums[2]), int(sums[3]), position.seconds)
        if processes.sharded:  # every process writes its shards; rank 0 the rest below
            staging = self.folder.with_name(f".{self.folder.name}.engine")
            processes.accelerator.save_state(str(staging))
        if not processes.main:
            processes.wait()
            return
        own = processes.unwrap(model)
        state = {
            "weights": {}
            if processes.sharded
            else {name: p.detach().cpu().clone() for name, p in own.named_parameters() if p.requires_grad},
            "optimizer": {} if processes.sharded else optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "rng_state": rng_state,
            "position": asdict(position) if position is not None else None,
            "progress": progress,
        }
        with atomic_dir(self.folder) as tmp:
            torch.save(state, tmp / STATE_FILE)
            if processes.sharded:
                staging.rename(tmp / ENGINE_DIR)
            write_json(
                tmp / META_FILE,
                {
                    "stage": stage,
                    "format": FORMAT,
                    "epoch": epoch,
                    "step": position.step if position else 0,
                    "fingerprint": self.fingerprint,
                    "saved_at": time.time(),
                    "processes": processes.world,
                },
            )
        processes.wait()

    def clear(self) -> None:
        """Remove the checkpoint once its stage has finished (rank 0)."""
        if self.processes.main and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        self.processes.wait()


def describe_checkpoint(folder: Path) -> str:
    """`FOLDER (STAGE: epoch E done[, step S of epoch E+1])`, or "" when `folder` holds no checkpoint."""
    try:
        meta = json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    done = f"epoch {meta['epoch']} done" + (
        f", step {meta['step']} of epoch {meta['epoch'] + 1}" if meta.get("step") else ""
    )
    return f"{folder} ({meta['stage']}: {done})"
