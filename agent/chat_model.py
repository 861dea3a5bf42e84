"""The chat side of the model server, as the agent uses it: replies and (when the server can) tool choices.

Wraps `serving.client.LLMClient` with what a chat needs and a single client does not: which
served model to talk to (the base model, not the recommendation adapter), a short memory of
failure (after the server fails, the agent answers from retrieval alone for `retry_after_s`
instead of waiting on a timeout every turn), and tool calling through vLLM's
`--enable-auto-tool-choice`, which `LLMClient.chat` does not expose.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from serving.client import ADAPTER_MODEL, BASE_MODEL, CHAT_MODEL, DEFAULT_URL, LLMClient, LLMError, LLMUnavailable


class Breaker:
    """After a call fails with `LLMUnavailable`, fail at once for `retry_after_s` (then try again):
    a down or hung server costs one timeout, not one per turn."""

    def __init__(self, retry_after_s: float = 30.0):
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._reason = ""
        self._lock = threading.Lock()

    def open_reason(self) -> str | None:
        """Why calls are being refused right now, or None."""
        with self._lock:
            return self._reason if time.monotonic() < self._down_until else None

    def call(self, fn: Any) -> Any:
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


class ChatModel:
    """A served chat model with timeouts everywhere; thread-safe."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        model: str | None = None,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 1.0,
        retry_after_s: float = 30.0,
        tool_calling: bool = True,
    ):
        self.base_url = base_url.rstrip("/")
        self.client = LLMClient(self.base_url, model=model or ADAPTER_MODEL, timeout_s=timeout_s,
                                connect_timeout_s=connect_timeout_s)
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        self.model = model
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.tool_calling = tool_calling  # False once the server cannot, or the model does not, call tools
        self.max_tool_failures = 2
        self._tool_failures = 0
        self.breaker = Breaker(retry_after_s)

    def close(self) -> None:
        """Close connections."""
        self.client.close()
        self._http.close()

    def unavailable(self) -> str | None:
        """Why the model is being skipped right now (it failed recently), or None."""
        return self.breaker.open_reason()

    def _guarded(self, call: Any) -> Any:
        return self.breaker.call(call)

    def chat_model_name(self) -> str:
        """The served model to chat with: a dedicated chat model, else the run's base model, else the first one served."""
        if self.model:
            return self.model
        names = self._guarded(self.client.models)
        if not names:
            raise LLMUnavailable(f"{self.base_url}: the server serves no model")
        for preferred in (CHAT_MODEL, BASE_MODEL):
            if preferred in names:
                self.model = preferred
                return preferred
        others = [n for n in names if n != ADAPTER_MODEL]
        self.model = (others or names)[0]
        return self.model

    def reply(self, messages: Sequence[dict[str, str]], max_tokens: int = 200) -> str:
        """The model's reply text; raises LLMUnavailable when the server is down or too slow."""
        model = self.chat_model_name()
        return self._guarded(lambda: self.client.chat(messages, max_tokens=max_tokens, temperature=0.0, model=model)).strip()

    def choose_tools(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]],
                     max_tokens: int = 160) -> list[dict[str, Any]]:
        """Tool calls the model makes for `messages` (`[{"name", "args"}]`, maybe empty).

        Raises LLMError when the server cannot call tools (it was not started with
        `--enable-auto-tool-choice`); after that `tool_calling` is False and the caller plans alone.
        """
        if not self.tool_calling:
            raise LLMError(f"{self.base_url}: the model server does not call tools")
        model = self.chat_model_name()
        payload = {"model": model, "messages": list(messages), "tools": list(tools), "tool_choice": "auto",
                   "max_tokens": max_tokens, "temperature": 0.0}
        try:
            message = self._guarded(lambda: self._post_chat(payload))
        except LLMUnavailable:
            raise
        except LLMError as exc:
            if "tool" in str(exc).lower():
                self.tool_calling = False
            raise
        calls = []
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = None
            calls.append({"name": fn.get("name"), "args": args, "raw": fn.get("arguments")})
        return calls

    def tool_outcome(self, usable: bool) -> None:
        """Record whether the model's tool calls were usable; after `max_tool_failures` unusable
        answers in a row, stop asking (a model that cannot call tools only adds latency)."""
        self._tool_failures = 0 if usable else self._tool_failures + 1
        if self._tool_failures >= self.max_tool_failures:
            self.tool_calling = False

    def _post_chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + "/chat/completions"
        try:
            response = self._http.post(url, json=payload)
        except httpx.TimeoutException:
            raise LLMUnavailable(f"{self.base_url}: no answer within {self.timeout_s:.0f} s") from None
        except httpx.TransportError as exc:
            raise LLMUnavailable(f"{self.base_url}: model server not reachable ({exc.__class__.__name__})") from None
        if response.status_code >= 500:
            raise LLMUnavailable(f"{url}: model server failed (HTTP {response.status_code})")
        if response.status_code >= 400:
            raise LLMError(f"{url}: request refused (HTTP {response.status_code}): {response.text[:300]}")
        return response.json()["choices"][0]["message"]
