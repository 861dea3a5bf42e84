"""`genrec train`: base model -> SID tokens -> (scratch: pre-training) -> LoRA SFT -> best checkpoint.

Reads top to bottom like a training script:
1. data: the run's catalog, semantic IDs and the leave-one-out split (training sees only the
   training part; the second-to-last item of each user is the validation target);
2. base: a Hugging Face folder, SmolLM2 from its GGUF, or a scratch model pre-trained on the run's
   corpus; SID tokens added and their embedding rows made trainable;
3. LoRA fine-tuning on the SFT tasks, validation NDCG@10 after each epoch on a fixed user sample;
4. every new best is exported atomically to `RUN/model/` (base + LoRA adapter + genrec.json), so an
   interrupted run leaves the last good checkpoint usable;
5. the dense next-item model (`RUN/dense/`) and the fusion of both, chosen on validation
   (`RUN/ranking.json`): together the ranking that every command serves (`inference.ranking`).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console

from finetune.batches import batch_budgets, check_world, cosine_schedule, epochs_of, length_batches, tokenise
from finetune.checkpoint import Checkpoints, fingerprint_of
from finetune.dense import fit as fit_dense
from finetune.dense.build import build as build_dense
from finetune.dense.build import copy_shared, dense_fingerprint, find_shared, share
from finetune.distributed import Processes, start_processes
from finetune.loop import Loop, Trainee
from finetune.lora import attach_lora, export_model, merged_copy
from finetune.pretrain import fingerprint, load_cached, pretrain, save_pretrained_cache
from finetune.stages import Budget
from finetune.tasks import aux_examples, corpus_texts, next_item_examples, resolve_template
from finetune.tokenizer import add_sid_tokens, train_scratch_tokenizer
from genrec.atomic import atomic_dir, write_json
from genrec.config import RunConfig, TrainConfig
from genrec.device import resolve_device
from genrec.errors import GenrecError
from genrec.metrics import sample_users, validation_ndcg
from genrec.run import RunPaths, open_run
from inference.decoding.local import LocalGenerator, bf16_supported, file_sha256, load_local_generator
from inference.decoding.prompts import HistoryPrompt
from inference.decoding.trie import SidTrie
from inference.dense import load_dense
from inference.facts import item_facts
from inference.models import SCRATCH, build_scratch_model, load_pretrained, resize_for_tokenizer, resolve_base
from inference.ranking import Fusion, Ranker, tune_fusion
from inference.sid_tokens import codebook_sizes
from retrieval.split import Split, leave_one_out


@dataclass
class TrainReport:
    """What a training run did and how well the kept checkpoint validates."""

    base: str
    parameters: int
    trainable_parameters: int
    pretrain_seconds: float
    train_seconds: float
    examples_per_s: float
    tokens_per_s: float
    best_epoch: int
    best_valid_ndcg10: float
    epochs: list[dict] = field(default_factory=list)
    pretrain_epochs: list[dict] = field(default_factory=list)  # loss and validation NDCG@10 per pre-training epoch
    model_dir: str = ""
    dense: dict = field(default_factory=dict)  # the dense model's training (epochs, best validation, minutes)
    fusion: dict = field(default_factory=dict)  # the fusion chosen on validation (RUN/ranking.json)
    processes: int = 1  # training processes (each on its share of every batch)
    pretrain_cached: bool = False  # the scratch base came from RUN/pretrain; pretrain_* say what making it took
    fingerprint: str = ""  # the LoRA stage's settings and data (`lora_fingerprint`): a finished stage is kept
    pretrain_stopped_by: str = ""  # what ended pre-training: patience, epochs, max_minutes, max_tokens
    lora_stopped_by: str = ""  # what ended LoRA: patience, epochs, max_minutes, max_tokens
    budgets: dict = field(default_factory=dict)  # each stage's budget (`finetune.stages.Budget`)


@dataclass
class RunData:
    """The inputs of training, read once from the run directory."""

    paths: RunPaths
    config: RunConfig
    split: Split
    codes: dict[str, list[int]]
    facts: dict
    item_ids: list[str]
    data_hash: str


def load_run_data(run: str | Path) -> RunData:
    """Catalog, semantic IDs and split of a run; one-line errors name the command to run first."""
    from retrieval.catalog import load_catalog
    from retrieval.semantic_ids import load_semantic_ids

    paths, config = open_run(run)
    catalog = load_catalog(paths)
    codes = load_semantic_ids(paths)
    missing = set(catalog.items["item_id"]) - set(codes)
    if missing:
        raise GenrecError(
            f"{paths.semantic_ids}: {len(missing)} catalog items have no semantic ID (e.g. {sorted(missing)[0]!r}); "
            f"run `genrec index --run {paths.root}` again"
        )
    split = leave_one_out(catalog.interactions)
    if not split.valid:
        raise GenrecError(f"{paths.interactions}: no user has 3 or more interactions; nothing to train or validate on")
    data_hash = (
        file_sha256(paths.semantic_ids)[:16] + file_sha256(paths.interactions)[:16] + file_sha256(paths.items)[:16]
    )
    return RunData(paths, config, split, codes, item_facts(catalog.items), list(catalog.items["item_id"]), data_hash)


def example_maker(data: RunData, tokenizer, config: TrainConfig):
    """A function epoch -> that epoch's examples (templates and auxiliary samples vary per epoch)."""

    def make(epoch: int):
        rng = random.Random(config.seed * 1000 + epoch)
        # chunk boundaries move every epoch, so no position is always trained without context
        sequences = next_item_examples(
            tokenizer, data.split.train, data.codes, config.max_history, rng, shift=True, template=config.template
        )
        count = int(round(config.aux_ratio * len(sequences)))
        return sequences + aux_examples(tokenizer, data.split.train, data.codes, data.facts, count, rng)

    return make


