"""The tools as the graph runs them and the chat model sees them.

`agent.tools` declares each tool once, as a typed plain function; here each becomes a LangChain
tool whose `args_schema` is that function's request schema (`agent.tools.request_schema`: the same
model the rule planner's calls and the HTTP API's `/tools` use), and whose body fills in what the
conversation already knows, from the graph state (LangGraph's `ToolRuntime`), never from the model:

- the photo the user attached to this message (`search_items(by_photo=true)`): a model cannot
  invent an image path, because no schema has one;
- the liked items, the items the user said they have seen or do not want, the items shown last,
  the catalog user: every `recommend` keeps them, so a follow-up that changes one wish cannot
  drop the others or bring back an item already shown or seen;
- the request's remembered constraints: an argument the call gives replaces the remembered one
  ("actually make it the 1960s" keeps the genres and changes the years), and the memory shows the
  model what is kept;
- how many items a list has (`AgentSettings.k`).

The model's arguments are validated by the schema (LangGraph's `ToolNode` answers a bad call with
a sentence naming the argument, and the model gets to retry once); arguments outside a schema are
dropped before the call. `answer` is not a tool but a way out: `tool_choice="required"` forces a
call, and calling `answer` means "no (more) tools: write the reply now".
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, Field, create_model

from agent.tools import TOOLS, AgentContext, request_schema, run_tool

ANSWER = "answer"
YEAR_ARGS = ("released_after", "released_before", "decade", "same_decade_as")


class Answer(BaseModel):
    """Write the reply now, without (more) tools: when the results so far answer the user, or when the
    message needs no tool (a greeting, thanks, a question about the conversation itself)."""


def schemas(ctx: AgentContext) -> dict[str, type[BaseModel]]:
    """The model-facing argument schemas of the tools, for this catalog: each tool's request schema,
    and for `search_items` the switch that searches by the attached photo."""
    out = {name: request_schema(name, ctx) for name in TOOLS}
    search = out["search_items"]
    out["search_items"] = create_model(
        "search_items",
        __base__=search,
        __doc__=search.__doc__,
        by_photo=(bool, Field(False, description="search by the photo attached to the user's message")),
    )
    order = ("recommend", "search_items", "item_details", "explain", "user_history")
    return {name: out[name] for name in order}


def photo_bytes(state: dict[str, Any]) -> bytes | None:
    """The photo attached to this turn's message (the state keeps it base64-encoded), or None."""
    photo = state.get("photo")
    if not photo:
        return None
    try:
        return base64.b64decode(photo, validate=True)
    except (binascii.Error, ValueError):
        return None


def said_by_user(ctx: AgentContext, state: dict[str, Any], names: list[str] | None) -> tuple[list[str], list[str]]:
    """Split model-written titles into those the conversation supports and those the model invented:
    a title counts when the user wrote it (in any of their messages) or when a tool showed it earlier
    ("the second one")."""
    from langchain_core.messages import HumanMessage

    from agent.lookup import normalize_title
    from agent.prompts import text_of

    said = (
        " "
        + " ".join(normalize_title(text_of(m)) for m in state.get("messages") or [] if isinstance(m, HumanMessage))
        + " "
    )
    seen = set(state.get("grounded") or []) | {str(c["item_id"]) for c in state.get("candidates") or []}
    kept, invented = [], []
    for name in names or []:
        item = ctx.titles.find(str(name))
        words = normalize_title(re.sub(r"\[[^\]]*\]", " ", str(name)))
        ok = bool(words) and f" {words} " in said or (item is not None and item in seen)
        if not ok and item is not None:  # the user may write the title differently from the model
            title = normalize_title(ctx.titles.titles[item])
            ok = f" {title} " in said or misspelt_in(title, said.split())
        (kept if ok else invented).append(str(name))
    return kept, invented


