"""The training loop shared by pre-training and LoRA fine-tuning: tokenise, batch by length, step.

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

from finetune.decoding.beam import autocast
from finetune.tasks import Example

IGNORE = -100
LOGITS_BYTES = 2**28  # float32 logits of one batch stay under 256 MiB (x ~4 with bf16 copies and grads)


def token_budget(tokens_per_batch: int, vocab_size: int) -> int:
    """Padded tokens per batch: `tokens_per_batch`, fewer for large vocabularies so logits fit memory.

    A 49k-token vocabulary (SmolLM2) at 8192 tokens per batch needs 1.6 GB for the logits alone,
    and several copies of them exist during the backward pass.
    """
    return max(256, min(tokens_per_batch, LOGITS_BYTES // (4 * vocab_size)))


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
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = len(data[i].input_ids)
        if current and max(longest, n) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(rows: Sequence[Tokenised], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors for training."""
    length = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[j, : len(r.labels)] = torch.tensor(r.labels)
        mask[j, : len(r.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def cosine_schedule(optimizer, total_steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 10% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class EpochStats:
    """What one pass over the data did."""

    loss: float
    examples: int
    tokens: int
    seconds: float


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
    should_stop: Callable[[], bool] | None = None,
) -> EpochStats:
    """One pass over `data` in length-grouped batches; the loss is averaged over target tokens."""
    model.train()
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    batches = length_batches(data, max_tokens, rng)
    total_loss, total_tokens, seen, padded = 0.0, 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False)
    for batch in bar:
        inputs = collate([data[i] for i in batch], pad_id)
        with autocast(bf16):
            out = model(**inputs)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n = int((inputs["labels"][:, 1:] != IGNORE).sum())
        total_loss += float(out.loss.detach()) * n
        total_tokens += n
        seen += len(batch)
        padded += int(inputs["attention_mask"].sum())
        bar.set_postfix(loss=f"{total_loss / max(total_tokens, 1):.4f}")
        if should_stop is not None and should_stop():
            break
    bar.close()
    return EpochStats(total_loss / max(total_tokens, 1), seen, padded, time.perf_counter() - start)