def prepare_base(
    data: RunData,
    base: str,
    config: TrainConfig,
    bf16: bool,
    progress: bool,
    console: Console,
    processes: Processes | None = None,
    resume: bool = True,
):
    """Model and tokenizer with SID tokens, and the pre-training stats (a scratch model is pre-trained,
    keeping its best epoch on validation, or loaded from its cache). With several processes, rank 0
    trains the tokenizer and writes the cache; every process then loads the same cached model."""
    processes = processes or Processes()
    sizes = codebook_sizes(data.codes.values())
    resolved = resolve_base(base)
    if resolved != SCRATCH:
        model, tokenizer = load_pretrained(resolved)
        add_sid_tokens(tokenizer, sizes)
        resize_for_tokenizer(model, tokenizer)
        return model, tokenizer, {"seconds": 0.0, "history": []}
    if processes.sharded:
        raise GenrecError(
            f"train.distributed.strategy {config.distributed.strategy}: shards a large pretrained base (train.base); "
            "the scratch model trains with ddp"
        )
    cache = data.paths.root / "pretrain"
    expected = fingerprint(config, data.data_hash)
    cached = load_cached(cache, expected)
    if cached is not None:
        console.print(f"using the pre-trained scratch model cached in {cache}")
        model, tokenizer, stats = cached
        return model, tokenizer, {"seconds": 0.0, "history": [], **stats, "cached": True}  # what making it took
    # one tokenizer for every process: rank 0's, sent to the others
    tokenizer = processes.broadcast(
        train_scratch_tokenizer(corpus_texts(data.facts), config.vocab_size) if processes.main else None
    )
    add_sid_tokens(tokenizer, sizes)
    model = build_scratch_model(config, tokenizer)
    console.print(
        f"pre-training a scratch model ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"vocabulary {len(tokenizer)}) for {config.pretrain_epochs} epochs"
        + (f" in {processes.world} processes" if processes.world > 1 else "")
    )
    probe = generator(model, tokenizer, data, config)
    checkpoints = Checkpoints(data.paths.checkpoints / "pretrain", expected, processes, config.checkpoint_steps)
    if not resume:
        checkpoints.clear()
    stats = pretrain(
        model,
        tokenizer,
        example_maker(data, tokenizer, config),
        config,
        bf16,
        progress,
        console,
        validate=lambda: validation_score(probe, data, config.val_users, config.seed, progress),
        processes=processes,
        checkpoints=checkpoints,
        val_users=validation_users(data, config.val_users),
    )
    if processes.main:
        save_pretrained_cache(model, tokenizer, cache, expected, stats)
    processes.wait()
    checkpoints.clear()
    # every process goes on from the saved model: the same weights and tokenizer as a later run that finds the cache
    model, tokenizer, _ = load_cached(cache, expected)
    return model, tokenizer, stats


