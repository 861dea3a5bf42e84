"""Benchmark: does the agent do what a new user asked? Natural chat requests on MovieLens-100K with
checkable constraints (`bench/chat_requests_data/ml100k.jsonl`), written the way people speak: year bounds
(before, after, between, a decade, "the same decade as <title>"), genres wanted and unwanted, items
already seen, misspelt and partial titles, follow-ups that refine or replace a request, other
languages, titles the catalog lacks, and requests nothing in the catalog satisfies.

Each case carries a fixed `split` (seeded, half of every category): tune on `dev`, report `test`.
Every turn of a case goes through the whole agent (`agent.session.Agent`: the chat model plans
and writes, the graph's tools, guard and memory), one thread per case. Per category and overall:

- constraint_share: of the items shown, the share that satisfy the turn's constraints (years,
  genres wanted / all of / none of, titles seen, "older than those shown");
- honoured: turns whose every shown item fits and that showed items (or, where nothing in the
  catalog fits, showed none and said so; where a title is missing, said so; where a title was
  named, resolved it);
- false_statements: replies that state a constraint their items break ("musicals made before
  1960" over films from 1996) or a year claim ("from the 1980s") that a shown item breaks;
- raw_errors: replies that show an exception or validation text to the user;
- tool_call_validity: the model's tool calls that validated against their schemas;
- p50 seconds per turn (tokens/s of the chat server beside it, from the turns' own timing).

The baseline is the same benchmark run BEFORE a change, on the same machine and chat server, in
the same invocation: `--baseline-code DIR` is a checkout of the older commit (`git archive`), run
by this same file in a child process with that tree first on the path.

    .venv/bin/python bench/chat_requests.py --run RUN --chat-url http://127.0.0.1:PORT/v1 --split test \\
        --baseline-code /tmp/genrec-before
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# run as a script, bench/ comes first on the path, where bench/agent.py would shadow the agent
# package; taking bench/ off (rather than putting this tree first) keeps PYTHONPATH first, which is
# how --baseline-code runs an older tree with this same file
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "bench" / "chat_requests_data" / "ml100k.jsonl"
OUT = ROOT / "bench" / "results" / "chat_requests.json"
CHECK_KEYS = {
    "year_min",
    "year_max",
    "genres_any",
    "genres_all",
    "genres_none",
    "not_titles",
    "not_previous",
    "older_than_previous",
    "resolves",
    "unknown",
    "expect",
}
ITEM_CHECKS = CHECK_KEYS - {"unknown", "expect"}  # the checks a turn's shown items must pass
RAW_ERROR = re.compile(
    r"Traceback|Exception|ToolInvocation|ValidationError|validation error|Field required|"
    r"Input should be|Error:|\{'|\"type\": \"|pydantic",
)
NOTHING = re.compile(
    r"\b(nothing|no (?:item|film|movie|title|match|result)s?|none|could(?: not|n't) find|did(?: not|n't) find|"
    r"no .{0,40}(?:fits?|matches?)|not find any|found no|isn't any|aren't any|is no|are no)\b",
    re.I,
)
MISSING = re.compile(
    r"\b(not (?:in|find|found)|could(?: not|n't)|don't have|do not have|no (?:item|title|film|movie))", re.I
)
# words a reply uses for a genre (the benchmark's own reading, independent of the agent's lexicon)
GENRE_WORDS = {
    "Action": r"action",
    "Adventure": r"adventur",
    "Animation": r"animat|cartoon",
    "Children's": r"children|kids|family",
    "Comedy": r"comed|funny|humou?r",
    "Crime": r"crime",
    "Documentary": r"documentar",
    "Drama": r"drama",
    "Fantasy": r"fantasy",
    "Film-Noir": r"noir",
    "Horror": r"horror|scary",
    "Musical": r"musical",
    "Mystery": r"myster",
    "Romance": r"romanc|romantic",
    "Sci-Fi": r"sci-?fi|science[- ]fiction",
    "Thriller": r"thriller",
    "War": r"\bwar\b",
    "Western": r"western",
}
_DECADE_WORDS = {
    1920: "twenties",
    1930: "thirties",
    1940: "forties",
    1950: "fifties",
    1960: "sixties",
    1970: "seventies",
    1980: "eighties",
    1990: "nineties",
}


# ----------------------------------------------------------------------------- the cases


def load_cases(path: Path, genres: set[str], titles: set[str]) -> list[dict[str, Any]]:
    """The benchmark's cases, each checked: a bad row is a one-line error naming the file, line and field."""
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        where = f"{path}:{n} ({row.get('id')})"
        if row.get("split") not in ("dev", "test") or not row.get("turns"):
            raise SystemExit(f"{where}: needs split dev|test and turns")
        for turn in row["turns"]:
            check = turn.get("check") or {}
            for key in check:
                if key not in CHECK_KEYS:
                    raise SystemExit(f"{where}: unknown check field {key!r}")
            for key in ("genres_any", "genres_all", "genres_none"):
                for g in check.get(key) or []:
                    if g not in genres:
                        raise SystemExit(f"{where}: {key}: {g!r} is not a catalog genre")
            for key in ("not_titles", "resolves"):
                for t in check.get(key) or []:
                    if t not in titles:
                        raise SystemExit(f"{where}: {key}: {t!r} is not a catalog title")
        cases.append(row)
    return cases


