"""Benchmark: the chat model behind genrec's agent served by llama.cpp and by vLLM, side by side in one run.

The two engines run one after the other (never together: a busy server beside the other slows it
many times over on a small machine), each started the way `genrec serve` starts the chat server
(`serving.server.serve_chat` with `serve.chat_engine` set) and reached through `agent.llm`:

- start: seconds from launch to healthy (cold: a fresh process), and resident memory once warm;
- speed: one planner-sized prompt, never seen before (a fresh first line, so no prefix cache helps),
  streamed: prompt tokens/s (prompt tokens over the time to the first token) and decode tokens/s;
- planning: each request below with the agent's planner prompt and the model-facing tool schemas of
  an indexed run, through `agent.llm.plan` (vLLM: `tool_choice="required"`; llama.cpp: the JSON
  schema of `agent.llm.tool_call_schema`): seconds, output tokens, which tool, whether the reply
  parsed into a call whose arguments validate (tool-call validity) and the tool runs on them;
- agent turns: the real agent (`agent.session.Agent`, retrieval ranking: `--run` needs no trained
  model) on two-turn conversations, one at a time, then `--concurrent` of them at once: p50/p95
  seconds per turn, failed turns, threads whose memory holds another thread's item, planner
  validity; and, on the streamed turns the web chat shows (`Agent.stream`), seconds from the last
  tool result to the first reply token;
- replies: the reply step on a prompt that lists real search results, streamed.

Targets (issue 28, the 1.5B on 2 cores): p50 <= 8 s per turn alone and <= 45 s with 16 concurrent
chats of two turns each, no failed or mixed turn, tool-call validity 100%, first reply token within
4 s of the tool result. vLLM's CPU chat server takes minutes to start and decodes a few tokens/s:
`--vllm-reduced` runs it on fewer requests and conversations, and the JSON says so.

    .venv/bin/python bench/chat_model.py --run /tmp/cm-run                           # both engines, 1.5B
    .venv/bin/python bench/chat_model.py --run /tmp/cm-run --engines llama.cpp       # llama.cpp only

`--run` is an indexed run (`genrec index --dataset ml-100k --run DIR`). Writes
bench/results/chat_model.json (per model and engine, with llama.cpp/vLLM ratios), atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "chat_model.json"
API_KEY = "bench-chat-key"

# (user message, tools a sensible planner would call)
REQUESTS = [
    ("I loved Star Wars and Alien. What should I watch next?", {"recommend"}),
    ("Find me a funny movie about space.", {"search_items", "recommend"}),
    ("Tell me more about Fargo.", {"item_details"}),
    ("What has user 42 watched recently?", {"user_history"}),
    ("Why would I like Heat if I liked The Godfather?", {"explain"}),
    ("Show me some thrillers from the 90s.", {"search_items", "recommend"}),
    ("I'm user 7. Recommend me something new.", {"recommend"}),
    ("Something like Toy Story, please.", {"search_items", "recommend"}),
    ("Musicals made before 1960, please.", {"search_items", "recommend"}),
    ("Hi! Thanks for yesterday's tips.", {"answer"}),
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
FOLLOW_UP = "Something a bit lighter, please."


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))], 2)


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


def measure_speed(llm, tools, prompt: str) -> dict:
    """Prompt and decode tokens/s on one planner-sized prompt nobody sent before (streamed reply)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    fresh = f"Session {uuid.uuid4().hex}.\n"  # first line differs: no cached prefix
    schemas = "\n".join(str(convert_to_openai_tool(t)) for t in tools)
    messages = [
        ("system", fresh + prompt + "\n\nTools:\n" + schemas),
        ("user", "Write a short paragraph about why people enjoy science fiction films."),
    ]
    started, first, usage = time.monotonic(), None, None
    for chunk in llm.bind(max_tokens=96).stream(messages):
        if chunk.content and first is None:
            first = time.monotonic() - started
        usage = chunk.usage_metadata or usage
    total = time.monotonic() - started
    prompt_tokens = (usage or {}).get("input_tokens", 0)
    output_tokens = (usage or {}).get("output_tokens", 0)
    first = first or total
    return {
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "seconds_to_first_token": round(first, 2),
        "prompt_tokens_per_s": round(prompt_tokens / first, 1),
        "decode_tokens_per_s": round((output_tokens - 1) / max(total - first, 1e-6), 2),
    }


