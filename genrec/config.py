"""One typed configuration per run, loaded from YAML and saved beside the artefacts it produced.

Every stage reads its own section; unknown keys are errors so that a typo never silently falls
back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genrec.atomic import write_text
from genrec.device import DEVICE_PATTERN
from genrec.errors import GenrecError

# where a stage computes: auto is cuda when a CUDA GPU is visible, else cpu (genrec.device); never
# part of a fingerprint, so a run resumes and a dense model is reused across devices
Device = Annotated[str, Field(pattern=DEVICE_PATTERN)]


class Section(BaseModel):
    """Base of every config section: strict keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataConfig(Section):
    """Where the catalog and interactions come from."""

    dataset: str = "ml-100k"  # a bundled name (ml-100k), a folder, or a file (amazon-seq .txt, .jsonl, .csv)
    interactions: str | None = None  # interactions file for the generic catalog format
    reviews: str | None = None  # reviews JSONL for Amazon Reviews 2023
    image_root: str | None = None  # folder that relative image paths are resolved against
    min_rating: float | None = None  # drop interactions below this rating (None keeps all)


class EncoderConfig(Section):
    """Text and image encoders (see retrieval/encoders.py)."""

    text_model: str = "all-MiniLM-L6-v2"  # name of a packaged model or a local model folder
    # images: "dinov2-s" (packaged, images only), a local CLIP/SigLIP folder (images and words), or None/"none"
    image_model: str | None = "dinov2-s"
    batch_size: int = 64
    device: str = "cpu"
    # text encoding in this many processes (sentence-transformers' multi-process pool); 1 encodes in
    # this process. Pays off on large catalogs (bench/results/scale.json `encoding`)
    processes: int = Field(1, ge=1)
    # weight of the centred image vector beside the text vector, in semantic IDs and more-like-this
    # (chosen on validation: README, "Your own catalog with images")
    image_weight: float = Field(1.0, ge=0)

    @field_validator("image_model")
    @classmethod
    def _none_means_text_only(cls, value: str | None) -> str | None:
        """`none` (any case) or an empty string switch images off, as null does."""
        return None if value is None or value.strip().lower() in ("", "none") else value


class ChromaConfig(Section):
    """The vector store: embedded under the run directory, or a `chroma run` server."""

    host: str | None = None
    port: int = 8000
    collection: str = "items"
    batch_size: int = 512


