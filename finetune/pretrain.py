"""Pre-training the scratch model on the run's own corpus, cached in `RUN/pretrain/`.

Where no pretrained checkpoint exists, a small Llama-style model learns the catalog's language
from scratch: SID sequences of users' training histories, item captions with their SIDs, the
task prompts. All weights train and the loss covers every token (prompt words included), as in
ordinary language-model pre-training. The result is saved with `save_pretrained` and reused
while the corpus and model settings are unchanged (a fingerprint in `genrec_pretrain.json`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from rich.console import Console

from finetune.batches import batch_budgets, check_world, cosine_schedule, epochs_of, length_batches, tokenise
from finetune.checkpoint import Checkpoints, fingerprint_of
from finetune.distributed import Processes
from finetune.loop import Loop, Trainee
from finetune.stages import Budget
from finetune.tasks import Example
from genrec.atomic import atomic_dir, write_json
from genrec.config import TrainConfig

FINGERPRINT_FILE = "genrec_pretrain.json"
# settings that change the pre-trained weights; anything else (LoRA, epochs of fine-tuning) does not
PRETRAIN_FIELDS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_length",
    "vocab_size",
    "dropout",
    "pretrain_epochs",
    "pretrain_lr",
    "pretrain_val_start",
    "pretrain_patience",
    "val_users",
    "max_history",
    "aux_ratio",
    "tokens_per_batch",
    "seed",
)


def fingerprint(config: TrainConfig, data_hash: str) -> str:
    """Hash of the pre-training settings and the data they see. The next-item template (the prompt
    every example opens with) counts once it is set; unset it leaves the hash of the runs before it."""
    settings = {name: getattr(config, name) for name in PRETRAIN_FIELDS}
    if config.template is not None:
        settings["template"] = config.template
    return fingerprint_of(settings, data_hash)


def load_cached(folder: Path, expected: str):
    """The cached pre-trained model, its tokenizer and the stats of the pre-training that made it
    (epochs, seconds, best validation), if their fingerprint matches; else None."""
    meta = folder / FINGERPRINT_FILE
    saved = json.loads(meta.read_text(encoding="utf-8")) if meta.exists() else {}
    if saved.get("fingerprint") != expected:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stats = {k: v for k, v in saved.items() if k != "fingerprint"}
    return (
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        AutoTokenizer.from_pretrained(folder),
        stats,
    )


def pretrain(
    model,
    tokenizer,
    make_examples: Callable[[int], Sequence[Example]],
    config: TrainConfig,
    bf16: bool,
    progress: bool = True,
    console: Console | None = None,
    validate: Callable[[], float] | None = None,
    processes: Processes | None = None,
    checkpoints: Checkpoints | None = None,
    val_users: int = 0,
) -> dict:
    """Train every weight of `model` for `config.pretrain_epochs` on `make_examples(epoch)`; returns stats.

    With `validate` (validation NDCG@10 of the model as it is), it is scored after every epoch from
    `config.pretrain_val_start` on (early epochs, still warming up, are not worth the time it takes
    to score them); training stops once `config.pretrain_patience` scored epochs in a row bring no
    gain, and the best scored epoch's weights are kept. `pretrain_epochs` is the upper bound.
    With several `processes`, each trains on its share of every batch and rank 0 alone validates.
    `checkpoints` resumes a stopped run and saves after every epoch. The stage's budget
    (`pretrain_max_minutes`, `pretrain_max_tokens`: training and validation) ends it at the step that
    reaches it; that epoch is then scored, and the best scored epoch is kept as always (`finetune.loop`);
    the learning rate anneals by the budget as well as by the steps (`cosine_schedule`).
    """
    console = console or Console(stderr=True)
    processes = processes or Processes()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98))
    first = tokenise(tokenizer, make_examples(0), config.max_length, loss_on_prompt=True)
    budgets = batch_budgets(config, len(tokenizer))
    check_world(config, budgets[0], processes.world)
    steps_per_epoch = len(length_batches(first, budgets[0], random.Random(0)))
    cap = Budget(config.pretrain_max_minutes, config.pretrain_max_tokens)
    scheduler = cosine_schedule(optimizer, steps_per_epoch * config.pretrain_epochs, min(200, steps_per_epoch), cap)
    trained, optimizer = processes.prepare(model, optimizer)
    trainee = Trainee(trained, optimizer, scheduler, random.Random(config.seed))
    examples = partial(pretrain_examples, first, tokenizer, make_examples, config.max_length)

    show = progress and processes.main
    one_epoch = epochs_of(
        trainee,
        examples,
        tokenizer.pad_token_id,
        budgets,
        bf16,
        "pretrain",
        config.pretrain_epochs,
        processes,
        cap,
        show,
    )
    record = Loop(
        "pre-training",
        config.pretrain_epochs,
        one_epoch,
        trainee,
        validate=(lambda _: validate()) if validate is not None else None,
        users=val_users,
        due=lambda epoch: epoch >= config.pretrain_val_start,
        patience=config.pretrain_patience,
        budget=cap,
        checkpoints=checkpoints,
        stage="pretrain",
        processes=processes,
        say=console.print,
        progress=show,
    ).run()
    processes.release()
    model.eval()
    stats = {
        "history": record.history,
        "seconds": record.sums("seconds"),
        "best_epoch": record.best_epoch if record.validated else config.pretrain_epochs,
        "stopped_by": record.stopped_by,
        "budget": cap.to_json(),
    }
    if record.validated:
        stats["best_valid_ndcg@10"] = record.best_score
    return stats


def pretrain_examples(first, tokenizer, make_examples, max_length: int, epoch: int):
    """Pre-training epoch `epoch`'s tokenised examples (epochs count from 1 here, from 0 in `make_examples`)."""
    return first if epoch == 1 else tokenise(tokenizer, make_examples(epoch - 1), max_length, True)


def save_pretrained_cache(model, tokenizer, folder: Path, expected: str, stats: dict) -> None:
    """Save the pre-trained model atomically with its fingerprint."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / FINGERPRINT_FILE, {"fingerprint": expected, **stats})
