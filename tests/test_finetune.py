"""The generative recommender: SID tokens, SFT data, constrained beam search, training, export, errors.

Everything runs on real MovieLens-100K rows (from the bundled recbole files), real tokenizers and
real (tiny) Llama models; semantic IDs come from residual k-means over the movies' real genres
and years, so the fixture builds in a second.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.config import RunConfig
from genrec.errors import GenrecError
from inference.sid_tokens import codebook_sizes, parse_sids, render_sid

N_USERS = 40


def tiny_config() -> RunConfig:
    """A run config whose scratch model trains in seconds."""
    config = RunConfig(name="tiny")
    t = config.train
    t.num_heads, t.hidden_size, t.num_layers, t.intermediate_size, t.vocab_size = (
        1,
        32,
        1,
        64,
        400,
    )  # head size 32: servable
    t.pretrain_epochs, t.epochs, t.lora_rank, t.lora_alpha = 1, 1, 4, 8
    t.max_length, t.max_history, t.val_users, t.aux_ratio, t.tokens_per_batch = 128, 20, 20, 0.3, 2048
    config.generate.beam_width = 10
    d = config.dense.sasrec
    d.hidden, d.max_len, d.epochs, d.patience, d.eval_every = 16, 20, 3, 2, 1
    config.dense.candidates = 20
    return config


def genre_year_vectors(items) -> np.ndarray:
    """Real content features of the movies: genre multi-hot plus the scaled release year."""
    attrs = [json.loads(a) for a in items["attributes"]]
    genres = sorted({g for a in attrs for g in a.get("genres", [])})
    x = np.zeros((len(items), len(genres) + 1), dtype=np.float32)
    for row, a in enumerate(attrs):
        for g in a.get("genres", []):
            x[row, genres.index(g)] = 1.0
        x[row, -1] = ((a.get("year") or 1990) - 1990) / 20
    return x


def ml100k_run(root: Path, config: RunConfig, users: int = N_USERS) -> Path:
    """A run directory: MovieLens-100K items, the first `users` users' interactions, rkmeans semantic
    IDs of genres and years, `config`."""
    from genrec.config import DataConfig, SemanticIdConfig
    from genrec.run import init_run
    from retrieval.catalog import Catalog, save_catalog
    from retrieval.datasets import load_dataset
    from retrieval.semantic_ids import build_semantic_ids, save_semantic_ids

    paths = init_run(root, config)
    catalog = load_dataset(DataConfig(dataset="ml-100k"))
    keep = sorted(catalog.interactions["user_id"].unique())[:users]
    catalog = Catalog(catalog.items, catalog.interactions[catalog.interactions["user_id"].isin(keep)])
    save_catalog(catalog, paths)
    sid_config = SemanticIdConfig(method="rkmeans", source="content", levels=2, codebook_size=16)
    save_semantic_ids(build_semantic_ids(catalog, sid_config, genre_year_vectors(catalog.items), progress=False), paths)
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory: MovieLens-100K items, 40 users' interactions, semantic IDs, a tiny-model config."""
    return ml100k_run(tmp_path_factory.mktemp("finetune") / "run", tiny_config())


@pytest.fixture(scope="module")
def run_data(tiny_run):
    from finetune.train import load_run_data

    return load_run_data(tiny_run)


@pytest.fixture(scope="module")
def tokenizer(run_data):
    """The scratch tokenizer trained on the run's texts, with the SID tokens added."""
    from finetune.tasks import corpus_texts
    from finetune.tokenizer import add_sid_tokens, train_scratch_tokenizer

    tok = train_scratch_tokenizer(corpus_texts(run_data.facts), 400)
    add_sid_tokens(tok, codebook_sizes(run_data.codes.values()))
    return tok


@pytest.fixture(scope="module")
def untrained(run_data, tokenizer):
    """A randomly initialised tiny Llama behind `LocalGenerator`: nothing learned, so only the trie keeps it valid."""
    from inference.decoding.local import LocalGenerator
    from inference.decoding.prompts import HistoryPrompt
    from inference.decoding.trie import SidTrie
    from inference.models import build_scratch_model

    model = build_scratch_model(run_data.config.train, tokenizer).eval()
    trie = SidTrie.for_tokenizer(run_data.codes, tokenizer)
    return LocalGenerator(model, tokenizer, trie, HistoryPrompt(tokenizer, trie.code_of, 20), beam_width=10, bf16=False)


# ---- SID tokens -------------------------------------------------------------------------------


def test_sid_tokens_are_single_tokens_that_round_trip(run_data, tokenizer):
    codes = list(run_data.codes.values())[:50]
    for code in codes:
        text = render_sid(code)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(code), f"{text} should be {len(code)} tokens, got {tokenizer.convert_ids_to_tokens(ids)}"
        assert parse_sids(tokenizer.decode(ids)) == [tuple(code)]
    # inside a prompt, next to words, they still come out whole
    prompt = "History: " + "".join(render_sid(c) for c in codes[:3]) + " next?"
    decoded = tokenizer.decode(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert parse_sids(decoded) == [tuple(c) for c in codes[:3]]


def test_adding_sid_tokens_twice_changes_nothing(run_data, tokenizer):
    from finetune.tokenizer import add_sid_tokens

    before = len(tokenizer)
    ids = add_sid_tokens(tokenizer, codebook_sizes(run_data.codes.values()))
    assert len(tokenizer) == before and len(set(ids)) == len(ids) == sum(codebook_sizes(run_data.codes.values()))


# ---- constrained generation -------------------------------------------------------------------


def test_recommend_never_returns_invalid_or_history_items_even_untrained(run_data, untrained):
    catalog = set(run_data.item_ids)
    histories = [items for _, (items, _) in sorted(run_data.split.valid.items())][:12]
    found = untrained.generate(histories, 10, exclude=[set(h) for h in histories])
    for history, items in zip(histories, found):
        ids = [i for i, _ in items]
        assert len(ids) == 10 and len(set(ids)) == 10
        assert set(ids) <= catalog
        assert not set(ids) & set(history)
        scores = [s for _, s in items]
        assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))


