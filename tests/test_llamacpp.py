"""llama.cpp as the chat engine on a CPU: the `llama-server` build (cached per llama.cpp version and
CPU), the engine `serve.chat.engine: auto` picks, and the command line `genrec serve` starts."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vl\n"


def test_a_build_for_one_cpu_is_never_reused_on_a_cpu_with_other_instructions():
    from serving.llamacpp import cpu_key

    assert cpu_key(AVX2) != cpu_key(AVX512)
    assert cpu_key(AVX2) == cpu_key(AVX2.replace("avx avx2", "avx2 avx"))  # flag order does not matter


def test_the_build_is_cached_per_version_and_cpu_and_reused_without_rebuilding():
    """setup.sh built it once; building again returns the cached binary at once, and it runs."""
    from serving.llamacpp import VERSION, build_dir, build_llama_server, cpu_key, llama_server_binary

    binary = llama_server_binary()
    assert binary is not None, f"no llama-server in {build_dir()}: run `bash scripts/setup.sh`"
    assert build_dir().name == f"{VERSION}-{cpu_key()}" and binary == build_dir() / "bin" / "llama-server"
    stamp = binary.stat().st_mtime_ns
    started = time.monotonic()
    assert build_llama_server(progress=False) == binary
    assert time.monotonic() - started < 2 and binary.stat().st_mtime_ns == stamp  # no rebuild
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "version" in (out.stdout + out.stderr).lower()
    assert (build_dir() / "LICENSE").read_text().startswith("MIT License")


def test_chat_engine_auto_picks_llama_cpp_on_a_machine_without_a_cuda_gpu(tmp_path):
    from genrec.config import ChatServerConfig
    from genrec.errors import GenrecError
    from serving.server import chat_engine, has_cuda_gpu

    if has_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU: auto picks vLLM")
    assert chat_engine(ChatServerConfig(), "qwen2.5-coder-1.5b") == "llama.cpp"
    assert chat_engine(ChatServerConfig(), str(tmp_path / "model.gguf")) == "llama.cpp"
    assert chat_engine(ChatServerConfig(), str(tmp_path)) == "vllm"  # a Hugging Face folder: only vLLM reads it
    assert chat_engine(ChatServerConfig(engine="vllm"), "qwen2.5-coder-1.5b") == "vllm"
    with pytest.raises(GenrecError, match="llama.cpp serves GGUF files"):
        chat_engine(ChatServerConfig(engine="llama.cpp"), str(tmp_path))


def test_the_llama_cpp_chat_server_uses_the_models_template_slots_and_one_thread_per_core(tmp_path):
    from genrec.config import ChatServerConfig, ServeConfig
    from serving.server import chat_server_spec, has_cuda_gpu, server_command, server_env

    if has_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU: auto picks vLLM")
    config = ServeConfig(chat=ChatServerConfig(model="qwen2.5-coder-0.5b", parallel=6, max_model_len=2048))
    spec = chat_server_spec(tmp_path, config, port=8123)
    spec.api_key = "secret-key"
    cmd = server_command(spec)
    assert spec.engine == "llama.cpp" and Path(cmd[0]).name == "llama-server"
    assert Path(cmd[cmd.index("--model") + 1]).suffix == ".gguf" and "--jinja" in cmd
    assert cmd[cmd.index("--parallel") + 1] == "6" and cmd[cmd.index("--ctx-size") + 1] == str(6 * 2048)
    assert cmd[cmd.index("--threads") + 1] == str(len(os.sched_getaffinity(0)))  # every usable core
    assert "secret-key" not in " ".join(cmd) and server_env(spec)["LLAMA_API_KEY"] == "secret-key"
    pinned = chat_server_spec(tmp_path, ServeConfig(chat=config.chat.model_copy(update={"cpus": "0"})), port=8123)
    assert server_command(pinned)[:3] == ["taskset", "-c", "0"]
    assert server_command(pinned)[server_command(pinned).index("--threads") + 1] == "1"
