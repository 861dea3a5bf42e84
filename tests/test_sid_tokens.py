"""Semantic-ID tokens: rendering, parsing, the trie, and the Hugging Face trie constraint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.sid_constraints import structured_outputs, trie_choice, trie_grammar, trie_regex
from finetune.sid_tokens import (
    CodeTrie,
    SidVocab,
    codebook_sizes,
    parse_sids,
    prefix_allowed_tokens_fn,
    render_sid,
    sid_token_strings,
)

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
    trie = CodeTrie(CODES)
    assert trie.children(()) == [0, 12]
    assert trie.children((12,)) == [3, 7]
    assert trie.children((12, 7, 201)) == [0, 1]
    assert trie.children((12, 7, 201, 0)) == []
    assert trie.item_of[(12, 3, 5, 0)] == "c"
    assert (12, 7, 201, 1) in trie and (12, 7, 201, 2) not in trie


def test_trie_refuses_shared_codes_and_mixed_lengths():
    with pytest.raises(ValueError, match="share the code"):
        CodeTrie({"x": [1, 2], "y": [1, 2]})
    with pytest.raises(ValueError, match="different lengths"):
        CodeTrie({"x": [1, 2], "y": [1, 2, 3]})


def test_trie_without_history_drops_those_items_only():
    trie = CodeTrie(CODES).without([[12, 3, 5, 0], [0, 0, 0, 0]])
    assert trie.codes() == [(12, 7, 201, 0), (12, 7, 201, 1)]
    assert trie.children(()) == [12]


def test_structured_output_constraints_accept_exactly_the_catalog_codes():
    import re

    trie = CodeTrie(CODES)
    pattern = re.compile(trie_regex(trie))
    for code in trie.codes():
        assert pattern.fullmatch(render_sid(code))
    assert not pattern.fullmatch(render_sid([12, 7, 201, 2]))
    assert not pattern.fullmatch(render_sid([12, 3, 201, 0]))
    assert sorted(trie_choice(trie)) == sorted(render_sid(c) for c in CODES.values())
    grammar = trie_grammar(trie)
    assert grammar.splitlines()[0].startswith("root ::= ")
    assert set(structured_outputs(trie, "grammar")) == {"grammar"}
    with pytest.raises(ValueError, match="unknown constraint"):
        structured_outputs(trie, "json")  # type: ignore[arg-type]


def test_hugging_face_trie_constraint_generates_only_catalog_codes(tmp_path):
    import torch

    from tiny_models import build_tiny_sid_model

    base_dir, _ = build_tiny_sid_model(tmp_path, CODES)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    trie = CodeTrie(CODES)
    vocab = SidVocab.from_tokenizer(tokenizer, trie.codebook_sizes)
    enc = tokenizer("User history: <a_12><b_7><c_201><d_0>", return_tensors="pt")
    n = enc.input_ids.shape[1]
    out = model.generate(
        **enc,
        num_beams=4,
        num_return_sequences=4,
        max_new_tokens=trie.depth,
        do_sample=False,
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(trie, vocab, n),
    )
    generated = {vocab.decode(seq[n:].tolist()) for seq in out}
    assert generated == set(trie.codes())