def test_where_filter_and_tiny_allowed_sets_are_respected(run_data, untrained):
    from genrec.run import RunPaths
    from retrieval.catalog import load_catalog
    from retrieval.where import catalog_fields, compile_where, filter_items

    items = load_catalog(RunPaths(run_data.paths.root)).items
    fields = catalog_fields(items)
    comedies_90s = filter_items(items, compile_where({"$and": [{"genre": "Comedy"}, {"year": {"$gte": 1990}}]}, fields))
    assert 10 < len(comedies_90s) < len(items)
    # the singular names the list attribute, as in search: {"genre": ...} is {"genres": ...}
    assert comedies_90s == filter_items(items, compile_where({"genres": "Comedy", "year": {"$gte": 1990}}, fields))
    history = run_data.split.train[sorted(run_data.split.train)[0]]
    found = untrained.generate([history], 10, exclude=[set(history)], only=comedies_90s)[0]
    assert found and {i for i, _ in found} <= comedies_90s - set(history)
    # fewer allowed items than k: fewer results, never an item outside the allowed set
    three = set(sorted(comedies_90s - set(history))[:3])
    found = untrained.generate([history], 10, exclude=[set(history)], only=three)[0]
    assert {i for i, _ in found} == three


def test_an_unknown_filter_field_is_an_error_naming_the_valid_ones(run_data):
    from genrec.run import RunPaths
    from retrieval.catalog import load_catalog
    from retrieval.where import catalog_fields, compile_where

    fields = catalog_fields(load_catalog(RunPaths(run_data.paths.root)).items)
    with pytest.raises(GenrecError, match=r"unknown field 'colour'; known fields: .*genres.*year"):
        compile_where({"colour": "red"}, fields)
    with pytest.raises(GenrecError, match=r"unknown operator '\$like'"):
        compile_where({"year": {"$like": 1990}}, fields)


def test_beam_search_agrees_with_hf_generate_on_the_trie(run_data, untrained):
    from hf_reference import hf_trie_topk

    history = run_data.split.train[sorted(run_data.split.train)[1]]
    exclude = set(history)
    ours = untrained.generate([history], 10, exclude=[exclude])[0]
    theirs = hf_trie_topk(
        untrained.model,
        untrained.tokenizer,
        untrained.prompts.token_ids(history),
        untrained.trie,
        10,
        untrained.trie.exclusion(exclude),
    )
    assert [i for i, _ in ours] == [i for i, _ in theirs]
    assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)


def test_scoring_given_items_gives_what_the_beams_scored_and_the_generators_log_prob_of_the_rest(run_data, untrained):
    """The served ranking scores dense candidates no beam reached with the generator: those scores
    must be the beam search's own for items a beam reached, and the full sequence log-prob (checked
    against one plain forward pass per item) for the rest, alone or batched with other histories."""
    histories = [items for _, (items, _) in sorted(run_data.split.valid.items())][:3]
    beams = untrained.generate(histories, 6)
    catalog = untrained.trie.item_ids()
    others = [[i for i in catalog if i not in {b for b, _ in found}][: 2 + 3 * n] for n, found in enumerate(beams)]
    wanted = [[i for i, _ in found][::-1] + extra for found, extra in zip(beams, others)]  # unequal lengths
    together = untrained.score(histories, wanted)
    for history, found, items, scores in zip(histories, beams, wanted, together):
        assert len(scores) == len(items)
        by_beam = dict(found)
        assert np.allclose(
            [scores[j] for j, i in enumerate(items) if i in by_beam], [s for _, s in found][::-1], atol=1e-4
        )
        alone = untrained.score([history], [items])[0]
        assert np.allclose(alone, scores, atol=1e-4)
        prompt = list(untrained.prompts.token_ids(history))
        for item, got in list(zip(items, scores))[-2:]:
            path = untrained.trie.tokens_of(item)
            with torch.no_grad():
                logits = untrained.model(input_ids=torch.tensor([prompt + path[:-1]])).logits[0].float()
            logp = torch.log_softmax(logits[len(prompt) - 1 :], dim=-1)
            assert got == pytest.approx(float(sum(logp[k, t] for k, t in enumerate(path))), abs=1e-4)
    assert untrained.score(histories[:2], [[], wanted[1]])[0].shape == (0,)


def test_batched_and_single_requests_rank_alike(run_data, untrained):
    histories = [items for _, (items, _) in sorted(run_data.split.valid.items())][:6]
    batched = untrained.generate(histories, 5)
    for history, together in zip(histories, batched):
        alone = untrained.generate([history], 5)[0]
        assert [i for i, _ in alone] == [i for i, _ in together]
        assert np.allclose([s for _, s in alone], [s for _, s in together], atol=1e-3)


# ---- SFT data -----------------------------------------------------------------------------------


def test_training_examples_hold_only_training_items_of_each_user(run_data, tokenizer):
    from finetune.tasks import aux_examples, next_item_examples

    split, codes = run_data.split, run_data.codes
    item_of = {tuple(c): i for i, c in codes.items()}
    rng = random.Random(0)
    seen: dict[str, list[str]] = {}
    for ex in next_item_examples(tokenizer, split.train, codes, max_history=20, rng=rng):
        seen.setdefault(ex.user, []).extend(item_of[c] for c in parse_sids(ex.target))
    assert seen == {u: items for u, items in split.train.items() if items}
    for user, (history, _target) in split.test.items():
        assert seen[user] == history[:-1]  # neither the validation item nor the test item
        assert split.valid[user][1] == history[-1]
    for ex in aux_examples(tokenizer, split.train, codes, run_data.facts, 200, rng):
        if ex.task == "explain":
            (code,) = parse_sids(ex.prompt)
            assert item_of[code] in split.train[ex.user]
    assert {ex.task for ex in aux_examples(tokenizer, split.train, codes, run_data.facts, 40, rng)} == {
        "item_to_text",
        "text_to_item",
        "query_to_item",
        "explain",
    }


