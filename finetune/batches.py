"""Language-model batches for pre-training and LoRA fine-tuning: tokenise, batch by length, step.

Examples are tokenised as prompt + target separately (so labels cover the target exactly) and
grouped into batches of similar length under a token budget, which keeps padding, the main waste
of CPU time here, near zero. bf16 autocast is used on CPUs with bf16 units; master weights and
optimizer state stay float32.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from finetune.checkpoint import EpochPosition
from finetune.distributed import Processes, digest
from finetune.loop import EpochStats, Spent, StepHook, Trainee
from finetune.stages import Budget
from finetune.tasks import Example
from genrec.config import TrainConfig
from genrec.errors import GenrecError
from inference.decoding.beam import autocast

IGNORE = -100
LOGITS_BYTES = 2**28  # float32 logits of one batch stay under 256 MiB (x ~4 with bf16 copies and grads)


def token_budget(tokens_per_batch: int, vocab_size: int) -> int:
    """Padded tokens per batch: `tokens_per_batch`, fewer for large vocabularies so logits fit memory.

    A 49k-token vocabulary (SmolLM2) at 8192 tokens per batch needs 1.6 GB for the logits alone,
    and several copies of them exist during the backward pass.
    """
    return max(256, min(tokens_per_batch, LOGITS_BYTES // (4 * vocab_size)))


def batch_budgets(config: TrainConfig, vocab_size: int) -> tuple[int, int | None]:
    """The global batch (padded tokens per optimizer step, over all processes) and the micro-batch
    (padded tokens per forward pass; None: a process's whole share in one pass).

    Without micro-batches a process may hold the whole global batch in one pass (when it runs alone),
    so the global batch is capped as a pass is (`token_budget`), the same for any number of processes.
    """
    if config.micro_batch_tokens is None:
        return token_budget(config.tokens_per_batch, vocab_size), None
    return config.tokens_per_batch, token_budget(config.micro_batch_tokens, vocab_size)


def check_world(config: TrainConfig, global_tokens: int, world: int) -> None:
    """Fail in one line when a global batch cannot give every process an example of the longest length."""
    if world > 1 and global_tokens < world * config.max_length:
        capped = (
            " (capped for this vocabulary's logits; set train.micro_batch_tokens to lift the cap)"
            if global_tokens < config.tokens_per_batch
            else ""
        )
        raise GenrecError(
            f"train.tokens_per_batch {global_tokens}{capped}: a batch of {config.max_length}-token examples "
            f"holds {global_tokens // config.max_length}, fewer than the {world} processes "
            f"(train.distributed.processes); raise it to at least {world * config.max_length} or use fewer processes"
        )


@dataclass
class Tokenised:
    """Token ids of one example and the labels the loss sees (`IGNORE` on the prompt)."""

    input_ids: list[int]
    labels: list[int]


def tokenise(tokenizer, examples: Sequence[Example], max_length: int, loss_on_prompt: bool = False) -> list[Tokenised]:
    """Token ids and labels for each example, cut to `max_length` (targets keep their start)."""
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    out = []
    for p, t in zip(prompts, targets):
        ids = (p + t)[:max_length]
        labels = (p if loss_on_prompt else [IGNORE] * len(p)) + t
        out.append(Tokenised(ids, labels[:max_length]))
    return out


def length_batches(data: Sequence[Tokenised], max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices of `data` grouped into batches of similar length, each at most `max_tokens` padded tokens.

    Lengths are jittered before sorting so batches differ between epochs; batch order is shuffled.
    """
    order = sorted(range(len(data)), key=lambda i: len(data[i].input_ids) + rng.random() * 8)
    batches = pack(order, data, max_tokens)
    rng.shuffle(batches)
    return batches


def pack(order: Sequence[int], data: Sequence[Tokenised], max_tokens: int) -> list[list[int]]:
    """`order` cut into consecutive groups of at most `max_tokens` padded tokens (at least one example a group)."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = len(data[i].input_ids)
        if current and max(longest, n) * (len(current) + 1) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    return groups + ([current] if current else [])


def collate(rows: Sequence[Tokenised], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded tensors for training, on `device`."""
    length = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[j, : len(r.labels)] = torch.tensor(r.labels)
        mask[j, : len(r.input_ids)] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return batch if str(device) == "cpu" else {k: v.to(device) for k, v in batch.items()}


def targets(row: Tokenised) -> int:
    """Tokens of `row` the loss is computed on (a label is predicted from the token before it)."""
    return sum(1 for label in row.labels[1:] if label != IGNORE)


def micro_batches(rows: Sequence[int], data: Sequence[Tokenised], max_tokens: int | None) -> list[list[int]]:
    """`rows` (similar lengths) cut into forward passes of at most `max_tokens` padded tokens each;
    None keeps them together."""
    if max_tokens is None:
        return [list(rows)] if rows else []
    return pack(rows, data, max_tokens)


def cosine_schedule(
    optimizer, total_steps: int, warmup: int, budget: Budget | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 10% of the peak learning rate.

    With a `budget` (a stage capped in minutes or tokens), the decay follows whichever runs out first,
    the steps or the budget (`Budget.used`, which `train_epoch` keeps up to date): a stage the cap
    stops early still ends annealed, instead of at whatever rate its step count had reached."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if budget is not None:
            progress = max(progress, budget.used)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(
    model,
    data: Sequence[Tokenised],
    optimizer,
    scheduler,
    pad_id: int,
    max_tokens: int,
    rng: random.Random,
    bf16: bool,
    desc: str,
    progress: bool = True,
    clip: float = 1.0,
    params: Sequence[torch.nn.Parameter] | None = None,
    processes: Processes | None = None,
    micro_tokens: int | None = None,
    start: EpochPosition | None = None,
    on_step: Callable[[EpochPosition, int], None] | None = None,
    budget: Budget | None = None,
    spent: tuple[float, int] = (0.0, 0),
) -> EpochStats:
    """One pass over `data` in length-grouped global batches of at most `max_tokens` padded tokens.

    Every process draws the same batches from `rng` and trains on its share of each (`step`).
    `start` resumes an epoch after its first `start.step` steps (same `rng` state as then); `on_step`
    is called after each step with the position and the number of steps of the epoch. With `budget`
    (`finetune.stages.Budget`), the epoch ends after the step at which the stage's seconds and tokens,
    `spent` before this epoch plus this epoch's, reach it (rank 0 decides for every process).
    """
    processes = processes or Processes()
    model.train()
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    batches = length_batches(data, max_tokens, rng)
    position = EpochPosition(**vars(start)) if start is not None else EpochPosition()
    began = time.perf_counter() - position.seconds
    stopped_by = None
    show = progress and processes.main
    bar = tqdm(total=len(batches), initial=position.step, desc=desc, unit="batch", disable=not show, leave=False)
    for number in range(position.step, len(batches)):
        step(model, [data[i] for i in batches[number]], pad_id, bf16, processes, micro_tokens, position)
        processes.clip(params, clip)
        optimizer.step()
        position.step = number + 1
        position.seconds = time.perf_counter() - began
        if budget is not None:  # before the scheduler's step: a budget-sized schedule reads it
            budget.used = budget.fraction(
                spent[0] + position.seconds, spent[1] + position.padded_tokens * processes.world
            )
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{position.loss_sum / max(position.target_tokens, 1):.4f}")
        if on_step is not None:
            on_step(position, len(batches))
        if budget is not None:
            reason = budget.reason(spent[0] + position.seconds, spent[1] + position.padded_tokens * processes.world)
            stopped_by = processes.broadcast(reason if processes.main else None)
            if stopped_by is not None:
                break
    bar.close()
    loss_sum, target_tokens, examples, padded = processes.sum(
        [position.loss_sum, position.target_tokens, position.examples, position.padded_tokens]
    )
    return EpochStats(
        loss_sum / max(target_tokens, 1), int(examples), int(padded), time.perf_counter() - began, stopped_by
    )


def step(
    model,
    batch: Sequence[Tokenised],
    pad_id: int,
    bf16: bool,
    processes: Processes,
    micro_tokens: int | None,
    position: EpochPosition,
) -> None:
    """Accumulate the gradient of one global batch: this process's share, in micro-batches of at most
    `micro_tokens` padded tokens; `position`'s running sums grow by what this process trained.

    Each micro-batch's mean loss is weighted by its share of the global batch's target tokens (times
    the number of processes, whose gradients are averaged), so a step's gradient is that of the loss
    averaged over the global batch's target tokens, whatever the number of processes or micro-batches.
    A process whose share is empty (a last batch smaller than the world) runs one example at weight 0
    to keep in step.
    """
    global_targets = sum(targets(row) for row in batch)
    share = processes.share(list(range(len(batch))))
    groups = micro_batches(share, batch, micro_tokens)
    idle = not groups
    for j, rows in enumerate(groups or [[0]]):
        inputs = collate([batch[i] for i in rows], pad_id, processes.device)
        n = int((inputs["labels"][:, 1:] != IGNORE).sum())
        with processes.no_sync(model, skip=j < len(groups) - 1):
            with autocast(bf16, processes.device.type):
                out = model(**inputs)
            # exactly 1.0 for one process and one micro-batch: the loss as it always was
            weight = 0.0 if idle else (n * processes.world) / max(global_targets, 1)
            processes.backward(out.loss * weight)
        if not idle:
            position.loss_sum += float(out.loss.detach()) * n
            position.target_tokens += n
            position.examples += len(rows)
            position.padded_tokens += int(inputs["attention_mask"].sum())


def epochs_of(
    trainee: Trainee,
    examples: Callable[[int], Sequence[Tokenised]],
    pad_id: int,
    budgets: tuple[int, int | None],
    bf16: bool,
    label: str,
    epochs: int,
    processes: Processes,
    cap: Budget,
    progress: bool = True,
    params: Sequence[torch.nn.Parameter] | None = None,
) -> Callable[[int, EpochPosition | None, Spent, StepHook | None], EpochStats]:
    """The `finetune.loop.Loop` epoch of a language model: `examples(epoch)` (the same on every process,
    which is checked) in global batches of `budgets` = (padded tokens a step, a micro-batch)."""

    def one_epoch(epoch: int, start: EpochPosition | None, spent: Spent, on_step: StepHook | None) -> EpochStats:
        data = examples(epoch)
        processes.check_same(digest(data), f"{label} examples (epoch {epoch})")
        return train_epoch(
            trainee.model,
            data,
            trainee.optimizer,
            trainee.scheduler,
            pad_id,
            budgets[0],
            trainee.rng,
            bf16,
            desc=f"{label} {epoch}/{epochs}",
            progress=progress,
            params=params,
            processes=processes,
            micro_tokens=budgets[1],
            start=start,
            on_step=on_step,
            budget=cap,
            spent=spent,
        )

    return one_epoch