def generator(model, tokenizer, data: RunData, config: TrainConfig) -> LocalGenerator:
    """The model as training validates it: the run's generation settings, in process, in float32 as
    it is served (training's bf16 autocast is not used for generation)."""
    generate = data.config.generate
    trie = SidTrie.for_tokenizer(data.codes, tokenizer)
    prompts = HistoryPrompt(tokenizer, trie.code_of, config.max_history, config.template)
    return LocalGenerator(model, tokenizer, trie, prompts, generate.beam_width, generate.batch_size)


def validation_users(data: RunData, val_users: int | None) -> int:
    """How many validation users a pass scores (the fixed seeded sample, or all of them)."""
    return min(val_users or len(data.split.valid), len(data.split.valid))


def validation_score(
    gen: LocalGenerator, data: RunData, val_users: int | None, seed: int, progress: bool = False
) -> float:
    """NDCG@10 of pure generation on a fixed sample of validation users (`genrec.metrics`, the one metric path)."""
    return validation_ndcg(
        Ranker(gen, name="validation"),
        data.split.valid,
        data.item_ids,
        max_users=val_users,
        seed=seed,
        batch_size=512,
        progress=progress,
    )


def train_dense(data: RunData, progress: bool, console: Console, resume: bool = True) -> dict:
    """Train the dense next-item model on the training split (early-stopped on validation) into `RUN/dense/`;
    with `resume`, a dense model already trained there with the same settings and data is kept."""
    kind = data.config.dense.ranker
    model, settings, resolved = build_dense(
        kind, data.item_ids, getattr(data.config.dense, kind), data.split.train, progress=progress
    )
    # saved after every epoch under a name bound to these settings and training data: an interrupted run
    # resumes (a Beauty SASRec trains for most of an hour here), a changed one starts over
    bound = dense_fingerprint(kind, resolved, data.item_ids, data.split.train)
    done = data.paths.dense / "train_stats.json"
    if resume and done.exists() and json.loads(done.read_text(encoding="utf-8")).get("fingerprint") == bound:
        console.print(f"the dense model in {data.paths.dense} is trained with these settings and data: kept")
        return json.loads(done.read_text(encoding="utf-8"))
    shared = find_shared(bound) if resume else None
    if shared is not None:  # the same training finished elsewhere (another run, bench/baselines.py)
        stats = {**json.loads((shared / "train_stats.json").read_text(encoding="utf-8")), "reused_from": str(shared)}
        copy_shared(shared, data.paths.dense, stats)
        console.print(
            f"dense model: reusing {shared} (same settings and training data, fingerprint {bound[:16]}): "
            f"best valid NDCG@10 {stats.get('best_valid_ndcg@10') or 0:.4f} at epoch {stats.get('best_epoch')}"
        )
        return stats
    console.print(f"training the dense model ({kind}, history {model.max_len}) on the training split")
    for old in data.paths.checkpoints.glob("dense-*.ckpt"):  # one file a fingerprint, before the one training loop
        console.print(f"{old}: a dense checkpoint of an earlier genrec; not resumed, the dense model starts fresh")
        old.unlink()
    checkpoint = data.paths.checkpoints / "dense"  # resumed only with the same settings and data (its fingerprint)
    settings.checkpoint = str(checkpoint)
    started = time.perf_counter()
    model, stats = fit_dense(model, data.split.train, data.split.valid, settings)
    stats = {k: v for k, v in stats.items() if k != "history"}
    seconds = stats.get("total_seconds") or time.perf_counter() - started  # over every resumed part
    stats.update(kind=kind, minutes=seconds / 60, settings=resolved.model_dump(), fingerprint=bound)
    with atomic_dir(data.paths.dense) as tmp:
        model.save_pretrained(tmp)
        write_json(tmp / "train_stats.json", stats)
    share(model, stats, bound)  # for any later run of the same settings and data
    shutil.rmtree(checkpoint, ignore_errors=True)
    cut = " (cut by its max_minutes)" if stats.get("stopped_by") == "max_minutes" else ""
    console.print(
        f"dense model: best valid NDCG@10 {stats.get('best_valid_ndcg@10') or 0:.4f} at epoch "
        f"{stats.get('best_epoch')} of {stats.get('epochs')}{cut}, {stats['minutes']:.1f} min"
    )
    return stats


