"""How many threads llama.cpp's chat server should use on this machine: 1 against all cores, same run.

Starts `llama-server` (the cached build, `serving.llamacpp`) on the default chat model's GGUF with
each thread count in turn (never two at once), sends the same ~1,100-token prompt twice (numbered,
so no prompt cache helps) and records the server's own timings: prompt and decode tokens/s and the
time to /health. Writes bench/results/llamacpp_threads.json.

    .venv/bin/python bench/llamacpp_threads.py [--model qwen2.5-coder-1.5b] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import httpx

from inference.models import gguf_file
from serving.llamacpp import llama_server_binary
from serving.server import free_port

OUT = Path(__file__).parent / "results" / "llamacpp_threads.json"
PROMPT = "Summarise the plot of these films in one sentence each: " + ", ".join(
    f"Film number {i} about a journey" for i in range(120)
)


def measure(binary: Path, gguf: Path, threads: int, repeats: int = 2) -> dict:
    port = free_port()
    env = dict(os.environ, GOMP_SPINCOUNT="10000")  # as serving.llamacpp starts it
    cmd = [str(binary), "-m", str(gguf), "--port", str(port), "-t", str(threads), "-tb", str(threads)]
    proc = subprocess.Popen(
        [*cmd, "-c", "4096", "--jinja"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"llama-server exited with {proc.returncode}")
            time.sleep(0.5)
        start_s = time.monotonic() - t0
        runs = []
        for i in range(repeats):
            body = {"messages": [{"role": "user", "content": f"[{i}] {PROMPT}"}], "max_tokens": 64, "temperature": 0}
            t = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=900).json()["timings"]
            runs.append(
                {
                    "prompt_tokens": t["prompt_n"],
                    "prompt_tokens_per_s": round(t["prompt_per_second"], 1),
                    "decode_tokens_per_s": round(t["predicted_per_second"], 1),
                }
            )
        return {"threads": threads, "start_s": round(start_s, 1), "runs": runs}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    binary = llama_server_binary()
    if binary is None:
        raise SystemExit("llama-server is not built: run `.venv/bin/python -m serving.llamacpp`")
    rows = [measure(binary, gguf_file(args.model), n) for n in args.threads]
    base = rows[0]["runs"][-1]
    for row in rows:
        last = row["runs"][-1]
        row["decode_ratio_to_first"] = round(last["decode_tokens_per_s"] / base["decode_tokens_per_s"], 2)
        row["prompt_ratio_to_first"] = round(last["prompt_tokens_per_s"] / base["prompt_tokens_per_s"], 2)
        print(row, flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    result = {
        "model": args.model,
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine()},
        "load_before": os.getloadavg()[0],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from serving.server import sigterm_as_interrupt

    with sigterm_as_interrupt():  # `timeout`/`kill` stops the server it started too
        main()