def misspelt_in(title: str, words: list[str]) -> bool:
    """True when some run of the user's words (as many as the title has, or one more or less) spells
    the normalised `title` closely (rapidfuzz ratio >= `MISSPELLING_SCORE`): "star wors" for Star
    Wars, "pulp fictoin" for Pulp Fiction. Titles under five letters need the exact words."""
    from rapidfuzz import fuzz

    from agent.lookup import MISSPELLING_SCORE

    if len(title) < 5:
        return False
    n = len(title.split())
    for size in {max(1, n - 1), n, n + 1}:
        for i in range(len(words) - size + 1):
            if fuzz.ratio(" ".join(words[i : i + size]), title) >= MISSPELLING_SCORE:
                return True
    return False


_PLACEHOLDER = re.compile(r"<[A-Z]>")


def placeholder_error(tool: str, request: dict[str, Any]) -> dict[str, Any] | None:
    """An error result when the model copied a placeholder of the planner's examples ("<A>" stands for
    a title the user wrote) into an argument: the 1.5B called `same_decade_as="<A>"` when re-planning
    "a crime movie, nothing with romance". The error sends it back once (`agent.graph.check_step`)."""
    values = [v for value in request.values() for v in (value if isinstance(value, list) else [value])]
    copied = [str(v) for v in values if isinstance(v, str) and _PLACEHOLDER.search(v)]
    if not copied:
        return None
    return bad_arguments(
        tool,
        f"{copied[0]!r} is a placeholder of the examples, not something the user wrote: leave that argument out "
        "unless the message names a title",
    )


def bad_arguments(tool: str, error: str) -> dict[str, Any]:
    """A tool result refusing arguments the user never gave: `error` is for the model, which plans
    again once; a rule reply says it could not read the request instead of quoting it."""
    return {"tool": tool, "items": [], "bad_arguments": True, "error": error}


