"""Constrained top-K generation: beam search over the semantic-ID trie, prompt encoded once.

Hugging Face `generate(num_beams=W)` copies the prompt W times before the first forward pass; with
prompts of a few hundred tokens and IDs of four, that prefill is almost all the work. Here the
prompt is run once per request and its KV cache is fanned out to the beams, then each of the L
steps scores every beam's allowed children. Scores are sequence log-probs (log-softmax over the
whole vocabulary, then masked), exactly what `generate(..., length_penalty=0)` with
`TrieLogitsProcessor` computes, so the two agree (a test checks it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch

from finetune.trie import SidTrie


def autocast(enabled: bool):
    """bf16 autocast on CPUs that have bf16 units (AMX/AVX512-BF16), else a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SidTrie,
    beam_width: int,
    removed: Sequence[Mapping[tuple[int, ...], int] | None] | None = None,
    bf16: bool = False,
) -> list[list[tuple[str, float]]]:
    """Top-`beam_width` items for each left-padded prompt, best first, as (item_id, log-prob).

    `removed[i]` narrows the trie for prompt `i` (history exclusion, metadata filter); a request
    whose narrowed trie holds fewer items than `beam_width` gets fewer results, never an invalid one.
    """
    batch = input_ids.shape[0]
    removed = list(removed) if removed is not None else [None] * batch
    with autocast(bf16):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    cache = out.past_key_values
    logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (rows, vocab); rows = batch * beams
    vocab = logp.shape[-1]
    beams = 1
    prefixes: list[tuple[int, ...] | None] = [()] * batch  # codes so far per row; None = dead beam
    scores = torch.zeros(batch, 1)
    for step in range(trie.depth):
        mask = torch.full_like(logp, float("-inf"))
        for row, prefix in enumerate(prefixes):
            if prefix is not None:
                mask[row, trie.allowed(prefix, removed[row // beams])] = 0.0
        total = (scores.unsqueeze(-1) + (logp + mask).view(batch, beams, vocab)).view(batch, beams * vocab)
        width = min(beam_width, beams * vocab)
        top_scores, top_index = total.topk(width, dim=-1)
        source_beam = torch.div(top_index, vocab, rounding_mode="floor")
        tokens = top_index % vocab
        rows = (torch.arange(batch).unsqueeze(-1) * beams + source_beam).view(-1)
        new_prefixes: list[tuple[int, ...] | None] = []
        for row, token, score in zip(rows.tolist(), tokens.view(-1).tolist(), top_scores.view(-1).tolist()):
            prefix = prefixes[row]
            if prefix is None or score == float("-inf"):
                new_prefixes.append(None)
            else:
                new_prefixes.append(prefix + (trie.code_of_token[token][1],))
        prefixes, scores, beams = new_prefixes, top_scores, width
        if step == trie.depth - 1:
            break
        cache.reorder_cache(rows)
        attention_mask = torch.cat([attention_mask[rows], attention_mask.new_ones(len(rows), 1)], dim=1)
        with autocast(bf16):
            out = model(
                input_ids=tokens.view(-1, 1), attention_mask=attention_mask, past_key_values=cache, use_cache=True
            )
        cache = out.past_key_values
        logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    results: list[list[tuple[str, float]]] = []
    for b in range(batch):
        found = []
        for j in range(beams):
            prefix, score = prefixes[b * beams + j], float(scores[b, j])
            if prefix is not None and score != float("-inf"):
                found.append((trie.item_of(prefix), score))
        results.append(found)
    return results
