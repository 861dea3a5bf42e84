"""The agent over HTTP, for other applications (FastAPI; OpenAPI page at /docs).

    POST /chat         {"thread_id": "...", "message": "..."} -> {"reply": "...", "items": [{"item_id", "title", "explanation"}]}
    POST /chat/stream  same body -> Server-Sent Events: `step` events while tools run, then one `reply`
    GET  /threads/{id} what a thread remembers (liked items, preferences, last items)
    GET  /health       ok, and whether the model server answers

A body that is not UTF-8 JSON of that shape gets a 400 with the same `{"reply", "items"}` shape,
so a client always has a sentence to show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.session import Agent


class ChatRequest(BaseModel):
    """One user message in a conversation thread."""

    thread_id: str = Field("default", description="Conversation id; the same id continues the same conversation.",
                           max_length=200)
    message: str = Field(..., description="What the user said.")


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


def create_app(agent: Agent) -> FastAPI:
    """A FastAPI app serving `agent`; endpoints are sync so each chat runs in the server's thread pool."""
    app = FastAPI(title="genrec agent", version="0.1.0",
                  description="Chat with the genrec recommender: every item it names comes from the catalog.")

    def unreadable(problem: str) -> JSONResponse:
        reply = (f"I could not read that request: {problem}. "
                 'Send JSON like {"thread_id": "alice", "message": "I loved Star Wars"} as UTF-8.')
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

    @app.post("/chat", response_model=ChatResponse)
    def chat(request: ChatRequest) -> ChatResponse:
        """Send one message; get the reply and the items it is about."""
        answer = agent.ask(request.thread_id, request.message)
        return ChatResponse(reply=answer.reply, items=[Item(**i) for i in answer.public_items()],
                            thread_id=answer.thread_id)

    @app.post("/chat/stream", response_class=StreamingResponse,
              responses={200: {"content": {"text/event-stream": {}}, "description": "step events, then a reply event"}})
    def chat_stream(request: ChatRequest) -> StreamingResponse:
        """The same as /chat as Server-Sent Events: `step` (tool calls and results) as they happen, then `reply`."""

        def events() -> Iterator[str]:
            for event in agent.stream(request.thread_id, request.message):
                kind = event.pop("event")
                if kind == "reply":
                    event["items"] = [{"item_id": i["item_id"], "title": i["title"],
                                       "explanation": i.get("explanation", "")} for i in event["items"]]
                yield f"event: {kind}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/threads/{thread_id}")
    def thread(thread_id: str) -> dict[str, Any]:
        """What a conversation remembers."""
        return agent.memory(thread_id)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """The agent is up; `llm` says whether the model server is in use or why not."""
        if agent.chat is None:
            llm = "not configured (retrieval only)"
        else:
            llm = agent.chat.unavailable() or ("up" if agent.chat.client.is_up() else "not answering")
        return {"status": "ok", "run": str(agent.ctx.paths.root), "llm": llm}

    return app