class SemanticIdConfig(Section):
    """How items get their semantic IDs (see `retrieval.semantic_ids`)."""

    method: Literal["rqvae", "rkmeans"] = "rqvae"
    # auto: fused where the catalog has text and co-occurring interactions, content where nothing
    # co-occurs, collaborative where items have no text (ML-100K validation NDCG@10: content 0.113,
    # fused 0.116 and 0.121 in two runs, same model and training; test NDCG@10 within noise)
    source: Literal["auto", "content", "collaborative", "fused"] = "auto"
    levels: int = Field(3, ge=1)  # learned levels; a final level that makes codes unique is appended
    codebook_size: int = Field(256, ge=2)
    rkmeans_dim: int = Field(64, ge=1)  # residual k-means clusters this many principal components of the input
    # RQ-VAE (TIGER, Rajput et al. 2023)
    latent_dim: int = Field(32, ge=1)
    hidden_dims: list[int] = [256, 128]
    epochs: int = Field(300, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    commitment_weight: float = Field(0.25, ge=0)
    warmup_steps: int = Field(200, ge=0)  # plain-autoencoder steps before k-means initialises the codebooks
    dead_code_reset: bool = True  # re-seed unused codes from crowded items' residuals during training
    reset_until: float = Field(0.8, ge=0, le=1)  # fraction of epochs during which dead codes are re-seeded
    # collaborative embeddings: PPMI of item co-occurrence in user histories, truncated SVD
    collaborative_dim: int = Field(64, ge=1)
    collaborative_window: int = Field(5, ge=0)  # items at most this far apart in a history co-occur; 0: whole history
    collaborative_holdout: int = Field(2, ge=0)  # ignore each user's last N interactions (leave-one-out test + val)
    # fused source: both parts L2-normalised, scaled by these weights, concatenated
    content_weight: float = Field(1.0, ge=0)
    collaborative_weight: float = Field(1.0, ge=0)
    seed: int = 0


# head sizes vLLM's CPU attention backend accepts (vllm.v1.attention.backends.cpu_attn)
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


class DistributedConfig(Section):
    """Training in several processes: `genrec train --processes N`, `torchrun` or `accelerate launch`.

    Every process builds the same examples and draws the same global batches; each trains on its
    share of every batch, and the gradients are averaged (accelerate: DDP, FSDP or DeepSpeed).
    """

    processes: int = Field(1, ge=1)  # processes `genrec train` starts on this machine (--processes)
    # ddp: a full model copy per process; fsdp / deepspeed shard a large pretrained base for LoRA (GPUs only)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    backend: str | None = None  # torch.distributed backend; None: nccl with CUDA, gloo on CPU
    timeout_minutes: float = Field(60.0, gt=0)  # how long processes wait for each other (rank 0 validates alone)
    max_restarts: int = Field(
        0, ge=0
    )  # restarts of all processes after one dies (each resumes from the last checkpoint)
    fsdp: dict = {}  # arguments of accelerate's FullyShardedDataParallelPlugin
    deepspeed: dict = {}  # arguments of accelerate's DeepSpeedPlugin (zero_stage, hf_ds_config, ...)


class TrainConfig(Section):
    """Base model, pre-training (scratch models) and LoRA fine-tuning."""

    base: str = "scratch"  # "scratch", "smollm2-135m", or a Hugging Face causal-LM folder
    # scratch model size (a Llama-style decoder; ~5.5M parameters at these settings)
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    dropout: float = 0.1  # attention dropout of the scratch model
    max_length: int = 512  # tokens per training example
    vocab_size: int = 4000  # byte-level BPE vocabulary trained on the catalog (scratch only)
    pretrain_epochs: int = Field(8, ge=1)  # upper bound; validation ends pre-training sooner
    pretrain_lr: float = 2e-3
    pretrain_val_start: int = Field(6, ge=1)  # first pre-training epoch scored on validation (the last one always is)
    pretrain_patience: int = Field(2, ge=1)  # scored epochs without a gain before pre-training stops
    # pre-training's budget (training and its validation passes; None: none): the stage stops at the step
    # that reaches it, keeps its best validated epoch and says so (`finetune.stages.Budget`)
    pretrain_max_minutes: float | None = Field(None, gt=0)
    pretrain_max_tokens: int | None = Field(None, ge=1)  # tokens trained (prompt and target)
    # LoRA fine-tuning
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # PEFT dropout on every LoRA input (slow on CPU; see docs/experiments.md)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    epochs: int = 3  # LoRA epochs, upper bound
    patience: int = Field(1, ge=1)  # LoRA epochs without a validation gain before training stops
    lr: float = 1e-3
    # padded tokens per optimizer step, summed over processes (batches group similar lengths)
    tokens_per_batch: int = 8192
    # split each process's share of a batch into forward passes of at most this many padded tokens
    # (gradient accumulation); None: one pass per process and step
    micro_batch_tokens: int | None = Field(None, ge=1)
    # also save a resumable checkpoint every N optimizer steps (None: at the end of each epoch only)
    checkpoint_steps: int | None = Field(None, ge=1)
    distributed: DistributedConfig = DistributedConfig()
    max_history: int = 112  # items of history in one prompt / training chunk: what fits max_length 512 with 4-token IDs
    aux_ratio: float = 0.5  # text-task examples (item<->text, query->item, explanation) per next-item example
    # next-item prompt: None (auto) is "short" (no instruction, the history alone) for a catalog with no
    # item text, else the worded templates of inference/templates/next_item.N.j2 (the first one served);
    # or "short", or one template's name or path
    template: str | None = None
    val_users: int | None = 1000  # users scored for validation NDCG@10 after each epoch (None: all)
    # LoRA's budget (training and its validation passes): the stage stops at the step that reaches it and
    # keeps its best checkpoint
    max_minutes: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    bf16: bool | None = None  # bf16 autocast (None: on when the CPU has bf16 units)
    device: Device = "auto"  # pre-training, LoRA and their validation (accelerate places each process)
    seed: int = 0

    @model_validator(mode="after")
    def _servable_heads(self) -> TrainConfig:
        """A scratch model must be one vLLM can serve: its head size must be one vLLM's CPU attention
        supports (a model that loads but fails on its first request is the worst outcome)."""
        head = self.hidden_size // self.num_heads if self.num_heads else 0
        if self.num_heads < 1 or self.hidden_size % self.num_heads or head not in VLLM_HEAD_SIZES:
            raise ValueError(
                f"hidden_size {self.hidden_size} / num_heads {self.num_heads} gives head size "
                f"{self.hidden_size / max(1, self.num_heads):g}; vLLM serves head sizes {list(VLLM_HEAD_SIZES)}"
            )
        return self


class GenerateConfig(Section):
    """Constrained top-K generation and the served ranking."""

    beam_width: int = 20
    k: int = 10
    batch_size: int = 32  # users per beam-search batch (a GPU takes hundreds: bench/gpu_seed.sh)
    device: Device = "auto"  # where the in-process generator runs (the fusion, `genrec eval`, `genrec recommend`)
    # hybrid: beams fused with the dense model (RUN/ranking.json); generative: beams alone
    ranking: Literal["hybrid", "generative"] = "hybrid"
    exclude_history: bool = True
    explain: bool = False
    explainer: str = "smollm2-135m"  # instruction-tuned model that writes explanations
    max_explanation_tokens: int = 80


class ServerConfig(Section):
    """One model server: where it listens and what it may use. Both servers have these settings: the
    recommender's (the `serve` section itself) and the chat model's (`serve.chat`, whichever engine runs it).
    vLLM reads them all; llama.cpp reads the address, `max_model_len`, `cpus` and `extra_args`."""

    host: str = "127.0.0.1"
    port: int = 8000
    kv_cache_gib: int = 2
    max_model_len: int = 2048
    # float32 keeps vLLM's scores equal to Hugging Face's (vLLM's "auto" turns float32 models into bfloat16 on CPU)
    dtype: str = "float32"
    # Parallelism and memory, passed to vLLM as its flags of the same names (the defaults add no flag:
    # one process, as on a CPU). README, "Several GPUs".
    tensor_parallel_size: int = Field(1, ge=1)  # GPUs each layer is sharded over
    pipeline_parallel_size: int = Field(1, ge=1)  # GPUs (or nodes) the layers are split over, in stages
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)  # share of each GPU vLLM takes (None: vLLM's 0.9)
    max_num_seqs: int | None = Field(None, ge=1)  # sequences in one engine step (None: vLLM's default)
    devices: str | None = None  # CUDA_VISIBLE_DEVICES of the server, e.g. "0,1" (None: inherited)
    # The CPU cores a CPU server's compute threads run on (vLLM's VLLM_CPU_OMP_THREADS_BIND): "auto" is
    # every core this process may use on a machine of up to 4 (vLLM's own binding keeps one core for its
    # scheduler, a whole half of a 2-core machine: bench/results/vllm_cpu.json), vLLM's own above;
    # "vllm": vLLM's own always; or a list such as "0-3". Ignored by GPU servers. llama.cpp: "auto"
    # runs one thread per usable core (docs/scale.md, "Threads"), a list pins it to those cores.
    cpus: str = "auto"
    extra_args: list[str] = []  # any other flags of the engine, appended last (so they win)


