"""Benchmark: speculative decoding for the chat model on llama.cpp, on the agent's own requests.

The chat turn's time is decode-bound on a small CPU (a planning call writes 40-85 tokens, a reply
60-100, at ~10-13 tokens/s for the 1.5B on two cores), so the levers llama.cpp offers for decode
are measured here against plain decoding, in one run, each on a fresh `llama-server`:

- `base`: plain decoding (what `genrec serve` runs);
- `ngram`: drafts copied from the prompt and the output so far (`--spec-type ngram-simple`,
  3-token lookup, 8-token drafts): replies copy titles and [id N] tags from the results;
- `draft05`: Qwen2.5-Coder-0.5B (same tokenizer) drafts up to 4 tokens (`--spec-type draft-simple`).

The requests are the agent's real ones: the planner's messages and JSON-schema constrained call
for five user messages, and the reply prompt over real search results for three. Each is sent twice;
the second pass is timed (prefixes cached, as in a running chat). Per variant: mean seconds per
planning call and per reply, tokens written, drafted and accepted (from the server's `timings`),
and ratios to `base`.

    .venv/bin/python bench/chat_decoding.py --run RUN        # RUN: an indexed ML-100K run

Writes bench/results/chat_decoding.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "chat_decoding.json"

MESSAGES = [
    "I really liked Fargo (1996). What else would I like?",
    "Musicals made before 1960, please.",
    "I loved Star Wars and Alien. What should I watch next?",
    "Show me some thrillers from the 90s.",
    "Something like Toy Story, please, but no animation.",
]
REPLIES = [(MESSAGES[0], "dark comedy crime"), (MESSAGES[3], "1990s thriller"), (MESSAGES[1], "musical")]


def variants(cache: Path) -> dict[str, list[str]]:
    return {
        "base": [],
        "ngram": ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3", "--spec-ngram-simple-size-m", "8"],
        "draft05": [
            "--spec-type", "draft-simple", "--model-draft", str(cache / "qwen2.5-coder-0.5b.gguf"),
            "--spec-draft-n-max", "4", "--threads-draft", "2", "--threads-batch-draft", "2",
        ],
    }  # fmt: skip


def payloads(run: Path) -> list[tuple[str, dict]]:
    """The agent's planning and reply requests as the OpenAI-style bodies it sends to llama.cpp."""
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    from agent.llm import LLAMA_CPP, planning_kwargs
    from agent.model_tools import answer_tool, bound_tools
    from agent.prompts import planner_messages, reply_messages
    from agent.tools import AgentContext, search_items

    ctx = AgentContext.open(run)
    tools = [*bound_tools(ctx), answer_tool()]
    llm = ChatOpenAI(base_url="http://unused/v1", api_key="unused", model="genrec-chat", temperature=0)
    out = []
    for message in MESSAGES:
        kwargs = planning_kwargs(LLAMA_CPP, tools)
        body = llm._get_request_payload(
            planner_messages({"messages": [HumanMessage(message)]}, ctx),
            **{k: v for k, v in kwargs.items() if k != "extra_body"},
        )
        out.append(("plan", {**body, **kwargs["extra_body"]}))
    for message, query in REPLIES:
        results = [search_items(ctx, query=query, k=10)]
        body = llm._get_request_payload(reply_messages({"messages": [HumanMessage(message)]}, ctx, results))
        out.append(("reply", {**body, "max_tokens": 100}))
    return out


def measure(name: str, flags: list[str], bodies: list[tuple[str, dict]], model: Path) -> dict:
    import httpx

    from serving.llamacpp import require_llama_server
    from serving.server import free_port

    port = free_port()
    cmd = [
        str(require_llama_server()), "--model", str(model), "--alias", "genrec-chat", "--port", str(port),
        "--jinja", "--parallel", "4", "--ctx-size", "16384", "--threads", "2", "--threads-batch", "2",
        "--cache-ram", "1024", "--no-webui", *flags,
    ]  # fmt: skip
    env = dict(os.environ, GOMP_SPINCOUNT="10000")  # as serving.llamacpp starts it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=600)
        rows = []
        for timed in (False, True):
            for kind, body in bodies:
                started = time.monotonic()
                reply = client.post("/chat/completions", json=body).json()
                seconds = time.monotonic() - started
                t = reply.get("timings") or {}
                if timed:
                    rows.append(
                        {
                            "kind": kind,
                            "seconds": round(seconds, 2),
                            "tokens": t.get("predicted_n"),
                            "decode_tokens_per_s": round(t.get("predicted_per_second") or 0, 2),
                            "drafted": t.get("draft_n"),
                            "accepted": t.get("draft_n_accepted"),
                            "text": reply["choices"][0]["message"]["content"][:120],
                        }
                    )
                    print(f"{name} {kind} {seconds:.2f} s {t.get('predicted_n')} tokens", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out: dict = {"flags": flags, "requests": rows}
    for kind in ("plan", "reply"):
        mine = [r for r in rows if r["kind"] == kind]
        out[f"{kind}_mean_s"] = round(statistics.mean(r["seconds"] for r in mine), 2)
        out[f"{kind}_tokens"] = sum(r["tokens"] or 0 for r in mine)
    return out


def main() -> None:
    from genrec.atomic import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="an indexed ML-100K run")
    parser.add_argument("--variants", nargs="+", default=["base", "ngram", "draft05"])
    args = parser.parse_args()
    cache = Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec"))
    bodies = payloads(args.run)
    table = variants(cache)
    result = {name: measure(name, table[name], bodies, cache / "qwen2.5-coder-1.5b.gguf") for name in args.variants}
    base = result.get("base")
    if base:
        for r in result.values():
            r["plan_time_over_base"] = round(r["plan_mean_s"] / base["plan_mean_s"], 2)
            r["reply_time_over_base"] = round(r["reply_mean_s"] / base["reply_mean_s"], 2)
    write_json(
        OUT,
        {
            "what": (__doc__ or "").split("\n\n")[0],
            "model": "qwen2.5-coder-1.5b (Q4_K_M GGUF), 2 threads",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_end": os.getloadavg()},
            "variants": result,
        },
    )
    print(f"written to {OUT}")


if __name__ == "__main__":
    from serving.server import sigterm_as_interrupt

    with sigterm_as_interrupt():
        main()
