"""Specifications of the HTTP API, against a real uvicorn server on 127.0.0.1 (no model server:
answers come from retrieval alone, which is the agent's real behaviour when vLLM is down)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
from agent_catalog import MOVIES, agent_run

from agent.http_api import create_app
from agent.session import Agent
from agent.tools import AgentContext


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The API app served by uvicorn in a thread for the module; memory in a fresh SQLite file."""
    import uvicorn

    run = agent_run(tmp_path_factory)
    agent = Agent(AgentContext.open(run), None, tmp_path_factory.mktemp("api") / "chat.sqlite")
    app = create_app(agent)
    for _attempt in range(3):  # a port picked free can be taken before uvicorn binds it: pick another
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio"))
        failure: list[BaseException] = []

        def serve(server=server, failure=failure) -> None:
            try:
                server.run()
            except BaseException as exc:  # uvicorn exits the thread (SystemExit) when it cannot bind
                failure.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        deadline = time.time() + 120
        while not server.started and thread.is_alive():
            assert time.time() < deadline, "uvicorn did not start within 120 s"
            time.sleep(0.05)
        if server.started:
            break
    assert server.started, f"uvicorn stopped before it started: {failure!r}"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    agent.close()


def test_chat_returns_the_reply_and_the_items_it_names(base_url):
    r = httpx.post(f"{base_url}/chat", json={"thread_id": "a", "message": "I loved Star Wars and Alien"}, timeout=60)
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"reply", "items"} and "Star Wars (1977) [id 1]" in body["reply"]
    assert body["items"] and all(set(i) == {"item_id", "title", "explanation"} for i in body["items"])
    for item in body["items"]:
        assert f"{item['title']} [id {item['item_id']}]" in body["reply"]
    follow = httpx.post(f"{base_url}/chat", json={"thread_id": "a", "message": "why that one?"}, timeout=60).json()
    assert follow["items"][0]["item_id"] == body["items"][0]["item_id"]


