"""The tools as the graph runs them and the chat model sees them.

`agent.tools` holds the plain functions; here each gets a short model-facing schema (no examples:
small models copy examples from docstrings into arguments) and a wrapper that fills in what the
conversation already knows, from the graph state (LangGraph's `ToolRuntime`), never from the model:

- the photo the user attached to this message (`search_items(by_photo=true)`): a model cannot
  invent an image path, because no schema has one;
- the liked items, the items the user said they have seen or do not want, the items shown last,
  the catalog user: every `recommend` keeps them, so a follow-up that changes one wish cannot
  drop the others or bring back an item already shown or seen;
- how many items a list has (`AgentSettings.k`).

The model's arguments are validated by the schema (LangGraph's `ToolNode` answers a bad call with
the validation error, and the model gets to retry once); arguments outside a schema are dropped
before the call. `answer` is not a tool but a way out: `tool_choice="required"` forces a call, and
calling `answer` means "no (more) tools: write the reply now".
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

from langchain_core.tools import BaseTool, StructuredTool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, Field, StringConstraints, create_model, model_validator

from agent import tools as plain
from agent.tools import AgentContext

MAX_GENRES = 3  # a list of every genre is a small model copying, not a user asking
ANSWER = "answer"


class Answer(BaseModel):
    """Write the reply now, without (more) tools: when the results so far answer the user, or when the
    message needs no tool (a greeting, thanks, a question about the conversation itself)."""


def _user_type(ctx: AgentContext) -> Any:
    """The type of a user id argument: digits only when every catalog user id is digits (so constrained
    decoding cannot write a placeholder such as "user_id")."""
    ids = ctx.interactions["user_id"].astype(str) if len(ctx.interactions) else []
    if len(ids) and all(i.isdigit() for i in ids.unique()[:10_000]):
        return Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]
    return Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _drop_copies(args: BaseModel) -> BaseModel:
    """What a model copied from one list into its opposite. A title both liked and excluded is
    excluded (recommending back a title the user has seen is the worse mistake); a genre both wanted
    and avoided is wanted (a small model fills `avoid_genres` with a copy of `genres`)."""
    for keep, drop in (("exclude", "liked"), ("genres", "avoid_genres")):
        kept = {str(v).strip().lower() for v in getattr(args, keep, None) or []}
        if kept and getattr(args, drop, None):
            setattr(args, drop, [v for v in getattr(args, drop) if str(v).strip().lower() not in kept] or None)
    return args


def schemas(ctx: AgentContext) -> dict[str, type[BaseModel]]:
    """The model-facing argument schemas of the tools, for this catalog."""
    genre_fields: dict[str, Any] = {
        "genres": (list[str] | None, Field(None, max_length=MAX_GENRES, description="genres the user asks for now")),
        "avoid_genres": (
            list[str] | None,
            Field(None, max_length=MAX_GENRES, description="genres the user does not want"),
        ),
    }
    user = _user_type(ctx)
    years: dict[str, Any] = (
        {
            "year_from": (int | None, Field(None, description="only items from this year on")),
            "year_to": (int | None, Field(None, description="only items up to this year")),
        }
        if ctx.has_years
        else {}
    )
    search = create_model(
        "search_items",
        __doc__="Find catalog items by a description of what the user wants (a kind, a plot, a mood), "
        "items similar to one title, or items that look like the photo the user attached.",
        query=(str | None, Field(None, description="the description, in the user's words")),
        like_item=(str | None, Field(None, description="a title: find items similar to it")),
        by_photo=(bool, Field(False, description="search by the photo attached to the user's message")),
        **genre_fields,
        **years,
        __validators__={"drop_copies": model_validator(mode="after")(_drop_copies)},
    )
    recommend = create_model(
        "recommend",
        __doc__="Recommend items for this user from the titles they liked, ranked by the recommender model. "
        "Titles they liked earlier in the conversation are remembered.",
        liked=(list[str] | None, Field(None, max_length=20, description="titles the user says they liked")),
        exclude=(
            list[str] | None,
            Field(None, max_length=20, description="titles the user has already seen or does not want"),
        ),
        **genre_fields,
        **years,
        __validators__={"drop_copies": model_validator(mode="after")(_drop_copies)},
    )
    details = create_model(
        "item_details",
        __doc__="Look up one item: its genres, year and description.",
        item=(str, Field(description="the item's title, or 'id N'")),
    )
    explain = create_model(
        "explain",
        __doc__="Explain why an item suits this user, from its facts and the titles they liked.",
        item=(str, Field(description="the item's title, or 'id N'")),
    )
    history = create_model(
        "user_history",
        __doc__="The items a catalog user interacted with most recently. When the user gives "
        "their catalog id, call this; recommend then uses their history.",
        user_id=(user, Field(description="the user's catalog id")),
    )
    return {m.__name__: m for m in (recommend, search, details, explain, history)}


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
            ok = f" {normalize_title(ctx.titles.titles[item])} " in said
        (kept if ok else invented).append(str(name))
    return kept, invented


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


def bound_tools(ctx: AgentContext, k: int = 5) -> list[BaseTool]:
    """The tools over `ctx` for the graph's `ToolNode` and the chat model (`k` items per list)."""
    args = schemas(ctx)

    def search_items(
        runtime: ToolRuntime,
        query: str | None = None,
        like_item: str | None = None,
        by_photo: bool = False,
        genres: list[str] | None = None,
        avoid_genres: list[str] | None = None,
        year_from: int | None = None,
        year_to: int | None = None,
    ) -> dict[str, Any]:
        state = runtime.state
        photo = photo_bytes(state) if by_photo else None
        if by_photo and photo is None:
            return {"tool": "search_items", "items": [], "error": "no photo is attached to this message"}
        return plain._run_tool(
            plain.search_items,
            ctx,
            query=query,
            image=photo,
            like_item=like_item,
            genres=genres,
            avoid_genres=avoid_genres,
            year_from=year_from,
            year_to=year_to,
            exclude=_ids((state.get("excluded") or []) + (state.get("history") or [])),
            k=k,
        )

    def recommend(
        runtime: ToolRuntime,
        liked: list[str] | None = None,
        exclude: list[str] | None = None,
        genres: list[str] | None = None,
        avoid_genres: list[str] | None = None,
        year_from: int | None = None,
        year_to: int | None = None,
    ) -> dict[str, Any]:
        state = runtime.state
        user_id = _step_user(state) or state.get("user_id")
        liked, invented = said_by_user(ctx, state, liked)
        exclude, invented_too = said_by_user(ctx, state, exclude)
        seen, unknown_seen = plain._resolve(ctx, exclude)
        seen = list(dict.fromkeys((state.get("excluded") or []) + seen))
        liked_now = list(dict.fromkeys(_ids(state.get("history")) + list(liked or [])))
        result = plain._run_tool(
            plain.recommend,
            ctx,
            liked=liked_now,
            user_id=user_id,
            genres=genres,
            avoid_genres=avoid_genres,
            year_from=year_from,
            year_to=year_to,
            exclude=_ids(seen + _shown(state)),
            k=k,
        )
        result.pop("excluded", None)  # the shown items are not the user's exclusions: say which are
        if seen:
            result["seen"] = [{"item_id": i, "title": ctx.titles.titles[i]} for i in seen]
        if unknown_seen:
            result["unknown"] = list(result.get("unknown") or []) + unknown_seen
        if invented or invented_too:  # titles no message named: not the user's, so not used
            result["ignored"] = invented + invented_too
        return result

    def item_details(runtime: ToolRuntime, item: str) -> dict[str, Any]:
        return plain._run_tool(plain.item_details, ctx, item=item)

    def explain(runtime: ToolRuntime, item: str) -> dict[str, Any]:
        state = runtime.state
        return plain._run_tool(
            plain.explain,
            ctx,
            item=item,
            liked=_ids(state.get("history")),
            user_id=state.get("user_id"),
            genres=(state.get("preferences") or {}).get("genres"),
        )

    def user_history(runtime: ToolRuntime, user_id: str) -> dict[str, Any]:
        return plain._run_tool(plain.user_history, ctx, user_id=user_id, n=10)

    funcs = {
        "search_items": search_items,
        "recommend": recommend,
        "item_details": item_details,
        "explain": explain,
        "user_history": user_history,
    }
    return [
        StructuredTool.from_function(
            func=funcs[name], name=name, description=(schema.__doc__ or "").strip(), args_schema=schema
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
