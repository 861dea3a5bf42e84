"""The chat model through LangChain (`agent.llm`) against a real vLLM server of Qwen2.5-Coder-0.5B-Instruct,
started as `genrec serve` starts a chat server (Qwen's own chat template, Hermes tool parser), with
the agent's real tool schemas over the small movie catalog. The 0.5B is used for speed; the 1.5B
default is measured by bench/chat_model.py.
"""

from __future__ import annotations

import time

import pytest
from agent_catalog import agent_run

# The server fixture is bounded by its own start timeout (a first start compiles for minutes on a slow
# CPU); the 900 s of each test are for the test alone.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900, func_only=True)]

PLANNER = "You are the planner of a movie recommender. Call the tool that answers the user's last message."


@pytest.fixture(scope="module")
def chat_url(tmp_path_factory):
    """The URL of a vLLM server of the 0.5B chat model (module-scoped: started once)."""
    pytest.importorskip("vllm")
    from genrec.config import ServeConfig
    from serving.server import VllmServer, chat_server_spec, free_port

    run = agent_run(tmp_path_factory)
    spec = chat_server_spec(run, ServeConfig(chat_model="qwen2.5-coder-0.5b", startup_timeout_s=900), port=free_port())
    from finetune.decoding.local import bf16_supported

    assert spec is not None and spec.dtype == ("bfloat16" if bf16_supported() else "float32")  # chat_dtype "auto"
    assert spec.extra_args == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]  # Qwen's own template
    with VllmServer(spec, 900) as server:
        yield server.url


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from agent.tools import AgentContext

    return AgentContext.open(agent_run(tmp_path_factory))


@pytest.fixture(scope="module")
def tools(ctx):
    from agent.model_tools import bound_tools

    return bound_tools(ctx)


@pytest.mark.vllm
def test_a_required_tool_call_returns_a_known_tool_whose_args_validate_and_run(chat_url, tools, ctx):
    from agent.llm import connect, plan
    from agent.tools import run_tool

    by_name = {t.name: t for t in tools}
    llm = connect(chat_url, timeout_s=300)
    calls = plan(llm, [("system", PLANNER), ("user", "I loved Star Wars and Alien. What should I watch next?")], tools)
    assert calls
    for call in calls:
        tool = by_name[call["name"]]
        tool.args_schema.model_validate(call["args"])
        result = run_tool(ctx, call["name"], call["args"])  # the arguments are usable as they are
        assert isinstance(result, dict) and "items" in result, (
            result
        )  # (a tool may still report, e.g., an unknown title)


@pytest.mark.vllm
def test_a_named_tool_is_the_tool_called(chat_url, tools):
    from agent.llm import connect, plan

    llm = connect(chat_url, timeout_s=300)
    calls = plan(llm, [("system", PLANNER), ("user", "Tell me about Fargo.")], tools, tool="item_details")
    assert [c["name"] for c in calls] == ["item_details"]
    assert isinstance(calls[0]["args"]["item"], str) and calls[0]["args"]["item"]


@pytest.mark.vllm
def test_a_reply_streams_in_pieces_that_make_the_whole_reply(chat_url):
    from agent.llm import connect, reply, stream_reply

    llm = connect(chat_url, timeout_s=300, max_tokens=40)
    messages = [("system", "Answer in one short sentence."), ("user", "What is Star Wars (1977) about?")]
    pieces = list(stream_reply(llm, messages))
    assert len(pieces) > 3
    assert "".join(pieces).strip() == reply(llm, messages)  # temperature 0: the same text either way


def test_a_server_that_is_down_raises_llm_unavailable_at_once():
    from langchain_core.tools import tool

    from agent.llm import connect, plan, reply, stream_reply
    from serving.client import LLMUnavailable
    from serving.server import free_port

    @tool
    def ping(text: str) -> str:
        """Echo `text`."""
        return text

    llm = connect(f"http://127.0.0.1:{free_port()}/v1", timeout_s=30)
    for call in (
        lambda: reply(llm, [("user", "hi")]),
        lambda: list(stream_reply(llm, [("user", "hi")])),
        lambda: plan(llm, [("user", "hi")], [ping]),
    ):
        started = time.monotonic()
        with pytest.raises(LLMUnavailable, match="model server not reachable"):
            call()
        assert time.monotonic() - started < 5
