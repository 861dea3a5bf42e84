"""Client of the vLLM OpenAI-compatible server: top-K item codes, explanations, chat.

`recommend_ids` returns the K best *valid* semantic IDs for a prompt. vLLM 0.32's own beam search
(`use_beam_search`) silently ignores `structured_outputs` in the server, so it can return codes
that name no item. The client therefore runs the beam search itself, one server round per code
level: every live beam is sent as one prompt of a batched `/v1/completions` call with
`max_tokens=1` and `logprob_token_ids` = the SID tokens allowed next by the trie; the server
returns their raw log-probabilities (over the full vocabulary, exactly what Hugging Face's beam
search adds up), and the client keeps the `beam_width` best continuations. The prompt's KV cache
is reused between rounds by vLLM's prefix cache. The result is the same top-K as Hugging Face
`generate(num_beams=..., prefix_allowed_tokens_fn=trie)` on the same model.

`method="sample"` is the one-request alternative: `n` samples under a `structured_outputs`
constraint (regex, choice or grammar built from the trie), distinct codes ranked by their
log-probability. Always valid, but a sample, not the top-K.

Every call has a timeout; a server that is down, hung or failing raises `LLMUnavailable` so that
the agent can fall back to retrieval alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx

from agent.sid_constraints import ConstraintKind, structured_outputs
from finetune.sid_tokens import CodeTrie, SidVocab, parse_sids, sid_token_strings
from genrec.errors import GenrecError

DEFAULT_URL = "http://127.0.0.1:8000/v1"
ADAPTER_MODEL = "genrec"  # the LoRA module name `agent.serve` registers
BASE_MODEL = "genrec-base"  # the served name of the base model without the adapter
CHAT_MODEL = "genrec-chat"  # the served name of a separate instruction-tuned chat model

# vLLM accepts at most this many ids in `logprob_token_ids` (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS).
_MAX_LABEL_IDS = 128

Code = tuple[int, ...]


class LLMError(GenrecError):
    """The model server refused a request (bad prompt, unknown model, prompt too long ...)."""


class LLMUnavailable(LLMError):
    """The model server is down, too slow or failing: callers fall back to retrieval alone."""


class LLMClient:
    """A small synchronous client of one vLLM server; thread-safe, reusable, closes its connections.

    `base_url` is the OpenAI-style root (`http://HOST:PORT/v1`); `model` the served name used by
    default (the run's LoRA module). `timeout_s` bounds every public call as a whole;
    `connect_timeout_s` bounds connecting, so a server that is down fails fast.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        model: str = ADAPTER_MODEL,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 2.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self.model = model
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llm-client")
        self._vocab_cache: dict[tuple[str, tuple[int, ...]], SidVocab] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- plumbing

    def close(self) -> None:
        """Close connections and worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, payload: dict | None, deadline: float | None) -> Any:
        """One HTTP call with the time left before `deadline`; map every failure to an LLMError."""
        timeout = self.timeout_s if deadline is None else deadline - time.monotonic()
        if timeout <= 0:
            raise LLMUnavailable(f"{self.base_url}: no answer within {self.timeout_s:.0f} s; the model server is too slow")
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

    def _post(self, path: str, payload: dict, deadline: float | None = None) -> Any:
        base = self.root_url if path in ("/tokenize", "/detokenize") else self.base_url
        return self._request("POST", base + path, payload, deadline)

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

    def tokenize(self, text: str, add_special_tokens: bool = True, model: str | None = None) -> list[int]:
        """Token ids of `text` with the served model's tokenizer."""
        payload = {"model": model or self.model, "prompt": text, "add_special_tokens": add_special_tokens}
        return list(self._post("/tokenize", payload, self._deadline())["tokens"])

    def sid_vocab(self, sizes: Sequence[int], model: str | None = None) -> SidVocab:
        """The served tokenizer's ids of every SID token of these codebook sizes (cached)."""
        model = model or self.model
        key = (model, tuple(int(s) for s in sizes))
        with self._lock:
            if key in self._vocab_cache:
                return self._vocab_cache[key]
        strings = sid_token_strings(sizes)
        ids = self.tokenize("".join(strings), add_special_tokens=False, model=model)
        if len(ids) != len(strings) or len(set(ids)) != len(ids):
            raise LLMError(
                f"{self.base_url}: model {model!r} does not have the semantic-ID tokens "
                f"({strings[0]} ... {strings[-1]}) in its vocabulary; serve a run whose model/base was saved with them"
            )
        keys = [(level, code) for level, size in enumerate(key[1]) for code in range(size)]
        vocab = SidVocab(dict(zip(keys, ids)))
        with self._lock:
            self._vocab_cache[key] = vocab
        return vocab

    # ----------------------------------------------------------------- recommendation

    def recommend_ids(
        self,
        prompt: str | Sequence[int],
        trie: CodeTrie,
        k: int = 10,
        beam_width: int = 20,
        exclude: Collection[Sequence[int]] = (),
        method: Literal["beam", "sample"] = "beam",
        constraint: ConstraintKind = "regex",
        model: str | None = None,
        seed: int = 0,
    ) -> list[tuple[Code, float]]:
        """Top-`k` distinct valid codes for `prompt`, best first, with their log-probabilities.

        Every code returned is in `trie` and not in `exclude`. `method="beam"` (default) is
        trie-constrained beam search of width `max(beam_width, k)`; `method="sample"` draws
        `beam_width` samples under a `structured_outputs` constraint of kind `constraint`.
        `prompt` is text (tokenized by the server, special tokens added) or token ids.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        deadline = self._deadline()
        model = model or self.model
        if exclude:
            trie = trie.without(exclude)
        if method == "beam":
            vocab = self.sid_vocab(trie.codebook_sizes, model=model)
            prompt_ids = (
                self._tokenize_until(prompt, model, deadline) if isinstance(prompt, str) else [int(t) for t in prompt]
            )
            beams = self._beam_search(prompt_ids, trie, vocab, max(beam_width, k), model, deadline)
        elif method == "sample":
            beams = self._sample(prompt, trie, beam_width, constraint, model, seed, deadline)
        else:
            raise ValueError(f"unknown method {method!r}; expected 'beam' or 'sample'")
        return beams[:k]

    def _tokenize_until(self, text: str, model: str, deadline: float) -> list[int]:
        payload = {"model": model, "prompt": text, "add_special_tokens": True}
        return list(self._post("/tokenize", payload, deadline)["tokens"])

    def _beam_search(
        self, prompt_ids: list[int], trie: CodeTrie, vocab: SidVocab, width: int, model: str, deadline: float
    ) -> list[tuple[Code, float]]:
        beams: list[tuple[Code, float]] = [((), 0.0)]
        for level in range(trie.depth):
            logprobs = self._next_token_logprobs(prompt_ids, beams, trie, vocab, level, model, deadline)
            candidates = [
                (prefix + (c,), score + logprobs[i][vocab.token_id(level, c)])
                for i, (prefix, score) in enumerate(beams)
                for c in trie.children(prefix)
            ]
            # Ties broken by code so that the result never depends on arrival order.
            candidates.sort(key=lambda item: (-item[1], item[0]))
            beams = candidates[:width]
        return beams

    def _next_token_logprobs(
        self,
        prompt_ids: list[int],
        beams: list[tuple[Code, float]],
        trie: CodeTrie,
        vocab: SidVocab,
        level: int,
        model: str,
        deadline: float,
    ) -> list[dict[int, float]]:
        """For each beam, the raw log-probability of every SID token the trie allows next."""
        allowed = [{vocab.token_id(level, c) for c in trie.children(prefix)} for prefix, _ in beams]
        labels = sorted(set().union(*allowed))
        # The server caps label ids per request: split them, each chunk asked only of the beams
        # that can use it; extra chunks run on the pool while this thread asks for the first.
        requests = []
        for start in range(0, len(labels), _MAX_LABEL_IDS):
            chunk = labels[start : start + _MAX_LABEL_IDS]
            chunk_set = set(chunk)
            rows = [i for i, ids in enumerate(allowed) if ids & chunk_set]
            payload = {
                "model": model,
                "prompt": [prompt_ids + vocab.token_ids(beams[i][0]) for i in rows],
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": 1,
                "logprob_token_ids": chunk,
                "return_tokens_as_token_ids": True,
            }
            requests.append((rows, payload))
        futures = [self._pool.submit(self._post, "/completions", payload, deadline) for _, payload in requests[1:]]
        answers = [self._post("/completions", requests[0][1], deadline)] + [f.result() for f in futures]
        result: list[dict[int, float]] = [{} for _ in beams]
        for (rows, _), answer in zip(requests, answers):
            choices = sorted(answer["choices"], key=lambda ch: ch["index"])
            if len(choices) != len(rows):
                raise LLMError(f"{self.base_url}: asked {len(rows)} prompts, got {len(choices)} answers")
            for row, choice in zip(rows, choices):
                top = choice["logprobs"]["top_logprobs"][0]
                result[row].update({_token_id(key): float(lp) for key, lp in top.items()})
        return result

    def _sample(
        self,
        prompt: str | Sequence[int],
        trie: CodeTrie,
        n: int,
        constraint: ConstraintKind,
        model: str,
        seed: int,
        deadline: float,
    ) -> list[tuple[Code, float]]:
        payload = {
            "model": model,
            "prompt": prompt if isinstance(prompt, str) else [int(t) for t in prompt],
            "n": n,
            "temperature": 1.0,
            "seed": seed,
            # The constraints are on text: a model may spell a SID token out, one character per token.
            "max_tokens": 12 * trie.depth,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "structured_outputs": structured_outputs(trie, constraint),
        }
        best: dict[Code, float] = {}
        for choice in self._post("/completions", payload, deadline)["choices"]:
            codes = [c for c in parse_sids(choice["text"]) if c in trie]
            if not codes:
                continue  # cut by max_tokens before the code was complete
            token_logprobs = choice["logprobs"]["token_logprobs"]
            if choice.get("finish_reason") == "stop":
                token_logprobs = token_logprobs[:-1]  # the EOS that closed the constraint
            score = float(sum(lp for lp in token_logprobs if lp is not None))
            if score > best.get(codes[0], float("-inf")):
                best[codes[0]] = score
        return sorted(best.items(), key=lambda item: (-item[1], item[0]))

    # ----------------------------------------------------------------- text

    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        model: str | None = None,
    ) -> str:
        """Plain text completion of `prompt` (e.g. an explanation from the fine-tuned model)."""
        payload: dict[str, Any] = {
            "model": model or self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop:
            payload["stop"] = list(stop)
        return self._post("/completions", payload, self._deadline())["choices"][0]["text"]

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        model: str | None = None,
    ) -> str:
        """The assistant's reply to `messages` (OpenAI chat format), through the model's chat template."""
        payload = {
            "model": model or self.model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        message = self._post("/chat/completions", payload, self._deadline())["choices"][0]["message"]
        return message.get("content") or ""


def _token_id(key: str) -> int:
    """`token_id:403` (vLLM's `return_tokens_as_token_ids` form) -> 403."""
    return int(key.rsplit(":", 1)[1])


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        message = error.get("message", error) if isinstance(error, dict) else error
        return str(message)[:300]
    except ValueError:
        return response.text[:300]