class ChatServerConfig(ServerConfig):
    """The server of the model that picks tools and writes chat replies (`serve.chat`)."""

    # "qwen2.5-coder-1.5b" (Qwen2.5-Coder-1.5B-Instruct from its packaged GGUF), "qwen2.5-coder-0.5b"
    # (faster, weaker: for tests), "smollm2-135m", or a Hugging Face folder. "base": the run's own base
    # model; "auto": "base" when it was fine-tuned from a pretrained model, else smollm2-135m; "none".
    model: str = "qwen2.5-coder-1.5b"
    # What serves it: "llama.cpp" (`llama-server` on the model's GGUF as shipped, 4-bit: several times
    # faster on a CPU, bench/results/chat_model.json), "vllm" (a Hugging Face folder, dequantised), or
    # "auto": llama.cpp on a machine without a CUDA GPU (when the model is a GGUF), vLLM on one.
    engine: Literal["auto", "vllm", "llama.cpp"] = "auto"
    # llama.cpp's slots, chats answered at once (continuous batching); each gets `max_model_len` tokens
    parallel: int = Field(16, ge=1)
    tools: bool = True  # vLLM: serve ChatML models with Hermes-style tool calling (auto tool choice)
    host: str | None = None  # None: where the recommender listens (`serve.host`)
    port: int = 8001
    kv_cache_gib: int = 1
    max_model_len: int = 4096  # the planner's prompt alone (tool schemas, memory, conversation) fills 2,048
    # "auto": bfloat16 where the hardware computes in it (GPUs, AVX512/AMX CPUs), float32 on other CPUs,
    # where bfloat16 starts and reads prompts slower and decodes no faster (bench/results/vllm_cpu.json).
    dtype: str = "auto"


