"""Trie-constrained beam search inside the vLLM server: one HTTP request per recommendation.

`POST /v1/genrec/recommend` has two ways through the engine, and says which one answered
(`"search"` in its reply):

- `engine` (a server started with `serving.trie_engine`, the pooling architecture
  `GenrecTrieSearch`): ONE engine request per recommendation, whose pooler runs genrec's
  tree-attention beam search over the trie in the engine process, batched with the other requests
  of its engine step;
- `steps` (a server that also generates text, e.g. one whose base model chats): the beam search
  below, one one-token engine request per live beam and level.

The `steps` search: vLLM's own beam search builds fresh sampling parameters at every step, so neither
`structured_outputs` nor per-request logits processors reach it (vLLM issue 21546; read in
`vllm/entrypoints/generate/beam_search/online.py` of 0.32). This module runs genrec's beam search
in the server process instead, as an ASGI middleware that vLLM loads with
`--middleware serving.trie_search.recommend_route`: `POST /v1/genrec/recommend` takes a prompt's
token ids and returns the best items. Each level asks the engine, for every live beam at once
(batched by vLLM's scheduler, the prompt's KV blocks reused by its prefix cache), for the
log-probabilities of exactly the SID tokens the trie allows next (`logprob_token_ids`: raw
log-softmax over the whole vocabulary, the score Hugging Face's beam search adds up). No HTTP
round trips between levels, and no id outside the catalog can come out.

The trie comes from the run the server was started for (`GENREC_RUN`, set by `serving.server`):
its catalog of the moment (`semantic_ids.json` plus items added or retired since,
`retrieval.live`) and its base model's tokenizer. Each request checks the catalog version (one
`stat`) and a changed catalog's trie is built once and swapped in: no restart.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.client import BASE_MODEL
from inference.decoding.trie import Removed, SidTrie

ROUTE = "/v1/genrec/recommend"
RUN_ENV = "GENREC_RUN"
MAX_LABEL_IDS = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS

Code = tuple[int, ...]


@dataclass
class SearchRequest:
    """A validated recommendation request."""

    prompt_token_ids: list[int]
    width: int
    k: int
    exclude: list[str]
    only: list[str] | None
    model: str | None


def parse_request(body: object, trie: SidTrie) -> SearchRequest:
    """Check the JSON body; a ValueError names the offending field."""
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    ids = body.get("prompt_token_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
        raise ValueError("prompt_token_ids: expected a non-empty list of token ids")
    width = body.get("width", 20)
    k = body.get("k", width)
    if not isinstance(width, int) or not 1 <= width <= 1000:
        raise ValueError("width: expected an integer in 1..1000")
    if not isinstance(k, int) or not 1 <= k <= width:
        raise ValueError("k: expected an integer in 1..width")
    exclude = body.get("exclude") or []
    only = body.get("only")
    if not isinstance(exclude, list) or (only is not None and not isinstance(only, list)):
        raise ValueError("exclude/only: expected lists of item ids")
    return SearchRequest(
        [int(t) for t in ids],
        width,
        k,
        [str(i) for i in exclude],
        None if only is None else [str(i) for i in only],
        body.get("model"),
    )


def narrowed(trie: SidTrie, exclude: Sequence[str], only: Sequence[str] | None) -> Removed | None:
    """The trie exclusion for a request: `exclude` hidden, and everything outside `only`."""
    hidden = set(exclude)
    if only is not None:
        hidden |= set(trie.code_of) - set(only)
    return trie.exclusion(hidden) if hidden else None


async def beam_search(
    engine,
    prompt_ids: list[int],
    trie: SidTrie,
    removed: Removed | None,
    width: int,
    lora_request=None,
    stats: dict | None = None,
) -> list[tuple[str, float]]:
    """The best `width` items for `prompt_ids` as (item_id, sequence log-prob), best first.

    Same algorithm and scores as `inference.decoding.beam.beam_search`; ties broken by code so the
    result never depends on the order answers arrive in. `stats["engine_requests"]` counts the
    one-token engine requests it took (one per live beam and level, more where a beam has over
    MAX_LABEL_IDS children): on a CPU their per-request cost, not the model, sets its speed.
    """
    from vllm import SamplingParams

    beams: list[tuple[Code, float]] = [((), 0.0)]
    for _level in range(trie.depth):
        asks = []  # (beam index, allowed token chunk)
        for b, (prefix, _) in enumerate(beams):
            allowed = trie.allowed_tokens(prefix, removed)
            for start in range(0, len(allowed), MAX_LABEL_IDS):
                asks.append((b, allowed[start : start + MAX_LABEL_IDS]))

        async def ask(prefix: tuple[int, ...], tokens: list[int]) -> dict[int, float]:
            params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=tokens, detokenize=False)
            prompt = {"prompt_token_ids": prompt_ids + trie.vocab.token_ids(prefix)}
            final = None
            async for out in engine.generate(prompt, params, f"genrec-{uuid.uuid4().hex}", lora_request=lora_request):
                final = out
            logprobs = final.outputs[0].logprobs[0]
            return {t: float(logprobs[t].logprob) for t in tokens}

        if stats is not None:
            stats["engine_requests"] = stats.get("engine_requests", 0) + len(asks)
        answers = await asyncio.gather(*(ask(beams[b][0], tokens) for b, tokens in asks))
        scored: dict[int, dict[int, float]] = {}
        for (b, _), answer in zip(asks, answers):
            scored.setdefault(b, {}).update(answer)
        candidates = [
            (prefix + (trie.code_of_token(token)[1],), score + lp)
            for b, (prefix, score) in enumerate(beams)
            for token, lp in scored.get(b, {}).items()
        ]
        candidates.sort(key=lambda c: (-c[1], c[0]))
        beams = candidates[:width]
        if not beams:
            break
    return [(trie.item_of[code], score) for code, score in beams if len(code) == trie.depth]


_TRIE: dict[str, object] = {}  # per run directory: a retrieval.live.Watched trie, built at the first request


def run_trie(run: str) -> SidTrie:
    """The trie of the run this server serves, over its catalog of this moment, with the token ids of
    its base model's tokenizer (the vocabulary of the first catalog: added items only use its codes)."""
    if run not in _TRIE:
        from transformers import AutoTokenizer

        from genrec.run import RunPaths
        from retrieval.live import Watched
        from retrieval.semantic_ids import load_semantic_ids

        paths = RunPaths(Path(run))
        tokenizer = AutoTokenizer.from_pretrained(Path(run) / "model" / "base")
        vocab = SidTrie.for_tokenizer(load_semantic_ids(paths), tokenizer).vocab
        _TRIE[run] = Watched(paths, lambda state: SidTrie(state.active_codes, vocab=vocab))
    return _TRIE[run].get()


