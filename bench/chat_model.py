"""Benchmark: the chat models behind genrec's agent, served by vLLM and reached through `agent.llm` (LangChain).

For each model, a chat server is started the way `genrec serve` starts one (`serving.server.chat_server_spec`:
Qwen's own chat template, Hermes tool parser, the chat dtype of `serve.chat_dtype`) and measured:

- start: seconds to healthy, and whether vLLM compiled (first start on this machine) or reused its cache;
- planning: each request below with the agent's planner prompt (`agent.prompts.PLANNER_SYSTEM`) and the
  five model-facing tool schemas of an indexed run (`agent.model_tools`), through `agent.llm.plan`
  (`tool_choice="required"`): seconds, output tokens, which tool the model
  picked against the expected one, whether the arguments validate and the tool runs on them;
- `tool_choice="auto"` on the first few requests: how many calls vLLM's Hermes parser finds;
- one planning call streamed: whether tool-call chunks stream, time to the first chunk (the prompt's prefill);
- replies: the reply step on a prompt that lists real tool results, through `agent.llm.stream_reply`:
  time to the first piece, output tokens, decode tokens/s, how many listed titles the reply names.

    .venv/bin/python bench/chat_model.py --run /tmp/cm-run                      # both Qwen models
    .venv/bin/python bench/chat_model.py --run /tmp/cm-run --models qwen2.5-coder-0.5b

`--run` is an indexed run (`genrec index --dataset ml-100k --run DIR`). Writes bench/results/chat_model.json,
merging per model, atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "chat_model.json"
COMPILE_CACHE = Path.home() / ".cache" / "vllm" / "torch_compile_cache"

# (user message, tools a sensible planner would call)
REQUESTS = [
    ("I loved Star Wars and Alien. What should I watch next?", {"recommend"}),
    ("Find me a funny movie about space.", {"search_items"}),
    ("Tell me more about Fargo.", {"item_details"}),
    ("What has user 42 watched recently?", {"user_history"}),
    ("Why would I like Heat if I liked The Godfather?", {"explain"}),
    ("Show me some thrillers from the 90s.", {"search_items"}),
    ("I'm user 7. Recommend me something new.", {"recommend"}),
    ("Something like Toy Story, please.", {"search_items", "recommend"}),
]
REPLIES = [
    ("Find me a funny movie about space.", "funny space comedy"),
    ("Show me some thrillers from the 90s.", "1990s thriller"),
    ("I want a romantic comedy.", "romantic comedy"),
]
REPLY_PROMPT = (
    "You are genrec, a movie recommender. Answer the user in two or three sentences, recommending "
    "only movies from the list below, by their exact titles. Do not mention any other movie."
)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def compile_entries() -> int:
    """How many compiled artefacts vLLM has cached on this machine."""
    return sum(1 for _ in COMPILE_CACHE.rglob("*")) if COMPILE_CACHE.exists() else 0


def server_rss_gib(pid: int) -> float:
    """Resident memory of the server process and its children, GiB."""
    import psutil

    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**30, 2)


def measure_planning(llm, tools, prompt: str, ctx) -> dict:
    """Every request through `agent.llm.plan`, timed, with the tool picked and whether its arguments run."""
    from langchain_core.callbacks import get_usage_metadata_callback

    from agent.llm import plan
    from agent.tools import run_tool
    from serving.client import LLMError

    rows = []
    for message, expected in REQUESTS:
        with get_usage_metadata_callback() as usage:
            started = time.monotonic()
            try:
                calls, error = plan(llm, [("system", prompt), ("user", message)], tools), None
            except LLMError as exc:
                calls, error = [], str(exc)
            seconds = time.monotonic() - started
        tokens = sum(u["output_tokens"] for u in usage.usage_metadata.values())
        runs = []
        for call in calls:
            result = run_tool(ctx, call["name"], call["args"])
            runs.append(not result.get("error"))
        rows.append(
            {
                "message": message,
                "seconds": round(seconds, 2),
                "output_tokens": tokens,
                "calls": [{"name": c["name"], "args": c["args"]} for c in calls],
                "error": error,
                "expected_tool": sorted(expected),
                "picked_expected": bool(calls) and calls[0]["name"] in expected,
                "tool_ran_without_error": bool(runs) and all(runs),
            }
        )
        print(
            f"  plan {seconds:5.1f}s {tokens:3d} tok  {message!r} -> {[(c['name'], c['args']) for c in calls] or error}",
            flush=True,
        )
    seconds = [r["seconds"] for r in rows]
    return {
        "requests": len(rows),
        "p50_s_per_tool_call": round(statistics.median(seconds), 2),
        "p95_s_per_tool_call": round(percentile(seconds, 95), 2),
        "mean_output_tokens": round(statistics.mean(r["output_tokens"] for r in rows), 1),
        "parsed_and_validated": sum(bool(r["calls"]) for r in rows),
        "picked_expected_tool": sum(r["picked_expected"] for r in rows),
        "tool_ran_without_error": sum(r["tool_ran_without_error"] for r in rows),
        "distinct_tools_picked": sorted({c["name"] for r in rows for c in r["calls"]}),
        "calls": rows,
    }


def measure_auto(llm, tools, prompt: str, n: int) -> dict:
    """The first `n` requests with `tool_choice="auto"`: does vLLM's Hermes parser find a call?"""
    rows = []
    for message, _ in REQUESTS[:n]:
        started = time.monotonic()
        reply = llm.bind_tools(tools, tool_choice="auto").invoke([("system", prompt), ("user", message)])
        rows.append(
            {
                "message": message,
                "seconds": round(time.monotonic() - started, 2),
                "tool_calls": len(reply.tool_calls),
                "content": str(reply.content)[:300],
            }
        )
        print(
            f"  auto {rows[-1]['seconds']:5.1f}s tool_calls={len(reply.tool_calls)} content={rows[-1]['content'][:80]!r}",
            flush=True,
        )
    return {"requests": n, "parsed_tool_calls": sum(r["tool_calls"] > 0 for r in rows), "calls": rows}