def measure_planning(llm, tools, prompt: str, ctx, requests) -> dict:
    """Every request through `agent.llm.plan`, timed, with the tool picked and whether its arguments run."""
    from langchain_core.callbacks import get_usage_metadata_callback

    from agent.llm import plan
    from agent.tools import run_tool
    from inference.client import LLMError

    rows = []
    for message, expected in requests:
        with get_usage_metadata_callback() as usage:
            started = time.monotonic()
            try:
                calls, error = plan(llm, [("system", prompt), ("user", message)], tools), None
            except LLMError as exc:
                calls, error = [], str(exc)
            seconds = time.monotonic() - started
        tokens = sum(u["output_tokens"] for u in usage.usage_metadata.values())
        runs = [not run_tool(ctx, c["name"], c["args"]).get("error") for c in calls if c["name"] != "answer"]
        rows.append(
            {
                "message": message,
                "seconds": round(seconds, 2),
                "output_tokens": tokens,
                "calls": [{"name": c["name"], "args": c["args"]} for c in calls],
                "error": error,
                "expected_tool": sorted(expected),
                "picked_expected": bool(calls) and calls[0]["name"] in expected,
                "tool_ran_without_error": all(runs),
            }
        )
        print(
            f"  plan {seconds:5.1f}s {tokens:3d} tok  {message!r} -> {[(c['name'], c['args']) for c in calls] or error}",
            flush=True,
        )
    seconds = [r["seconds"] for r in rows]
    valid = sum(bool(r["calls"]) and not r["error"] for r in rows)
    return {
        "requests": len(rows),
        "p50_s_per_tool_call": percentile(seconds, 50),
        "p95_s_per_tool_call": percentile(seconds, 95),
        "mean_output_tokens": round(statistics.mean(r["output_tokens"] for r in rows), 1),
        "parsed_and_validated": valid,
        "tool_call_validity": round(valid / len(rows), 3),
        "picked_expected_tool": sum(r["picked_expected"] for r in rows),
        "tool_ran_without_error": sum(r["tool_ran_without_error"] for r in rows),
        "calls": rows,
    }


def conversation_turns(agent, ctx, n: int, concurrent: bool, seed_offset: int = 0) -> dict:
    """`n` two-turn conversations through the agent, one at a time or all at once."""
    titles = sorted(ctx.titles.titles.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0])
    picks = [titles[(37 * (i + seed_offset) + 11) % len(titles)] for i in range(n)]
    seconds: list[float] = []
    gaps: list[float] = []
    failures: list[str] = []
    mixed: list[str] = []
    planners: list[str] = []
    calls = {"valid": 0, "all": 0}
    lock = threading.Lock()

    def one(i: int, item_id: str, title: str) -> None:
        from agent.lookup import display_title

        thread = f"{'load' if concurrent else 'alone'}-{seed_offset}-{i}"
        for message in (f"I really liked {display_title(title)}. What else would I like?", FOLLOW_UP):
            started, last_result, gap, reply = time.monotonic(), None, None, None
            try:
                for event in agent.stream(thread, message):
                    now = time.monotonic()
                    if event["event"] == "tool_result":
                        last_result = now
                    elif event["event"] == "delta" and gap is None and last_result is not None:
                        gap = now - last_result
                    elif event["event"] == "reply":
                        reply = event
            except Exception as exc:  # a failure is what this section counts
                with lock:
                    failures.append(f"{thread}: {exc.__class__.__name__}: {exc}")
                return
            with lock:
                seconds.append(time.monotonic() - started)
                if gap is not None:
                    gaps.append(gap)
                planners.append(reply["planner"] if reply else "none")
                for c in (reply or {}).get("calls") or []:
                    if c.get("by") == "model":
                        calls["all"] += 1
                        calls["valid"] += bool(c.get("valid"))
        memory = agent.memory(thread)
        others = {p for p, _ in picks if p != item_id}
        remembered = {h["item_id"] for h in memory["history"]}
        if memory["turns"] != 2 or remembered & others:
            with lock:
                mixed.append(f"{thread}: turns {memory['turns']}, remembered {sorted(remembered)}")

    started = time.monotonic()
    if concurrent:
        pool = ThreadPoolExecutor(max_workers=n)
        try:
            for future in [pool.submit(one, i, item, title) for i, (item, title) in enumerate(picks)]:
                future.result()
        finally:  # on SIGTERM/Ctrl-C: go on to stop the server (the running turns then fail fast)
            pool.shutdown(wait=False, cancel_futures=True)
    else:
        for i, (item, title) in enumerate(picks):
            one(i, item, title)
    return {
        "conversations": n,
        "turns_each": 2,
        "at_once": n if concurrent else 1,
        "turns": len(seconds),
        "failures": failures,
        "mixed_threads": mixed,
        "planner_turns": {p: planners.count(p) for p in sorted(set(planners))},
        "model_tool_calls_valid": f"{calls['valid']}/{calls['all']}",
        "p50_s_per_turn": percentile(seconds, 50),
        "p95_s_per_turn": percentile(seconds, 95),
        "p50_s_tool_result_to_first_reply_token": percentile(gaps, 50),
        "max_s_tool_result_to_first_reply_token": round(max(gaps), 2) if gaps else None,
        "wall_s": round(time.monotonic() - started, 1),
    }


