"""The chat model through LangChain's own client: `ChatOpenAI` pointed at genrec's vLLM server.

vLLM speaks the OpenAI chat API, so `langchain-openai` is the whole client; this module only fixes
what genrec needs around it:

- `connect(url)`: a `ChatOpenAI` for the served chat model, deterministic (temperature 0), with a
  connect timeout and a whole-request timeout and no retries, so a down server costs one short wait;
- `plan(llm, messages, tools)`: the planning step, constrained to the tool schemas so every call
  parses; the model still picks which tool and its arguments. How depends on the engine
  (`server_engine`): vLLM enforces `tool_choice="required"` (or one tool's name); llama.cpp accepts
  it but lets free text precede the call (upstream issue 27217), so there the reply is held from
  its first token to a JSON schema `anyOf[{name: const, arguments: <that tool's parameters>}]`
  (`tool_call_schema`, every string and list bounded) and the call, which arrives as the reply's
  text, is read back into a LangChain `ToolCall` (`read_tool_call`). Each call's arguments are
  validated against its tool's schema;
- `reply(llm, messages)` / `stream_reply(llm, messages)`: the reply step, plain text, no tools.
  Small models answer poorly after raw tool messages, so callers put the tool results into a prompt
  of their own;
- `ChatLLM`: what the agent holds: the served model's `ChatOpenAI` (its served name found on first
  use), a breaker that makes a down server cost one timeout rather than one per turn, and the calls
  above through it. Thread-safe: concurrent conversations send concurrent requests, which vLLM batches.

Failures surface as `inference.client` errors: `LLMUnavailable` when the server is down, too slow
or failing (5xx), so callers fall back to the deterministic path; `LLMError` when it refused the
request or the model's call does not fit a tool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
import openai
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import InvalidToolCall, ToolCall
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from inference.client import ADAPTER_MODEL, BASE_MODEL, CHAT_MODEL, LLMError, LLMUnavailable
from serving.llamacpp import compact_grammar

_log = logging.getLogger(__name__)

Messages = Sequence[BaseMessage | dict[str, Any] | tuple[str, str]]
T = TypeVar("T")


def connect(
    url: str,
    model: str = CHAT_MODEL,
    timeout_s: float = 60.0,
    connect_timeout_s: float = 2.0,
    max_tokens: int = 256,
    api_key: str | None = None,
) -> ChatOpenAI:
    """A LangChain chat model for the vLLM server at `url` (`http://HOST:PORT/v1`) serving `model`.

    `timeout_s` bounds a whole request (first start compiles for minutes: wait for `/health`
    first), `connect_timeout_s` the connection, so a down server fails fast. No retries: the caller
    decides what to do when the model is not there. `api_key`: the server's `--api-key`, if it has one.
    """
    return ChatOpenAI(
        model=model,
        base_url=url,
        api_key=api_key or "EMPTY",  # vLLM checks no key unless started with --api-key
        temperature=0.0,
        max_tokens=max_tokens,
        timeout=openai.Timeout(timeout_s, connect=connect_timeout_s),  # the client's own httpx (openai 3.6x: httpx2)
        max_retries=0,
        stream_usage=True,  # token counts on streamed replies too (vLLM honours stream_options)
    )


LLAMA_CPP = "llama.cpp"
VLLM = "vllm"
# Bounds on every string and list of a tool schema under llama.cpp's JSON-schema grammar (tighter
# than the tool's own, never looser), so a whole call fits the planner's max_tokens: an unbounded
# list looped until max_tokens, and the 0.5B filled `exclude` (max 20) with "The Dark Knight: Part
# X", "Part Y" ... until its 160 tokens ran out, a truncated call.
MAX_STRING = 80
MAX_ITEMS = 4


def server_engine(url: str, api_key: str | None = None, timeout_s: float = 5.0) -> str:
    """ "llama.cpp" if the OpenAI-style server at `url` is llama.cpp's (its models are `owned_by`
    "llamacpp"), else "vllm"."""
    client = openai.OpenAI(base_url=url.rstrip("/"), api_key=api_key or "EMPTY", max_retries=0, timeout=timeout_s)
    with _llm_errors_at(url):
        return engine_of(list(client.models.list()))


def engine_of(models: Sequence[Any]) -> str:
    """The engine behind a `/v1/models` listing."""
    return LLAMA_CPP if any(getattr(m, "owned_by", "") == "llamacpp" for m in models) else VLLM


def tool_call_schema(tools: Sequence[BaseTool]) -> dict[str, Any]:
    """The JSON schema of one call to one of `tools`: `anyOf` one object per tool, its `name` a
    constant and its `arguments` that tool's parameters (as LangChain sends them to an OpenAI
    server, so the tools' own argument schemas flow through), every string and list bounded and
    no property outside the schema."""
    options = []
    for tool in tools:
        parameters = convert_to_openai_tool(tool)["function"].get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": _bounded(parameters)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _bounded(schema: Any) -> Any:
    """`schema` with every string's `maxLength` and array's `maxItems` at most `MAX_STRING` and
    `MAX_ITEMS`, and objects closed."""
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    kinds = out.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if "string" in kinds and "enum" not in out and "const" not in out:
        out["maxLength"] = min(out.get("maxLength", MAX_STRING), MAX_STRING)
    if "array" in kinds:
        out["maxItems"] = min(out.get("maxItems", MAX_ITEMS), MAX_ITEMS)
    if "object" in kinds and "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def max_call_tokens(schema: Any) -> int:
    """An upper bound on the tokens of a reply that `schema` (bounded) allows, counting two
    characters per token and llama.cpp's grammar's optional whitespace (up to ~22 characters) around
    every value: a planning call given this many tokens always ends its JSON, however the model
    loops inside its bounds, instead of being cut into an invalid call."""
    return min(2048, _max_chars(schema) // 2 + 16)


def _max_chars(node: Any) -> int:
    if not isinstance(node, dict):
        return 0
    if "const" in node:
        return len(json.dumps(node["const"])) + 22
    if "enum" in node:
        return max(len(json.dumps(v)) for v in node["enum"]) + 22
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return max(_max_chars(o) for o in options)
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    sizes = [22 + 5]  # null, booleans
    if "string" in kinds:
        sizes.append(2 * node.get("maxLength", MAX_STRING) + 24)  # an escaped character takes two
    if "integer" in kinds or "number" in kinds:
        sizes.append(40)
    if "array" in kinds:
        sizes.append(node.get("maxItems", MAX_ITEMS) * (_max_chars(node.get("items", {})) + 1) + 24)
    if "object" in kinds:
        props = node.get("properties") or {}
        sizes.append(sum(len(k) + 26 + _max_chars(v) for k, v in props.items()) + 24)
    return max(sizes)


def planning_kwargs(engine: str, tools: Sequence[BaseTool], tool: str | None = None) -> dict[str, Any]:
    """What a planning request adds for `engine` (`llm.bind(**...)`): the tools, and the constraint
    that holds the reply to one call of them (`tool` forces that one)."""
    specs = [convert_to_openai_tool(t) for t in tools]
    if engine != LLAMA_CPP:
        forced = {"type": "function", "function": {"name": tool}} if tool else "required"
        return {"tools": specs, "tool_choice": forced}
    chosen = [t for t in tools if t.name == tool] if tool else list(tools)
    # The tools still go in (the model's chat template lists them in the system prompt, as it was
    # trained), with tool_choice "none" so llama.cpp adds no grammar of its own; the JSON schema,
    # sent as llama.cpp's `json_schema` field, constrains the reply instead, and the reply may be as
    # long as the schema allows (`max_call_tokens`), so it is never cut into an invalid call.
    # A compact grammar from the same schema (no newlines or indentation) when this machine has the
    # converter: a third fewer tokens to decode per call.
    schema = tool_call_schema(chosen)
    grammar = compact_grammar(schema)
    return {
        "tools": specs,
        "tool_choice": "none",
        "extra_body": {"grammar": grammar} if grammar else {"json_schema": schema},
        "max_tokens": max_call_tokens(schema),
    }


def read_tool_call(message: AIMessage) -> AIMessage:
    """A llama.cpp planning reply with its call read from the text: an `AIMessage` with the call in
    `tool_calls` (or, when the text is not a call, in `invalid_tool_calls`), usage kept."""
    if message.tool_calls:
        return message
    text = str(message.content).strip()
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    try:
        data = json.loads(text)
        name, args = data["name"], data.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            raise TypeError("name must be a string and arguments an object")
    except (ValueError, KeyError, TypeError) as exc:
        invalid = InvalidToolCall(name=None, args=text[:500], id=call_id, error=f"not a tool call: {exc}")
        return AIMessage(
            content="",
            invalid_tool_calls=[invalid],
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
        )
    return AIMessage(
        content="",
        tool_calls=[ToolCall(name=name, args=args, id=call_id, type="tool_call")],
        usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata,
    )


def plan(llm: ChatOpenAI, messages: Messages, tools: Sequence[BaseTool], tool: str | None = None) -> list[ToolCall]:
    """The tool calls the model makes for `messages`, each validated against its tool's schema.

    `tool=None` lets the model pick among `tools` (at least one call, constrained to the schemas:
    `planning_kwargs`); a tool's name forces that tool. Returns LangChain `ToolCall`s
    (`{"name", "args", "id"}`) whose `args` are the validated arguments, those equal to their
    defaults left out. Raises `LLMUnavailable` when the server is down or slow, `LLMError` when no
    usable call came back.
    """
    by_name = {t.name: t for t in tools}
    if tool is not None and tool not in by_name:
        raise LLMError(f"plan: no tool named {tool!r} (tools: {', '.join(by_name)})")
    api_key = llm.openai_api_key.get_secret_value() if llm.openai_api_key else None
    engine = server_engine(str(llm.openai_api_base), api_key)
    with _llm_errors(llm):
        message = llm.bind(**planning_kwargs(engine, tools, tool)).invoke(list(messages))
    if engine == LLAMA_CPP and isinstance(message, AIMessage):
        message = read_tool_call(message)
    if not isinstance(message, AIMessage) or not message.tool_calls:
        bad = getattr(message, "invalid_tool_calls", None) or getattr(message, "content", "")
        raise LLMError(f"{llm.openai_api_base}: the model made no usable tool call ({str(bad)[:200]!r})")
    return [_checked(call, by_name) for call in message.tool_calls]


def reply(llm: ChatOpenAI, messages: Messages, max_tokens: int | None = None) -> str:
    """The model's plain-text answer to `messages` (no tools). Raises `LLMUnavailable`/`LLMError`."""
    extra = {"max_tokens": max_tokens} if max_tokens else {}
    with _llm_errors(llm):
        message = llm.invoke(list(messages), **extra)
    return str(message.content).strip()


