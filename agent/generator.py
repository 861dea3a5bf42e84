"""The fine-tuned model as the `recommend` tool's generator: item ids for a history, through vLLM.

The prompt is built by `finetune.tasks.next_item_prompt` (the one the model was trained on) with
the run's own tokenizer; decoding is the client's trie-constrained beam search, so every id
generated is a catalog item. When the server is down the generator raises `LLMUnavailable` and the
tool answers from retrieval alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.chat_model import Breaker
from agent.llm_client import LLMClient
from genrec.run import RunPaths


class VllmGenerator:
    """Top-K items for a history from the run's fine-tuned model served by vLLM (LoRA module)."""

    def __init__(self, paths: RunPaths, client: LLMClient, beam_width: int = 20):
        from transformers import AutoTokenizer

        from finetune.inference import model_meta
        from finetune.sid_tokens import CodeTrie
        from retrieval.semantic_ids import load_semantic_ids

        meta = model_meta(paths)
        self.codes = {item: tuple(code) for item, code in load_semantic_ids(paths).items()}
        self.trie = CodeTrie(self.codes)
        self.tokenizer = AutoTokenizer.from_pretrained(paths.model / "base")
        self.max_history = int(meta.get("max_history", 50))
        self.template = meta.get("template")
        self.client = client
        self.beam_width = beam_width
        self.breaker = Breaker()

    def __call__(self, history: Sequence[str], k: int) -> list[str]:
        """Item ids the model generates after `history`, best first, never one of the history."""
        from finetune.tasks import next_item_prompt

        known = [i for i in history if i in self.codes][-self.max_history:]
        if not known:
            return []
        prompt = next_item_prompt(self.tokenizer, [self.codes[i] for i in known], self.template)
        found = self.breaker.call(lambda: self.client.recommend_ids(
            prompt, self.trie, k=k, beam_width=max(self.beam_width, k), exclude=[self.codes[i] for i in known]))
        return [self.trie.item_of[code] for code, _ in found]


def run_generator(run: str | Path, llm_url: str | None, timeout_s: float = 30.0) -> VllmGenerator | None:
    """The generator of a run that has a trained model, talking to `llm_url`; None when there is no
    model in the run (retrieval alone) or no URL."""
    paths = RunPaths(Path(run))
    if not llm_url or not (paths.model / "genrec.json").exists() or not paths.semantic_ids.exists():
        return None
    return VllmGenerator(paths, LLMClient(llm_url, timeout_s=timeout_s, connect_timeout_s=1.0))
