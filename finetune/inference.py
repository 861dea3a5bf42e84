"""A trained genrec model in memory: prompts from histories, constrained top-K, loading from a run.

`GenrecModel` is what `recommend`, the evaluation adapter and the training loop's validation all
call, so the three rank items the same way. It holds the causal LM, its tokenizer, the SID trie,
and the prompt settings the model was trained with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from finetune.generate import beam_search
from finetune.item_head import ItemHead
from finetune.tasks import next_item_prompt
from finetune.trie import SidTrie
from genrec.errors import GenrecError
from genrec.run import RunPaths

META_FILE = "genrec.json"


def bf16_supported() -> bool:
    """True on CPUs whose bf16 matrix units make autocast worthwhile (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def file_sha256(path: Path) -> str:
    """Content hash of a file: ties a trained model to the semantic IDs it was trained on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class GenrecModel:
    """A causal LM that writes semantic IDs, with everything needed to rank catalog items."""

    model: object
    tokenizer: object
    trie: SidTrie
    max_history: int
    template: str | None = None
    beam_width: int = 20
    batch_size: int = 16
    bf16: bool = field(default_factory=bf16_supported)
    temperature: float = 1.0  # divides the logits before beam scores are summed
    item_head: ItemHead | None = None  # with item_weight > 0: beams re-scored by item-level scores
    item_weight: float = 0.0

    def prompt(self, history: Sequence[str]) -> str:
        """The next-item prompt for a history (unknown items are skipped; the last `max_history` kept)."""
        known = [i for i in history if i in self.trie.code_of][-self.max_history :]
        return next_item_prompt(self.tokenizer, [self.trie.code_of[i] for i in known], self.template)

    def top_k(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        only: Collection[str] | None = None,
        beam_width: int | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Best `k` items per history as (item_id, sequence log-prob), best first.

        `exclude[i]` items never appear for history i (e.g. the history itself); with `only`, no
        item outside it appears (a metadata filter). Both act on the trie, so beams are never
        spent on items that would be thrown away.
        """
        width = max(beam_width or self.beam_width, k)
        outside = set(self.trie.code_of) - set(only) if only is not None else set()
        removed = [
            self.trie.exclusion(set(exclude[i]) | outside) if exclude is not None or outside else None
            for i in range(len(histories))
        ]
        # longest prompts first, batched by similar length so little padding is computed
        prompts = [self.prompt(h) for h in histories]
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[list[tuple[str, float]]] = [[] for _ in prompts]
        was_training = getattr(self.model, "training", False)
        self.model.eval()
        pad = self.tokenizer.pad_token_id
        try:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                length = max(len(encoded[i]) for i in rows)
                ids = torch.full((len(rows), length), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), length), dtype=torch.long)
                for j, i in enumerate(rows):
                    ids[j, length - len(encoded[i]) :] = torch.tensor(encoded[i])
                    mask[j, length - len(encoded[i]) :] = 1
                found = beam_search(self.model, ids, mask, self.trie, width, [removed[i] for i in rows], self.bf16,
                                    self.temperature, self.item_head, self.item_weight)
                for i, items in zip(rows, found):
                    results[i] = items[:k]
        finally:
            if was_training:
                self.model.train()
        return results


def model_meta(paths: RunPaths) -> dict:
    """The training metadata saved beside the model (`RUN/model/genrec.json`)."""
    meta_path = paths.require(paths.model / META_FILE, f"genrec train --run {paths.root}")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def load_genrec_model(paths: RunPaths, codes: dict[str, list[int]], merge: bool = True, **options) -> GenrecModel:
    """Load the trained base + LoRA adapter of a run (both with `from_pretrained`).

    The adapter is merged into the base for inference speed (`merge=False` keeps a PeftModel).
    Fails with a one-line error if the run has no model yet, or if its semantic IDs changed since
    training (the SID tokens would then mean other items). A model trained with `train.item_loss`
    re-scores its beams with item-level scores, weighted by `item_weight` (default 1).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = model_meta(paths)
    if meta.get("semantic_ids_sha256") and paths.semantic_ids.exists():
        if file_sha256(paths.semantic_ids) != meta["semantic_ids_sha256"]:
            raise GenrecError(
                f"{paths.semantic_ids}: changed since the model was trained; run `genrec train --run {paths.root}` again"
            )
    base_dir, adapter_dir = paths.model / "base", paths.model / "adapter"
    paths.require(base_dir / "config.json", f"genrec train --run {paths.root}")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if (adapter_dir / "adapter_config.json").exists():
        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    trie = SidTrie(codes, tokenizer)
    item_weight = options.pop("item_weight", 1.0)
    item_weight = item_weight if meta.get("item_loss") else 0.0  # only a model trained with the item loss has item scores
    return GenrecModel(
        model=model,
        tokenizer=tokenizer,
        trie=trie,
        max_history=int(meta["max_history"]),
        template=meta.get("template"),
        item_head=ItemHead.from_trie(trie) if item_weight > 0 else None,
        item_weight=item_weight,
        **options,
    )