def catalog_facts(run: Path) -> dict[str, dict[str, Any]]:
    """item id -> title, year, genres, read from the run's items.parquet (not through the agent)."""
    import pandas as pd

    items = pd.read_parquet(run / "items.parquet")
    facts = {}
    for row in items.itertuples(index=False):
        attrs = json.loads(row.attributes) if row.attributes else {}
        year = attrs.get("year")
        facts[str(row.item_id)] = {
            "title": str(row.title),
            "year": int(year) if year not in (None, "") else None,
            "genres": list(attrs.get("genres") or []),
        }
    return facts


# ----------------------------------------------------------------------------- scoring


def item_breaks(fact: dict[str, Any], check: dict[str, Any], previous: list[dict[str, Any]] | None = None) -> list[str]:
    """The constraints of `check` that one shown item breaks (empty when it fits)."""
    broken = []
    year, genres = fact.get("year"), set(fact.get("genres") or [])
    if check.get("year_min") is not None and (year is None or year < check["year_min"]):
        broken.append("year_min")
    if check.get("year_max") is not None and (year is None or year > check["year_max"]):
        broken.append("year_max")
    if check.get("genres_any") and not genres & set(check["genres_any"]):
        broken.append("genres_any")
    if check.get("genres_all") and not set(check["genres_all"]) <= genres:
        broken.append("genres_all")
    if check.get("genres_none") and genres & set(check["genres_none"]):
        broken.append("genres_none")
    if fact.get("title") in set(check.get("not_titles") or []):
        broken.append("not_titles")
    prev = previous or []
    if check.get("not_previous") and fact.get("item_id") in {p["item_id"] for p in prev}:
        broken.append("not_previous")
    if check.get("older_than_previous"):
        years = [p["year"] for p in prev if p.get("year")]
        if years and (year is None or year >= min(years)):
            broken.append("older_than_previous")
    return broken


def year_claims(text: str) -> list[tuple[int | None, int | None, str]]:
    """Year ranges a reply states about its items: "before 1960", "after 1990", "from the 1980s",
    "the eighties", "between 1970 and 1979", "from 1994" -> (lowest, highest, the words)."""
    claims = []
    low = text.lower()
    for m in re.finditer(r"\b(?:between|from)\s+(1[89]\d\d)\s+(?:and|to|-)\s+(1[89]\d\d)\b", low):
        claims.append((int(m.group(1)), int(m.group(2)), m.group(0)))
    for m in re.finditer(
        r"\b(?:made |released |filmed )?(before|earlier than|prior to|older than)\s+(1[89]\d\d|20\d\d)\b", low
    ):
        claims.append((None, int(m.group(2)) - 1, m.group(0)))
    for m in re.finditer(r"\b(after|since|newer than|later than)\s+(1[89]\d\d|20\d\d)\b", low):
        year = int(m.group(2))
        claims.append((year + (m.group(1) != "since"), None, m.group(0)))
    for m in re.finditer(r"\b(?:the\s+)?(?:(1[89])|')?([2-9])0'?s\b", low):
        decade = int((m.group(1) or "19") + m.group(2) + "0")
        claims.append((decade, decade + 9, m.group(0)))
    for decade, word in _DECADE_WORDS.items():
        for m in re.finditer(rf"\b{word}\b", low):
            claims.append((decade, decade + 9, m.group(0)))
    return claims


def restates(text: str, check: dict[str, Any], broken: set[str]) -> list[str]:
    """The broken constraints that the reply nevertheless states (a false statement about its items)."""
    low = text.lower()
    said = []
    for key in ("genres_any", "genres_all", "genres_none"):
        if key in broken and any(re.search(GENRE_WORDS[g], low) for g in check.get(key) or []):
            said.append(key)
    return said


def says_nothing(text: str) -> bool:
    return bool(NOTHING.search(text))