def choose_fusion(data: RunData, progress: bool, console: Console) -> Fusion:
    """Load the kept generative model and the dense model as served, and pick their fusion on every
    validation user (`inference.ranking.tune_fusion`); written to `RUN/ranking.json`."""
    generate, dense = data.config.generate, data.config.dense
    gen = load_local_generator(
        data.paths, data.codes, beam_width=generate.beam_width, batch_size=generate.batch_size, device=generate.device
    )
    scorer = load_dense(data.paths.dense, getattr(dense, dense.ranker).device, f"dense.{dense.ranker}.device")
    ranker = Ranker(gen, scorer, Fusion(dense_candidates=dense.candidates))
    users = sample_users(data.split.valid, None)
    started = time.perf_counter()
    fusion = tune_fusion(ranker, data.split.valid, users, progress=progress)
    fusion.seconds, fusion.users = time.perf_counter() - started, len(users)
    write_json(data.paths.ranking, fusion.to_json())
    pure = next(g["valid_ndcg@10"] for g in fusion.grid if g["dense_weight"] == 0)
    dense_only = max(g["valid_ndcg@10"] for g in fusion.grid if g["dense_weight"] == 1)
    console.print(
        f"fusion on {len(users)} validation users: dense weight {fusion.dense_weight:.2f}, misses "
        f"{'scored by the generator' if fusion.scored_misses else f'floored (penalty {fusion.miss_penalty:g})'}: NDCG@10 {fusion.valid_ndcg10:.4f} (generation alone {pure:.4f}, "
        f"dense re-ranking alone {dense_only:.4f})"
    )
    return fusion


def train_ranking(
    run: str | Path, progress: bool = True, console: Console | None = None, resume: bool = True
) -> tuple[dict, Fusion | None]:
    """The dense half of the served ranking and its fusion, for a run whose generative model is trained
    (with `resume`, a dense model trained with the same settings and data is kept; the fusion is chosen again)."""
    console = console or Console(stderr=True)
    data = load_run_data(run)
    if data.config.dense.ranker == "none":
        if data.paths.ranking.exists():
            data.paths.ranking.unlink()
        console.print("dense.ranker is none: the served ranking is generation alone")
        return {}, None
    stats = train_dense(data, progress, console, resume)
    fusion = choose_fusion(data, progress, console)
    report = data.paths.model / "train_report.json"
    if report.exists():  # a retrained dense half (--dense-only) must not leave the run's report stale
        write_json(report, {**json.loads(report.read_text()), "dense": stats, "fusion": fusion.to_json()})
    return stats, fusion


# settings that do not change what LoRA training computes: a checkpoint made under others still resumes
# nor do the stages' budgets (a stopped run may resume under a larger one)
RESUME_IGNORES = {
    "device",
    "distributed",
    "checkpoint_steps",
    "micro_batch_tokens",
    "max_minutes",
    "max_tokens",
    "pretrain_max_minutes",
    "pretrain_max_tokens",
}


def lora_fingerprint(config: TrainConfig, data_hash: str) -> str:
    """Hash of the settings and data a LoRA checkpoint belongs to."""
    return fingerprint_of(config.model_dump(mode="json", exclude=RESUME_IGNORES), data_hash)


def finished_training(paths: RunPaths, settings_and_data: str) -> TrainReport | None:
    """The report of a LoRA stage that finished with these settings and data (`lora_fingerprint`), whose
    model is the one in `RUN/model`; None when there is none (the report is removed when LoRA starts)."""
    path = paths.model / "train_report.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("fingerprint") != settings_and_data:
        return None
    return TrainReport(**{k: v for k, v in saved.items() if k in TrainReport.__dataclass_fields__})


