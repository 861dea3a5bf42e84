"""The one training loop: pre-training, LoRA fine-tuning and the dense models run their epochs here.

    loop = Loop("pre-training", epochs, one_epoch, Trainee(model, optimizer, scheduler, rng),
                validate=score, patience=2, budget=Budget(minutes=60), checkpoints=checkpoints)
    record = loop.run()

A stage brings what is its own: how to train one epoch (`one_epoch(epoch, start, spent, on_step)`,
returning `EpochStats`) and how to score a model (`validate(model)`: validation NDCG@10 on a fixed,
seeded sample of users or all of them). The loop does the rest, the same way for every stage:

- resume: the last checkpoint of these settings and data (`finetune.checkpoint`) restores the
  weights, optimizer, schedule and batch order, and the epoch goes on where it was;
- validation after the epochs `due(epoch)` names, the last epoch, and an epoch the budget cut;
- the best validated epoch: kept in memory and restored at the end, or handed to `keep_best`
  (LoRA exports it to `RUN/model/` as it goes);
- early stopping after `patience` validations in a row without a gain;
- the budget (`finetune.stages.Budget`: wall minutes, training and validation, and/or tokens),
  checked after every epoch and, by epochs that can, after every step; a run resumed under a
  larger budget goes on;
- a checkpoint after every epoch (and every `checkpoints.every_steps` steps), and one line an epoch.

Several processes (`genrec train --processes N`) run the loop together: each epoch function trains
on its share of every batch, rank 0 validates and writes, the others follow what it decided.
Hugging Face's `Trainer` was not used: its checkpoints, data loaders and evaluation would replace the
fingerprinted checkpoints, length-grouped batches shared across processes, and generation-based
validation this loop keeps in a screenful; accelerate (under `Processes`) already runs the processes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from finetune.checkpoint import Checkpoints, EpochPosition
from finetune.distributed import Processes
from finetune.stages import Budget, timed_validation

Spent = tuple[float, int]  # seconds (training and validation) and tokens a stage has taken
StepHook = Callable[[EpochPosition, int], None]


@dataclass
class EpochStats:
    """What one pass over the data did (summed over the processes)."""

    loss: float
    examples: int
    tokens: int  # padded tokens (language models) or targets (dense models): what a token budget counts
    seconds: float
    stopped_by: str | None = None  # the stage's budget ended the epoch early ("max_minutes", "max_tokens")


@dataclass
class Trainee:
    """What a checkpoint saves and restores: the (prepared) model, its optimizer and schedule, and the
    generator of the batch order (`random.Random` or numpy's)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    rng: random.Random | np.random.Generator | None = None

    def rng_state(self) -> Any:
        if isinstance(self.rng, np.random.Generator):
            return self.rng.bit_generator.state
        return self.rng.getstate() if self.rng is not None else None

    def set_rng_state(self, state: Any) -> None:
        if isinstance(self.rng, np.random.Generator):
            self.rng.bit_generator.state = state
        elif self.rng is not None:
            self.rng.setstate(state)


@dataclass
class Record:
    """A stage's epochs so far and its best validated one: what a checkpoint carries and the loop returns."""

    history: list[dict] = field(default_factory=list)  # one record an epoch (epoch 0: the model before training)
    best_epoch: int = 0
    best_score: float = -1.0
    since_best: int = 0  # validations in a row without a gain
    best_weights: dict | None = None  # kept in memory when the stage has no `keep_best`
    stopped_by: str = "epochs"  # patience, max_minutes, max_tokens, or epochs (its upper bound)

    @property
    def epochs(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    @property
    def validated(self) -> bool:
        return any("valid_ndcg@10" in h for h in self.history)

    def spent(self) -> Spent:
        return (
            sum(h["seconds"] + h.get("valid_seconds", 0.0) for h in self.history),
            sum(h.get("tokens", 0) for h in self.history),
        )

    def sums(self, key: str) -> float:
        return sum(h.get(key) or 0 for h in self.history)


@dataclass
class Loop:
    """Epochs 1..`epochs` of one stage (see the module docstring)."""

    name: str  # what messages call the stage: "pre-training", "LoRA fine-tuning", a dense network's name
    epochs: int  # upper bound
    one_epoch: Callable[[int, EpochPosition | None, Spent, StepHook | None], EpochStats]
    trainee: Trainee
    validate: Callable[[torch.nn.Module], float] | None = None  # rank 0, on the whole model
    users: int = 0  # validation users a pass scores (recorded with it)
    due: Callable[[int], bool] = lambda epoch: True  # epochs validated (besides the last and a cut one)
    patience: int | None = None  # validations without a gain before stopping (None: never)
    budget: Budget = field(default_factory=Budget)
    keep_best: Callable[[dict, torch.nn.Module | None], None] | None = None  # None: best weights kept in memory
    score_start: bool = False  # also score the model before training (epoch 0), unless `known_start`
    known_start: float | None = None
    checkpoints: Checkpoints | None = None
    stage: str = ""  # the checkpoint's stage name (pretrain, lora, dense)
    processes: Processes = field(default_factory=Processes)
    say: Callable[[str], Any] = print
    progress: bool = True  # a line after every epoch (resuming and stopping are always said)

    def run(self) -> Record:
        """Train, validate, stop early or on the budget; the model ends with its best validated weights
        (when they are kept in memory) and the record says what happened."""
        record, position = self.resume()
        stop = self.stopped(record)
        epoch = record.epochs
        while stop is None and epoch < self.epochs:
            epoch += 1
            start_state, spent = self.trainee.rng_state(), record.spent()
            stats = self.one_epoch(epoch, position, spent, self.step_saver(epoch, start_state, record))
            position = None
            entry = {
                "epoch": epoch,
                "loss": stats.loss,
                "examples": stats.examples,
                "tokens": stats.tokens,
                "seconds": stats.seconds,
                "tokens_per_s": stats.tokens / stats.seconds if stats.seconds else 0.0,
            }
            cut = stats.stopped_by or self.decide(
                lambda: self.budget.reason(spent[0] + stats.seconds, spent[1] + stats.tokens)  # noqa: B023
            )
            if cut is not None:
                entry["stopped_by"] = cut
            if self.validate is not None and (self.due(epoch) or epoch == self.epochs or cut is not None):
                self.score(record, entry)
            else:
                record.history.append(entry)
            self.save(record, epoch, None, self.trainee.rng_state())
            if self.progress:
                self.say(self.line(entry, record))
            stop = self.stopped(record) or cut
        record.stopped_by = stop or "epochs"
        if stop is not None:
            self.say(self.why(stop, record))
        return self.finish(record)

    def resume(self) -> tuple[Record, EpochPosition | None]:
        """The record of the last checkpoint of these settings and data (its state restored), else a
        fresh one (with epoch 0 scored when asked for)."""
        t = self.trainee
        resumed = self.checkpoints.load(t.model, t.optimizer, t.scheduler) if self.checkpoints is not None else None
        if resumed is not None:
            t.set_rng_state(resumed.rng_state)
            self.say(f"resuming {self.name} from {self.checkpoints.describe()}")
            return Record(**resumed.progress), resumed.position
        record = Record()
        if self.score_start:
            entry = {"epoch": 0, "loss": None, "examples": 0, "tokens": 0, "seconds": 0.0}
            self.score(record, entry, self.known_start)
            if self.progress:
                self.say(self.line(entry, record))
        return record, None

    def score(self, record: Record, entry: dict, known: float | None = None) -> None:
        """Validate the model (rank 0) and add `entry` with its score to the record; a new best is kept."""
        t = self.trainee
        full = self.processes.full_model(t.model)  # (every process: FSDP / DeepSpeed gather the weights here)
        if known is not None:
            scored = timed_validation(lambda: known, self.users)
        else:
            scored = self.decide(lambda: timed_validation(lambda: self.validate(full), self.users))
        entry |= scored
        record.history.append(entry)
        t.model.train()
        if scored["valid_ndcg@10"] <= record.best_score:
            record.since_best += 1
            return
        record.best_epoch, record.best_score, record.since_best = entry["epoch"], scored["valid_ndcg@10"], 0
        if self.keep_best is not None:
            self.keep_best(entry, full)
        else:
            own = self.processes.unwrap(t.model)
            record.best_weights = {k: v.detach().cpu().clone() for k, v in own.state_dict().items()}
        self.processes.wait()

    def stopped(self, record: Record) -> str | None:
        """Why the stage stops now (patience, or its budget is spent), or None to go on."""
        if self.patience is not None and record.validated and record.since_best >= self.patience:
            return "patience"
        return self.decide(lambda: self.budget.reason(*record.spent()))

    def decide(self, choose: Callable[[], Any]) -> Any:
        """Rank 0's choice, on every process (each process's clock differs)."""
        return self.processes.broadcast(choose() if self.processes.main else None)

    def step_saver(self, epoch: int, start_state: Any, record: Record) -> StepHook | None:
        """The epoch's hook that saves every `checkpoints.every_steps` steps (None when not asked for)."""
        if self.checkpoints is None or not self.checkpoints.every_steps:
            return None
        every = self.checkpoints.every_steps

        def save(position: EpochPosition, steps: int) -> None:
            if position.step % every == 0 and position.step < steps:
                self.save(record, epoch - 1, position, start_state)

        return save

    def save(self, record: Record, epoch: int, position: EpochPosition | None, rng_state: Any) -> None:
        if self.checkpoints is not None:
            t = self.trainee
            self.checkpoints.save(
                t.model, t.optimizer, t.scheduler, epoch, position, rng_state, dict(vars(record)), self.stage
            )

    def finish(self, record: Record) -> Record:
        if record.best_weights is not None:
            self.processes.unwrap(self.trainee.model).load_state_dict(record.best_weights)
        if record.validated and self.progress:
            self.say(f"{self.name} keeps epoch {record.best_epoch} (best validation NDCG@10 {record.best_score:.4f})")
        return record

    def line(self, entry: dict, record: Record) -> str:
        """One line an epoch: loss, speed, validation."""
        said = f"{self.name} epoch {entry['epoch']}: " + (
            "before training" if entry["loss"] is None else f"loss {entry['loss']:.4f}"
        )
        if entry["seconds"]:
            said += f", {entry['examples'] / entry['seconds']:.1f} examples/s, {entry['tokens_per_s']:.0f} tokens/s"
        if "valid_ndcg@10" in entry:
            best = record.best_epoch == entry["epoch"]
            said += f", valid NDCG@10 {entry['valid_ndcg@10']:.4f}" + (
                " (best)" if best else f" (best {record.best_score:.4f} at epoch {record.best_epoch})"
            )
        return said

    def why(self, stop: str, record: Record) -> str:
        if stop == "patience":
            return f"{self.name} stops after epoch {record.epochs}: no validation gain in {self.patience} validations"
        return f"{self.name} stops in epoch {record.epochs}: its budget ({stop}) is spent"
