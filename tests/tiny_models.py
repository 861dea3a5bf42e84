"""Build a tiny semantic-ID language model on disk: a real tokenizer, a random Llama, a LoRA adapter.

No model can come from a hub here, so tests that need a model to generate item IDs make one:
the same files, layout and loading path as a fine-tuned run (`RUN/model/base` holding the base
model whose vocabulary carries the SID tokens, `RUN/model/adapter` holding a LoRA-only adapter),
small enough to build in seconds and to serve with vLLM on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

# Text the byte-level BPE is trained on: the words of the prompts tests send, so they tokenize
# into a handful of tokens instead of single bytes.
_CORPUS = [
    "The user watched these items in order. Recommend the next item.",
    "User history: recommend the next item for this user.",
    "Explain why the user would like this item. It is a comedy, a drama, a thriller.",
    "I loved Star Wars and Alien, something funnier please. Why that one?",
    "Title: Toy Story (1995). Genres: Animation, Children's, Comedy. Year: 1995.",
    "The quick brown fox jumps over the lazy dog. Science fiction, horror, romance, action.",
]

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_tokenizer(out_dir: str | Path, codebook_sizes: Sequence[int], vocab_size: int = 400):
    """Train a byte-level BPE on a small built-in corpus, add the SID tokens, save it and return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from inference.sid_tokens import sid_token_strings

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS, trainer=trainer)
    bos = core.token_to_id("<s>")
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=512
    )
    # Plain (non-special) added tokens: matched whole before BPE, and kept by decode(skip_special_tokens=True).
    tokenizer.add_tokens(sid_token_strings(codebook_sizes))
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_tiny_sid_model(
    out_dir: str | Path,
    codes: Mapping[str, Sequence[int]],
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    lora_rank: int = 8,
) -> tuple[Path, Path]:
    """Save a tiny random Llama whose vocabulary has one token per (level, code), plus a LoRA adapter.

    `codes` maps item id -> code tuple (as in `semantic_ids.json`). Writes `out_dir/base`
    (model + tokenizer, float32) and `out_dir/adapter` (LoRA on q/k/v/o/gate/up/down, random
    non-zero weights so that serving with and without it differs). Same seed, same files.
    Returns `(base_dir, adapter_dir)`.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from inference.sid_tokens import codebook_sizes

    out = Path(out_dir)
    base_dir, adapter_dir = out / "base", out / "adapter"
    tokenizer = build_tiny_tokenizer(base_dir, codebook_sizes(codes.values()))

    torch.manual_seed(seed)
    head_dim = 32  # the smallest head size vLLM's CPU attention supports
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // head_dim,
        num_key_value_heads=hidden_size // head_dim,
        head_dim=head_dim,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # A wide init spreads the next-token distribution, so beams rarely tie and the
        # top-K of two implementations can be compared exactly.
        initializer_range=0.2,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(base_dir)

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=lora_rank,
        lora_alpha=2 * lora_rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
        init_lora_weights=False,  # random A and B: an identity adapter would hide a server that ignores it
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed + 1)
    peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(adapter_dir)
    return base_dir, adapter_dir