def _authorised(request, state) -> bool:
    """The server's own API keys (`--api-key` / VLLM_API_KEY) guard this route too: a middleware
    added by `--middleware` runs outside vLLM's authentication middleware."""
    keys = [k for k in (getattr(state.args, "api_key", None) or [os.environ.get("VLLM_API_KEY")]) if k]
    if not keys:
        return True
    given = request.headers.get("authorization", "")
    return any(secrets.compare_digest(given, f"Bearer {key}") for key in keys)


async def recommend_route(request, call_next):
    """The ASGI middleware vLLM loads: answers `POST /v1/genrec/recommend`, passes anything else on."""
    from starlette.responses import JSONResponse

    if request.url.path != ROUTE:
        return await call_next(request)
    if request.method not in ("POST", "GET"):
        return JSONResponse({"error": {"message": f"{ROUTE}: use POST (GET says how it searches)"}}, status_code=405)
    state = request.app.state
    if not _authorised(request, state):
        return JSONResponse({"error": {"message": "Unauthorized"}}, status_code=401)
    if request.method == "GET":
        return JSONResponse({"search": "engine" if await searches_in_engine(state.engine_client) else "steps"})
    run = os.environ.get(RUN_ENV)
    if not run:
        return JSONResponse(
            {"error": {"message": f"{RUN_ENV} is not set: this server was not started by genrec"}}, status_code=500
        )
    try:
        trie = run_trie(run)
        search = parse_request(await request.json(), trie)
    except ValueError as exc:
        return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
    lora = None
    models = state.openai_serving_models
    if search.model and search.model in models.lora_requests:
        lora = models.lora_requests[search.model]
    elif search.model and not any(search.model == p.name for p in models.base_model_paths):
        return JSONResponse({"error": {"message": f"model: {search.model!r} is not served here"}}, status_code=404)
    if await searches_in_engine(state.engine_client):
        found, stats = await engine_search(state.engine_client, search, trie, adapter=search.model != BASE_MODEL)
        stats = {"search": "engine", "engine_requests": 1, **stats}
    else:
        removed = narrowed(trie, search.exclude, search.only)
        stats = {"search": "steps"}
        found = await beam_search(
            state.engine_client, search.prompt_token_ids, trie, removed, search.width, lora, stats
        )
    return JSONResponse({"items": [{"item_id": i, "logprob": s} for i, s in found[: search.k]], **stats})


async def searches_in_engine(engine) -> bool:
    """True when the engine serves `serving.trie_engine`'s pooling architecture (its task `plugin`)."""
    from serving.trie_engine import TASK

    return TASK in await engine.get_supported_tasks()


async def engine_search(engine, search: SearchRequest, trie: SidTrie, adapter: bool) -> tuple[list, dict]:
    """One pooling request: the engine's pooler searches the trie (`serving.trie_engine`)."""
    from vllm import PoolingParams

    from serving.trie_engine import TASK, decode_answer

    ask = {"width": search.width, "k": search.k, "exclude": search.exclude, "adapter": adapter}
    if search.only is not None:
        ask["only"] = search.only
    params = PoolingParams(task=TASK, extra_kwargs=ask)
    final = None
    async for out in engine.encode({"prompt_token_ids": search.prompt_token_ids}, params, f"genrec-{uuid.uuid4().hex}"):
        final = out
    return decode_answer(final.outputs.data, trie.item_of)
