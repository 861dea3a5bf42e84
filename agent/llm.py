"""The chat model through LangChain's own client: `ChatOpenAI` pointed at genrec's vLLM server.

vLLM speaks the OpenAI chat API, so `langchain-openai` is the whole client; this module only fixes
what genrec needs around it:

- `connect(url)`: a `ChatOpenAI` for the served chat model, deterministic (temperature 0), with a
  connect timeout and a whole-request timeout and no retries, so a down server costs one short wait;
- `plan(llm, messages, tools)`: the planning step. The tools are bound with
  `tool_choice="required"` (or one tool's name), which makes vLLM constrain the output to the tool
  schemas, so every call parses; the model still picks which tool and its arguments. Each call's
  arguments are validated against its tool's schema;
- `reply(llm, messages)` / `stream_reply(llm, messages)`: the reply step, plain text, no tools.
  Small models answer poorly after raw tool messages, so callers put the tool results into a prompt
  of their own.

Failures surface as `serving.client` errors: `LLMUnavailable` when the server is down, too slow
or failing (5xx), so callers fall back to the deterministic path; `LLMError` when it refused the
request or the model's call does not fit a tool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import openai
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import ToolCall
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from serving.client import CHAT_MODEL, LLMError, LLMUnavailable

Messages = Sequence[BaseMessage | dict[str, Any] | tuple[str, str]]


def connect(
    url: str,
    model: str = CHAT_MODEL,
    timeout_s: float = 60.0,
    connect_timeout_s: float = 2.0,
    max_tokens: int = 256,
) -> ChatOpenAI:
    """A LangChain chat model for the vLLM server at `url` (`http://HOST:PORT/v1`) serving `model`.

    `timeout_s` bounds a whole request (first start compiles for minutes: wait for `/health`
    first), `connect_timeout_s` the connection, so a down server fails fast. No retries: the caller
    decides what to do when the model is not there.
    """
    return ChatOpenAI(
        model=model,
        base_url=url,
        api_key="EMPTY",  # vLLM checks no key unless started with --api-key
        temperature=0.0,
        max_tokens=max_tokens,
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        max_retries=0,
        stream_usage=True,  # token counts on streamed replies too (vLLM honours stream_options)
    )


def plan(llm: ChatOpenAI, messages: Messages, tools: Sequence[BaseTool], tool: str | None = None) -> list[ToolCall]:
    """The tool calls the model makes for `messages`, each validated against its tool's schema.

    `tool=None` lets the model pick among `tools` (vLLM `tool_choice="required"`: at least one call,
    constrained to the schemas); a tool's name forces that tool. Returns LangChain `ToolCall`s
    (`{"name", "args", "id"}`) whose `args` are the validated arguments, those equal to their
    defaults left out. Raises `LLMUnavailable` when the server is down or slow, `LLMError` when no
    usable call came back.
    """
    by_name = {t.name: t for t in tools}
    if tool is not None and tool not in by_name:
        raise LLMError(f"plan: no tool named {tool!r} (tools: {', '.join(by_name)})")
    planner = llm.bind_tools(list(tools), tool_choice=tool or "required")
    with _llm_errors(llm):
        message = planner.invoke(list(messages))
    if not isinstance(message, AIMessage) or not message.tool_calls:
        bad = getattr(message, "invalid_tool_calls", None) or getattr(message, "content", "")
        raise LLMError(f"{llm.openai_api_base}: the model made no usable tool call ({str(bad)[:200]!r})")
    return [_checked(call, by_name) for call in message.tool_calls]


def reply(llm: ChatOpenAI, messages: Messages) -> str:
    """The model's plain-text answer to `messages` (no tools). Raises `LLMUnavailable`/`LLMError`."""
    with _llm_errors(llm):
        message = llm.invoke(list(messages))
    return str(message.content).strip()


def stream_reply(llm: ChatOpenAI, messages: Messages) -> Iterator[str]:
    """The model's plain-text answer to `messages`, piece by piece as the server writes it.

    Raises `LLMUnavailable`/`LLMError` like `reply`, also part-way through.
    """
    with _llm_errors(llm):
        for chunk in llm.stream(list(messages)):
            if chunk.content:
                yield str(chunk.content)


def _checked(call: ToolCall, by_name: dict[str, BaseTool]) -> ToolCall:
    """`call` with its arguments validated by its tool's schema (arguments equal to their defaults dropped)."""
    tool = by_name.get(call["name"])
    if tool is None:
        raise LLMError(f"the model called an unknown tool {call['name']!r}")
    schema = tool.args_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            args = schema.model_validate(call["args"]).model_dump(exclude_defaults=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise LLMError(
                f"the model's {call['name']} call has bad arguments: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
    else:
        args = dict(call["args"])
    return ToolCall(name=call["name"], args=args, id=call.get("id"), type="tool_call")


@contextlib.contextmanager
def _llm_errors(llm: ChatOpenAI) -> Iterator[None]:
    """Turn the OpenAI client's exceptions into genrec's: unavailable (fall back) or refused."""
    url = llm.openai_api_base
    try:
        yield
    except openai.APITimeoutError:
        raise LLMUnavailable(f"{url}: no answer in time; the model server is too slow or stuck") from None
    except openai.APIConnectionError as exc:
        raise LLMUnavailable(
            f"{url}: model server not reachable ({_root_cause(exc)}); start it with `genrec serve --run DIR`"
        ) from None
    except openai.InternalServerError as exc:
        raise LLMUnavailable(f"{url}: model server failed (HTTP {exc.status_code}): {_first_line(exc)}") from None
    except openai.APIStatusError as exc:
        raise LLMError(f"{url}: request refused (HTTP {exc.status_code}): {_first_line(exc)}") from None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc.__class__.__name__


def _first_line(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") if body else None
    return str(message or exc.message).splitlines()[0][:300]
