"""The LangGraph agent, built in one place.

    START -> planner --(tool calls?)--> tools -> reply -> guard -> END
                     \\----(no tools)------------^

- planner: a tool-calling model picks tools when the server can call tools and its calls
  validate against the tools' schemas; otherwise the deterministic planner (`agent.planner`)
  does. It also updates the conversation's memory (stated preferences, user id).
- tools: LangGraph's `ToolNode` over `agent.tools` (bound to one run's `AgentContext`).
- reply: the model writes the reply from this turn's tool results; when it is down, slow or
  absent, the deterministic reply is used and the text says so.
- guard: no item leaves unless a tool returned it in this conversation (`agent.guard`); the
  model's reply is replaced by the deterministic one when it names anything else. It also
  records what the tools resolved (liked items, user) into memory.

`build_graph(ctx, chat, checkpointer)` compiles it; `make_graph` is the entry point named in
`langgraph.json` for LangGraph's own dev tools (run from $GENREC_RUN, model at $GENREC_LLM_URL).
"""

from __future__ import annotations

import json
import re
import os
import uuid
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import ValidationError

from agent.chat_model import ChatModel
from agent.guard import check, guard_cards, redact, tool_items
from serving.client import LLMError, LLMUnavailable
from agent.planner import plan_turn
from agent.reply import PROMPT_MARKERS, name, reply_messages, rules_reply, shows_candidates, turn_cards
from agent.state import AgentState
from agent.tools import AgentContext, bind_tools

PLANNER_PROMPT = (
    "You are the planner of a recommender assistant. Call the tools that answer the user's last message: "
    "recommend (items for someone who liked titles), search_items (find by description), item_details "
    "(one item), explain (why an item suits the user), user_history (a catalog user's items). "
    "Pass titles exactly as the user wrote them."
)


@dataclass
class AgentSettings:
    """How the agent behaves; defaults suit a chat."""

    k: int = 5  # items per answer
    model_plans: bool = True  # let a tool-calling model choose tools (else always the deterministic planner)
    model_replies: bool = True  # let the model write replies (else always the deterministic reply)
    reply_max_tokens: int = 200


def turn_messages(messages: list[AnyMessage]) -> tuple[str, list[AnyMessage]]:
    """The last human message's text and the messages after it (this turn's calls and results)."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            content = messages[i].content
            return (content if isinstance(content, str) else json.dumps(content)), messages[i + 1:]
    return "", list(messages)


def turn_results(messages: list[AnyMessage]) -> list[dict[str, Any]]:
    """This turn's tool results as dicts (a tool error becomes `{"tool", "error"}`)."""
    _, turn = turn_messages(messages)
    results = []
    for msg in turn:
        if not isinstance(msg, ToolMessage):
            continue
        try:
            value = json.loads(msg.content) if isinstance(msg.content, str) else msg.content
        except ValueError:
            value = None
        if not isinstance(value, dict):
            value = {"tool": msg.name, "items": [], "error": str(msg.content)[:300]}
        results.append(value)
    return results


def mentions_any(text: str, cards: list[dict[str, Any]]) -> bool:
    """True if `text` names at least one of the cards (by id or by title)."""
    from agent.lookup import normalize_title

    norm_text = " " + normalize_title(text) + " "
    return any(f"id {c['item_id']}" in text or f" {normalize_title(c['title'])} " in norm_text for c in cards)


def degenerate(text: str) -> bool:
    """True for the loops small models fall into: a line said three times, a list entry or a sentence
    said twice, or few distinct words."""
    lines = [line.strip().lower() for line in text.splitlines() if line.strip()]
    if any(lines.count(line) >= 3 for line in set(lines)):
        return True
    entries = [re.sub(r"^\d+[.)]\s*", "", line) for line in lines if re.match(r"^\d+[.)]\s", line)]
    if any(entries.count(e) >= 2 for e in set(entries)):
        return True
    sentences = [x.strip().lower() for x in re.split(r"(?<=[.!?])\s+", text) if len(x.strip()) > 20]
    if len(set(sentences)) < len(sentences):
        return True
    words = text.lower().split()
    return len(words) > 40 and len(set(words)) / len(words) < 0.35


