"""llama.cpp's `llama-server`: the chat model's GGUF served as shipped, on machines without a CUDA GPU.

On a CPU, vLLM serves the chat model dequantised (3-6 GB of weights read per token, ~4 tokens/s on
two cores); llama.cpp reads the 4-bit GGUF itself (~1 GB) and decodes several times faster. PyPI
serves llama.cpp only as source: the `llama-cpp-python` sdist (MIT) vendors the llama.cpp tree, and
`build_llama_server()` builds only its `llama-server` target from it, with the CPU's own
instructions (`GGML_NATIVE`), statically, without curl, OpenSSL or the web UI. The binary is cached
per llama.cpp version *and* CPU (`~/.cache/genrec/llama.cpp/<version>-<cpu flags hash>/bin/`): a
native build from an AVX512 machine would crash with an illegal instruction on an AVX2 one.

`llama_server_command(spec)` is the command line (the model's own chat template with `--jinja`,
parallel slots for concurrent chats, threads = the cores the chat server is given);
`serving.server.ModelServer` starts, health-checks and stops it like a vLLM server.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from genrec.errors import GenrecError

# The sdist whose vendored llama.cpp is built, and that llama.cpp's commit (from the sdist's CHANGELOG).
LLAMA_CPP_PYTHON = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e57098"
VERSION = f"{LLAMA_CPP_COMMIT}-pypi{LLAMA_CPP_PYTHON}"
BUILD_JOBS = 2

_CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",  # this CPU's instructions (AVX2, AVX512, AMX ...): hence the cache key below
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",  # no web UI: genrec has its own, and the prebuilt one is a download
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",  # no HTTPS client (this llama.cpp has no curl): models come from files, never URLs
]


def cache_root() -> Path:
    """`$GENREC_CACHE` or `~/.cache/genrec`."""
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec"))


def cpu_key(cpuinfo: str | None = None) -> str:
    """A short hash of the CPU's instruction-set flags (and architecture) in `cpuinfo` (default:
    this machine's /proc/cpuinfo): builds with `GGML_NATIVE` are only reused on a CPU with the same flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags = ""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):  # x86, ARM
            flags = " ".join(sorted(set(line.split(":", 1)[1].split())))
            break
    return hashlib.sha256(f"{platform.machine()} {flags or platform.processor()}".encode()).hexdigest()[:12]


def build_dir() -> Path:
    """Where this version's build for this CPU lives."""
    return cache_root() / "llama.cpp" / f"{VERSION}-{cpu_key()}"


def llama_server_binary() -> Path | None:
    """The cached `llama-server` for this CPU, or None when it is not built yet."""
    binary = build_dir() / "bin" / "llama-server"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def require_llama_server() -> Path:
    """The cached `llama-server`, or a one-line error that says how to build it."""
    binary = llama_server_binary()
    if binary is None:
        raise GenrecError(
            f"llama-server is not built for this CPU ({build_dir()}); run `bash scripts/setup.sh` "
            "(or `python -m serving.llamacpp`), or set serve.chat.engine: vllm"
        )
    return binary


