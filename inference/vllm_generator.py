"""The vLLM generation backend of the served ranking: one request per history, the trie in the server.

Prompts are built by the same `HistoryPrompt` as in-process generation (token ids, tokenized as
training tokenizes), so both backends see identical inputs; `serving.trie_search` walks the trie
inside the server. Histories of one call are sent concurrently: vLLM batches them.

A server searches the trie one of two ways (`serve.search`): in its engine, one engine request per
recommendation (`serving.trie_engine`; as fast as this process or faster, and batched across
every client), or per beam and level (a server that also chats: ~60 one-token engine requests
per recommendation, 15-30x slower than generating here, bench/results/serve.json). Given a
`fallback` (a loader of the in-process generator), a generator facing a per-step server
generates in this process instead, so a running server never makes recommendations slower; it
says once, on stderr, which path it took (`describe`).
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from genrec.errors import GenrecError
from inference.client import ADAPTER_MODEL, LLMClient, LLMUnavailable
from inference.decoding.prompts import HistoryPrompt
from inference.decoding.trie import Exclusions, Histories, Scored, SidTrie


@dataclass
class VllmGenerator:
    """Top items for histories from the run's model served by vLLM (LoRA module `genrec`)."""

    client: LLMClient
    trie: SidTrie
    prompts: HistoryPrompt
    beam_width: int = 20
    model: str = ADAPTER_MODEL
    concurrency: int = 16
    name: str = "vllm"
    fallback: Callable[[], object] | None = None  # loads the in-process generator (LocalGenerator)
    _pool: ThreadPoolExecutor = field(init=False, repr=False)
    # what copies for other catalog versions (inference.ranker.ranker_for_catalog) share: the server's
    # search, the loaded fallback
    _shared: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="vllm-generator")
        self._shared = {"lock": threading.Lock()}

    def close(self) -> None:
        """Stop the worker threads and the client's connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def server_search(self) -> str | None:
        """The server's trie search, "engine" or "steps" (asked once); None while it does not answer."""
        if "search" not in self._shared:
            try:
                search = self.client.recommend_search()
            except LLMUnavailable:
                return None
            self._shared["search"] = search
            print(f"genrec: {self.describe()}", file=sys.stderr)
        return self._shared["search"]

    def in_process(self) -> bool:
        """True when recommendations are generated in this process: the server searches per step."""
        return self.fallback is not None and self.server_search() == "steps"

    def describe(self) -> str:
        """Which path generates the beams, in words."""
        url = self.client.base_url
        search = self._shared.get("search")
        if search == "engine":
            return (
                f"beams from the vLLM server at {url}: trie search in its engine, one engine request per recommendation"
            )
        if search == "steps" and self.fallback is not None:
            return (
                f"beams generated in this process: the vLLM server at {url} searches per beam and level "
                "(one engine request each, slower than this process)"
            )
        if search == "steps":
            return f"beams from the vLLM server at {url}: one engine request per beam and level"
        return f"beams from the vLLM server at {url} (not answering yet)"

    def _local(self):
        """The in-process generator over this generator's trie and prompts (loaded once, shared)."""
        with self._shared["lock"]:
            if "local" not in self._shared:
                self._shared["local"] = self.fallback()
            base = self._shared["local"]
            key = ("for", id(self.trie))
            if key not in self._shared:
                local = copy.copy(base)
                local.trie = SidTrie(self.trie.code_of, vocab=base.trie.vocab)
                local.prompts = self.prompts
                self._shared[key] = (self.trie, local)  # the trie kept alive: its id stays its own
            return self._shared[key][1]

    def generate(
        self,
        histories: Histories,
        width: int | None = None,
        exclude: Exclusions = None,
        only: Collection[str] | None = None,
    ) -> list[list[Scored]]:
        """The best `width` items per history as (item_id, sequence log-prob), best first; raises
        `inference.client.LLMUnavailable` when the server does not answer."""
        width = width or self.beam_width
        if self.in_process():
            return self._local().generate(histories, width, exclude, only)

        def one(i: int) -> list[Scored]:
            return self.client.recommend(
                self.prompts.token_ids(histories[i]),
                width=width,
                exclude=exclude[i] if exclude is not None else (),
                only=only,
                model=self.model,
            )

        return list(self._pool.map(one, range(len(histories))))

    def score(self, histories: Histories, items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """The sequence log-prob of each of `items[i]` after history i, computed in this process by the
        run's model (the server's engine searches beams; it does not score given items): what a
        fusion with `scored_misses` needs for the dense candidates no beam reached."""
        if self.fallback is None:
            raise GenrecError(
                "this run's fusion scores the dense candidates no beam reached with the generator "
                "(RUN/ranking.json scored_misses), which needs the run's model in this process"
            )
        return self._local().score(histories, items)