def measure_streamed_call(llm, tools, prompt: str) -> dict:
    """One `tool_choice="required"` call streamed: do tool-call chunks arrive piece by piece?"""
    started, first, chunks, full = time.monotonic(), None, 0, None
    for chunk in llm.bind_tools(tools, tool_choice="required").stream([("system", prompt), ("user", REQUESTS[0][0])]):
        if chunk.tool_call_chunks:
            first = first if first is not None else time.monotonic() - started
            chunks += 1
        full = chunk if full is None else full + chunk
    return {
        "tool_call_chunks": chunks,
        "seconds_to_first_chunk": round(first or 0.0, 2),
        "seconds": round(time.monotonic() - started, 2),
        "tool_calls": full.tool_calls if full else [],
        "prompt_tokens": (full.usage_metadata or {}).get("input_tokens") if full else None,
    }


def measure_replies(llm, ctx) -> dict:
    """The reply step on a prompt that lists real search results, streamed."""
    from langchain_core.callbacks import get_usage_metadata_callback

    from agent.llm import stream_reply
    from agent.tools import search_items

    rows = []
    for message, query in REPLIES:
        items = search_items(ctx, query=query, k=5)["items"]
        listing = "\n".join(f"- {i['title']}: {', '.join(map(str, i['attributes'].get('genres', [])))}" for i in items)
        messages = [("system", REPLY_PROMPT + "\n\n" + listing), ("user", message)]
        with get_usage_metadata_callback() as usage:
            started, first, text = time.monotonic(), None, ""
            for piece in stream_reply(llm, messages):
                first = first if first is not None else time.monotonic() - started
                text += piece
            seconds = time.monotonic() - started
        tokens = sum(u["output_tokens"] for u in usage.usage_metadata.values())
        named = sum(i["title"].split(" (")[0].lower() in text.lower() for i in items)
        rows.append(
            {
                "message": message,
                "seconds": round(seconds, 2),
                "seconds_to_first_piece": round(first or 0, 2),
                "output_tokens": tokens,
                "decode_tokens_per_s": round((tokens - 1) / max(seconds - (first or 0), 1e-6), 2),
                "listed_titles_named": named,
                "reply": text,
            }
        )
        print(
            f"  reply {seconds:5.1f}s ttft {first or 0:.1f}s {tokens} tok names {named}/5: {text[:100]!r}", flush=True
        )
    return {
        "requests": len(rows),
        "decode_tokens_per_s_p50": round(statistics.median(r["decode_tokens_per_s"] for r in rows), 2),
        "seconds_to_first_piece_p50": round(statistics.median(r["seconds_to_first_piece"] for r in rows), 2),
        "replies": rows,
    }


def bench_model(name: str, run: Path, auto: int) -> dict:
    """Start the chat server of `name` for `run`, measure it, stop it."""
    from agent.llm import connect
    from agent.model_tools import bound_tools
    from agent.prompts import PLANNER_SYSTEM as PLANNER_PROMPT
    from agent.tools import AgentContext
    from genrec.config import ServeConfig
    from serving.server import VllmServer, chat_server_spec, free_port, server_command

    ctx = AgentContext.open(run)
    tools = bound_tools(ctx)
    spec = chat_server_spec(run, ServeConfig(chat_model=name, startup_timeout_s=1200), port=free_port())
    before = compile_entries()
    print(f"{name}: starting vLLM ({' '.join(server_command(spec)[3:])})", flush=True)
    with VllmServer(spec, 1200) as server:
        result = {
            "server_start_s": round(server.startup_s or 0, 1),
            "compiled": compile_entries() > before,
            "vllm_flags": server_command(spec)[3:],
        }
        print(f"{name}: healthy in {result['server_start_s']} s (compiled: {result['compiled']})", flush=True)
        llm = connect(server.url, timeout_s=600, max_tokens=256)
        result["planning_required"] = measure_planning(llm, tools, PLANNER_PROMPT, ctx)
        result["streamed_tool_call"] = measure_streamed_call(llm, tools, PLANNER_PROMPT)
        result["planning_auto"] = measure_auto(llm, tools, PLANNER_PROMPT, auto)
        result["reply"] = measure_replies(llm, ctx)
        result["server_rss_gib"] = server_rss_gib(server.process.pid)
    return result


def main() -> None:
    """Measure each model and merge its figures into bench/results/chat_model.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="an indexed run (genrec index)")
    parser.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    parser.add_argument("--auto", type=int, default=3, help="requests also tried with tool_choice='auto'")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import json

    from finetune.models import resolve_base
    from genrec.atomic import write_json

    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results.setdefault("models", {})
    for name in args.models:
        folder = Path(resolve_base(name))
        figures = bench_model(name, args.run, args.auto)
        figures["folder_gib"] = round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**30, 2)
        figures["command"] = "python bench/chat_model.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        figures["machine"] = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_end": os.getloadavg(),
        }
        results["models"][name] = figures
        results["what"] = (__doc__ or "").split("\n\n")[0]
        write_json(OUT, results)
        print(f"{name}: written to {OUT}", flush=True)


if __name__ == "__main__":
    main()
