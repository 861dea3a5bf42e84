"""The agent over HTTP, for other applications (FastAPI; OpenAPI page at /docs).

    POST /chat         {"thread_id", "message", "photo"?} -> {"reply", "items": [{"item_id", "title", "explanation"}],
                       "source", "planner"}   (`photo`: an image file, base64; the agent searches by it)
    POST /chat/stream  same body -> Server-Sent Events as they happen: `status`, `tool_call`, `tool_result`,
                       `delta` (the reply as it is written), `reset` (the deltas so far are void: the
                       model is rewriting a reply the guard sent back), then one `reply` (the checked reply)
    GET  /threads/{id} what a thread remembers (liked items, preferences, last items)
    GET  /tools        the tools the chat model calls, with the JSON schema of their arguments
    GET  /health       ok, and whether the chat model answers
    POST /items        {"items": [{"id", "title", "text"?, "attributes"?, "image"?}, ...]} -> {"added": {id: code}, "version"}
    POST /items/retire {"ids": [...]} -> {"retired": [...], "version"}
                       (`genrec items add/retire` over HTTP: only with API keys configured; the next
                       request of every reader of the run sees the new catalog)

With API keys (`genrec api --api-key`, env GENREC_API_KEY, several separated by commas), every
route but /health and the docs needs `Authorization: Bearer KEY`, and a thread is readable and
continuable only with the key that started it (403 otherwise). A body that is not UTF-8 JSON of
that shape gets a 400 with the same `{"reply", "items"}` shape, so a client always has a sentence to show.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.session import MAX_PHOTO_BYTES, Agent, ThreadForbidden


class ChatRequest(BaseModel):
    """One user message in a conversation thread."""

    thread_id: str = Field(
        "default", description="Conversation id; the same id continues the same conversation.", max_length=200
    )
    message: str = Field("", description="What the user said.")
    photo: str | None = Field(
        None,
        description="A photo to search by: the bytes of a JPEG/PNG/GIF/WebP/BMP file, base64.",
        max_length=(MAX_PHOTO_BYTES * 4) // 3 + 8,
    )

    @model_validator(mode="before")
    @classmethod
    def message_or_photo(cls, data: Any) -> Any:
        if isinstance(data, dict) and "message" not in data and not data.get("photo"):
            raise ValueError("message: field required (or send a photo)")
        return data


class Item(BaseModel):
    """A catalog item the agent recommends or talks about (always one a tool returned)."""

    item_id: str
    title: str
    explanation: str = ""


class ChatResponse(BaseModel):
    """The agent's answer to one message."""

    reply: str
    items: list[Item] = []
    thread_id: str = ""
    source: str = Field("rules", description="who wrote the reply: `model` (the chat model) or `rules` (the fallback)")
    planner: str = Field("rules", description="who chose the tools: `model` or `rules`")


class ItemsRequest(BaseModel):
    """New catalog items, each shaped like a line of a JSONL catalog (docs/formats.md)."""

    items: list[Any] = Field(..., description="Objects with id, title and optional text, attributes, image.")


class RetireRequest(BaseModel):
    """Items to take out of every recommendation path (their ids stay reserved)."""

    ids: list[str] = Field(..., min_length=1)


class Forbidden(Exception):
    """A request without a valid key, or for a thread another key started."""

    def __init__(self, status: int, reason: str):
        self.status, self.reason = status, reason