def test_queries_and_explanations_state_only_real_attributes(run_data):
    from finetune.tasks import describe_query
    from inference.explain import grounded_explanation

    facts = run_data.facts
    rng = random.Random(1)
    for item in list(facts.values())[:200]:
        query = describe_query(item, rng)
        if query is None:
            continue
        words = query.removeprefix("an ").removeprefix("a ").removesuffix(" item")
        for part in words.replace(",", " ").split():
            assert (part.endswith("0s") and int(part[:-1]) == item.year // 10 * 10) or part in " ".join(item.kinds)
    star_wars, alien, toy_story = facts["50"], facts["183"], facts["1"]
    text = grounded_explanation(star_wars, [toy_story, alien])
    assert "Star Wars" in text and "1977" in text and "Sci-Fi" in text and "Alien" in text
    assert "Toy Story" not in text  # shares no genre with Star Wars, so it is not cited as the reason


# ---- training ---------------------------------------------------------------------------------


def small_model_and_examples(run_data, tokenizer):
    """A fresh scratch model (seed 0) and the tokenised next-item examples of ten training users."""
    from finetune.batches import tokenise
    from finetune.tasks import next_item_examples
    from inference.models import build_scratch_model

    torch.manual_seed(0)
    model = build_scratch_model(run_data.config.train, tokenizer)
    examples = next_item_examples(
        tokenizer, dict(list(run_data.split.train.items())[:10]), run_data.codes, 20, random.Random(0)
    )
    return model, tokenise(tokenizer, examples, 128)


def test_a_few_training_steps_lower_the_loss(run_data, tokenizer):
    from finetune.batches import cosine_schedule, train_epoch

    model, data = small_model_and_examples(run_data, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = cosine_schedule(optimizer, 100, warmup=1)
    losses = [
        train_epoch(
            model, data, optimizer, scheduler, tokenizer.pad_token_id, 1024, random.Random(e), False, "t", False
        ).loss
        for e in range(4)
    ]
    assert losses[-1] < losses[0] - 0.5, losses


def test_a_capped_stage_anneals_by_its_budget_when_the_budget_runs_out_before_the_steps(run_data, tokenizer):
    from finetune.batches import cosine_schedule, train_epoch
    from finetune.stages import Budget

    model, data = small_model_and_examples(run_data, tokenizer)
    peak = 1e-3

    def rates(cap: Budget | None) -> list[float]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=peak)
        scheduler = cosine_schedule(optimizer, 10_000, 1, cap)  # a schedule of far more steps than run
        seen = []
        for e in range(3):
            train_epoch(
                model,
                data,
                optimizer,
                scheduler,
                tokenizer.pad_token_id,
                1024,
                random.Random(e),
                False,
                "t",
                False,
                budget=cap,
                spent=(0.0, 0),
            )
            seen.append(optimizer.param_groups[0]["lr"])
        return seen

    uncapped = rates(None)
    assert all(r > 0.99 * peak for r in uncapped)  # a handful of 10,000 steps: still at the peak
    tokens = sum(len(row.input_ids) for row in data)  # the cap: about one epoch's tokens
    capped = rates(Budget(tokens=tokens))
    assert capped[0] < 0.2 * peak and capped[-1] == pytest.approx(0.1 * peak)  # annealed to the floor


def test_pretraining_stops_when_validation_stalls_and_keeps_the_best_epoch(run_data, tokenizer):
    from finetune.pretrain import pretrain
    from finetune.tasks import next_item_examples
    from inference.models import build_scratch_model

    torch.manual_seed(0)
    config = run_data.config.train.model_copy(
        update={"pretrain_epochs": 8, "pretrain_val_start": 2, "pretrain_patience": 2}
    )
    model = build_scratch_model(config, tokenizer)
    users = dict(list(run_data.split.train.items())[:6])
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.9])  # epochs 2-5; epoch 3 best, then two epochs without a gain
    kept = {}

    def validate() -> float:
        score = next(scores)
        kept[score] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return score

    stats = pretrain(
        model,
        tokenizer,
        lambda e: next_item_examples(tokenizer, users, run_data.codes, 20, random.Random(e)),
        config,
        False,
        progress=False,
        validate=validate,
    )
    assert [("valid_ndcg@10" in h) for h in stats["history"]] == [
        False,
        True,
        True,
        True,
        True,
    ]  # stopped after epoch 5
    assert stats["best_epoch"] == 3 and stats["best_valid_ndcg@10"] == 0.3
    assert all(torch.equal(v, kept[0.3][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, kept[0.25][k]) for k, v in model.state_dict().items())


def test_pretraining_stops_at_its_token_budget_mid_epoch_scores_that_epoch_and_says_so(run_data, tokenizer):
    """`pretrain_max_tokens` ends pre-training at the step that reaches it (not at an epoch's end):
    that part-epoch is validated, the best scored epoch is kept, and the stats say what stopped it."""
    from finetune.pretrain import pretrain
    from finetune.tasks import next_item_examples
    from inference.models import build_scratch_model

    torch.manual_seed(0)
    users = dict(list(run_data.split.train.items())[:30])
    make = lambda e: next_item_examples(tokenizer, users, run_data.codes, 20, random.Random(e))  # noqa: E731
    free = run_data.config.train.model_copy(update={"pretrain_epochs": 3, "tokens_per_batch": 256})
    unbounded = pretrain(build_scratch_model(free, tokenizer), tokenizer, make, free, False, progress=False)
    epoch_tokens = unbounded["history"][0]["tokens"]
    assert unbounded["stopped_by"] == "epochs" and len(unbounded["history"]) == 3

    capped = free.model_copy(update={"pretrain_max_tokens": int(epoch_tokens * 1.5), "pretrain_val_start": 1})
    scores = iter([0.2, 0.1])
    stats = pretrain(
        build_scratch_model(capped, tokenizer),
        tokenizer,
        make,
        capped,
        False,
        progress=False,
        validate=lambda: next(scores),
        val_users=7,
    )
    history = stats["history"]
    assert stats["stopped_by"] == "max_tokens" and len(history) == 2 and history[1]["stopped_by"] == "max_tokens"
    assert epoch_tokens * 1.5 <= sum(h["tokens"] for h in history) < epoch_tokens * 2  # mid-epoch
    assert history[1]["valid_ndcg@10"] == 0.1 and history[1]["valid_users"] == 7 and history[1]["valid_seconds"] >= 0
    assert stats["best_epoch"] == 1 and stats["budget"] == {"minutes": None, "tokens": int(epoch_tokens * 1.5)}


def test_pretraining_killed_mid_epoch_resumes_at_that_step_and_ends_with_the_weights_of_an_uninterrupted_run(
    run_data, tokenizer, tmp_path, capsys
):
    """The one loop's resume on a language model: with a checkpoint every step, a run killed in its
    second epoch goes on from the last step saved (not from the epoch's start, nor from scratch),
    and ends with the losses, scores and weights of a run that was never stopped."""
    from finetune.checkpoint import Checkpoints
    from finetune.distributed import Processes
    from finetune.pretrain import pretrain
    from finetune.tasks import next_item_examples
    from inference.models import build_scratch_model

    config = run_data.config.train.model_copy(
        update={"pretrain_epochs": 2, "pretrain_val_start": 1, "tokens_per_batch": 1024}
    )
    users = dict(list(run_data.split.train.items())[:6])
    make = lambda e: next_item_examples(tokenizer, users, run_data.codes, 20, random.Random(e))  # noqa: E731
    scores = [0.1, 0.2]  # the last epoch is the best: the weights compared are the last ones trained

    def pretrained(validate, checkpoints=None):
        torch.manual_seed(0)
        model = build_scratch_model(config, tokenizer)
        return model, pretrain(model, tokenizer, make, config, False, False, None, validate, None, checkpoints)

    straight, expected = pretrained(iter(scores).__next__)
    folder = tmp_path / "pretrain"

    def killed_in_epoch_two() -> float:  # its last step trained, the end of the epoch not yet saved
        if len(validated) == 1:
            raise KeyboardInterrupt
        validated.append(scores[0])
        return scores[0]

    validated: list[float] = []
    with pytest.raises(KeyboardInterrupt):
        pretrained(killed_in_epoch_two, Checkpoints(folder, "f" * 64, Processes(), every_steps=1))
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["epoch"] == 1 and meta["step"] >= 1  # part-way through epoch 2
    capsys.readouterr()
    resumed, stats = pretrained(iter(scores[1:]).__next__, Checkpoints(folder, "f" * 64, Processes(), every_steps=1))
    said = " ".join(capsys.readouterr().err.split())  # (the console wraps long lines)
    assert "resuming pre-training from" in said and f"(pretrain: epoch 1 done, step {meta['step']} of epoch 2)" in said
    assert [(h["loss"], h["valid_ndcg@10"]) for h in stats["history"]] == [
        (h["loss"], h["valid_ndcg@10"]) for h in expected["history"]
    ]
    assert stats["best_epoch"] == 2 and all(
        torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), straight.state_dict().values())
    )


