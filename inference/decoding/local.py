"""The fine-tuned model ranking in this process: prompts from histories, trie beam search, loading from a run.

`LocalGenerator` is the in-process generation backend of `inference.ranking.Ranker` (the vLLM one
is `inference.vllm_generator.VllmGenerator`); training validates through it, so what is validated
is what is served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genrec.device import resolve_device
from genrec.errors import GenrecError
from genrec.run import RunPaths
from inference.decoding.beam import beam_search, sequence_logprobs
from inference.decoding.prompts import HistoryPrompt
from inference.decoding.trie import Exclusions, Histories, Removed, Scored, SidTrie

META_FILE = "genrec.json"


def bf16_supported(device: torch.device | None = None) -> bool:
    """True on CUDA GPUs with bf16, and on CPUs whose bf16 matrix units make autocast worthwhile (AVX512-BF16 / AMX).
    `device`: the one that computes (None: a CUDA GPU when one is visible, else the CPU)."""
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if cuda:
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def file_sha256(path: Path) -> str:
    """Content hash of a file: ties a trained model to the semantic IDs it was trained on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def narrowing(trie: SidTrie, n: int, exclude: Sequence[Collection[str]] | None, only: Collection[str] | None) -> list:
    """Per-history trie exclusions: `exclude[i]` hidden for history i, everything outside `only` for all."""
    outside = set(trie.code_of) - {str(i) for i in only} if only is not None else set()
    if exclude is None and not outside:
        return [None] * n
    return [trie.exclusion((set(exclude[i]) if exclude is not None else set()) | outside) for i in range(n)]


@dataclass
class LocalGenerator:
    """A causal LM that writes semantic IDs, with everything needed to rank catalog items."""

    model: object
    tokenizer: object
    trie: SidTrie
    prompts: HistoryPrompt
    beam_width: int = 20
    batch_size: int = 16
    # float32, as the vLLM server computes (serve.dtype): bf16 autocast reorders top-10s (on a trained
    # ML-100K run 82 of 96 differed), and the ranking that is evaluated must be the one that is served
    bf16: bool = False
    temperature: float = 1.0  # divides the logits before beam scores are summed
    name: str = "in-process"

    def generate(
        self,
        histories: Histories,
        width: int | None = None,
        exclude: Exclusions = None,
        only: Collection[str] | None = None,
    ) -> list[list[Scored]]:
        """The best `width` items per history as (item_id, sequence log-prob), best first.

        `exclude[i]` items never appear for history i; with `only`, no item outside it appears.
        Both narrow the trie, so beams are never spent on items that would be thrown away.
        """
        width = width or self.beam_width
        removed = narrowing(self.trie, len(histories), exclude, only)
        return self.generate_token_ids(self.prompts.batch_token_ids(histories), width, removed)

    def generate_token_ids(
        self,
        encoded: Sequence[Sequence[int]],
        width: int,
        removed: Sequence[Removed | None],
        trie: SidTrie | None = None,
    ) -> list[list[Scored]]:
        """`generate` for prompts already tokenized, each with its trie narrowing (`removed[i]`), over
        `trie` (default: this generator's): what the vLLM server's engine runs on its batched requests."""
        trie = trie or self.trie
        # longest prompts first, batched by similar length so little padding is computed
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[list[Scored]] = [[] for _ in encoded]
        with self._evaluating():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                ids, mask = self._padded([encoded[i] for i in rows])
                found = beam_search(
                    self.model, ids, mask, trie, width, [removed[i] for i in rows], self.bf16, self.temperature
                )
                for i, items in zip(rows, found):
                    results[i] = items
        return results

    def score(self, histories: Histories, items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """The sequence log-prob of each of `items[i]` after history i (what a beam reaching it would
        score): how the served ranking scores dense candidates no beam reached."""
        encoded = self.prompts.batch_token_ids(histories)
        results: list[np.ndarray] = [np.zeros(0) for _ in encoded]
        wanted = [i for i in range(len(encoded)) if items[i]]
        order = sorted(wanted, key=lambda i: -len(encoded[i]))
        # prompts per pass: a pass holds (prompts x paths) rows of full-vocabulary logits, ~160 MB at most
        rows_cap = 40_000_000 // max(1, int(getattr(self.model.config, "vocab_size", 0) or 1))
        per_pass = max(1, min(self.batch_size, rows_cap // max((len(items[i]) for i in wanted), default=1)))
        with self._evaluating():
            for start in range(0, len(order), per_pass):
                rows = order[start : start + per_pass]
                ids, mask = self._padded([encoded[i] for i in rows])
                paths = [[self.trie.tokens_of(item) for item in items[i]] for i in rows]
                for i, found in zip(rows, sequence_logprobs(self.model, ids, mask, paths, self.bf16, self.temperature)):
                    results[i] = found
        return results

    @contextlib.contextmanager
    def _evaluating(self):
        """The model in eval mode inside the block, back in training mode after it if it was (training
        validates through this generator)."""
        was_training = getattr(self.model, "training", False)
        self.model.eval()
        try:
            yield
        finally:
            if was_training:
                self.model.train()

    def _padded(self, encoded: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids and their attention mask."""
        length = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for j, e in enumerate(encoded):
            ids[j, length - len(e) :] = torch.tensor(list(e))
            mask[j, length - len(e) :] = 1
        return ids, mask


def model_meta(paths: RunPaths) -> dict:
    """The training metadata saved beside the model (`RUN/model/genrec.json`)."""
    meta_path = paths.require(paths.model / META_FILE, f"genrec train --run {paths.root}")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def check_semantic_ids(paths: RunPaths, meta: dict) -> None:
    """Fail in one line if the run's semantic IDs changed since the model was trained (its SID
    tokens would then name other items)."""
    if meta.get("semantic_ids_sha256") and paths.semantic_ids.exists():
        if file_sha256(paths.semantic_ids) != meta["semantic_ids_sha256"]:
            raise GenrecError(
                f"{paths.semantic_ids}: changed since the model was trained; run `genrec train --run {paths.root}` again"
            )


def load_local_generator(
    paths: RunPaths, codes: dict[str, list[int]], merge: bool = True, device: str = "cpu", **options
) -> LocalGenerator:
    """Load the trained base + LoRA adapter of a run (both with `from_pretrained`) onto `device`
    (`generate.device`: auto, cpu, cuda; beam search runs where the model is).

    The adapter is merged into the base for inference speed (`merge=False` keeps a PeftModel).
    Fails with a one-line error if the run has no model yet or its semantic IDs changed since training.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_device(device, "generate.device")  # (a setting that cannot work here fails before loading)
    meta = model_meta(paths)
    check_semantic_ids(paths, meta)
    base_dir, adapter_dir = paths.model / "base", paths.model / "adapter"
    paths.require(base_dir / "config.json", f"genrec train --run {paths.root}")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if (adapter_dir / "adapter_config.json").exists():
        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            model = model.merge_and_unload()
    model.to(where).eval()
    trie = SidTrie.for_tokenizer(codes, tokenizer)
    prompts = HistoryPrompt(tokenizer, trie.code_of, int(meta["max_history"]), meta.get("template"))
    return LocalGenerator(model=model, tokenizer=tokenizer, trie=trie, prompts=prompts, **options)
