"""Semantic-ID tokens: rendering, parsing, the trie, and the trie as a Hugging Face constraint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from inference.decoding.trie import SidTrie
from inference.sid_tokens import codebook_sizes, parse_sids, render_sid, sid_token_strings

sys.path.insert(0, str(Path(__file__).parent))

CODES = {"a": [12, 7, 201, 0], "b": [12, 7, 201, 1], "c": [12, 3, 5, 0], "d": [0, 0, 0, 0]}


def test_render_writes_one_lettered_token_per_level():
    assert render_sid([12, 7, 201, 0]) == "<a_12><b_7><c_201><d_0>"


def test_parse_reads_back_every_rendered_code_amid_text():
    text = f"Next: {render_sid([12, 7, 201, 0])} or maybe {render_sid([3, 1, 4, 1])}."
    assert parse_sids(text) == [(12, 7, 201, 0), (3, 1, 4, 1)]


def test_parse_splits_codes_at_tokens_out_of_sequence():
    assert parse_sids("<a_1><b_2><a_3><c_9><b_4>") == [(1, 2), (3,)]
    assert parse_sids("no codes here <z_1") == []


def test_sid_token_strings_cover_every_level_and_code():
    tokens = sid_token_strings([3, 2])
    assert tokens == ["<a_0>", "<a_1>", "<a_2>", "<b_0>", "<b_1>"]
    assert codebook_sizes(CODES.values()) == [13, 8, 202, 2]


def test_trie_children_follow_the_catalog_codes():
    trie = SidTrie(CODES)
    assert trie.children(()) == [0, 12]
    assert trie.children((12,)) == [3, 7]
    assert trie.children((12, 7, 201)) == [0, 1]
    assert trie.children((12, 7, 201, 0)) == []
    assert trie.item_of[(12, 3, 5, 0)] == "c"
    assert (12, 7, 201, 1) in trie and (12, 7, 201, 2) not in trie


def test_trie_refuses_shared_codes_and_mixed_lengths():
    with pytest.raises(ValueError, match="share the code"):
        SidTrie({"x": [1, 2], "y": [1, 2]})
    with pytest.raises(ValueError, match="different lengths"):
        SidTrie({"x": [1, 2], "y": [1, 2, 3]})


def test_trie_exclusion_hides_those_items_only_without_copying_the_trie():
    trie = SidTrie(CODES)
    removed = trie.exclusion(["c", "d", "not-an-item"])
    assert trie.children((), removed) == [12]
    assert trie.children((12,), removed) == [7]
    assert trie.children((12, 7, 201), removed) == [0, 1]
    assert trie.available(removed) == 2 and trie.children(()) == [0, 12]  # the trie itself is unchanged
    gone = trie.exclusion(["a"])
    assert trie.children((12, 7, 201), gone) == [1]


def test_hugging_face_trie_constraint_generates_only_catalog_codes(tmp_path):
    import torch
    from tiny_models import build_tiny_sid_model

    base_dir, _ = build_tiny_sid_model(tmp_path, CODES)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    from hf_reference import hf_trie_topk

    trie = SidTrie.for_tokenizer(CODES, tokenizer)
    prompt = tokenizer("User history: <a_12><b_7><c_201><d_0>")["input_ids"]
    assert {item for item, _ in hf_trie_topk(model, tokenizer, prompt, trie, 4)} == set(CODES)
    assert trie.tokens_of("c") == tokenizer("<a_12><b_3><c_5><d_0>", add_special_tokens=False)["input_ids"]