def test_the_budget_names_the_cap_that_was_reached():
    from finetune.stages import Budget

    assert Budget().reason(1e9, 10**12) is None
    assert Budget(minutes=2).reason(119.0, 0) is None and Budget(minutes=2).reason(120.0, 0) == "max_minutes"
    assert Budget(tokens=1000).reason(0.0, 999) is None and Budget(tokens=1000).reason(0.0, 1000) == "max_tokens"


def test_a_freshly_attached_lora_leaves_the_models_outputs_unchanged(run_data, tokenizer):
    """Why training does not re-score the pre-trained model before the first LoRA epoch."""
    from finetune.lora import attach_lora
    from finetune.tokenizer import add_sid_tokens
    from inference.models import build_scratch_model

    sid_rows = add_sid_tokens(tokenizer, codebook_sizes(run_data.codes.values()))
    model = build_scratch_model(run_data.config.train, tokenizer).eval()
    probe = torch.tensor([sid_rows[:12]])
    with torch.no_grad():
        before = model(input_ids=probe).logits.clone()
        after = attach_lora(model, run_data.config.train, sid_rows).eval()(input_ids=probe).logits
    assert torch.equal(before, after)


def test_validation_copy_folds_the_adapter_in_and_leaves_the_trained_model_alone(run_data, tokenizer):
    from finetune.lora import attach_lora, merged_copy
    from finetune.tokenizer import add_sid_tokens
    from inference.models import build_scratch_model

    sid_rows = add_sid_tokens(tokenizer, codebook_sizes(run_data.codes.values()))
    peft_model = attach_lora(build_scratch_model(run_data.config.train, tokenizer), run_data.config.train, sid_rows)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained, non-identity adapter
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    probe = torch.tensor([sid_rows[:12]])
    merged = merged_copy(peft_model.eval())
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=probe).logits, peft_model(input_ids=probe).logits, atol=1e-5)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in peft_model.state_dict().items())