def test_streaming_sends_tool_steps_then_the_reply(base_url):
    events = []
    with httpx.stream(
        "POST", f"{base_url}/chat/stream", json={"thread_id": "s", "message": "more like Fargo"}, timeout=60
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[0] == "tool_call" and kinds[1] == "tool_result" and kinds[-1] == "reply"
    assert events[0][1]["name"] == "recommend" and events[0][1]["planner"] == "rules"
    assert events[1][1]["items"] > 0
    reply = events[-1][1]
    assert "Fargo (1996) [id 9]" in reply["reply"] and reply["items"]


def test_openapi_page_documents_the_chat_endpoints(base_url):
    assert httpx.get(f"{base_url}/docs", timeout=10).status_code == 200
    spec = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    assert {"/chat", "/chat/stream", "/threads/{thread_id}", "/health"} <= set(spec["paths"])
    assert "ChatResponse" in spec["components"]["schemas"]


def test_the_tools_route_lists_the_schemas_the_chat_model_is_bound_to(base_url):
    tools = {t["name"]: t for t in httpx.get(f"{base_url}/tools", timeout=10).json()}
    assert set(tools) == {"recommend", "search_items", "item_details", "explain", "user_history"}
    recommend = tools["recommend"]["parameters"]["properties"]
    assert recommend["released_before"]["description"] == "only items released before this year."
    assert "Comedy" in recommend["genres"]["anyOf"][0]["items"]["enum"]
    assert "user_id" not in recommend and "skip" not in recommend  # the agent fills those, never the model


@pytest.mark.parametrize(
    "body, expect_status, expect_text",
    [
        (b'{"thread_id": "bad", "message": "caf\xe9 \xff"}', 400, "not valid UTF-8 JSON"),
        (b'{"thread_id": "bad"}', 400, "message"),
        (b"not json at all", 400, "not valid UTF-8 JSON"),
        (json.dumps({"thread_id": "bad", "message": "caf\udce9"}).encode(), 200, "not valid UTF-8 text"),
        (json.dumps({"thread_id": "bad", "message": "x" * 100_000}).encode(), 200, "100,000 characters"),
        (json.dumps({"thread_id": "bad", "message": "   "}).encode(), 200, "empty"),
    ],
)
def test_bad_requests_get_a_clear_reply_in_the_usual_shape(base_url, body, expect_status, expect_text):
    r = httpx.post(f"{base_url}/chat", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == expect_status
    assert expect_text in r.json()["reply"] and r.json()["items"] == []


def test_sixteen_concurrent_chats_each_get_their_own_reply_and_memory(base_url):
    liked = [(item_id, title) for item_id, title, *_ in MOVIES[:16]]

    async def one(client: httpx.AsyncClient, n: int, message: str) -> dict:
        r = await client.post(f"{base_url}/chat", json={"thread_id": f"c{n}", "message": message})
        assert r.status_code == 200
        return r.json()

    async def everyone(messages: list[str]) -> list[dict]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(one(client, n, m) for n, m in enumerate(messages)))

    first = asyncio.run(everyone([f"I loved {title}" for _, title in liked]))
    second = asyncio.run(everyone(["something different"] * 16))
    for n, ((item_id, title), a, b) in enumerate(zip(liked, first, second)):
        head = a["reply"].splitlines()[0]
        assert f"{title} [id {item_id}]" in head, (n, head)
        others = [t for i, t in liked if i != item_id and t not in title]
        assert not any(f"{t} [id" in head for t in others), (n, head)  # nobody else's likes leaked in
        assert f"{title} [id {item_id}]" in b["reply"].splitlines()[0]  # the second turn remembered this thread's like
        memory = httpx.get(f"{base_url}/threads/c{n}", timeout=10).json()
        assert memory["turns"] == 2 and [h["item_id"] for h in memory["history"]] == [item_id]


def test_with_api_keys_a_thread_is_readable_and_continuable_only_with_the_key_that_started_it(tmp_path_factory):
    from fastapi.testclient import TestClient

    run = agent_run(tmp_path_factory)
    with Agent(AgentContext.open(run), None, tmp_path_factory.mktemp("keys") / "chat.sqlite") as agent:
        client = TestClient(create_app(agent, ["key-a", "key-b"]))
        alice, bob = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
        body = {"thread_id": "private", "message": "I loved Fargo"}
        assert client.post("/chat", json=body).status_code == 401  # no key
        refused = client.post("/chat", json=body, headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and "API key" in refused.json()["reply"]
        assert client.post("/chat", json=body, headers=alice).status_code == 200
        assert client.get("/threads/private", headers=alice).json()["history"][0]["item_id"] == "9"
        assert client.get("/threads/private", headers=bob).status_code == 403  # another key cannot read it
        assert client.post("/chat", json={**body, "message": "more"}, headers=bob).status_code == 403  # nor write to it
        assert client.post("/chat/stream", json=body, headers=bob).status_code == 403
        assert client.get("/threads/private", headers={"X-API-Key": "key-a"}).status_code == 200
        assert client.get("/health").status_code == 200  # liveness needs no key


@pytest.mark.parametrize("command", ["api", "ui"])
@pytest.mark.timeout(120)  # had the refusal gone, the command would serve until stopped
def test_binding_beyond_localhost_without_a_key_is_refused_in_one_line(tmp_path_factory, command, monkeypatch, capsys):
    """The `genrec` entry point itself (`app.cli.main`), in this process: one line, exit code 2."""
    import sys

    from app.cli import main

    run = agent_run(tmp_path_factory)
    capsys.readouterr()  # what building the run printed
    monkeypatch.delenv("GENREC_API_KEY", raising=False)
    monkeypatch.setattr(sys, "argv", ["genrec", command, "--run", str(run), "--host", "0.0.0.0", "--no-llm"])
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr()
    assert exited.value.code == 2 and out.out == ""
    assert out.err.strip() == (
        f"error: genrec {command}: refusing to listen on 0.0.0.0 without an API key; "
        "pass --api-key or set GENREC_API_KEY"
    )
