"""LoRA on a base with SID tokens, and the export vLLM can serve: extended base + LoRA-only adapter.

The SID token rows of the embedding matrix are new, so they must be trained; everything else of
the base stays frozen. vLLM refuses LoRA adapters that carry embedding layers, so instead of
putting the embeddings in the adapter (PEFT `modules_to_save` / `trainable_token_indices`), the
rows are trained in place (gradients of all other rows are zeroed by a hook) and exported as part
of the base. The export is then two ordinary folders:

    RUN/model/base/      the base with SID tokens and trained rows (+ tokenizer)   from_pretrained
    RUN/model/adapter/   LoRA weights of q/k/v/o/gate/up/down only                 PeftModel.from_pretrained
    RUN/model/genrec.json  prompt settings, validation score, semantic-ID hash
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from genrec.atomic import atomic_dir, write_json
from genrec.config import TrainConfig
from genrec.errors import GenrecError


def attach_lora(model, config: TrainConfig, trainable_rows: Sequence[int]):
    """Wrap `model` with LoRA adapters on the configured linear layers; make `trainable_rows` of the
    input embedding (tied or not, the output layer too) trainable. Returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    targets = [t for t in config.target_modules if t in present]
    if not targets:
        raise GenrecError(
            f"train.target_modules {config.target_modules}: none of them is a linear layer of this model "
            f"(it has {sorted(present)[:8]})"
        )
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    train_rows(peft_model.get_base_model(), trainable_rows)
    return peft_model


def merged_copy(peft_model):
    """A plain copy of the model with the adapter folded into its weights; `peft_model` is untouched.

    Inference through an unmerged adapter runs two extra matmuls per adapted layer. Merging a copy,
    rather than merging and unmerging in place, leaves the frozen base bit-for-bit as it was.
    """
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()


def train_rows(model, rows: Sequence[int]) -> None:
    """Let only `rows` of the input embedding (and an untied output layer) receive gradient.

    The other rows get zero gradient, so Adam leaves them unchanged, provided the optimizer has no
    weight decay for this matrix (decay would shrink every row).
    """
    weights = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not weights[0]:
        weights.append(out.weight)
    for weight in weights:
        mask = torch.zeros(weight.shape[0], 1)
        mask[list(rows)] = 1.0
        weight.requires_grad_(True)
        weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))  # a no-op move on a CPU


def base_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """The base model's weights inside a PeftModel, LoRA removed, keys as in a plain model."""
    state = {}
    for key, value in peft_model.get_base_model().state_dict().items():
        if "lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state


def export_model(peft_model, tokenizer, target: Path, meta: dict) -> None:
    """Write base + adapter + metadata to `target` atomically (an interrupted export keeps the old one)."""
    from transformers import AutoModelForCausalLM

    with atomic_dir(target) as tmp:
        os.chmod(tmp, 0o755)
        config = peft_model.get_base_model().config
        base = AutoModelForCausalLM.from_config(config)
        missing, unexpected = base.load_state_dict(base_state_dict(peft_model), strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(
                f"export: base weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        base.tie_weights()
        base.generation_config = peft_model.get_base_model().generation_config
        base.save_pretrained(tmp / "base")
        tokenizer.save_pretrained(tmp / "base")
        peft_config = peft_model.peft_config["default"]
        previous = peft_config.base_model_name_or_path
        peft_config.base_model_name_or_path = str((target / "base").resolve())
        try:
            peft_model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
        finally:
            peft_config.base_model_name_or_path = previous
        write_json(tmp / "genrec.json", meta)