def refusing_placeholders(name: str, func: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """`func` (a bound tool) answering `placeholder_error` instead of running when an argument is one."""

    @functools.wraps(func)
    def run(runtime: ToolRuntime, **request: Any) -> dict[str, Any]:
        return placeholder_error(name, request) or func(runtime, **request)

    return run


def user_said(state: dict[str, Any], user_id: str) -> bool:
    """True when the user wrote this user id in one of their messages (or the conversation knows it)."""
    from langchain_core.messages import HumanMessage

    from agent.prompts import text_of

    if str(state.get("user_id") or "") == user_id:
        return True
    pattern = re.compile(rf"(?<![\w]){re.escape(user_id)}(?![\w])")
    return any(pattern.search(text_of(m)) for m in state.get("messages") or [] if isinstance(m, HumanMessage))


def _ids(values: list[str] | None) -> list[str]:
    return [f"id {v}" for v in values or []]


def _step_user(state: dict[str, Any]) -> str | None:
    """The user id of a `user_history` call made in the same step (the user just said who they are)."""
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    for call in getattr(last, "tool_calls", None) or []:
        if call["name"] == "user_history" and call["args"].get("user_id"):
            return str(call["args"]["user_id"])
    return None


def _shown(state: dict[str, Any]) -> list[str]:
    return [str(c["item_id"]) for c in state.get("candidates") or []]


def with_memory(args: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """A request's arguments with the remembered constraints it does not replace: any year argument
    replaces the remembered years, `genres` the remembered genres; unwanted genres add up (less
    those now wanted)."""
    prefs = state.get("preferences") or {}
    out = {k: v for k, v in args.items() if v not in (None, [], "")}
    if not any(k in out for k in YEAR_ARGS):
        if prefs.get("year_min") is not None:
            out["released_after"] = int(prefs["year_min"]) - 1
        if prefs.get("year_max") is not None:
            out["released_before"] = int(prefs["year_max"]) + 1
    avoid_now = {str(g).lower() for g in out.get("exclude_genres") or []}
    if "genres" not in out and prefs.get("genres"):
        kept = [g for g in prefs["genres"] if g.lower() not in avoid_now]
        if kept:
            out["genres"] = kept
    wanted_now = {str(g).lower() for g in out.get("genres") or []}
    avoid = [g for g in [*(prefs.get("exclude_genres") or []), *(out.get("exclude_genres") or [])]]
    avoid = list(dict.fromkeys(g for g in avoid if g.lower() not in wanted_now))
    if avoid:
        out["exclude_genres"] = avoid[:3]
    else:
        out.pop("exclude_genres", None)
    return out


def bound_tools(ctx: AgentContext, k: int = 5) -> list[BaseTool]:
    """The tools over `ctx` for the graph's `ToolNode` and the chat model (`k` items per list)."""
    args = schemas(ctx)

    def search_items(runtime: ToolRuntime, by_photo: bool = False, **request: Any) -> dict[str, Any]:
        state = runtime.state
        photo = photo_bytes(state) if by_photo else None
        if by_photo and photo is None:
            return {"tool": "search_items", "items": [], "error": "no photo is attached to this message"}
        seen = list(state.get("excluded") or []) + list(state.get("history") or [])
        return run_tool(ctx, "search_items", with_memory(request, state), image=photo, skip=seen, k=k)

    def recommend(runtime: ToolRuntime, **request: Any) -> dict[str, Any]:
        state = runtime.state
        user_id = _step_user(state) or state.get("user_id")
        liked, invented = said_by_user(ctx, state, request.pop("liked", None))
        exclude, invented_too = said_by_user(ctx, state, request.pop("exclude", None))
        # a title both liked and excluded is excluded: recommending back a seen title is the worse mistake
        dropped = {str(v).strip().lower() for v in exclude}
        liked = [v for v in liked if str(v).strip().lower() not in dropped]
        seen = list(dict.fromkeys([*(state.get("excluded") or []), *ctx.resolve(exclude)[0]]))
        request = with_memory(request, state)
        liked_now = list(dict.fromkeys(_ids(state.get("history")) + list(liked or [])))
        if liked_now:
            request["liked"] = liked_now[:20]
        if exclude:
            request["exclude"] = exclude
        result = run_tool(ctx, "recommend", request, user_id=user_id, skip=seen + _shown(state), k=k)
        if seen:  # every title the user has seen, not only those this message named
            result["seen"] = [{"item_id": i, "title": ctx.titles.titles[i]} for i in seen]
        if invented or invented_too:  # titles no message named: not the user's, so not used
            result["ignored"] = invented + invented_too
        return result

    def item_details(runtime: ToolRuntime, **request: Any) -> dict[str, Any]:
        return run_tool(ctx, "item_details", request)

    def explain(runtime: ToolRuntime, **request: Any) -> dict[str, Any]:
        state = runtime.state
        return run_tool(
            ctx,
            "explain",
            request,
            liked=_ids(state.get("history")),
            user_id=state.get("user_id"),
            genres=(state.get("preferences") or {}).get("genres"),
        )

    def user_history(runtime: ToolRuntime, **request: Any) -> dict[str, Any]:
        user_id = str(request.get("user_id") or "")
        if user_id and not user_said(runtime.state, user_id):  # the 1.5B copied "42" from the examples
            return bad_arguments(
                "user_history",
                f"the user did not say they are user {user_id}: call user_history only with an id they wrote",
            )
        return run_tool(ctx, "user_history", request, n=10)

    funcs = {
        "search_items": search_items,
        "recommend": recommend,
        "item_details": item_details,
        "explain": explain,
        "user_history": user_history,
    }
    return [
        StructuredTool.from_function(
            func=refusing_placeholders(name, funcs[name]),
            name=name,
            description=(schema.__doc__ or "").strip(),
            args_schema=schema,
        )
        for name, schema in args.items()
    ]


def answer_tool() -> BaseTool:
    """The `answer` pseudo-tool the planner may call instead of a tool (never run)."""
    return StructuredTool.from_function(
        func=lambda: {}, name=ANSWER, description=(Answer.__doc__ or "").strip(), args_schema=Answer
    )


def known_args(tool: BaseTool, args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`args` without the keys the tool's schema does not have, and those keys."""
    schema = tool.args_schema
    fields = set(getattr(schema, "model_fields", {}) or {})
    return {k: v for k, v in args.items() if k in fields}, [k for k in args if k not in fields]