def test_export_reloads_with_from_pretrained_and_gives_identical_logits(run_data, tokenizer, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.lora import attach_lora, export_model
    from finetune.tokenizer import add_sid_tokens
    from inference.models import build_scratch_model

    sid_rows = add_sid_tokens(tokenizer, codebook_sizes(run_data.codes.values()))
    model = build_scratch_model(run_data.config.train, tokenizer)
    frozen_row = model.get_input_embeddings().weight[5].detach().clone()
    peft_model = attach_lora(model, run_data.config.train, sid_rows)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)  # as in training: decay would move frozen rows
    ids = torch.tensor([sid_rows[:8] + sid_rows[-8:]])
    for _ in range(3):  # move LoRA weights and SID rows away from their initial values
        peft_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    assert torch.equal(model.get_input_embeddings().weight[5], frozen_row), "only SID rows may train"
    export_model(peft_model, tokenizer, tmp_path / "model", {"max_history": 20})

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "model" / "base")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "model" / "adapter").eval()
    probe = torch.tensor([sid_rows[3:11] + tokenizer("next item", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=probe).logits, reloaded(input_ids=probe).logits, atol=1e-5)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "model" / "base")) == len(tokenizer)
    # the adapter is LoRA only: what vLLM's LoRA loader accepts
    adapter_config = json.loads((tmp_path / "model" / "adapter" / "adapter_config.json").read_text())
    assert not adapter_config.get("modules_to_save") and not adapter_config.get("trainable_token_indices")
    with safe_open(str(tmp_path / "model" / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)


def test_failed_export_leaves_the_previous_checkpoint_usable(trained_run, tmp_path):
    from finetune.lora import export_model
    from inference.ranker import open_ranker

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    model = open_ranker(run)[0].generator
    before = sorted(p.name for p in (run / "model").iterdir())
    peft_like = _reattach(run)
    with pytest.raises(TypeError):  # metadata that cannot be written: the export fails at its last step
        export_model(peft_like, model.tokenizer, run / "model", {"bad": object()})
    assert sorted(p.name for p in (run / "model").iterdir()) == before
    assert open_ranker(run)[0].rank([catalog_items(run)[:2]], 3)[0]


def catalog_items(run: Path) -> list[str]:
    """The run's item ids, in catalog order."""
    import pandas as pd

    return [str(i) for i in pd.read_parquet(run / "items.parquet")["item_id"]]


def _reattach(run: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(run / "model" / "base"), run / "model" / "adapter"
    )


def test_train_writes_a_model_that_recommends_and_evaluates(trained_run):
    from eval.evaluate import evaluate
    from eval.run_eval import genrec_models
    from genrec.run import RunPaths
    from inference.recommend import RunRecommender
    from retrieval.catalog import load_catalog
    from retrieval.split import leave_one_out

    meta = json.loads((trained_run / "model" / "genrec.json").read_text())
    report = json.loads((trained_run / "model" / "train_report.json").read_text())
    assert (
        meta["max_history"] == 20
        and [e["epoch"] for e in report["epochs"]] == [0, 1]
        and report["epochs"][1]["loss"] > 0
    )
    # the LoRA stage starts from the best pre-training epoch, carrying its validation score
    assert report["pretrain_epochs"] and all(0 <= e["valid_ndcg@10"] <= 1 for e in report["pretrain_epochs"])
    best_pretrain = max(e["valid_ndcg@10"] for e in report["pretrain_epochs"])
    assert report["epochs"][0]["valid_ndcg@10"] == pytest.approx(best_pretrain, abs=1e-9)
    recs = RunRecommender(trained_run).recommend("1", 5)
    catalog = load_catalog(RunPaths(trained_run))
    history = set(catalog.interactions.loc[catalog.interactions["user_id"] == "1", "item_id"])
    assert len(recs) == 5 and not {r.item_id for r in recs} & history
    titles = dict(zip(catalog.items["item_id"], catalog.items["title"]))
    assert all(r.title == titles[r.item_id] for r in recs)
    split = leave_one_out(catalog.interactions)
    models = genrec_models(RunPaths(trained_run), None)
    assert [m.name for m in models] == ["genrec", "genrec-gen"] or [m.name for m in models] == ["genrec"]
    results = evaluate(models, split, catalog.items["item_id"], max_users=15, progress=False)
    assert results["genrec"]["valid_rate"] == 1.0 and results["genrec"]["users"] == 15


def test_pure_generation_beside_the_served_ranking_searches_each_history_once(trained_run):
    from inference.ranker import open_ranker
    from inference.ranking import SharedBeams

    generator = open_ranker(trained_run)[0].generator
    searched: list[tuple] = []

    class Counting:  # the run's real generator, counting the histories it is asked to search
        name, trie, beam_width = generator.name, generator.trie, generator.beam_width

        def generate(self, histories, width=None, exclude=None, only=None):
            searched.extend(tuple(h) for h in histories)
            return generator.generate(histories, width, exclude, only)

    items = catalog_items(trained_run)
    histories = [items[:3], items[3:7], items[7:9]]
    exclude = [set(h) for h in histories]
    shared = SharedBeams(Counting())
    served, pure = shared.generate(histories, 5, exclude), shared.generate(histories, 5, exclude)
    assert served == pure == generator.generate(histories, 5, exclude)
    assert len(searched) == 3  # the second ranking took the first one's beams
    other = shared.generate(histories[:1], 5)  # another request (no exclusions): searched anew
    assert other == generator.generate(histories[:1], 5) and len(searched) == 4


def test_recommend_command_prints_json(trained_run):
    import typer
    from typer.testing import CliRunner

    from serving.commands import recommend

    app = typer.Typer()
    app.command()(recommend)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the command name
    result = CliRunner().invoke(app, ["recommend", "--run", str(trained_run), "--user", "10", "-k", "4", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # stdout is JSON alone: progress goes to stderr
    assert len(rows) == 4 and {"item_id", "title", "score"} <= set(rows[0])


# ---- the served ranking -------------------------------------------------------------------------


def test_fusion_mixes_the_two_log_probabilities_and_floors_items_no_beam_reached():
    from inference.ranking import Candidates, fused_order

    c = Candidates(["a", "b", "c"], np.array([-1.0, -2.0, np.nan]), np.array([-5.0, -3.0, -1.0]))
    order, _ = fused_order(c, 0.0, 1.0)
    assert [c.items[j] for j in order] == ["a", "b", "c"]  # generation alone: beams first, in beam order
    order, _ = fused_order(c, 1.0, 1.0)
    assert [c.items[j] for j in order] == ["c", "b", "a"]  # dense alone
    order, scores = fused_order(c, 0.5, 1.0)
    by_item = {c.items[j]: s for j, s in zip(order, scores)}
    assert by_item["c"] == pytest.approx(0.5 * (-2.0 - 1.0) + 0.5 * -1.0)  # floor = lowest beam -2 minus the penalty
    assert by_item["a"] == pytest.approx(0.5 * -1.0 + 0.5 * -5.0)
    c.missed = np.array([np.nan, np.nan, -7.0])  # the generator's own log-prob of the item no beam reached
    order, scores = fused_order(c, 0.5, 1.0, scored_misses=True)
    assert dict(zip([c.items[j] for j in order], scores))["c"] == pytest.approx(0.5 * -7.0 + 0.5 * -1.0)
    order, scores = fused_order(c, 0.5, 1.0)  # a fusion that floors misses ignores the generator's score
    assert dict(zip([c.items[j] for j in order], scores))["c"] == pytest.approx(0.5 * (-2.0 - 1.0) + 0.5 * -1.0)


def test_the_served_ranking_never_returns_history_or_unknown_items(trained_run):
    from genrec.run import RunPaths
    from inference.ranker import open_ranker
    from retrieval.catalog import load_catalog
    from retrieval.split import leave_one_out

    ranker, notice = open_ranker(trained_run)
    assert notice is None and ranker.hybrid and ranker.name == "genrec"
    split = leave_one_out(load_catalog(RunPaths(trained_run)).interactions)
    histories = [h for h, _ in list(split.test.values())[:10]]
    catalog = set(ranker.dense.item_ids)
    for history, row in zip(histories, ranker.rank(histories, 15, exclude=[set(h) for h in histories])):
        ids = [i for i, _ in row]
        assert len(ids) == 15 == len(set(ids)) and set(ids) <= catalog and not set(ids) & set(history)
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)


def test_training_chooses_the_fusion_on_validation_and_serves_exactly_what_it_scored(trained_run):
    from genrec.metrics import validation_ndcg
    from genrec.run import RunPaths
    from inference.ranker import open_ranker
    from inference.ranking import Fusion
    from retrieval.catalog import load_catalog
    from retrieval.split import leave_one_out

    fusion = Fusion.from_json(json.loads((trained_run / "ranking.json").read_text()))
    assert fusion.valid_ndcg10 == max(g["valid_ndcg@10"] for g in fusion.grid)
    assert any(g["dense_weight"] == 0 for g in fusion.grid)  # pure generation competes too
    report = json.loads((trained_run / "model" / "train_report.json").read_text())
    assert report["dense"]["best_epoch"] >= 1 and report["fusion"]["dense_weight"] == fusion.dense_weight
    ranker, _ = open_ranker(trained_run)
    catalog = load_catalog(RunPaths(trained_run))
    split = leave_one_out(catalog.interactions)
    served = validation_ndcg(ranker, split.valid, catalog.items["item_id"])
    assert served == pytest.approx(fusion.valid_ndcg10, abs=1e-9)
    # misses scored by the generator (whichever way won): served as validated too
    scored = max((g for g in fusion.grid if g.get("scored_misses")), key=lambda g: g["valid_ndcg@10"])
    ranker.fusion = dataclasses.replace(fusion, dense_weight=scored["dense_weight"], scored_misses=True)
    served = validation_ndcg(ranker, split.valid, catalog.items["item_id"])
    assert served == pytest.approx(scored["valid_ndcg@10"], abs=1e-9)


def test_a_run_without_a_dense_model_ranks_by_generation_and_says_so(trained_run, tmp_path):
    from finetune.train import train_ranking
    from inference.ranker import open_ranker

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    shutil.rmtree(old / "dense")
    (old / "ranking.json").unlink()
    ranker, notice = open_ranker(old)
    assert not ranker.hybrid and ranker.name == "genrec-gen"
    assert "ranking by generation alone" in notice and "--dense-only" in notice
    assert ranker.rank([catalog_items(old)[:3]], 5)[0]
    train_ranking(old, progress=False)  # what `genrec train --dense-only` runs
    assert open_ranker(old)[1] is None


# ---- bad input ----------------------------------------------------------------------------------


def test_unknown_user_and_empty_history_are_one_line_errors(trained_run):
    from inference.recommend import RunRecommender

    rec = RunRecommender(trained_run)
    with pytest.raises(GenrecError, match="unknown user id 'nobody'"):
        rec.recommend("nobody")
    with pytest.raises(GenrecError, match="history is empty"):
        rec.recommend(history=[])
    with pytest.raises(GenrecError, match="not in the catalog: nope"):
        rec.recommend(history=["1", "nope"])


def test_base_that_is_not_a_causal_lm_is_refused(tmp_path):
    from inference.models import resolve_base

    with pytest.raises(
        GenrecError,
        match=r"not 'scratch', a packaged model \(smollm2-135m, qwen2.5-coder-1.5b, qwen2.5-coder-0.5b\), or a model folder",
    ):
        resolve_base(str(tmp_path / "missing"))
    with pytest.raises(GenrecError, match="no config.json"):
        resolve_base(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(GenrecError, match="not a causal LM"):
        resolve_base(str(tmp_path))


def test_run_without_index_or_model_says_what_to_run_first(tiny_run, tmp_path):
    from finetune.train import train
    from inference.ranker import open_ranker

    with pytest.raises(GenrecError, match="genrec index"):
        train(tmp_path / "nothing-here", progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run, partial)
    (partial / "semantic_ids.json").unlink()
    with pytest.raises(GenrecError, match=r"semantic_ids.json: missing; run `genrec index"):
        train(partial, progress=False)
    with pytest.raises(GenrecError, match="genrec train"):
        open_ranker(tiny_run)


def test_model_refuses_semantic_ids_changed_after_training(trained_run, tmp_path):
    from inference.ranker import open_ranker

    changed = tmp_path / "changed"
    shutil.copytree(trained_run, changed)
    codes = json.loads((changed / "semantic_ids.json").read_text())
    first, second = list(codes)[:2]
    codes[first], codes[second] = codes[second], codes[first]
    (changed / "semantic_ids.json").write_text(json.dumps(codes))
    with pytest.raises(GenrecError, match="changed since the model was trained"):
        open_ranker(changed)


# ---- SmolLM2 from its GGUF --------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_converts_from_gguf_and_takes_sid_tokens(tmp_path, run_data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.tokenizer import add_sid_tokens
    from inference.decoding.prompts import chat_prompt
    from inference.models import load_pretrained, resize_for_tokenizer, smollm2_folder

    folder = smollm2_folder(tmp_path / "cache", progress=False)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(chat_prompt(tokenizer, "What is the capital of France?"), return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])
    model, tokenizer = load_pretrained(str(folder))
    sizes = codebook_sizes(run_data.codes.values())
    add_sid_tokens(tokenizer, sizes)
    resize_for_tokenizer(model, tokenizer)
    code = next(iter(run_data.codes.values()))
    assert len(tokenizer(render_sid(code), add_special_tokens=False)["input_ids"]) == len(code)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


@pytest.mark.slow
def test_explainer_writes_an_explanation_from_real_attributes(run_data):
    from inference.explain import Explainer, explanation_messages

    facts = run_data.facts
    star_wars, history = facts["50"], [facts["181"], facts["172"]]  # Return of the Jedi, Empire Strikes Back
    prompt = explanation_messages(star_wars, history)[1]["content"]
    assert "Star Wars (1977)" in prompt and "Sci-Fi" in prompt and "Empire Strikes Back" in prompt
    text = Explainer("smollm2-135m", max_new_tokens=60).explain(star_wars, history)
    assert len(text.split()) >= 5


def test_train_command_refuses_a_bad_base_before_training(tiny_run, tmp_path):
    import typer
    from typer.testing import CliRunner

    from finetune.commands import train

    app = typer.Typer()
    app.command()(train)
    app.command("noop")(lambda: None)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    result = CliRunner().invoke(app, ["train", "--run", str(tiny_run), "--base", str(tmp_path)])
    assert isinstance(result.exception, GenrecError) and "not a causal LM" in str(result.exception)
    assert not (tiny_run / "model").exists()


def test_explanations_naming_unknown_things_are_rejected(run_data):
    from inference.explain import grounded_explanation, is_grounded

    facts = run_data.facts
    star_wars, history = facts["50"], [facts["181"], facts["172"]]
    assert is_grounded(grounded_explanation(star_wars, history), star_wars, history)
    assert is_grounded("You will like Star Wars because it is Sci-Fi, like Empire Strikes Back.", star_wars, history)
    # what SmolLM2-135M actually wrote for these facts: a studio and a date the catalog never gave
    assert not is_grounded("Star Wars has been adapted into a Disney film.", star_wars, history)
    assert not is_grounded("Star Wars was released on December 8, 1996.", star_wars, history)
    # true but empty, and a model looping: neither explains anything
    assert not is_grounded("Star Wars (1977) is a movie, not a book.", star_wars, history)
    assert not is_grounded("Star Wars is a classic film that has been reimagined and reimagined.", star_wars, history)
    assert not is_grounded("Star Wars is a classic Sci-Fi film, and it is a classic Sci-Fi film.", star_wars, history)
    # a genre the catalog knows that Star Wars does not have
    kinds = {k for f in facts.values() for k in f.kinds}
    assert is_grounded("Star Wars is Sci-Fi, like Empire Strikes Back.", star_wars, history, other_kinds=kinds)
    assert not is_grounded("Star Wars is a Sci-Fi comedy-drama.", star_wars, history, other_kinds=kinds)


def test_a_catalog_without_item_text_trains_and_serves_the_short_prompt(run_data, tokenizer):
    """Auto (train.template None): items with no text beyond an id get the short prompt (the history
    alone), and the prompt training builds is the one every backend serves; items with text keep the
    worded templates. The template is part of pre-training's fingerprint once set, so a checkpoint
    of the other prompt is never resumed, and a run that never set it keeps its old fingerprint."""
    from finetune.checkpoint import fingerprint_of
    from finetune.pretrain import PRETRAIN_FIELDS, fingerprint
    from finetune.tasks import next_item_examples, resolve_template
    from inference.decoding.prompts import SHORT_TEMPLATE, HistoryPrompt, chat_prompt
    from inference.facts import ItemFacts

    bare = {i: ItemFacts(i, f"item {i}", f"item {i}", [], None, []) for i in run_data.codes}
    assert resolve_template(None, bare) == SHORT_TEMPLATE
    assert resolve_template(None, run_data.facts) is None  # MovieLens items carry genres and years
    assert resolve_template("next_item.2.j2", bare) == "next_item.2.j2"  # a template set is kept

    split, codes = run_data.split, run_data.codes
    examples = next_item_examples(tokenizer, split.train, codes, 20, random.Random(0), template=SHORT_TEMPLATE)
    assert {ex.prompt for ex in examples} == {chat_prompt(tokenizer, "")}
    assert len(tokenizer(examples[0].prompt, add_special_tokens=False)["input_ids"]) <= 6
    served = HistoryPrompt(tokenizer, codes, 20, SHORT_TEMPLATE)
    user = next(u for u in sorted(split.train) if 2 <= len(split.train[u]) <= 20)
    assert served.text(split.train[user]) == chat_prompt(tokenizer, "") + "".join(
        render_sid(codes[i]) for i in split.train[user]
    )
    worded = next_item_examples(tokenizer, split.train, codes, 20, random.Random(0))
    assert len({ex.prompt for ex in worded}) > 1 and chat_prompt(tokenizer, "") not in {ex.prompt for ex in worded}

    config = RunConfig().train
    unset = fingerprint(config, "data")
    assert unset == fingerprint_of({name: getattr(config, name) for name in PRETRAIN_FIELDS}, "data")
    assert fingerprint(config.model_copy(update={"template": SHORT_TEMPLATE}), "data") != unset


def test_a_checkpoint_of_other_settings_is_not_resumed_and_says_so_in_one_line(tmp_path, capsys):
    from finetune.batches import cosine_schedule
    from finetune.checkpoint import Checkpoints
    from finetune.distributed import Processes

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = cosine_schedule(optimizer, 10, 1)
    Checkpoints(tmp_path / "pretrain", "a" * 64, Processes()).save(
        model, optimizer, scheduler, 2, None, None, {"history": []}, "pretrain"
    )
    capsys.readouterr()
    assert Checkpoints(tmp_path / "pretrain", "b" * 64, Processes()).load(model, optimizer, scheduler) is None
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "other settings or data" in said[0] and "starts fresh" in said[0]
    assert str(tmp_path / "pretrain") in said[0] and "epoch 2 done" in said[0]
    resumed = Checkpoints(tmp_path / "pretrain", "a" * 64, Processes()).load(model, optimizer, scheduler)
    assert resumed is not None and resumed.epoch == 2 and capsys.readouterr().err == ""


def test_history_chunks_cover_the_sequence_once_in_order():
    from finetune.tasks import history_chunks

    items = [str(i) for i in range(23)]
    for offset in range(0, 10):
        chunks = history_chunks(items, 10, offset)
        assert [i for c in chunks for i in c] == items and all(0 < len(c) <= 10 for c in chunks)
    assert history_chunks(items, 10)[-1] == items[-10:]  # no offset: the most recent chunk is full


def test_a_scratch_model_vllm_could_not_serve_is_a_config_error(tmp_path):
    from genrec.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text("train:\n  hidden_size: 32\n  num_heads: 2\n")  # head size 16: vLLM's CPU attention refuses it
    with pytest.raises(GenrecError, match="train: .*head size 16"):
        load_config(path)


def test_a_run_saved_by_an_earlier_version_still_opens_unless_it_used_a_retired_option(tmp_path):
    from genrec.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(
        "train:\n  item_loss: 0.0\n  residual_dropout: 0.0\n  pretrain_val_epochs: 3\nserve:\n  request_timeout_s: 60\n"
    )
    assert load_config(path).train.pretrain_patience == 2
    path.write_text("train:\n  item_loss: 0.5\n")
    with pytest.raises(GenrecError, match=r"train.item_loss: 0.5 is no longer supported"):
        load_config(path)


def test_the_runs_dense_model_resumes_after_an_interruption_and_leaves_no_checkpoint(
    tiny_run, tmp_path, monkeypatch, capsys
):
    """`genrec train` killed while the dense model trains: the rerun goes on from its last epoch
    (`RUN/checkpoints/dense`, bound to these settings and data), and a finished run keeps no checkpoint;
    other settings do not resume it, and a checkpoint file of an earlier genrec is named and set aside."""
    import dataclasses

    from rich.console import Console

    import finetune.train as training

    root = tmp_path / "run"
    shutil.copytree(tiny_run, root)
    data = training.load_run_data(root)
    real_fit = training.fit_dense
    seen: list[str] = []

    def killed_after_one_epoch(model, train, valid, settings):
        seen.append(settings.checkpoint)
        real_fit(model, train, valid, dataclasses.replace(settings, epochs=1))
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit_dense", killed_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.train_dense(data, False, Console(quiet=True))
    checkpoint = Path(seen[0])
    assert checkpoint == root / "checkpoints" / "dense" and (checkpoint / "checkpoint.json").exists()

    capsys.readouterr()
    monkeypatch.setattr(training, "fit_dense", lambda *a: (seen.append(a[3].checkpoint), real_fit(*a))[1])
    stats = training.train_dense(data, False, Console(quiet=True))
    assert seen[1] == seen[0] and f"resuming sasrec from {checkpoint} (dense: epoch 1 done)" in capsys.readouterr().out
    assert stats["epochs"] == tiny_config().dense.sasrec.epochs
    assert not checkpoint.exists() and (root / "dense" / "train_stats.json").exists()

    data.config.dense.sasrec.lr = 0.01  # other settings: the checkpoint is not resumed by mistake
    monkeypatch.setattr(training, "fit_dense", killed_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.train_dense(data, False, Console(quiet=True))
    capsys.readouterr()
    data.config.dense.sasrec.lr = 0.02
    old = root / "checkpoints" / "dense-0123456789abcdef.ckpt"
    old.write_bytes(b"a checkpoint file of an earlier genrec")
    console = Console(record=True, width=300)
    with pytest.raises(KeyboardInterrupt):
        training.train_dense(data, False, console)
    said = capsys.readouterr().err
    assert f"{checkpoint} (dense: epoch 1 done): made with other settings or data" in said and "starts fresh" in said
    assert f"{old}: a dense checkpoint of an earlier genrec; not resumed" in console.export_text() and not old.exists()


def test_a_dense_model_trained_with_the_same_settings_and_data_elsewhere_is_reused_not_retrained(
    tiny_run, tmp_path, monkeypatch
):
    """Another run folder (another seed's, or a model `bench/baselines.py` trained) with the same dense
    settings and training data copies the shared model (`$GENREC_HOME/dense/FINGERPRINT`) instead of
    training it; the copy scores exactly as the original, and other settings train again."""
    from rich.console import Console

    import finetune.train as training
    from inference.dense import load_dense

    fits: list[int] = []
    real_fit = training.fit_dense
    monkeypatch.setattr(training, "fit_dense", lambda *a: (fits.append(1), real_fit(*a))[1])
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for run in runs:
        shutil.copytree(tiny_run, run)
    first = training.train_dense(training.load_run_data(runs[0]), False, Console(quiet=True))
    data = training.load_run_data(runs[1])
    second = training.train_dense(data, False, Console(quiet=True))
    assert len(fits) == 1 and "reused_from" not in first and Path(second["reused_from"]).is_dir()
    assert second["fingerprint"] == first["fingerprint"] and second["best_valid_ndcg@10"] == first["best_valid_ndcg@10"]
    histories = [items[-5:] for items in list(data.split.train.values())[:4]]
    a, b = load_dense(runs[0] / "dense"), load_dense(runs[1] / "dense")
    assert torch.equal(torch.as_tensor(a.scores(histories)), torch.as_tensor(b.scores(histories)))

    other = training.load_run_data(runs[2])
    other.config.dense.sasrec.lr = 0.01
    third = training.train_dense(other, False, Console(quiet=True))
    assert len(fits) == 2 and "reused_from" not in third


def test_a_finished_dense_model_is_kept_when_its_settings_and_data_are_unchanged(trained_run, tmp_path, monkeypatch):
    """`genrec train --dense-only` (or a rerun) does not retrain a dense model trained with the same
    settings and data; `--no-resume` does, and so do other settings."""
    from rich.console import Console

    import finetune.train as training

    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    data = training.load_run_data(root)
    kept = json.loads((root / "dense" / "train_stats.json").read_text())
    fits: list[int] = []
    real_fit = training.fit_dense
    monkeypatch.setattr(training, "fit_dense", lambda *a: (fits.append(1), real_fit(*a))[1])

    assert training.train_dense(data, False, Console(quiet=True)) == kept and not fits
    training.train_dense(data, False, Console(quiet=True), resume=False)
    assert len(fits) == 1
    data.config.dense.sasrec.lr = 0.01
    training.train_dense(data, False, Console(quiet=True))
    assert len(fits) == 2


def test_a_rerun_keeps_a_finished_generative_model_and_retrains_when_a_setting_changes(trained_run, tmp_path):
    """A run stopped after LoRA finished (say while its dense model trained) goes on from the dense
    model: the generative model it finished is kept, with the report of how it was trained, pre-training
    included; a changed LoRA setting trains it again."""
    from rich.console import Console

    from finetune.train import train

    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    before = json.loads((root / "model" / "train_report.json").read_text())
    weights = sorted((root / "model").rglob("*.safetensors"))
    stamps = [w.stat().st_mtime_ns for w in weights]
    console = Console(record=True, width=200)
    again = train(root, progress=False, console=console)
    assert "finished training with these settings and data: kept" in console.export_text()
    assert [w.stat().st_mtime_ns for w in weights] == stamps
    assert again.best_valid_ndcg10 == before["best_valid_ndcg10"] and again.pretrain_epochs == before["pretrain_epochs"]
    assert again.pretrain_epochs and not again.pretrain_cached  # it was pre-trained by the first run, not this one

    console = Console(record=True, width=200)
    retrained = train(root, epochs=2, progress=False, console=console)
    text = console.export_text()
    assert "kept" not in text.split("dense model")[0] and len(retrained.epochs) >= 2
    assert retrained.pretrain_cached and retrained.pretrain_epochs == before["pretrain_epochs"]
    assert json.loads((root / "model" / "train_report.json").read_text())["fingerprint"] == retrained.fingerprint


def test_the_fusion_grid_places_each_held_out_item_where_the_served_ranking_puts_it():
    """`table_ndcg` re-ranks every validation user at once; each held-out item must land where
    `fused_order` (what `Ranker.rank` serves) puts it: the same scores, floors, cold offsets and ties."""
    from genrec.metrics import ndcg_at
    from inference.ranking import Candidates, FusionTable, fused_order, table_ndcg

    rng = np.random.default_rng(0)
    rows = []
    for user in range(400):
        n = int(rng.integers(0, 30))
        items = [f"i{j:03d}" for j in rng.choice(200, n, replace=False)]
        beams = int(rng.integers(0, n + 1))
        generated = np.full(n, np.nan)
        generated[:beams] = np.round(rng.normal(-4, 1, beams), 1)  # rounded: equal scores, broken by item id
        dense = np.round(rng.normal(-8, 1, n), 1)
        cold = None
        if user % 3 == 0 and n:  # cold items: no dense column, a stand-in score instead
            cold = np.full(n, np.nan)
            gone = rng.random(n) < 0.3
            dense[gone], cold[gone] = np.nan, np.round(rng.normal(-8, 1, gone.sum()), 1)
        target = items[int(rng.integers(0, n))] if n and user % 5 else "not-a-candidate"
        missed = None
        if user % 2:  # the generator's log-prob of most candidates no beam reached
            missed = np.where(np.isnan(generated) & (rng.random(n) < 0.8), np.round(rng.normal(-6, 1, n), 1), np.nan)
        rows.append((Candidates(items, generated, dense, cold, missed), target))
    table = FusionTable.of(rows)
    settings = [(0.0, 0.0, 0.0), (0.5, 1.0, 0.0), (1.0, 8.0, 0.0), (0.35, 2.0, -1.0), (0.8, 4.0, 3.0)]
    for (a, penalty, offset), scored in itertools.product(settings, (False, True)):
        served = []
        for c, target in rows:
            order, _ = fused_order(c, a, penalty, offset, scored)
            top = [c.items[j] for j in order[:10]]
            served.append(top.index(target) + 1 if target in top else 0)
        assert table.ranks(a, penalty, offset, scored=scored).tolist() == served
        assert table_ndcg(table, a, penalty, offset, scored) == float(ndcg_at(np.array(served), 10).mean())
    assert FusionTable.of([(Candidates([], np.zeros(0), np.zeros(0)), "x")]).ranks(0.5, 1.0, 0.0).tolist() == [0]