def says_missing(text: str, names: list[str]) -> bool:
    """True if the reply names every missing title and says it is missing."""
    low = text.lower()
    named = all(re.sub(r"^the ", "", n.lower()) in low for n in names)
    return named and bool(MISSING.search(text))


def score_turn(
    turn: dict[str, Any], record: dict[str, Any], facts: dict[str, dict[str, Any]], previous: list[dict[str, Any]]
) -> dict[str, Any]:
    """One turn's marks: items that fit, whether the request was honoured, false statements, raw errors."""
    check = turn.get("check") or {}
    reply = str(record.get("reply") or "")
    shown = [{"item_id": i, **facts.get(i, {"title": "?", "year": None, "genres": []})} for i in record["items"]]
    broken_by = [item_breaks(f, check, previous) for f in shown]
    ok = sum(1 for b in broken_by if not b)
    broken = {k for b in broken_by for k in b}
    false = restates(reply, check, broken)
    for lo, hi, words in year_claims(reply):
        if shown and any(
            f["year"] is None or (lo is not None and f["year"] < lo) or (hi is not None and f["year"] > hi)
            for f in shown
        ):
            false.append(f"claims {words!r}")
    expect = check.get("expect", "items")
    resolved = {facts[i]["title"] for i in record.get("resolved") or [] if i in facts}
    honoured = True
    if check.get("resolves") and not set(check["resolves"]) <= resolved:
        honoured = False
    if check.get("unknown") and not says_missing(reply, check["unknown"]):
        honoured = False
    if expect == "nothing":
        honoured = honoured and not shown and says_nothing(reply)
    elif any(k in check for k in ITEM_CHECKS):
        honoured = honoured and bool(shown) and ok == len(shown)
    model_calls = [c for c in record.get("calls") or [] if c.get("by") == "model"]
    return {
        "items": len(shown),
        "fit": ok,
        "broken": sorted(broken),
        "honoured": honoured,
        "false_statements": false,
        "raw_error": bool(RAW_ERROR.search(reply)),
        "model_calls": len(model_calls),
        "valid_calls": sum(1 for c in model_calls if c.get("valid")),
        "planner": record.get("planner"),
        "source": record.get("source"),
        "seconds": record.get("seconds"),
        "tokens_per_s": record.get("tokens_per_s"),
        "plan_s": record.get("plan_s") or 0.0,
        "plan_tokens": record.get("plan_tokens") or 0,
        "checked": bool(check),
    }