# `serve.chat_X` before the chat server had its own section: read as `serve.chat.X`
FLAT_CHAT_KEYS = ("model", "port", "kv_cache_gib", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization")
FLAT_CHAT_KEYS += ("devices", "cpus", "dtype", "extra_args", "tools", "engine", "parallel")


class ServeConfig(ServerConfig):
    """The servers: the recommender's settings here, the chat model's under `chat`."""

    startup_timeout_s: float = 300.0  # either server
    # How the recommender server searches the trie (serving.trie_search): "engine" is one vLLM request
    # per recommendation, the beam search in the engine's pooler (serving.trie_engine; the server then
    # generates no text); "steps" one request per live beam and level (a server that also chats);
    # "auto": "engine" unless the recommender's base model is the chat model (chat.model base).
    search: Literal["auto", "engine", "steps"] = "auto"
    chat: ChatServerConfig = ChatServerConfig()

    @model_validator(mode="before")
    @classmethod
    def _flat_chat_keys(cls, data):
        """Configs written before `serve.chat` said `serve.chat.port` and the like: read them there."""
        if not isinstance(data, dict) or not any(f"chat_{key}" in data for key in FLAT_CHAT_KEYS):
            return data
        data = dict(data)
        chat = data.get("chat") or {}
        chat = dict(chat) if isinstance(chat, dict) else chat.model_dump(exclude_unset=True)
        for key in FLAT_CHAT_KEYS:
            if f"chat_{key}" in data:
                if key in chat:
                    raise ValueError(f"chat_{key} and chat.{key} both given; keep chat.{key}")
                chat[key] = data.pop(f"chat_{key}")
        data["chat"] = chat
        return data


class EvalConfig(Section):
    """Offline evaluation: leave-one-out, full ranking, and the baselines computed in the same run."""

    ks: list[int] = [5, 10, 20]
    max_users: int | None = None  # evaluate a fixed sample of users (None: all)
    batch_size: int = 256  # users per recommend() call
    # sasrec and bsarec are trained as the `dense` section sets them
    baselines: list[Literal["popularity", "itemknn", "content", "sasrec", "bsarec"]] = [
        "popularity",
        "itemknn",
        "content",
        "sasrec",
    ]
    # item-kNN
    # defaults picked on validation NDCG@10 of ML-100K and Amazon Beauty (bench/baselines.py)
    knn_neighbors: int | None = None  # similar items kept per item (None: all)
    knn_recency: float = 0.7  # weight decay per step back in the history (1.0: no decay)
    # content nearest-neighbour
    content_last_n: int = 5  # history items averaged into the user vector
    seed: int = 0


class DenseModelConfig(Section):
    """One dense next-item network (`finetune.dense`) and its training. Fields left at None follow
    the density of the data (`finetune.dense.build.PRESETS`: settings chosen on validation for
    short Amazon-like histories and for long MovieLens-like ones)."""

    hidden: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    max_len: int | None = Field(None, ge=1)  # items of history read (None: by density)
    dropout: float | None = Field(None, ge=0, lt=1)  # None: by density
    lr: float | None = Field(None, gt=0)  # None: by density
    batch_size: int | None = Field(None, ge=1)  # examples per optimizer step (None: by density)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(200, ge=1)  # upper bound; early stopping on validation NDCG@10 ends training sooner
    patience: int = Field(5, ge=1)  # validations without improvement before stopping
    eval_every: int = Field(5, ge=1)  # epochs between validations
    val_users: int | None = Field(None, ge=1)  # validation users scored (None: all)
    # wall-clock cap, so `genrec demo` finishes in minutes; training cut by it says so (and its stats
    # record stopped_by: max_minutes). bench/baselines.py trains without it.
    max_minutes: float | None = Field(10.0, gt=0)
    threads: int | None = Field(1, ge=1)  # torch threads (1 measured fastest on a shared 2-core machine)
    bf16: bool | None = None  # bf16 autocast in training (None: where the CPU has bf16 units)
    device: Device = "auto"  # training, validation and scoring
    seed: int = 0


class BSARecConfig(DenseModelConfig):
    """BSARec (Shin et al., AAAI 2024): SASRec's attention beside a Fourier low-pass filter."""

    alpha: float = Field(0.7, ge=0, le=1)  # weight of the filter branch against attention
    c: int = Field(5, ge=1)  # low-pass cut-off: the lowest c // 2 + 1 frequencies pass
    eval_every: int = Field(1, ge=1)
    patience: int = Field(10, ge=1)


class DenseConfig(Section):
    """The dense next-item networks: baselines in `genrec eval`, and the dense half of the served ranking."""

    ranker: Literal["sasrec", "bsarec", "none"] = "sasrec"  # fused with generation (none: generation alone)
    candidates: int = Field(50, ge=1)  # the dense model's top items added to the beams as candidates
    sasrec: DenseModelConfig = DenseModelConfig()
    bsarec: BSARecConfig = BSARecConfig()


class RunConfig(Section):
    """Everything one pipeline run needs; saved as `RUN/config.yaml`."""

    name: str = "run"
    data: DataConfig = DataConfig()
    encoder: EncoderConfig = EncoderConfig()
    chroma: ChromaConfig = ChromaConfig()
    semantic_ids: SemanticIdConfig = SemanticIdConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    serve: ServeConfig = ServeConfig()
    eval: EvalConfig = EvalConfig()
    dense: DenseConfig = DenseConfig()


# Settings earlier versions wrote into every RUN/config.yaml and that no longer exist, with the value
# that meant "off": a saved run with that value still opens (the key is dropped); any other value
# is an error, since the run was trained with something genrec no longer does.
RETIRED = {
    ("train", "item_loss"): 0.0,
    ("train", "residual_dropout"): 0.0,
    ("train", "pretrain_val_epochs"): None,
    ("generate", "item_weight"): None,
    ("serve", "request_timeout_s"): None,
}


OLD_SASREC_DEFAULTS = {  # eval.sasrec_* as every run config before dense.sasrec wrote them
    "sasrec_epochs": 200,
    "sasrec_hidden": 64,
    "sasrec_layers": 2,
    "sasrec_heads": 1,
    "sasrec_max_len": None,
    "sasrec_dropout": 0.2,
    "sasrec_lr": 3e-3,
    "sasrec_batch_size": 128,
    "sasrec_patience": 10,
    "sasrec_val_users": None,
    "sasrec_max_minutes": 10.0,
    "sasrec_threads": 1,
}


def drop_retired(raw: dict, path: Path) -> None:
    """Remove retired settings from a loaded config (see `RETIRED`), refusing ones that were switched on.
    The SASRec baseline's settings moved from `eval.sasrec_*` to `dense.sasrec`: keys still at the old
    defaults are dropped, a changed one is an error pointing to its new place."""
    if isinstance(raw.get("eval"), dict):
        for key in [k for k in raw["eval"] if isinstance(k, str) and k.startswith("sasrec_")]:
            value = raw["eval"].pop(key)
            if OLD_SASREC_DEFAULTS.get(key, object()) != value:
                raise GenrecError(f"{path}: eval.{key}: SASRec settings moved to dense.sasrec.{key[7:]}")
    for (section, key), off in RETIRED.items():
        part = raw.get(section)
        if isinstance(part, dict) and key in part:
            value = part.pop(key)
            if off is not None and value != off:
                raise GenrecError(f"{path}: {section}.{key}: {value} is no longer supported; remove it and retrain")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config YAML; errors name the file and the offending key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise GenrecError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise GenrecError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise GenrecError(f"{path}: expected a mapping at the top level")
    drop_retired(raw, path)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise GenrecError(f"{path}: {where}: {err['msg']}") from None


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the config as YAML (atomically) so a run can be reproduced from its folder."""
    write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