def measure_replies(chat, ctx) -> dict:
    """The reply step on a prompt that lists real search results, streamed."""
    from agent.tools import search_items

    rows = []
    for message, query in REPLIES:
        items = search_items(ctx, query=query, k=5)["items"]
        listing = "\n".join(f"- {i['title']}: {', '.join(map(str, i['attributes'].get('genres', [])))}" for i in items)
        started, first, text = time.monotonic(), None, ""
        for piece in chat.stream([("system", REPLY_PROMPT + "\n\n" + listing), ("user", message)]):
            first = first if first is not None else time.monotonic() - started
            text += piece
        named = sum(i["title"].split(" (")[0].lower() in text.lower() for i in items)
        rows.append(
            {
                "message": message,
                "seconds": round(time.monotonic() - started, 2),
                "seconds_to_first_piece": round(first or 0, 2),
                "listed_titles_named": named,
                "reply": text,
            }
        )
        print(f"  reply {rows[-1]['seconds']:5.1f}s ttft {first or 0:.1f}s names {named}/5: {text[:90]!r}", flush=True)
    return {
        "requests": len(rows),
        "seconds_to_first_piece_p50": round(statistics.median(r["seconds_to_first_piece"] for r in rows), 2),
        "replies": rows,
    }


def bench_engine(engine: str, model: str, run: Path, args, reduced: bool) -> dict:
    """Start the chat server of `model` on `engine` (cold), measure it, stop it."""
    from agent.graph import AgentSettings
    from agent.llm import ChatLLM, connect
    from agent.model_tools import answer_tool, bound_tools
    from agent.prompts import PLANNER_SYSTEM
    from agent.session import Agent
    from agent.tools import AgentContext
    from genrec.config import ServeConfig
    from serving.server import free_port, serve_chat, server_command

    ctx = AgentContext.open(run)
    tools = [*bound_tools(ctx), answer_tool()]
    config = ServeConfig(chat_model=model, chat_engine=engine, startup_timeout_s=1800)
    server = serve_chat(run, config, port=free_port(), api_key=API_KEY)
    print(f"{model} on {engine}: starting ({' '.join(server_command(server.spec))})", flush=True)
    result: dict = {"reduced": reduced}
    with server:
        result["server_start_s"] = round(server.startup_s or 0, 1)
        result["command"] = server_command(server.spec)
        print(f"{engine}: healthy in {result['server_start_s']} s", flush=True)
        llm = connect(server.url, timeout_s=1200, max_tokens=256, api_key=API_KEY)
        result["speed"] = measure_speed(llm, tools, PLANNER_SYSTEM)
        print(f"{engine}: speed {result['speed']}", flush=True)
        requests = REQUESTS[:4] if reduced else REQUESTS
        result["planning"] = measure_planning(llm, tools, PLANNER_SYSTEM, ctx, requests)
        chat = ChatLLM(server.url, timeout_s=1200.0, api_key=API_KEY)
        with tempfile.TemporaryDirectory(prefix="genrec-bench-chat-") as tmp:
            agent = Agent(ctx, chat, Path(tmp) / "chat.sqlite", AgentSettings(k=10))
            try:
                alone = 1 if reduced else args.alone
                result["turns_alone"] = conversation_turns(agent, ctx, alone, concurrent=False)
                print(f"{engine}: alone {result['turns_alone']}", flush=True)
                at_once = args.concurrent if not reduced else 0
                if at_once:
                    result["turns_concurrent"] = conversation_turns(agent, ctx, at_once, True, seed_offset=100)
                    print(f"{engine}: concurrent {result['turns_concurrent']}", flush=True)
            finally:
                agent.close()
        if not reduced:
            result["reply"] = measure_replies(chat, ctx)
        result["server_rss_gib"] = server_rss_gib(server.process.pid)
    return result