def summarise(marks: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over scored turns (only turns with a check count, except raw errors, validity and time)."""
    checked = [m for m in marks if m["checked"]]
    items = sum(m["items"] for m in checked)
    calls = sum(m["model_calls"] for m in marks)
    seconds = [m["seconds"] for m in marks if m["seconds"] is not None]
    speeds = [m["tokens_per_s"] for m in marks if m.get("tokens_per_s")]
    return {
        "turns": len(marks),
        "checked_turns": len(checked),
        "items_shown": items,
        "constraint_share": round(sum(m["fit"] for m in checked) / items, 4) if items else None,
        "honoured": round(sum(m["honoured"] for m in checked) / len(checked), 4) if checked else None,
        "false_statements": sum(1 for m in checked if m["false_statements"]),
        "raw_errors": sum(1 for m in marks if m["raw_error"]),
        "tool_call_validity": round(sum(m["valid_calls"] for m in marks) / calls, 4) if calls else None,
        "model_calls": calls,
        "model_planned_turns": sum(1 for m in marks if m["planner"] == "model"),
        "model_written_replies": sum(1 for m in marks if m.get("source") == "model"),
        "p50_s_per_turn": round(statistics.median(seconds), 2) if seconds else None,
        "reply_tokens_per_s_p50": round(statistics.median(speeds), 1) if speeds else None,
        "plan_tokens_per_s": round(sum(m["plan_tokens"] for m in marks) / plan_s, 1)
        if (plan_s := sum(m["plan_s"] for m in marks))
        else None,
    }


def score(
    cases: list[dict[str, Any]], records: dict[str, list[dict[str, Any]]], facts: dict[str, Any]
) -> dict[str, Any]:
    """Per category and overall, plus every turn's marks (for reading what went wrong)."""
    by_cat: dict[str, list[dict[str, Any]]] = {}
    turns_out = []
    for case in cases:
        previous: list[dict[str, Any]] = []
        for n, (turn, record) in enumerate(zip(case["turns"], records.get(case["id"], []))):
            marks = score_turn(turn, record, facts, previous)
            by_cat.setdefault(case["category"], []).append(marks)
            turns_out.append(
                {
                    "case": case["id"],
                    "turn": n,
                    "user": turn["user"],
                    "reply": record.get("reply"),
                    "items": [facts.get(i, {}).get("title") for i in record["items"]],
                    "calls": record.get("calls"),
                    **{k: marks[k] for k in ("broken", "honoured", "false_statements", "raw_error", "source")},
                    "replaced_because": record.get("violations") or [],  # why the guard replaced the model's reply
                }
            )
            previous = [{"item_id": i, **facts.get(i, {})} for i in record["items"]] or previous
    everything = [m for marks in by_cat.values() for m in marks]
    return {
        "overall": summarise(everything),
        "by_category": {cat: summarise(m) for cat, m in sorted(by_cat.items())},
        "turns": turns_out,
    }


# ----------------------------------------------------------------------------- running the agent


def schema_planner(base: type) -> type:
    """`base` (the tree's `agent.llm.ChatLLM`) planning through a `response_format` JSON schema of the form
    anyOf[{name: const, arguments: the tool's parameters}], the tools listed in a system message: for a
    llama.cpp server, which accepts `tool_choice="required"` without enforcing it. The same adapter
    runs both arms of a comparison (`--plan-via json-schema`)."""
    from langchain_core.messages import AIMessage, SystemMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool

    class SchemaPlanner(base):  # type: ignore[misc, valid-type]
        def plan(self, messages, tools, max_tokens=None):  # noqa: ANN001, ANN201
            specs = [convert_to_openai_tool(t)["function"] for t in tools]
            schema = {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
                        "required": ["name", "arguments"],
                    }
                    for f in specs
                ]
            }
            listing = "\n".join(json.dumps(f, ensure_ascii=False) for f in specs)
            prompt = [
                messages[0],
                SystemMessage(f'Tools (answer with one JSON object {{"name": ..., "arguments": {{...}}}}):\n{listing}'),
                *messages[1:],
            ]
            extra = {"max_tokens": max_tokens} if max_tokens else {}
            llm = self.llm.bind(
                response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": schema}}, **extra
            )

            def call() -> AIMessage:
                from agent.llm import _llm_errors

                with _llm_errors(self.llm):
                    out = llm.invoke(prompt)
                try:
                    data = json.loads(out.content)
                    calls = [
                        {"name": data["name"], "args": data.get("arguments") or {}, "id": f"call_{time.time_ns()}"}
                    ]
                    return AIMessage("", tool_calls=calls, usage_metadata=out.usage_metadata)
                except (ValueError, KeyError, TypeError):
                    bad = [{"name": None, "args": str(out.content)[:200], "id": "bad", "error": "not a call"}]
                    return AIMessage("", invalid_tool_calls=bad, usage_metadata=out.usage_metadata)

            return self.breaker.call(call)

    return SchemaPlanner


