"""The vLLM generation backend of the served ranking: one request per history, the trie in the server.

Prompts are built by the same `HistoryPrompt` as in-process generation (token ids, tokenized as
training tokenizes), so both backends see identical inputs; `serving.trie_search` walks the trie
inside the server. Histories of one call are sent concurrently: vLLM batches them.
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from inference.client import ADAPTER_MODEL, LLMClient
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
    _pool: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="vllm-generator")

    def close(self) -> None:
        """Stop the worker threads and the client's connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

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

        def one(i: int) -> list[Scored]:
            return self.client.recommend(
                self.prompts.token_ids(histories[i]),
                width=width,
                exclude=exclude[i] if exclude is not None else (),
                only=only,
                model=self.model,
            )

        return list(self._pool.map(one, range(len(histories))))