def train(
    run: str | Path,
    base: str | None = None,
    epochs: int | None = None,
    pretrain_epochs: int | None = None,
    progress: bool = True,
    console: Console | None = None,
    resume: bool = True,
) -> TrainReport | None:
    """Fine-tune a base model with LoRA on the run's SFT tasks and export the best checkpoint to `RUN/model/`.

    In a process started by a launcher (`genrec train --processes N`, torchrun, accelerate launch),
    trains as one of them (`finetune.distributed`); rank 0 returns the report, the others None.
    With `resume`, a stage that stopped part-way goes on from its last checkpoint (`RUN/checkpoints/`).
    """
    data = load_run_data(run)
    config = data.config.train.model_copy()
    overrides = {"base": base, "epochs": epochs, "pretrain_epochs": pretrain_epochs}
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    # "auto" (None) made concrete: the short prompt for a catalog without item text; the model's
    # genrec.json records it, so every backend serves the prompt it was trained on
    config.template = resolve_template(config.template, data.facts)
    bf16 = bf16_supported(resolve_device(config.device, "train.device")) if config.bf16 is None else config.bf16
    processes = start_processes(config.distributed, bf16, config.device)
    check_world(
        config, config.tokens_per_batch, processes.world
    )  # before anything trains (the vocabulary may cap it more)
    console = console or Console(stderr=True)
    console.quiet = console.quiet or not processes.main  # rank 0 alone prints, draws progress bars and writes
    progress = progress and processes.main
    depth = len(next(iter(data.codes.values())))
    # a chunk of history must fit one example with room for the prompt (~64 tokens even with a system prompt)
    fitting = max(1, (config.max_length - 64) // depth)
    if config.max_history > fitting:
        console.print(
            f"[yellow]train.max_history {config.max_history} -> {fitting}: longer chunks would not fit max_length {config.max_length}"
        )
        config.max_history = fitting
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    settings_and_data = lora_fingerprint(config, data.data_hash)
    finished = finished_training(data.paths, settings_and_data) if resume and processes.main else None
    if processes.broadcast(finished is not None if processes.main else None):
        # e.g. a run stopped while its dense model trained: hours of Amazon training kept
        console.print(
            f"the generative model in {data.paths.model} finished training with these settings and data: "
            "kept (--no-resume trains it again)"
        )
        report = finished
    else:
        model, tokenizer, pretrain_stats = prepare_base(
            data, config.base, config, bf16, progress, console, processes, resume
        )
        if processes.main:  # from here RUN/model changes: its report no longer says what it holds
            (data.paths.model / "train_report.json").unlink(missing_ok=True)
        report = fine_tune(data, config, model, tokenizer, pretrain_stats, bf16, progress, console, processes, resume)
    processes.finish()
    if not processes.main:
        return None
    if finished is None:
        write_json(data.paths.model / "train_report.json", asdict(report))
    report.dense, fusion = train_ranking(run, progress, console, resume)  # records both in the report just written
    report.fusion = fusion.to_json() if fusion is not None else {}
    if finished is None:
        console.print(
            f"[green]trained[/] {config.base} in {(time.perf_counter() - started) / 60:.1f} min "
            f"(pre-training {report.pretrain_seconds / 60:.1f} min{', cached' if report.pretrain_cached else ''}): "
            f"best valid NDCG@10 {report.best_valid_ndcg10:.4f} at epoch {report.best_epoch}; model in {data.paths.model}"
        )
    return report


def lora_report(
    config: TrainConfig, data: RunData, model, trainable: int, pretrain_stats: dict, cap: Budget
) -> TrainReport:
    """The report of a LoRA stage about to start (its epochs, best and speed come from the loop)."""
    return TrainReport(
        base=config.base,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=trainable,
        pretrain_seconds=pretrain_stats["seconds"],
        train_seconds=0.0,
        examples_per_s=0.0,
        tokens_per_s=0.0,
        best_epoch=0,
        best_valid_ndcg10=-1.0,
        model_dir=str(data.paths.model),
        pretrain_epochs=pretrain_stats.get("history", []),
        pretrain_cached=bool(pretrain_stats.get("cached")),
        fingerprint=lora_fingerprint(config, data.data_hash),
        pretrain_stopped_by=pretrain_stats.get("stopped_by", ""),
        budgets={"pretrain": pretrain_stats.get("budget"), "lora": cap.to_json()},
    )


def lora_trainee(
    model, tokenizer, data: RunData, config: TrainConfig, processes: Processes, first, batch_tokens: int, cap: Budget
):
    """The model with LoRA adapters and trainable SID rows, prepared for the processes with its optimizer,
    schedule (sized on the first epoch's batches, and on the stage's `cap`) and batch order; and how many
    weights train."""
    sid_rows = add_sid_tokens(tokenizer, codebook_sizes(data.codes.values()))
    torch.manual_seed(config.seed)  # the LoRA init is the same whether the base was pre-trained now or cached
    peft_model = attach_lora(model, config, sid_rows)
    n_lora = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    steps = len(length_batches(first, batch_tokens, random.Random(0))) * config.epochs
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0
    )
    scheduler = cosine_schedule(optimizer, steps, min(100, steps // 10 + 1), cap)
    trained, optimizer = processes.prepare(peft_model, optimizer)
    trainee = Trainee(trained, optimizer, scheduler, random.Random(config.seed))
    return peft_model, trainee, n_lora + len(sid_rows) * model.config.hidden_size


def fine_tune(
    data: RunData,
    config: TrainConfig,
    model,
    tokenizer,
    pretrain_stats: dict,
    bf16: bool,
    progress: bool,
    console: Console,
    processes: Processes,
    resume: bool,
) -> TrainReport:
    """LoRA on the SFT tasks (`finetune.loop`): validation NDCG@10 before training and after every epoch,
    each new best exported to `RUN/model/`, early stopping, the stage's budget, checkpoints."""
    make_examples = example_maker(data, tokenizer, config)
    first = tokenise(tokenizer, make_examples(100), config.max_length)
    budgets = batch_budgets(config, len(tokenizer))
    check_world(config, budgets[0], processes.world)
    cap = Budget(config.max_minutes, config.max_tokens)
    peft_model, trainee, trainable = lora_trainee(model, tokenizer, data, config, processes, first, budgets[0], cap)
    genrec = generator(peft_model, tokenizer, data, config)
    report = lora_report(config, data, model, trainable, pretrain_stats, cap)
    report.processes = processes.world
    users = validation_users(data, config.val_users)
    console.print(
        f"LoRA fine-tuning {config.base}: {report.trainable_parameters / 1e6:.2f}M trainable of "
        f"{report.parameters / 1e6:.1f}M, {config.epochs} epochs, validation on {users} users"
        + (f", {processes.world} processes ({config.distributed.strategy})" if processes.world > 1 else "")
    )
    meta = {"base": config.base, "max_history": config.max_history, "template": config.template}
    meta |= {"semantic_ids_sha256": file_sha256(data.paths.semantic_ids), "sid_levels": genrec.trie.depth}

    def validate(full) -> float:
        return validation_score(replace(genrec, model=merged_copy(full)), data, config.val_users, config.seed, progress)

    def export(entry: dict, full) -> None:  # a usable model exists from epoch 0 on, whatever happens to the others
        if processes.main:
            export_model(
                full, tokenizer, data.paths.model, {**meta, **{k: entry[k] for k in ("epoch", "valid_ndcg@10")}}
            )

    def examples(epoch: int):  # (epoch 1 trains on the examples the schedule was sized on)
        return first if epoch == 1 else tokenise(tokenizer, make_examples(100 + epoch), config.max_length)

    checkpoints = Checkpoints(data.paths.checkpoints / "lora", report.fingerprint, processes, config.checkpoint_steps)
    if not resume:
        checkpoints.clear()
    one_epoch = epochs_of(
        trainee, examples, tokenizer.pad_token_id, budgets, bf16, "LoRA epoch", config.epochs, processes, cap, progress
    )
    record = Loop(
        "LoRA fine-tuning",
        config.epochs,
        one_epoch,
        trainee,
        validate=validate,
        users=users,
        patience=config.patience,
        budget=cap,
        keep_best=export,
        score_start=True,
        known_start=pretrain_stats.get("best_valid_ndcg@10"),
        checkpoints=checkpoints,
        stage="lora",
        processes=processes,
        say=console.print,
    ).run()
    checkpoints.clear()
    processes.release()
    report.epochs, report.best_epoch, report.best_valid_ndcg10 = record.history, record.best_epoch, record.best_score
    report.train_seconds, report.lora_stopped_by = record.sums("seconds"), record.stopped_by
    if report.train_seconds:
        report.examples_per_s = record.sums("examples") / report.train_seconds
        report.tokens_per_s = record.sums("tokens") / report.train_seconds
    return report