def request_key(request: Request) -> str | None:
    """The API key a request carries (`Authorization: Bearer KEY` or `X-API-Key: KEY`), or None."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def decode_photo(photo: str | None) -> bytes | None:
    """The bytes of a base64 photo (a `data:` URL prefix is allowed); raises ValueError when it is not base64."""
    if not photo:
        return None
    if photo.startswith("data:") and "," in photo:
        photo = photo.split(",", 1)[1]
    try:
        return base64.b64decode(photo, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("photo: not base64") from None


def create_app(agent: Agent, api_keys: Sequence[str] = ()) -> FastAPI:
    """A FastAPI app serving `agent`; endpoints are sync so each chat runs in the server's thread pool.
    With `api_keys`, requests must carry one of them, and a thread belongs to the key that started it."""
    keys = [k for k in api_keys if k]
    app = FastAPI(
        title="genrec agent",
        version="0.1.0",
        description="Chat with the genrec recommender: every item it names comes from the catalog.",
    )

    def caller(request: Request) -> str | None:
        """The caller's key: checked against `keys` when the API has any."""
        key = request_key(request)
        if keys and not any(key and hmac.compare_digest(key, k) for k in keys):
            raise Forbidden(401, "missing or wrong API key: send `Authorization: Bearer KEY`")
        return key if keys else None

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status,
            content={"reply": exc.reason, "items": [], "error": exc.reason},
            headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
        )

    def unreadable(problem: str) -> JSONResponse:
        reply = (
            f"I could not read that request: {problem}. "
            'Send JSON like {"thread_id": "alice", "message": "I loved Star Wars"} as UTF-8.'
        )
        return JSONResponse(status_code=400, content={"reply": reply, "items": [], "error": problem})

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return unreadable("the request body is not valid UTF-8 JSON")
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body") or "body"
        return unreadable(f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette answers a body it cannot decode (not UTF-8) with a bare 400 before validation runs.
        if exc.status_code == 400 and request.url.path.startswith("/chat"):
            return unreadable("the request body is not valid UTF-8 JSON")
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)

    def photo_of(request: ChatRequest) -> bytes | None:
        try:
            return decode_photo(request.photo)
        except ValueError as exc:
            raise Forbidden(400, f"I could not read that request: {exc}") from None

    @app.post("/chat", response_model=ChatResponse)
    def chat(request: ChatRequest, key: str | None = Depends(caller)) -> ChatResponse:
        """Send one message (and optionally a photo); get the reply and the items it is about."""
        try:
            answer = agent.ask(request.thread_id, request.message, photo_of(request), api_key=key)
        except ThreadForbidden as exc:
            raise Forbidden(403, str(exc)) from None
        return ChatResponse(
            reply=answer.reply,
            items=[Item(**i) for i in answer.public_items()],
            thread_id=answer.thread_id,
            source=answer.source,
            planner=answer.planner,
        )

    @app.post(
        "/chat/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "status, tool_call, tool_result, delta and reset events, then a reply event",
            }
        },
    )
    def chat_stream(request: ChatRequest, key: str | None = Depends(caller)) -> StreamingResponse:
        """The same as /chat as Server-Sent Events: what the agent does as it happens, the reply as it is
        written (`delta`; `reset` voids the deltas before a rewrite), then the checked `reply`, which
        replaces the deltas."""
        photo = photo_of(request)
        try:
            agent.check_owner(agent.check_thread(request.thread_id), key)
        except ThreadForbidden as exc:
            raise Forbidden(403, str(exc)) from None

        def events() -> Iterator[str]:
            for event in agent.stream(request.thread_id, request.message, photo, api_key=key):
                kind = event.pop("event")
                if kind == "reply":
                    event["items"] = [
                        {"item_id": i["item_id"], "title": i["title"], "explanation": i.get("explanation", "")}
                        for i in event["items"]
                    ]
                yield f"event: {kind}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/threads/{thread_id}")
    def thread(thread_id: str, key: str | None = Depends(caller)) -> dict[str, Any]:
        """What a conversation remembers (only for the key that started it)."""
        try:
            return agent.memory(thread_id, api_key=key)
        except ThreadForbidden as exc:
            raise Forbidden(403, str(exc)) from None

    def manager(request: Request) -> str:
        """Catalog changes need a key: an API started without keys serves chats, never writes."""
        if not keys:
            raise Forbidden(403, "catalog changes need an API key: start `genrec api` with --api-key")
        key = caller(request)
        assert key is not None
        return key

    def change(action) -> JSONResponse:
        from genrec.errors import GenrecError

        try:
            return JSONResponse(action())
        except GenrecError as exc:
            return JSONResponse(status_code=400, content={"error": str(exc)})

    @app.post("/items")
    def add_items(body: ItemsRequest, key: str = Depends(manager)) -> JSONResponse:
        """Add items to the run (validated, encoded, coded by the run's quantiser, stored): recommendable
        from the next request on. A bad item is a 400 naming its position and field; nothing is added."""
        from retrieval.live import add_items as add

        def action() -> dict[str, Any]:
            report = add(
                agent.ctx.paths.root, objects=body.items, source="items", text_model=agent.ctx.searcher.text_model
            )
            return {"added": report.items, "version": report.version}

        return change(action)

    @app.post("/items/retire")
    def retire_items(body: RetireRequest, key: str = Depends(manager)) -> JSONResponse:
        """Take items out of every recommendation path; their ids and semantic IDs stay reserved."""
        from retrieval.live import retire_items as retire

        def action() -> dict[str, Any]:
            fresh, version = retire(agent.ctx.paths.root, body.ids)
            return {"retired": fresh, "version": version}

        return change(action)

    @app.get("/tools")
    def tools(key: str | None = Depends(caller)) -> list[dict[str, Any]]:
        """The agent's tools as the chat model sees them: name, description and the JSON schema of the
        arguments a request can give (each derived from the tool's one typed signature)."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return [convert_to_openai_tool(t)["function"] for t in agent.tools]

    @app.get("/health")
    def health() -> dict[str, Any]:
        """The agent is up; `llm` says whether the model server is in use or why not."""
        if agent.chat is None:
            llm = "not configured (retrieval only)"
        else:
            llm = agent.chat.unavailable() or ("up" if agent.chat.is_up() else "not answering")
        return {"status": "ok", "run": str(agent.ctx.paths.root), "llm": llm}

    return app
