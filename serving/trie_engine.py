"""genrec's trie beam search as a vLLM model: one engine request per recommendation, batched by vLLM.

Why this shape (read in vLLM 0.32's code, `vllm/v1/worker/gpu_model_runner.py`, `vllm/pooling_params.py`,
`vllm/model_executor/layers/pooler/`, `vllm/entrypoints/generate/beam_search/online.py`):

- vLLM's own beam search (`/v1/completions` with `use_beam_search`, `LLM.beam_search`) issues one
  engine request per live beam and step (`online.py`: a `generate` call per beam, `max_tokens=1`,
  `logprobs=2*width`): 1 + 20 + 20 + 20 = 61 requests for a 4-level ID at width 20, the count the
  per-beam route (`serving.trie_search`, 62 with the narrowing) already pays. A global trie logits
  processor would constrain it but not shorten it: no gain in speed, so it was not built.
- A pooling model decides what a request returns: the runner hands its pooler every request that
  finished its prompt in an engine step, with the prompt's token ids (`requires_token_ids`) and the
  request's `PoolingParams.extra_kwargs`. So the search is a pooler: `GenrecTrieSearch` is an
  out-of-tree architecture (registered here, served with `--runner pooling`), attention-free for vLLM
  (no KV cache to allocate), whose forward pass is empty and whose pooler runs genrec's
  tree-attention beam search (`inference.decoding.beam`: the prompt encoded once, all beams of a
  level in one pass) over the run's base + LoRA, on all the requests of the step at once. One
  engine request per recommendation, batched by vLLM's scheduler across concurrent users, the trie
  (the run's live catalog, `serving.trie_search.run_trie`) applied inside the engine process, and
  the same code and float32 weights as the in-process path: the same top-10.
- The price: a pooling server does not generate text. The server serves this architecture only
  when nobody chats with it (`serving.server.recommend_search`); a run whose base model chats keeps
  the generate runner and the per-beam route.

The pooler answers each request with a (found + 1, depth + 1) float64 tensor: one row per item
(its code, then its sequence log-prob) after a first row that says how many requests the engine
step searched together and the seconds the search took (`bench/serve.py` reads them).

vLLM starts this module as its entry point (`python -m serving.trie_engine ARGS`): the
architecture is registered at import, before vLLM's own `main`, and again in any process that
re-imports the entry module (a `spawn` start).
"""

from __future__ import annotations

import os
import time
from collections.abc import Set
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

ARCHITECTURE = "GenrecTrieSearch"
TASK = "plugin"  # the pooling task vLLM reserves for models whose output it does not interpret
RUN_ENV = "GENREC_RUN"
ADAPTER_ENV = "GENREC_ADAPTER"  # "0": serve the base alone under both names (`genrec serve --no-adapter`)


class TrieSearcher:
    """The run's generator(s), loaded once in the engine process: the base + LoRA merged (what the
    adapter's served name asks for) and, at the first request for it, the base alone."""

    def __init__(self, run: Path, batch_size: int = 16):
        from genrec.memory import keep_freed_memory
        from genrec.run import RunPaths
        from inference.decoding.local import load_local_generator
        from retrieval.semantic_ids import load_semantic_ids

        # the search allocates and frees its caches and masks at every level, larger with every
        # request of the batch; returned to the kernel each time (glibc's default) they page-fault
        # anew, and a batch of 16 searched slower per request than a batch of 1 (bench/serve.py)
        keep_freed_memory()
        self.run = run
        paths = RunPaths(run)
        self.adapted = load_local_generator(paths, load_semantic_ids(paths), batch_size=batch_size)
        self._base = None

    def generator(self, adapter: bool):
        """The generator for a request: with the run's LoRA adapter (merged) or without."""
        if adapter and os.environ.get(ADAPTER_ENV, "1") != "0":
            return self.adapted
        if self._base is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.run / "model" / "base", dtype=torch.float32).eval()
            self._base = replace(self.adapted, model=model)
        return self._base

    def search(self, prompts: list[list[int]], asks: list[dict]) -> list[torch.Tensor]:
        """The answer tensor of each request (see the module docstring), requests of one width and
        model searched as one batch."""
        from serving.trie_search import narrowed, run_trie

        trie = run_trie(str(self.run))
        started = time.perf_counter()
        found: list[list[tuple[str, float]]] = [[] for _ in prompts]
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, ask in enumerate(asks):
            groups.setdefault((int(ask["width"]), bool(ask.get("adapter", True))), []).append(i)
        for (width, adapter), rows in groups.items():
            removed = [narrowed(trie, asks[i].get("exclude") or [], asks[i].get("only")) for i in rows]
            results = self.generator(adapter).generate_token_ids([prompts[i] for i in rows], width, removed, trie)
            for i, items in zip(rows, results):
                found[i] = items
        seconds = time.perf_counter() - started
        answers = []
        for i, items in enumerate(found):
            k = int(asks[i].get("k", len(items)))
            table = torch.zeros(len(items[:k]) + 1, trie.depth + 1, dtype=torch.float64)
            table[0, 0], table[0, 1] = len(prompts), seconds
            for row, (item, score) in enumerate(items[:k], start=1):
                table[row, : trie.depth] = torch.tensor(trie.code_of[item], dtype=torch.float64)
                table[row, trie.depth] = score
            answers.append(table)
        return answers


