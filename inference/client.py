"""Client of genrec's recommender server: recommendations (one request each), the served models, health.

`recommend` posts a prompt's token ids to the recommender server's `/v1/genrec/recommend` route,
where `serving.trie_search` runs the trie-constrained beam search inside the server and returns
the best catalog items with their sequence log-probabilities.

Every call has a timeout; a server that is down, hung or failing raises `LLMUnavailable` so that
the agent can fall back to retrieval alone.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import httpx

from genrec.errors import GenrecError

DEFAULT_URL = "http://127.0.0.1:8000/v1"
ADAPTER_MODEL = "genrec"  # the LoRA module name `serving.server` registers
BASE_MODEL = "genrec-base"  # the served name of the base model without the adapter
CHAT_MODEL = "genrec-chat"  # the served name of a separate instruction-tuned chat model

RECOMMEND_ROUTE = "/v1/genrec/recommend"  # served by serving.trie_search inside the recommender server


class LLMError(GenrecError):
    """The model server refused a request (bad prompt, unknown model, prompt too long ...)."""


class LLMUnavailable(LLMError):
    """The model server is down, too slow or failing: callers fall back to retrieval alone."""


class LLMClient:
    """A small synchronous client of one vLLM server; thread-safe, reusable, closes its connections.

    `base_url` is the OpenAI-style root (`http://HOST:PORT/v1`); `model` the served name used by
    default (the run's LoRA module). `timeout_s` bounds every public call as a whole;
    `connect_timeout_s` bounds connecting, so a server that is down fails fast; `api_key` is sent
    as a bearer token (the server's `--api-key`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        model: str = ADAPTER_MODEL,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 2.0,
        api_key: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self.model = model
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s), headers=headers)

    # ----------------------------------------------------------------- plumbing

    def close(self) -> None:
        """Close connections and worker threads."""
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, payload: dict | None, deadline: float | None) -> Any:
        """One HTTP call with the time left before `deadline`; map every failure to an LLMError."""
        timeout = self.timeout_s if deadline is None else deadline - time.monotonic()
        if timeout <= 0:
            raise LLMUnavailable(
                f"{self.base_url}: no answer within {self.timeout_s:.0f} s; the model server is too slow"
            )
        try:
            response = self._http.request(
                method, url, json=payload, timeout=httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout_s))
            )
        except httpx.TimeoutException:
            raise LLMUnavailable(
                f"{self.base_url}: no answer within {self.timeout_s:.0f} s; the model server is too slow or stuck"
            ) from None
        except httpx.TransportError as exc:
            raise LLMUnavailable(
                f"{self.base_url}: model server not reachable ({exc.__class__.__name__}); "
                "start it with `genrec serve --run DIR`"
            ) from None
        if response.status_code >= 500:
            raise LLMUnavailable(f"{url}: model server failed (HTTP {response.status_code}): {_error_text(response)}")
        if response.status_code >= 400:
            raise LLMError(f"{url}: request refused (HTTP {response.status_code}): {_error_text(response)}")
        return response.json()

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout_s

    # ----------------------------------------------------------------- server facts

    def is_up(self) -> bool:
        """True if the server answers its health check (never raises)."""
        try:
            return self._http.get(self.root_url + "/health", timeout=self.connect_timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        """Names the server serves (the base model and its LoRA modules)."""
        return [m["id"] for m in self._request("GET", self.base_url + "/models", None, self._deadline())["data"]]

    # ----------------------------------------------------------------- recommendation

    def recommend_search(self) -> str:
        """How the server searches the trie: "engine" (one engine request per recommendation) or
        "steps" (one per live beam and level; `serving.trie_search`)."""
        return str(self._request("GET", self.root_url + RECOMMEND_ROUTE, None, self._deadline())["search"])

    def recommend(
        self,
        prompt_token_ids: Sequence[int],
        width: int = 20,
        k: int | None = None,
        exclude: Collection[str] = (),
        only: Collection[str] | None = None,
        model: str | None = None,
    ) -> list[tuple[str, float]]:
        """The best `k` (default `width`) catalog items for a prompt as (item_id, sequence log-prob),
        best first, from a beam of `width` over the server's trie; never an item of `exclude`,
        never one outside `only`."""
        payload: dict[str, Any] = {
            "model": model or self.model,
            "prompt_token_ids": [int(t) for t in prompt_token_ids],
            "width": int(width),
            "k": int(k or width),
            "exclude": sorted(str(i) for i in exclude),
        }
        if only is not None:
            payload["only"] = sorted(str(i) for i in only)
        answer = self._request("POST", self.root_url + RECOMMEND_ROUTE, payload, self._deadline())
        return [(str(row["item_id"]), float(row["logprob"])) for row in answer["items"]]


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        message = error.get("message", error) if isinstance(error, dict) else error
        return str(message)[:300]
    except ValueError:
        return response.text[:300]