def memory_summary(state: AgentState, ctx: AgentContext) -> str:
    """What the conversation remembers, in words, for the model's planner prompt."""
    parts = []
    if state.get("history"):
        parts.append("The user liked: " + "; ".join(f"{ctx.titles.titles[i]} [id {i}]" for i in state["history"][-8:]))
    prefs = state.get("preferences") or {}
    if prefs.get("genres") or prefs.get("avoid_genres"):
        parts.append(f"Wants genres {prefs.get('genres', [])}, avoids {prefs.get('avoid_genres', [])}.")
    if state.get("candidates"):
        parts.append("Last shown: " + "; ".join(name(c) for c in state["candidates"][:5]))
    if state.get("user_id"):
        parts.append(f"Catalog user id: {state['user_id']}")
    return "\n".join(parts)


def build_graph(ctx: AgentContext, chat: ChatModel | None = None, checkpointer: Any = None,
                settings: AgentSettings | None = None) -> Any:
    """Compile the agent graph over one run's tools; `checkpointer` (e.g. SqliteSaver) keeps threads."""
    settings = settings or AgentSettings()
    tools = bind_tools(ctx)
    by_name = {t.name: t for t in tools}
    from langchain_core.utils.function_calling import convert_to_openai_tool

    schemas = [convert_to_openai_tool(t) for t in tools]

    def model_calls(state: AgentState, message: str) -> list[dict[str, Any]] | None:
        """The model's tool calls, only if every one names a tool and validates; else None."""
        if chat is None or not settings.model_plans or not chat.tool_calling or chat.unavailable():
            return None
        convo = [{"role": "system", "content": PLANNER_PROMPT + "\n" + memory_summary(state, ctx)}]
        for msg in state["messages"][-7:-1]:
            if isinstance(msg, HumanMessage) and isinstance(msg.content, str):
                convo.append({"role": "user", "content": msg.content[:1000]})
            elif isinstance(msg, AIMessage) and msg.content and not msg.tool_calls:
                convo.append({"role": "assistant", "content": str(msg.content)[:1000]})
        convo.append({"role": "user", "content": message})
        try:
            calls = chat.choose_tools(convo, schemas)
        except LLMUnavailable:
            return None
        except LLMError:
            chat.tool_outcome(False)
            return None
        valid = validate_calls(calls, state)
        chat.tool_outcome(valid is not None)
        return valid

    def validate_calls(calls: list[dict[str, Any]], state: AgentState) -> list[dict[str, Any]] | None:
        """The calls with memory filled in, if every one names a tool and its arguments validate; else None."""
        valid = []
        for call in calls:
            tool = by_name.get(call.get("name") or "")
            if tool is None or not isinstance(call.get("args"), dict):
                return None
            args = dict(call["args"])
            if tool.name in ("recommend", "explain"):
                # Memory the model may not repeat: liked items and the user stay part of the request.
                args["liked"] = list(dict.fromkeys(list(args.get("liked") or []) + [f"id {h}" for h in state.get("history") or []]))
                if state.get("user_id") and not args.get("user_id"):
                    args["user_id"] = state["user_id"]
            try:
                tool.args_schema.model_validate(args)  # type: ignore[union-attr]
            except ValidationError:
                return None
            valid.append({"name": tool.name, "args": args})
        return valid or None

    def planner(state: AgentState) -> dict[str, Any]:
        message, _ = turn_messages(state["messages"])
        plan = plan_turn(message, state, ctx.titles, ctx.genres, settings.k)
        update: dict[str, Any] = {"preferences": plan.preferences, "user_id": plan.user_id, "direct": plan.direct,
                                  "planner": "rules", "llm_note": "", "guard_violations": [], "draft": {}}
        if plan.direct:
            return update
        calls = model_calls(state, message) if plan.intent != "invalid" else None
        if calls:
            update["planner"] = "model"
        calls = calls or plan.calls
        update["messages"] = [AIMessage(content="", tool_calls=[
            {"name": c["name"], "args": c["args"], "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}
            for c in calls])]
        return update

    def reply(state: AgentState) -> dict[str, Any]:
        message, _ = turn_messages(state["messages"])
        if state.get("direct"):
            return {"draft": {"text": state["direct"], "fallback": state["direct"], "source": "rules", "cards": []}}
        results = turn_results(state["messages"])
        fallback = rules_reply(results, state.get("preferences"))
        draft = {"text": fallback, "fallback": fallback, "source": "rules", "cards": turn_cards(results, settings.k)}
        note = ""
        if chat is None:
            note = "no language model is configured"
        elif settings.model_replies:
            try:
                text = chat.reply(reply_messages(message, results, fallback), max_tokens=settings.reply_max_tokens)
                if text:
                    draft.update(text=text, source="model")
            except LLMError as exc:
                note = f"the language model is unavailable ({exc})"
        return {"draft": draft, "llm_note": note}

    def guard(state: AgentState) -> dict[str, Any]:
        results = turn_results(state["messages"])
        new_ids = [i for r in results for i in tool_items(r)]
        allowed = set(state.get("grounded") or []) | set(new_ids)
        draft = state.get("draft") or {}
        violations: list[str] = []
        text = str(draft.get("text") or "")
        if draft.get("source") == "model":
            checked = check(text, allowed, ctx.titles)
            if not checked.ok:
                violations = [v.describe() for v in checked.violations]
            elif draft.get("cards") and not mentions_any(text, draft["cards"]):
                violations = ["the model's reply names none of the items it is about"]
            elif any(marker.lower() in text.lower() for marker in PROMPT_MARKERS):
                violations = ["the model's reply repeats its prompt"]
            elif degenerate(text):
                violations = ["the model's reply repeats itself"]
            if violations:
                text = str(draft.get("fallback") or "")
        cleaned = redact(text, allowed, ctx.titles)
        violations += [v.describe() for v in cleaned.violations]
        text = cleaned.text
        if state.get("llm_note") and not state.get("direct"):
            text += f"\n\n(Answered from retrieval alone: {state['llm_note']}.)"
        cards = guard_cards(draft.get("cards") or [], allowed, ctx.titles)
        source = "rules" if violations else draft.get("source", "rules")
        update: dict[str, Any] = {
            "messages": [AIMessage(content=text, additional_kwargs={"items": cards, "source": source})],
            "grounded": new_ids,
            "guard_violations": violations,
        }
        if shows_candidates(results):
            update["candidates"] = cards
        history = list(state.get("history") or [])
        for r in results:
            if r.get("tool") == "recommend":  # the titles the user named, as the tool resolved them
                history += [c["item_id"] for c in r.get("liked") or [] if c["item_id"] not in history]
            if r.get("unknown_user") or (r.get("tool") == "user_history" and not r.get("found")):
                update["user_id"] = None
        update["history"] = history
        return update

    graph = StateGraph(AgentState)
    graph.add_node("planner", planner)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    graph.add_node("reply", reply)
    graph.add_node("guard", guard)
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", tools_condition, {"tools": "tools", END: "reply"})
    graph.add_edge("tools", "reply")
    graph.add_edge("reply", "guard")
    graph.add_edge("guard", END)
    return graph.compile(checkpointer=checkpointer, name="genrec-agent")


_GRAPHS: dict[tuple[str, str, str], Any] = {}  # one compiled graph per (run, url): the dev server may ask often


def make_graph(config: Any = None) -> Any:
    """The graph for LangGraph's dev tools (`langgraph.json`): run from $GENREC_RUN, the fine-tuned
    recommender at $GENREC_LLM_URL (default the local vLLM), the chat model at $GENREC_CHAT_URL
    (default: the run's, as `genrec chat` resolves it). No checkpointer: the LangGraph server brings its own."""
    from agent.explainer import ChatExplainer
    from serving.ranker import run_ranker
    from serving.server import chat_url
    from genrec.errors import GenrecError
    from genrec.run import open_run

    run = os.environ.get("GENREC_RUN")
    if not run:
        raise GenrecError("GENREC_RUN: not set; export GENREC_RUN=runs/NAME (an indexed run) before `langgraph dev`")
    url = os.environ.get("GENREC_LLM_URL", "http://127.0.0.1:8000/v1")
    _, run_config = open_run(run)
    talk = os.environ.get("GENREC_CHAT_URL") or chat_url(run, run_config.serve, url)
    key = (run, url, talk or "")
    if key not in _GRAPHS:
        ctx = AgentContext.open(run, ranker=run_ranker(run, url))
        chat = ChatModel(talk) if talk else None
        if chat is not None:
            ctx.explainer = ChatExplainer(chat, ctx.searcher.items)
        _GRAPHS[key] = build_graph(ctx, chat)
    return _GRAPHS[key]
