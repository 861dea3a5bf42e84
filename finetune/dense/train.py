"""Training for every dense next-item network: examples, batches, full cross-entropy, early stopping.

    model = SASRec(item_ids, dropout=0.6)
    model, stats = fit(model, split.train, split.valid, TrainSettings(lr=5e-4, batch_size=512))

Each epoch visits every training example once, in a new random order, with Adam and softmax
cross-entropy over the whole catalog. What an example is depends on the network:
- causal networks (SASRec): one per user, the last `max_len + 1` training items; every position
  predicts the next item, so the whole window trains in one pass;
- non-causal networks (BSARec, whose Fourier filter mixes all positions): one per target, every
  item of the user's last `max_len` training items with the items before it in that window as
  input, as the BSARec reference code does; only the last position is scored.

Batches are drawn at random, and the loss of a batch is the mean over its targets, as in the
reference implementations. A network padded to the longest history of its input (SASRec) runs a
batch as a few micro-batches of similar lengths, accumulating their gradients before the one
optimizer step: the same gradient, but on Amazon data a random batch of 512 histories padded to
its longest (50 items) held 6 real items a row, and splitting it into 4 length-sorted parts cuts
the padded positions about threefold. Logits are computed for real positions only.

Every `eval_every` epochs the model is scored on the validation cases by
`genrec.metrics.validation_ndcg` (NDCG@10, the one metric code path); the best epoch's weights
are kept, and training stops after `patience` validations without a gain, after `epochs`, or when
the optional wall-clock cap `max_minutes` runs out. The stats say which of the three ended it.
With `checkpoint` (a folder), the run is saved after every epoch and an interrupted run with the same
network, data and settings resumes where it stopped. The epochs, validation, early stopping and
checkpoints are the one training loop's (`finetune.loop`); what is the dense models' own is here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from finetune.checkpoint import Checkpoints, fingerprint_of
from finetune.distributed import Processes
from finetune.loop import EpochStats, Loop, Trainee
from finetune.stages import Budget
from genrec.device import resolve_device
from genrec.errors import GenrecError
from genrec.metrics import validation_ndcg
from inference.dense.model import DenseRecommender, left_pad
from retrieval.split import Case

M = TypeVar("M", bound=DenseRecommender)

MICRO_BATCHES = 4  # length-sorted parts of one batch, for networks padded to their longest input


@dataclass
class TrainSettings:
    """How a dense network is trained (its architecture lives in the network's own arguments)."""

    lr: float = 5e-4
    batch_size: int = 512
    weight_decay: float = 0.0
    epochs: int = 200  # upper bound; early stopping ends training sooner
    patience: int = 10  # validations without improvement before stopping
    eval_every: int = 5  # epochs between validations
    val_users: int | None = None  # validation users scored (None: all of them)
    max_minutes: float | None = None  # wall-clock cap (None: train until early stopping or `epochs`)
    seed: int = 0
    threads: int | None = 1  # torch threads (None: leave torch's setting)
    bf16: bool | None = None  # bf16 autocast for training matmuls (None: where the device has bf16 units)
    device: str = "auto"  # auto, cpu, cuda: where the network trains and validates (`dense.KIND.device`)
    progress: bool = True
    # a folder to save the run to after every epoch and resume from (None: no checkpoints)
    checkpoint: str | None = None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with `threads` intra-op threads, restoring the previous setting after.

    On a shared or oversubscribed CPU, one thread per process can be many times faster than
    several threads spinning against each other; the caller decides.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


Example = tuple[list[int], list[int] | int]  # (input positions, next positions or the one next position)


def training_examples(model: DenseRecommender, train: Mapping[str, Sequence[str]]) -> list[Example]:
    """The examples one epoch visits (1-based item positions; see the module docstring)."""
    encoded = model.index.encode_train(dict(train))
    examples: list[Example] = []
    for items in encoded.values():
        items = [i + 1 for i in items]
        if model.causal:
            window = items[-(model.max_len + 1) :]
            if len(window) >= 2:
                examples.append((window[:-1], window[1:]))
        else:
            window = items[-model.max_len :]
            examples.extend((window[:t], window[t]) for t in range(len(window)))
    return examples


def epoch_batches(examples: Sequence[Example], batch_size: int, rng: np.random.Generator) -> list[list[Example]]:
    """One epoch's batches: every example once, in a new random order."""
    order = rng.permutation(len(examples))
    return [[examples[j] for j in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


class _SummedCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy summed over rows, with its gradient (softmax - one-hot) written directly.

    The same loss and gradient as `F.cross_entropy(..., reduction="sum")`, to float32 rounding;
    but PyTorch's CPU backward of log-softmax ran at 20-30 ms per million logits here (about 1 s
    for one 2,900 x 12,101 SASRec batch, more than all of its matrix products), while this backward
    is one subtraction on the saved probabilities (40 ms for the same batch).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        top = logits.amax(dim=1, keepdim=True)
        probs = (logits - top).exp_()
        total = probs.sum(dim=1, keepdim=True)
        probs.div_(total)
        log_normaliser = (top + total.log()).squeeze(1)
        ctx.save_for_backward(probs, targets)
        return (log_normaliser - logits.gather(1, targets[:, None]).squeeze(1)).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        probs, targets = ctx.saved_tensors
        rows = torch.arange(len(targets), device=targets.device)
        probs[rows, targets] -= 1.0  # the saved buffer is used once: update it in place
        return probs.mul_(grad), None


def summed_loss(model: DenseRecommender, examples: Sequence[Example], bf16: bool) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the whole catalog of the examples' targets, and how many targets."""
    length = model.max_len if model.fixed_length else max(1, max(len(e[0]) for e in examples))
    device = model.device
    inputs = left_pad([e[0] for e in examples], length).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if model.causal:
            targets = left_pad([e[1] for e in examples], length).to(device)
            real = targets != 0
            logits = model.item_logits(model(inputs)[real])
            targets = targets[real]
        else:
            logits = model.item_logits(model.last_state(inputs))
            targets = torch.as_tensor([e[1] for e in examples], dtype=torch.long, device=device)
    return _SummedCrossEntropy.apply(logits.float(), targets - 1), len(targets)


def backward_batch(model: DenseRecommender, batch: Sequence[Example], bf16: bool) -> tuple[float, int]:
    """Accumulate the gradient of the batch's mean loss over its targets; returns (summed loss, targets).

    A network padded per input runs the batch as `MICRO_BATCHES` length-sorted parts (see the
    module docstring); the gradient is that of the whole batch.
    """
    n_targets = sum(len(e[1]) for e in batch) if model.causal else len(batch)
    parts = [batch]
    if not model.fixed_length and len(batch) >= MICRO_BATCHES:
        ordered = sorted(batch, key=lambda e: len(e[0]))
        parts = [list(p) for p in np.array_split(np.arange(len(ordered)), MICRO_BATCHES)]
        parts = [[ordered[i] for i in p] for p in parts]
    total = 0.0
    for part in parts:
        loss, _ = summed_loss(model, part, bf16)
        (loss / n_targets).backward()
        total += float(loss.detach())
    return total, n_targets


def fit(
    model: M,
    train: Mapping[str, Sequence[str]],
    valid: Mapping[str, Case] | None = None,
    settings: TrainSettings | None = None,
) -> tuple[M, dict]:
    """Train `model` on the training histories (user -> items in time order); with `valid`
    (user -> (history, next item)) keep the best validated epoch. Returns the model (eval mode,
    best weights) and the training stats (JSON-ready)."""
    settings = settings or TrainSettings()
    model.to(resolve_device(settings.device, f"dense.{model.name}.device"))
    if settings.bf16 is None:
        from inference.decoding.local import bf16_supported

        settings = TrainSettings(**{**asdict(settings), "bf16": bf16_supported(model.device)})
    with torch_threads(settings.threads):
        return model, _fit(model, train, valid, settings)


def _fit(model: DenseRecommender, train, valid, settings: TrainSettings) -> dict:
    """`fit` on the one training loop (`finetune.loop`), with a dense epoch: every example once, Adam."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    examples = training_examples(model, train)
    if not examples:
        raise GenrecError(
            f"{model.name}: no user has two or more training items, so there is no next item to learn from"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def one_epoch(epoch: int, *_) -> EpochStats:
        began = time.perf_counter()
        model.train()
        total_loss, total_n = 0.0, 0
        # bars on a terminal only; logs get the loop's one line per epoch
        bar = tqdm(
            epoch_batches(examples, settings.batch_size, rng),
            desc=f"{model.name} epoch {epoch}",
            leave=False,
            unit="batch",
            disable=None if settings.progress else True,
        )
        for batch in bar:
            optimizer.zero_grad(set_to_none=True)
            loss_sum, n = backward_batch(model, batch, settings.bf16)
            optimizer.step()
            total_loss += loss_sum
            total_n += n
            bar.set_postfix(loss=f"{total_loss / total_n:.4f}")
        bar.close()
        return EpochStats(total_loss / max(total_n, 1), len(examples), total_n, time.perf_counter() - began)

    checkpoints = None
    if settings.checkpoint:
        checkpoints = Checkpoints(Path(settings.checkpoint), resume_fingerprint(model, examples, settings), Processes())
    scored = lambda m: validation_ndcg(m, valid, m.item_ids, max_users=settings.val_users, seed=settings.seed)  # noqa: E731
    record = Loop(
        model.name,
        settings.epochs,
        one_epoch,
        Trainee(model, optimizer, rng=rng),
        validate=scored if valid else None,
        users=min(settings.val_users or len(valid), len(valid)) if valid else 0,
        due=lambda epoch: epoch % settings.eval_every == 0,
        patience=settings.patience,
        budget=Budget(settings.max_minutes),  # (its tokens: targets, uncapped)
        checkpoints=checkpoints,
        stage="dense",
        say=tqdm.write,
        progress=settings.progress,
    ).run()
    model.eval()
    if record.stopped_by == "max_minutes":
        tqdm.write(
            f"{model.name}: training cut short by the {settings.max_minutes:g}-minute cap (max_minutes) after epoch "
            f"{record.epochs}, before early stopping ended it; best validation NDCG@10 {record.best_score:.4f} at "
            f"epoch {record.best_epoch}. Set max_minutes to null to train to convergence."
        )
    train_seconds, valid_seconds = record.sums("seconds"), record.sums("valid_seconds")
    return {
        "epochs": record.epochs,
        "best_epoch": record.best_epoch if record.validated else record.epochs,
        "best_valid_ndcg@10": record.best_score if record.validated else None,
        "stopped_by": record.stopped_by,
        "train_seconds": train_seconds,
        "valid_seconds": valid_seconds,
        "validations": sum("valid_ndcg@10" in h for h in record.history),
        "total_seconds": train_seconds + valid_seconds,
        "targets_per_epoch": sum(len(e[1]) if model.causal else 1 for e in examples),
        "targets_per_s": record.sums("tokens") / train_seconds if train_seconds else 0.0,
        "settings": asdict(settings),
        "history": record.history,
    }


# settings that do not change the weights an epoch trains: a checkpoint made under others still resumes
RESUME_IGNORES = ("epochs", "patience", "max_minutes", "checkpoint", "progress", "threads", "device")


def resume_fingerprint(model: DenseRecommender, examples: Sequence[Example], settings: TrainSettings) -> str:
    """The fingerprint of a dense training's checkpoint: the network, its training examples and settings."""
    network = {"model": model.name, **(model._hub_mixin_config or {})}
    kept = {k: v for k, v in asdict(settings).items() if k not in RESUME_IGNORES}
    data = hashlib.sha256(json.dumps([model.item_ids, examples]).encode()).hexdigest()
    return fingerprint_of([network, kept], data)