def ratios(fast: dict, slow: dict) -> dict:
    """llama.cpp over vLLM (above 1: llama.cpp better), from the same run."""

    def ratio(a, b):
        return round(a / b, 2) if a and b else None

    out = {
        "start_s_vllm_over_llama_cpp": ratio(slow.get("server_start_s"), fast.get("server_start_s")),
        "rss_vllm_over_llama_cpp": ratio(slow.get("server_rss_gib"), fast.get("server_rss_gib")),
        "prompt_tokens_per_s": ratio(fast["speed"]["prompt_tokens_per_s"], slow["speed"]["prompt_tokens_per_s"]),
        "decode_tokens_per_s": ratio(fast["speed"]["decode_tokens_per_s"], slow["speed"]["decode_tokens_per_s"]),
        "p50_s_per_tool_call_vllm_over_llama_cpp": ratio(
            slow["planning"]["p50_s_per_tool_call"], fast["planning"]["p50_s_per_tool_call"]
        ),
        "p50_s_per_turn_alone_vllm_over_llama_cpp": ratio(
            slow["turns_alone"]["p50_s_per_turn"], fast["turns_alone"]["p50_s_per_turn"]
        ),
    }
    return out


def main() -> None:
    """Measure each engine, one after the other, and write bench/results/chat_model.json."""
    import json

    from genrec.atomic import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="an indexed run (genrec index)")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--engines", nargs="+", default=["llama.cpp", "vllm"], choices=["llama.cpp", "vllm"])
    parser.add_argument("--alone", type=int, default=3, help="two-turn conversations one at a time")
    parser.add_argument("--concurrent", type=int, default=16, help="two-turn conversations at once")
    parser.add_argument(
        "--vllm-reduced", action="store_true", help="vLLM on 4 planning requests and 1 conversation only"
    )
    args = parser.parse_args()

    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results = {k: v for k, v in results.items() if k in ("what", "runs")}  # earlier layouts are replaced
    run_out: dict = {"engines": {}}
    for engine in args.engines:
        reduced = engine == "vllm" and args.vllm_reduced
        run_out["engines"][engine] = bench_engine(engine, args.model, args.run, args, reduced)
        run_out["machine"] = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_end": os.getloadavg(),
        }
        run_out["command"] = "python bench/chat_model.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        engines = run_out["engines"]
        if "llama.cpp" in engines and "vllm" in engines:
            run_out["llama_cpp_over_vllm"] = ratios(engines["llama.cpp"], engines["vllm"])
        results.setdefault("runs", {})[args.model] = run_out
        results["what"] = (__doc__ or "").split("\n\n")[0]
        write_json(OUT, results)
        print(f"{engine}: written to {OUT}", flush=True)


if __name__ == "__main__":
    from serving.server import sigterm_as_interrupt

    with sigterm_as_interrupt():  # `timeout`/`kill` stops the servers it started too
        main()
