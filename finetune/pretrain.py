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
from pathlib import Path

import torch
from rich.console import Console

from finetune.checkpoint import Checkpoints, fingerprint_of
from finetune.distributed import Processes, digest
from finetune.loop import batch_budgets, check_world, cosine_schedule, length_batches, tokenise, train_epoch
from finetune.stages import Budget, timed_validation
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
    reaches it; that epoch is then scored, and the best scored epoch is kept as always.
    """
    console = console or Console(stderr=True)
    processes = processes or Processes()
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98))
    first = tokenise(tokenizer, make_examples(0), config.max_length, loss_on_prompt=True)
    budget, micro = batch_budgets(config, len(tokenizer))
    check_world(config, budget, processes.world)
    steps_per_epoch = len(length_batches(first, budget, random.Random(0)))
    scheduler = cosine_schedule(optimizer, steps_per_epoch * config.pretrain_epochs, warmup=min(200, steps_per_epoch))
    trained, optimizer = processes.prepare(model, optimizer)
    history: list[dict] = []
    best = None
    begin, position = 0, None
    resumed = checkpoints.load(trained, optimizer, scheduler) if checkpoints is not None else None
    if resumed is not None:
        begin, position, history, best = (
            resumed.epoch,
            resumed.position,
            resumed.progress["history"],
            resumed.progress["best"],
        )
        rng.setstate(resumed.rng_state)
        console.print(f"resuming pre-training from {checkpoints.describe()}")
    cap = Budget(config.pretrain_max_minutes, config.pretrain_max_tokens)
    stopped_by = cap.reason(*spent(history)) if history else None
    for epoch in range(begin if stopped_by is None else config.pretrain_epochs, config.pretrain_epochs):
        data = (
            first if epoch == 0 else tokenise(tokenizer, make_examples(epoch), config.max_length, loss_on_prompt=True)
        )
        processes.check_same(digest(data), f"pre-training examples (epoch {epoch + 1})")
        epoch_rng = rng.getstate()
        on_step = (
            None
            if checkpoints is None
            else checkpoints.on_step(
                trained,
                optimizer,
                scheduler,
                epoch,
                epoch_rng,
                lambda: {"history": history, "best": best},  # noqa: B023 (read when a step checkpoints, in this epoch)
                "pretrain",
            )
        )
        stats = train_epoch(
            trained,
            data,
            optimizer,
            scheduler,
            tokenizer.pad_token_id,
            budget,
            rng,
            bf16,
            desc=f"pretrain {epoch + 1}/{config.pretrain_epochs}",
            progress=progress and processes.main,
            processes=processes,
            micro_tokens=micro,
            start=position,
            on_step=on_step,
            budget=cap,
            spent=spent(history),
        )
        position = None
        stopped_by = stats.stopped_by
        record = {
            "epoch": epoch + 1,
            "loss": stats.loss,
            "examples": stats.examples,
            "seconds": stats.seconds,
            "tokens": stats.tokens,
            "tokens_per_s": stats.tokens / stats.seconds if stats.seconds else 0.0,
        }
        if stopped_by is not None:
            record["stopped_by"] = stopped_by
        scored = validate is not None and (
            epoch + 1 >= config.pretrain_val_start or epoch + 1 == config.pretrain_epochs or stopped_by is not None
        )
        if scored:
            record |= processes.broadcast(timed_validation(validate, val_users) if processes.main else None)
            if record["valid_ndcg@10"] > max((h.get("valid_ndcg@10", -1.0) for h in history), default=-1.0):
                best = {k: v.detach().cpu().clone() for k, v in processes.unwrap(trained).state_dict().items()}
            trained.train()
        history.append(record)
        if checkpoints is not None:
            checkpoints.save(
                trained,
                optimizer,
                scheduler,
                epoch + 1,
                None,
                rng.getstate(),
                {"history": history, "best": best},
                "pretrain",
            )
        if progress and processes.main:
            console.print(
                f"pretrain epoch {epoch + 1}: loss {stats.loss:.4f}, {stats.examples / stats.seconds:.1f} examples/s, "
                f"{stats.tokens / stats.seconds:.0f} tokens/s"
                + (f", valid NDCG@10 {record['valid_ndcg@10']:.4f}" if scored else "")
            )
        if scored and stalled(history, config.pretrain_patience):
            console.print(
                f"pre-training stops after epoch {epoch + 1}: no validation gain in {config.pretrain_patience} epochs"
            )
            stopped_by = "patience"
            break
        if stopped_by is not None:
            console.print(f"pre-training stops in epoch {epoch + 1}: its budget ({stopped_by}) is spent")
            break
    best_epoch = config.pretrain_epochs
    if validate is not None and history:
        best_record = max((h for h in history if "valid_ndcg@10" in h), key=lambda h: h["valid_ndcg@10"])
        best_epoch = best_record["epoch"]
        model.load_state_dict(best)
        if processes.main:
            console.print(f"pre-training keeps epoch {best_epoch} (best validation NDCG@10)")
    processes.release()
    model.eval()
    stats = {
        "history": history,
        "seconds": sum(h["seconds"] for h in history),
        "best_epoch": best_epoch,
        "stopped_by": stopped_by or "epochs",
        "budget": cap.to_json(),
    }
    if validate is not None and history:
        stats["best_valid_ndcg@10"] = best_record["valid_ndcg@10"]
    return stats


def spent(history: Sequence[dict]) -> tuple[float, int]:
    """Seconds (training and validation) and tokens the epochs in `history` took: what the budget counts."""
    return (
        sum(h["seconds"] + h.get("valid_seconds", 0.0) for h in history),
        sum(h.get("tokens", 0) for h in history),
    )


def stalled(history: Sequence[dict], patience: int) -> bool:
    """True when the last `patience` validated epochs all scored below the best one before them."""
    scores = [h["valid_ndcg@10"] for h in history if "valid_ndcg@10" in h]
    return len(scores) > patience and max(scores[-patience:]) <= max(scores[:-patience])


def save_pretrained_cache(model, tokenizer, folder: Path, expected: str, stats: dict) -> None:
    """Save the pre-trained model atomically with its fingerprint."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / FINGERPRINT_FILE, {"fingerprint": expected, **stats})