def decode_answer(table, item_of: dict[tuple[int, ...], str]) -> tuple[list[tuple[str, float]], dict]:
    """(items as (item_id, log-prob), engine facts) from a pooler answer; `item_of` maps codes to items.
    A code the caller's catalog no longer has (retired between the two reads) is left out."""
    rows = table.tolist() if hasattr(table, "tolist") else table
    depth = len(rows[0]) - 1
    items = []
    for row in rows[1:]:
        item = item_of.get(tuple(int(c) for c in row[:depth]))
        if item is not None:
            items.append((item, float(row[depth])))
    return items, {"batch": int(rows[0][0]), "search_s": float(rows[0][1])}


def _pooler_class():
    from vllm.model_executor.layers.pooler.abstract import Pooler
    from vllm.model_executor.layers.pooler.common import PoolingParamsUpdate

    class TrieSearchPooler(Pooler):
        """Runs the trie beam search for every request whose prompt the engine step completed."""

        def __init__(self, searcher: TrieSearcher):
            super().__init__()
            self.searcher = searcher  # a plain object: vLLM sees no parameters of it

        def get_supported_tasks(self) -> Set[str]:
            return {TASK}

        def get_pooling_updates(self, task):
            return PoolingParamsUpdate(requires_token_ids=True)

        def forward(self, hidden_states: torch.Tensor, pooling_metadata) -> list[torch.Tensor | None]:
            finished = pooling_metadata.get_pooling_cursor().get_finished_mask()
            prompts = pooling_metadata.get_prompt_token_ids_cpu()
            params = pooling_metadata.pooling_params
            out: list[torch.Tensor | None] = [None] * len(finished)
            rows = [i for i, done in enumerate(finished) if done and params[i].extra_kwargs]
            for i, done in enumerate(finished):
                if done and not params[i].extra_kwargs:  # vLLM's own warm-up requests ask for nothing
                    out[i] = torch.zeros(1, 2, dtype=torch.float64)
            if rows:
                answers = self.searcher.search(
                    [prompts[i].tolist() for i in rows], [dict(params[i].extra_kwargs) for i in rows]
                )
                for i, answer in zip(rows, answers):
                    out[i] = answer
            return out

    return TrieSearchPooler


class GenrecTrieSearch(nn.Module):
    """The vLLM pooling model of a genrec run (`GENREC_RUN`): an empty forward pass, the search in its pooler."""

    is_pooling_model = True
    is_attention_free = True

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__()
        run = os.environ.get(RUN_ENV)
        if not run:
            raise RuntimeError(f"{ARCHITECTURE}: {RUN_ENV} is not set; start the server with `genrec serve`")
        max_seqs = getattr(vllm_config.scheduler_config, "max_num_seqs", 16) or 16
        self.pooler = _pooler_class()(TrieSearcher(Path(run), batch_size=min(16, int(max_seqs))))

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(input_ids.shape[0], 1)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:  # fmt: skip
        tokens = input_ids.shape[0] if input_ids is not None else inputs_embeds.shape[0]
        return torch.zeros(tokens, 1)

    def load_weights(self, weights) -> set[str]:
        for _ in weights:  # the run's weights were loaded with `from_pretrained` (base + merged LoRA)
            pass
        return set()


def register() -> None:
    """Make `GenrecTrieSearch` an architecture vLLM can serve (idempotent)."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, GenrecTrieSearch)


if __name__ in ("__main__", "__mp_main__"):  # vLLM's entry point, or a process `spawn` started from it
    register()

if __name__ == "__main__":
    from vllm.entrypoints.launchers.api_server.entry import main

    main()