def build_llama_server(jobs: int = BUILD_JOBS, progress: bool = True) -> Path:
    """Build `llama-server` from the llama-cpp-python sdist once for this CPU; return its path.

    Skipped when the cached binary exists. Downloads the sdist with pip (the index pip is set up
    with), configures with CMake and builds the one target with `jobs` jobs. A failure is one line
    naming the step, its log and what to do; nothing half-built is left in the cache.
    """
    cached = llama_server_binary()
    if cached is not None:
        if progress:
            print(f"llama-server: cached ({cached})", flush=True)
        fetch_grammar_converter(progress)
        return cached
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None and not Path(sys.executable).with_name(tool).exists():
            raise GenrecError(
                f"llama-server: `{tool}` not found; install CMake and a C++ compiler "
                "(Debian: apt-get install cmake g++) and run `bash scripts/setup.sh` again"
            )
    target = build_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".llama-build-", dir=target.parent) as tmp:
        work = Path(tmp)
        log = target.parent / f"build-{target.name}.log"
        if progress:
            print(
                f"llama-server: building llama.cpp {VERSION} for this CPU with {jobs} jobs "
                f"(once, several minutes; log {log})",
                flush=True,
            )
        with open(log, "w", encoding="utf-8") as out:
            source = _fetch_source(work, out, log)
            build = work / "build"
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            _step(["cmake", "-S", str(source), "-B", str(build), *generator, *_CMAKE_FLAGS], out, log, "configure")
            _step(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], out, log, "build")
        built = build / "bin" / "llama-server"
        if not built.is_file():
            raise GenrecError(f"llama-server: the build finished without {built}; read {log}")
        staged = work / "out"
        (staged / "bin").mkdir(parents=True)
        shutil.copy2(built, staged / "bin" / "llama-server")
        shutil.copy2(source / "LICENSE", staged / "LICENSE")  # MIT: the licence travels with the binary
        _stage_grammar(work, staged)
        seconds = time.monotonic() - started
        (staged / "build.json").write_text(
            json.dumps(
                {
                    "llama_cpp": LLAMA_CPP_COMMIT,
                    "from": f"llama-cpp-python=={LLAMA_CPP_PYTHON} (sdist, MIT)",
                    "cpu_key": cpu_key(),
                    "cmake_flags": _CMAKE_FLAGS,
                    "jobs": jobs,
                    "build_s": round(seconds, 1),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    if progress:
        print(f"llama-server: built in {seconds:.0f} s ({target / 'bin' / 'llama-server'})", flush=True)
    return target / "bin" / "llama-server"


def parse_cores(cpus: str) -> list[int]:
    """The cores of a CPU list in vLLM's syntax ("0-3", "0,2,4-5"); every usable core for "auto"/"vllm"."""
    value = cpus.strip()
    if value in ("auto", "vllm", ""):
        return sorted(os.sched_getaffinity(0))
    cores: set[int] = set()
    try:
        for part in value.replace("|", ",").split(","):
            lo, _, hi = part.strip().partition("-")
            cores.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise GenrecError(f"serve.chat.cpus {cpus!r}: expected 'auto' or a CPU list such as '0-3' or '0,2'") from None
    return sorted(cores)


def chat_threads(cpus: str) -> int:
    """llama.cpp's threads for `serve.chat.cpus`: one per listed core when the chat server is pinned;
    with "auto", every usable core. On an idle 2-core machine two threads read prompts and decode
    twice as fast as one (Qwen2.5-Coder-1.5B Q4_K_M: 82-86 against 43 prompt tokens/s, 13.0-13.7
    against 7.0-7.5 decode tokens/s; bench/results/llamacpp_threads.json); under a heavy load of
    other work (~16 on 2 cores) one thread did better (12.2 against 4.4 tokens/s for the 0.5B), so a
    machine that trains beside its chat server can pin it to one core with `serve.chat.cpus`."""
    cores = parse_cores(cpus)
    return max(1, len(cores))


def llama_server_command(spec) -> list[str]:
    """The `llama-server` command line for a chat `ServerSpec` (engine "llama.cpp").

    - `--jinja`: the chat template stored in the GGUF, run as Jinja (Qwen's renders the tools);
    - `--parallel`: `spec.parallel` slots decoded together (continuous batching), each with
      `spec.max_model_len` tokens of context (`-c` is the sum: llama.cpp divides it among slots);
    - threads: `chat_threads` (pinned with `taskset` when `spec.cpus` names cores): llama.cpp's
      threads synchronise after every operation, so more threads than free cores, or cores shared
      with a busy server, cost far more than they add;
    - `--cache-ram`: idle slots' prompts kept in RAM (1 GiB) so a new chat reuses the planner's prompt.
    The API key goes by environment (`llama_server_env`), not on the command line `ps` shows.
    """
    cores = parse_cores(spec.cpus)
    threads = chat_threads(spec.cpus)
    cmd = [
        str(require_llama_server()),
        "--model", str(spec.base_dir),
        "--alias", spec.served_name,
        "--host", spec.host,
        "--port", str(spec.port),
        "--jinja",
        "--parallel", str(spec.parallel),
        "--ctx-size", str(spec.parallel * spec.max_model_len),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--cache-ram", "1024",
        "--no-webui",
    ]  # fmt: skip
    if spec.cpus.strip() not in ("auto", "vllm") and shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
    return cmd + list(spec.extra_args)


# llama.cpp's threads meet at an OpenMP barrier after every operation, and GNU OpenMP spins there
# for ~300,000 rounds before it sleeps. On cores shared with anything busy (a vLLM server, training,
# another chat) a spinning thread holds the core its partner needs: here, beside a load of ~14 on 2
# cores, the 0.5B decoded 0.27 tokens/s with 2 threads against 9.0-11.8 with a short spin or a
# passive wait (and 11 with 1 thread). A short spin keeps an idle machine's barrier fast.
_OPENMP_SPIN = "10000"


def llama_server_env(spec) -> dict[str, str]:
    """The server's environment: the API key (if any) as `LLAMA_API_KEY`, and no other key inherited;
    a short OpenMP spin (`_OPENMP_SPIN`) unless the caller set OpenMP's wait policy."""
    env = dict(os.environ)
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", _OPENMP_SPIN)
    env.pop("LLAMA_API_KEY", None)
    if spec.api_key:
        env["LLAMA_API_KEY"] = spec.api_key
    return env


def _fetch_source(work: Path, out, log: Path) -> Path:
    """Download the pinned sdist with pip and unpack only its vendored llama.cpp."""
    _step(
        [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(work),
        ],
        out, log, "download",
    )  # fmt: skip
    archives = sorted(work.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        raise GenrecError(f"llama-server: pip downloaded no llama-cpp-python sdist; read {log}")
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    with tarfile.open(archives[0]) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) or m.name in _GRAMMAR_FILES]
        tar.extractall(work, members=members, filter="data")
    return work / prefix.rstrip("/")


# llama-cpp-python's JSON-schema -> GBNF converter (pure Python, MIT), kept beside the binary: it
# allows one optional space where llama-server's own converter allows newlines and indentation
_GRAMMAR_FILES = {
    f"llama_cpp_python-{LLAMA_CPP_PYTHON}/llama_cpp/llama_grammar.py": "llama_grammar.py",
    f"llama_cpp_python-{LLAMA_CPP_PYTHON}/LICENSE.md": "LICENSE.md",
}


def _stage_grammar(work: Path, staged: Path) -> None:
    (staged / "python").mkdir(parents=True, exist_ok=True)
    for member, name in _GRAMMAR_FILES.items():
        shutil.copy2(work / member, staged / "python" / name)


def fetch_grammar_converter(progress: bool = True) -> Path:
    """Add the grammar converter to a build made before it was kept (downloads the sdist, builds nothing)."""
    target = build_dir() / "python"
    if (target / "llama_grammar.py").is_file():
        return target
    with tempfile.TemporaryDirectory(prefix=".llama-grammar-", dir=build_dir()) as tmp:
        work = Path(tmp)
        log = build_dir().parent / f"grammar-{build_dir().name}.log"
        with open(log, "w", encoding="utf-8") as out:
            _fetch_source(work, out, log)
        _stage_grammar(work, work / "out")
        os.replace(work / "out" / "python", target)
    if progress:
        print(f"llama-server: grammar converter kept in {target}", flush=True)
    return target


@functools.lru_cache(maxsize=1)
def _grammar_module():
    path = build_dir() / "python" / "llama_grammar.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("genrec_llama_grammar", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=64)
def _compact_grammar(schema_json: str) -> str | None:
    module = _grammar_module()
    return None if module is None else module.json_schema_to_gbnf(schema_json)


def compact_grammar(schema: dict) -> str | None:
    """`schema` as a llama.cpp GBNF grammar that allows at most one space between tokens of the JSON
    (llama-server's own converter allows a newline and 20 spaces of indentation, which the 1.5B
    uses: a planning call took 42 tokens pretty-printed and 28 compact on the agent's prompt), or
    None when the converter is not in this build (the caller sends the JSON schema instead)."""
    return _compact_grammar(json.dumps(schema, sort_keys=False))


def _step(cmd: list[str], out, log: Path, name: str) -> None:
    out.write("$ " + " ".join(cmd) + "\n")
    out.flush()
    code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        raise GenrecError(
            f"llama-server: {name} failed (exit {code}); read {log}, fix what it says (compiler, disk, "
            "network to the package index) and run `bash scripts/setup.sh` again, or set serve.chat.engine: vllm"
        )


if __name__ == "__main__":  # `python -m serving.llamacpp`: build (or find) the binary, say where and how long
    try:
        print(build_llama_server())
    except GenrecError as exc:
        print(f"setup: {exc}", file=sys.stderr)
        sys.exit(1)