def run_agent(
    run: Path, chat_url: str, cases: list[dict[str, Any]], db: Path, ranker: str, plan_via: str = "server"
) -> dict[str, list[dict[str, Any]]]:
    """Every case's turns through the agent in THIS process's code (whatever `agent` is first on the path)."""
    from langchain_core.messages import ToolMessage

    from agent.llm import ChatLLM
    from agent.session import Agent
    from agent.tools import AgentContext

    rank = None
    if ranker == "run":
        from inference.ranker import run_ranker

        rank = run_ranker(run, None)
    ctx = AgentContext.open(run, ranker=rank)
    chat_type = schema_planner(ChatLLM) if plan_via == "json-schema" else ChatLLM
    chat = None if chat_url == "none" else chat_type(chat_url, timeout_s=180.0)
    out: dict[str, list[dict[str, Any]]] = {}
    with Agent(ctx, chat, db) as agent:
        for n, case in enumerate(cases, 1):
            thread = f"{case['id']}-{time.time_ns()}"
            out[case["id"]] = []
            for turn in case["turns"]:
                started = time.monotonic()
                answer = agent.ask(thread, turn["user"])
                seconds = time.monotonic() - started
                messages = agent.graph.get_state({"configurable": {"thread_id": thread}}).values.get("messages") or []
                start = max(i for i, m in enumerate(messages) if m.type == "human")
                resolved = []
                for m in messages[start + 1 :]:
                    if isinstance(m, ToolMessage):
                        try:
                            result = json.loads(m.content) if isinstance(m.content, str) else m.content
                        except ValueError:
                            continue
                        if isinstance(result, dict):
                            resolved += [c["item_id"] for k in ("liked", "items") for c in result.get(k) or []]
                            if isinstance(result.get("like"), dict):
                                resolved.append(result["like"]["item_id"])
                out[case["id"]].append(
                    {
                        "reply": answer.reply,
                        "items": [str(i["item_id"]) for i in answer.items],
                        "resolved": resolved,
                        "calls": answer.calls,
                        "planner": answer.planner,
                        "source": answer.source,
                        "violations": answer.violations,
                        "seconds": round(seconds, 2),
                        "tokens_per_s": (answer.timing or {}).get("reply_tokens_per_s"),
                        "plan_s": sum((answer.timing or {}).get("plan_s") or []),
                        "plan_tokens": sum((answer.timing or {}).get("plan_tokens") or []),
                    }
                )
            print(f"[{n}/{len(cases)}] {case['id']}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="an indexed ML-100K run (trained for --ranker run)")
    parser.add_argument(
        "--chat-url",
        required=True,
        help="the chat model's OpenAI API, http://HOST:PORT/v1 (none: the rule fallback alone)",
    )
    parser.add_argument("--split", choices=("dev", "test", "all"), default="test")
    parser.add_argument(
        "--ranker",
        choices=("run", "none"),
        default="run",
        help="recommend with the run's served ranking, or content only",
    )
    parser.add_argument(
        "--plan-via",
        choices=("server", "json-schema"),
        default="server",
        help="plan with the tree's own tool calls, or a response_format JSON schema (llama.cpp without the adapter)",
    )
    parser.add_argument(
        "--baseline-code", type=Path, help="a checkout of the code before the change, run at the same time"
    )
    parser.add_argument("--only", help="comma-separated case ids or categories (development)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # child: write raw records here
    args = parser.parse_args(argv)
    args.run = args.run.resolve()

    facts = catalog_facts(args.run)
    genres = {g for f in facts.values() for g in f["genres"]}
    cases = load_cases(CASES, genres, {f["title"] for f in facts.values()})
    if args.split != "all":
        cases = [c for c in cases if c["split"] == args.split]
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c["id"] in wanted or c["category"] in wanted]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if args.worker:
            records = run_agent(args.run, args.chat_url, cases, Path(tmp) / "chat.sqlite", args.ranker, args.plan_via)
            args.worker.write_text(json.dumps(records))
            return
        result: dict[str, Any] = {
            "cases": str(CASES.relative_to(ROOT)),
            "split": args.split,
            "n_cases": len(cases),
            "chat_url": args.chat_url,
            "ranker": args.ranker,
            "plan_via": args.plan_via,
            "machine": os.uname().nodename,
            "cpus": os.cpu_count(),
        }
        runs = {}
        if args.baseline_code:
            raw = Path(tmp) / "baseline.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--run", str(args.run), "--chat-url", args.chat_url]
            cmd += ["--split", args.split, "--ranker", args.ranker, "--plan-via", args.plan_via, "--worker", str(raw)]
            cmd += ["--only", args.only] if args.only else []
            env = {**os.environ, "PYTHONPATH": str(args.baseline_code.resolve())}
            # both arms at once against the same server (its parallel slots batch them): the same load for both
            child = subprocess.Popen(cmd, env=env, cwd=args.baseline_code)
            result["baseline_code"] = _commit(args.baseline_code)
        started = time.monotonic()
        records = run_agent(args.run, args.chat_url, cases, Path(tmp) / "chat.sqlite", args.ranker, args.plan_via)
        runs["now"] = (records, time.monotonic() - started)
        if args.baseline_code:
            if child.wait() != 0:
                raise SystemExit(f"the baseline run failed (exit {child.returncode})")
            runs = {"baseline": (json.loads(raw.read_text()), time.monotonic() - started), **runs}
        result["code"] = _commit(ROOT)
        for name, (recs, seconds) in runs.items():
            result[name] = {"wall_s": round(seconds, 1), **score(cases, recs, facts)}
        if "baseline" in runs:
            result["ratio_now_over_baseline"] = {
                key: _ratio(result["now"]["overall"][key], result["baseline"]["overall"][key])
                for key in ("constraint_share", "honoured", "p50_s_per_turn")
            }
    from genrec.atomic import write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for name in runs:
        print(name, json.dumps(result[name]["overall"]), flush=True)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _commit(tree: Path) -> str:
    stamp = tree / "COMMIT"
    if stamp.exists():
        return stamp.read_text().strip()
    try:
        return subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    from serving.server import sigterm_as_interrupt

    with sigterm_as_interrupt():  # `timeout`/`kill` stops the servers it started too
        main()