def stream_reply(llm: ChatOpenAI, messages: Messages, max_tokens: int | None = None) -> Iterator[str]:
    """The model's plain-text answer to `messages`, piece by piece as the server writes it.

    Raises `LLMUnavailable`/`LLMError` like `reply`, also part-way through.
    """
    extra = {"max_tokens": max_tokens} if max_tokens else {}
    with _llm_errors(llm):
        for chunk in llm.stream(list(messages), **extra):
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


def _llm_errors(llm: ChatOpenAI) -> contextlib.AbstractContextManager[None]:
    """Turn the OpenAI client's exceptions into genrec's: unavailable (fall back) or refused."""
    return _llm_errors_at(str(llm.openai_api_base))


@contextlib.contextmanager
def _llm_errors_at(url: str) -> Iterator[None]:
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


class Breaker:
    """After a call fails with `LLMUnavailable`, fail at once for `retry_after_s` (then try again):
    a down or hung server costs one timeout, not one per turn."""

    def __init__(self, retry_after_s: float = 30.0):
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._reason = ""
        self._lock = threading.Lock()  # guards the two fields only; never held during a call

    def open_reason(self) -> str | None:
        """Why calls are being refused right now, or None."""
        with self._lock:
            return self._reason if time.monotonic() < self._down_until else None

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, unless the breaker is open; an `LLMUnavailable` from it opens the breaker."""
        reason = self.open_reason()
        if reason:
            raise LLMUnavailable(reason)
        try:
            return fn()
        except LLMUnavailable as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.retry_after_s
                self._reason = str(exc)
            raise


class ChatLLM:
    """The served chat model as the agent uses it: plan, reply and stream through one breaker.

    `model=None` uses the server's chat model: `genrec-chat` if served, else the run's base model,
    else the first model that is not the recommendation adapter (looked up once, on first use).
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 2.0,
        retry_after_s: float = 30.0,
        api_key: str | None = None,
        max_tokens: int = 256,
    ):
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_s, self.connect_timeout_s, self.api_key, self.max_tokens = (
            timeout_s,
            connect_timeout_s,
            api_key,
            max_tokens,
        )
        self.breaker = Breaker(retry_after_s)
        self._llm: ChatOpenAI | None = None
        self._engine: str | None = None
        self._lock = threading.Lock()

    def engine(self) -> str:
        """ "llama.cpp" or "vllm": what serves the model (asked once; raises `LLMUnavailable`)."""
        if self._engine is None:
            self._engine = server_engine(self.url, self.api_key, self.timeout_s)
        return self._engine

    def unavailable(self) -> str | None:
        """Why the model is being skipped right now (it failed recently), or None."""
        return self.breaker.open_reason()

    def is_up(self) -> bool:
        """True if the server answers its health check (never raises)."""
        root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        try:
            return httpx.get(root + "/health", timeout=self.connect_timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def llm(self) -> ChatOpenAI:
        """The LangChain chat model (resolving the served name on first use; raises `LLMUnavailable`)."""
        return self._client(self.breaker.call)

    def _client(self, guard: Callable[[Callable[[], str]], str]) -> ChatOpenAI:
        with self._lock:
            if self._llm is None:
                name = self.model or guard(self._served_name)
                self._llm = connect(
                    self.url, name, self.timeout_s, self.connect_timeout_s, self.max_tokens, self.api_key
                )
            return self._llm

    def _served_name(self) -> str:
        client = openai.OpenAI(
            base_url=self.url,
            api_key=self.api_key or "EMPTY",
            max_retries=0,
            timeout=openai.Timeout(self.timeout_s, connect=self.connect_timeout_s),
        )
        with _llm_errors_at(self.url):
            models = list(client.models.list())
        self._engine, names = engine_of(models), [m.id for m in models]
        for preferred in (CHAT_MODEL, BASE_MODEL):
            if preferred in names:
                return preferred
        others = [n for n in names if n != ADAPTER_MODEL]
        if not (others or names):
            raise LLMUnavailable(f"{self.url}: the server serves no model")
        return (others or names)[0]

    def plan(self, messages: Messages, tools: Sequence[BaseTool], max_tokens: int | None = None) -> AIMessage:
        """The model's next step: an `AIMessage` with at least one tool call, constrained to the tools'
        schemas (`planning_kwargs`: vLLM's `tool_choice="required"`, llama.cpp's JSON schema).
        Arguments are not validated here: the tool node answers a bad call with the tool's error, so
        the model can correct it."""
        llm = self.llm
        extra = {"max_tokens": max_tokens} if max_tokens else {}

        def call() -> AIMessage:
            engine = self.engine()
            kwargs = {**extra, **planning_kwargs(engine, tools)}  # llama.cpp: room for the longest call
            planner = llm.bind(**kwargs)
            with _llm_errors(llm):
                message = planner.invoke(list(messages))
            if engine == LLAMA_CPP and isinstance(message, AIMessage):
                message = read_tool_call(message)
            if not isinstance(message, AIMessage) or not (message.tool_calls or message.invalid_tool_calls):
                raise LLMError(
                    f"{self.url}: the model made no tool call ({str(getattr(message, 'content', ''))[:200]!r})"
                )
            return message

        return self.breaker.call(call)

    def warm(self, messages: Messages, tools: Sequence[BaseTool] | None = None) -> float | None:
        """Send `messages` once for one token (as a planning request when `tools` are given) so the
        server caches their prefix: the planner's fixed instructions and tool schemas are ~1,900
        tokens, 20-40 s of prompt reading on two cores for whichever user comes first. Returns the
        seconds it took, or None when the server did not answer (never raises; the breaker is not
        touched, so a slow warm-up never sends real turns to the fallback)."""
        started = time.monotonic()
        try:
            llm = self._client(lambda resolve: resolve())
            kwargs: dict[str, Any] = planning_kwargs(self.engine(), tools) if tools else {}
            with _llm_errors(llm):
                llm.bind(**{**kwargs, "max_tokens": 1}).invoke(list(messages))
        except (LLMError, LLMUnavailable) as exc:
            _log.info("chat model warm-up skipped: %s", exc)
            return None
        return time.monotonic() - started

    def reply(self, messages: Messages, max_tokens: int | None = None) -> str:
        """The model's plain-text answer (no tools). Raises `LLMUnavailable`/`LLMError`."""
        llm = self.llm
        return self.breaker.call(lambda: reply(llm, messages, max_tokens))

    def stream(self, messages: Messages, max_tokens: int | None = None) -> Iterator[str]:
        """The model's plain-text answer piece by piece; a failure part-way opens the breaker too."""
        reason = self.breaker.open_reason()
        if reason:
            raise LLMUnavailable(reason)
        pieces = stream_reply(self.llm, messages, max_tokens)
        while True:
            piece = self.breaker.call(lambda: next(pieces, None))
            if piece is None:
                return
            yield piece
