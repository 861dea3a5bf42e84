"""The vLLM serving path: `genrec serve` on a tiny semantic-ID model, the trie beam search inside
the server, and the client the ranking uses.

One real vLLM server (CPU build) runs for the module, started through the `serve` command function
with an API key; Hugging Face `generate` and genrec's in-process beam search on the same files are
the references the server must agree with.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from pathlib import Path

import pytest

from genrec.config import ChatServerConfig, ServeConfig
from genrec.errors import GenrecError
from inference.client import ADAPTER_MODEL, BASE_MODEL, LLMClient, LLMError, LLMUnavailable
from inference.decoding.trie import SidTrie
from serving.server import free_port, is_healthy, lora_rank, run_server_spec

sys.path.insert(0, str(Path(__file__).parent))
from conftest import genrec_serve  # noqa: E402
from hf_reference import hf_trie_topk  # noqa: E402
from tiny_models import build_tiny_sid_model  # noqa: E402

API_KEY = "test-key-123"
TEXTS = [
    "User history: <a_3><b_2><c_1><d_0> <a_5><b_1><c_4><d_0>. Recommend the next item.",
    "The user watched these items in order: <a_12><b_7><c_0><d_0>. Recommend the next item.",
    "I loved Star Wars and Alien, something funnier please.",
]


def catalog_codes(n_items: int = 300, seed: int = 0) -> dict[str, list[int]]:
    """Item codes shaped like RQ-VAE output: three levels (16 x 8 x 8) plus a final level that makes them unique."""
    rng = random.Random(seed)
    codes: dict[str, list[int]] = {}
    used: dict[tuple[int, ...], int] = {}
    while len(codes) < n_items:
        prefix = (rng.randrange(16), rng.randrange(8), rng.randrange(8))
        suffix = used.get(prefix, 0)
        if suffix >= 2:
            continue
        used[prefix] = suffix + 1
        codes[f"item{len(codes)}"] = [*prefix, suffix]
    return codes


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, SidTrie]:
    """A run directory holding a tiny SID model (model/base + model/adapter), its trie and training metadata."""
    from transformers import AutoTokenizer

    run = tmp_path_factory.mktemp("serve-run")
    codes = catalog_codes()
    build_tiny_sid_model(run / "model", codes)
    (run / "semantic_ids.json").write_text(json.dumps(codes))
    (run / "model" / "genrec.json").write_text(json.dumps({"base": "scratch", "max_history": 20}))
    return run, SidTrie.for_tokenizer(codes, AutoTokenizer.from_pretrained(run / "model" / "base"))


@pytest.fixture(scope="module")
def prompts(tiny_run) -> list[list[int]]:
    """Prompt token ids: free text tokenized with the BOS token this tokenizer adds, and next-item
    prompts built from histories the way training builds them (no special tokens added)."""
    from transformers import AutoTokenizer

    from inference.decoding.prompts import HistoryPrompt

    run, trie = tiny_run
    tokenizer = AutoTokenizer.from_pretrained(run / "model" / "base")
    with_bos = [tokenizer(t)["input_ids"] for t in TEXTS]
    assert all(ids[0] == tokenizer.bos_token_id for ids in with_bos)
    history = HistoryPrompt(tokenizer, trie.code_of, max_history=20)
    return with_bos + [history.token_ids(["item1", "item7", "item42"]), history.token_ids(["item3"])]


@pytest.fixture(scope="module", params=["engine", "steps"])
def vllm_url(request, tiny_run, tmp_path_factory) -> str:
    """A vLLM server through the `serve` command (with an API key), once per trie search: "engine"
    (one engine request per recommendation, what `serve` starts for this run) and then "steps" (one
    per beam and level, what a server that also chats runs), so that every server test checks both;
    one server at a time, stopped with SIGTERM (what `kill`, systemd or a container stop send),
    which must stop vLLM as Ctrl-C does."""
    pytest.importorskip("vllm")
    run, _ = tiny_run
    folder = tmp_path_factory.mktemp(f"vllm-serving-{request.param}")
    with genrec_serve(run, API_KEY, folder, 400, ("--search", request.param)) as url:
        yield url


@pytest.fixture(scope="module")
def client(vllm_url):
    with LLMClient(vllm_url, timeout_s=120, api_key=API_KEY) as c:
        yield c


@pytest.fixture(scope="module")
def hf_model(tiny_run):
    """The same run's base + adapter in Hugging Face transformers (float32), the reference implementation."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _ = tiny_run
    tokenizer = AutoTokenizer.from_pretrained(run / "model" / "base")
    base = AutoModelForCausalLM.from_pretrained(run / "model" / "base", dtype=torch.float32)
    return PeftModel.from_pretrained(base, run / "model" / "adapter").eval(), tokenizer


# --------------------------------------------------------------------------- with a server


@pytest.mark.vllm
def test_vllm_top_k_equals_hugging_face_trie_beam_search(client, tiny_run, hf_model, prompts):
    _, trie = tiny_run
    model, tokenizer = hf_model
    for ids in prompts:
        served = client.recommend(ids, width=20, k=10)
        reference = hf_trie_topk(model, tokenizer, ids, trie, 20)[:10]
        assert [i for i, _ in served] == [i for i, _ in reference], ids
        for (_, s_vllm), (_, s_hf) in zip(served, reference):
            assert s_vllm == pytest.approx(s_hf, abs=1e-3)


@pytest.mark.vllm
def test_in_process_and_vllm_backends_rank_alike(client, tiny_run):
    """The two generation backends of the served ranking: same prompts, same top-10."""
    from genrec.run import RunPaths
    from inference.decoding.local import load_local_generator
    from inference.decoding.prompts import HistoryPrompt
    from inference.vllm_generator import VllmGenerator

    run, trie = tiny_run
    local = load_local_generator(RunPaths(run), dict(trie.code_of), beam_width=20, bf16=False)
    served = VllmGenerator(
        client, SidTrie(dict(trie.code_of)), HistoryPrompt(local.tokenizer, trie.code_of, 20), beam_width=20
    )
    histories = [["item1", "item7", "item42"], ["item3"], ["item200", "item9"], []]
    exclude = [set(h) for h in histories]
    for mine, theirs in zip(local.generate(histories, exclude=exclude), served.generate(histories, exclude=exclude)):
        assert [i for i, _ in mine][:10] == [i for i, _ in theirs][:10]
        assert [s for _, s in mine][:10] == pytest.approx([s for _, s in theirs][:10], abs=1e-3)


@pytest.mark.vllm
def test_the_served_ranking_over_vllm_is_the_in_process_one(recommender_server):
    """`open_ranker` with a server's URL (what the agent and `genrec recommend --llm-url` use), on the
    session's trained run and its server: the beams come from vLLM, the dense model and the fusion
    from the run; the top-10 is the in-process one."""
    from genrec.run import RunPaths
    from inference.ranker import open_ranker
    from retrieval.catalog import load_catalog
    from retrieval.split import leave_one_out

    run = recommender_server.run
    local, _ = open_ranker(run)
    served, notice = open_ranker(run, llm_url=recommender_server.url, api_key=recommender_server.api_key)
    assert notice is None and served.hybrid and served.generator.name == "vllm" and local.generator.name != "vllm"
    generator = served.current().generator
    assert generator.server_search() == "engine" and not generator.in_process()
    assert "one engine request per recommendation" in generator.describe()
    split = leave_one_out(load_catalog(RunPaths(run)).interactions)
    histories = [h[-5:] for h, _ in list(split.test.values())[:8]]  # within the tiny model's 128 positions
    exclude = [set(h) for h in histories]
    for mine, theirs in zip(local.rank(histories, 10, exclude=exclude), served.rank(histories, 10, exclude=exclude)):
        assert [i for i, _ in theirs] == [i for i, _ in mine]
        assert [s for _, s in theirs] == pytest.approx([s for _, s in mine], abs=1e-3)
    served.generator.close()


@pytest.mark.vllm
def test_the_route_says_how_it_searches_and_the_engine_search_costs_one_engine_request(vllm_url, client, prompts):
    import httpx

    from inference.client import RECOMMEND_ROUTE

    search = client.recommend_search()
    root = vllm_url.removesuffix("/v1")
    body = {"model": ADAPTER_MODEL, "prompt_token_ids": prompts[0], "width": 20, "k": 10}
    reply = httpx.post(root + RECOMMEND_ROUTE, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)
    answer = reply.json()
    assert answer["search"] == search and search in ("engine", "steps")
    if search == "engine":
        assert answer["engine_requests"] == 1 and answer["batch"] >= 1 and answer["search_s"] > 0
    else:
        assert answer["engine_requests"] > 20  # one per live beam and level: 1 + 20 + 20 + 20 at most


@pytest.mark.vllm
def test_engine_search_batches_concurrent_requests_into_one_engine_step(vllm_url, client, prompts):
    """16 users at once: the engine searches several of them in one step, each still gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from inference.client import RECOMMEND_ROUTE

    if client.recommend_search() != "engine":
        pytest.skip("the steps search sends one engine request per beam and level")
    root, headers = vllm_url.removesuffix("/v1"), {"Authorization": f"Bearer {API_KEY}"}
    alone = [client.recommend(p, width=10, k=5) for p in prompts]

    def ask(i: int) -> dict:
        body = {"model": ADAPTER_MODEL, "prompt_token_ids": prompts[i % len(prompts)], "width": 10, "k": 5}
        return httpx.post(root + RECOMMEND_ROUTE, json=body, headers=headers, timeout=120).json()

    # On a loaded machine a burst can reach the engine one request at a time (the tiny model searches
    # in milliseconds): up to three bursts, each answer checked, until one step held several.
    batched = 0
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(ask, range(32)))
        for i, answer in enumerate(answers):
            expected = alone[i % len(prompts)]
            assert [row["item_id"] for row in answer["items"]] == [item for item, _ in expected]
            assert [row["logprob"] for row in answer["items"]] == pytest.approx([s for _, s in expected], abs=1e-4)
        batched = max(a["batch"] for a in answers)
        if batched > 1:
            break
    assert batched > 1


@pytest.mark.vllm
def test_a_ranker_facing_a_per_step_server_generates_in_process_and_says_so(client, tiny_run):
    """No path is slower than it need be because a server runs: against the steps search (~60 engine
    requests a recommendation) the vLLM backend generates in this process, with the same top-10."""
    from genrec.run import RunPaths
    from inference.decoding.local import load_local_generator
    from inference.decoding.prompts import HistoryPrompt
    from inference.vllm_generator import VllmGenerator

    run, trie = tiny_run
    local = load_local_generator(RunPaths(run), dict(trie.code_of), beam_width=20)
    served = VllmGenerator(
        client, SidTrie(dict(trie.code_of)), HistoryPrompt(local.tokenizer, trie.code_of, 20), fallback=lambda: local
    )
    search = client.recommend_search()
    assert served.in_process() == (search == "steps")
    assert ("in this process" in served.describe()) == (search == "steps")
    histories = [["item1", "item7", "item42"], ["item3"]]
    exclude = [set(h) for h in histories]
    for mine, theirs in zip(local.generate(histories, exclude=exclude), served.generate(histories, exclude=exclude)):
        assert [i for i, _ in mine][:10] == [i for i, _ in theirs][:10]


@pytest.mark.vllm
def test_recommend_never_returns_unknown_item(client, tiny_run, prompts):
    _, trie = tiny_run
    for ids in prompts:
        for k, width in [(1, 1), (5, 5), (20, 30)]:
            result = client.recommend(ids, width=width, k=k)
            items = [i for i, _ in result]
            assert len(items) == k and len(set(items)) == k
            assert set(items) <= set(trie.code_of)
            scores = [s for _, s in result]
            assert scores == sorted(scores, reverse=True)


@pytest.mark.vllm
def test_recommend_skips_excluded_items_and_keeps_to_the_allowed_ones(client, tiny_run, prompts):
    first = client.recommend(prompts[0], width=10, k=5)
    history = [i for i, _ in first[:3]]
    again = client.recommend(prompts[0], width=10, k=5, exclude=history)
    assert len(again) == 5 and not {i for i, _ in again} & set(history)
    only = {"item5", "item6", "item7"}
    narrowed = client.recommend(prompts[0], width=10, k=5, only=only, exclude=["item6"])
    assert {i for i, _ in narrowed} == {"item5", "item7"}


@pytest.mark.vllm
def test_adapter_is_served_and_changes_the_model(client, prompts):
    assert set(client.models()) == {ADAPTER_MODEL, BASE_MODEL}
    with_adapter = client.recommend(prompts[0], width=5)
    base_only = client.recommend(prompts[0], width=5, model=BASE_MODEL)
    assert [s for _, s in with_adapter] != pytest.approx([s for _, s in base_only], abs=1e-3)


@pytest.mark.vllm
def test_the_server_refuses_requests_without_its_api_key(vllm_url, prompts):
    with LLMClient(vllm_url, timeout_s=30) as anonymous, pytest.raises(LLMError, match="401"):
        anonymous.recommend(prompts[0], width=3)
    with LLMClient(vllm_url, timeout_s=30, api_key="wrong") as wrong, pytest.raises(LLMError, match="401"):
        wrong.models()


@pytest.mark.vllm
def test_bad_requests_are_refused_naming_the_field(client):
    with pytest.raises(LLMError, match="prompt_token_ids") as err:
        client.recommend([], width=3)
    assert not isinstance(err.value, LLMUnavailable)
    with pytest.raises(LLMError, match="no-such-model"):
        client.recommend([1, 2, 3], width=3, model="no-such-model")


@pytest.mark.vllm
def test_concurrent_recommendations_each_get_their_own_answer(client, prompts):
    from concurrent.futures import ThreadPoolExecutor

    expected = [client.recommend(p, width=10, k=5) for p in prompts]
    many = list(range(len(prompts))) * 4
    with ThreadPoolExecutor(max_workers=len(many)) as pool:
        answers = list(pool.map(lambda i: client.recommend(prompts[i], width=10, k=5), many))
    for i, answer in zip(many, answers):
        assert [c for c, _ in answer] == [c for c, _ in expected[i]]


@pytest.mark.vllm
def test_server_that_cannot_load_its_model_fails_fast_with_the_log(tmp_path):
    pytest.importorskip("vllm")
    from serving.server import ModelServer

    base = tmp_path / "run" / "model" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"model_type": "not-a-model"}')
    spec = run_server_spec(tmp_path / "run", ServeConfig(port=free_port(), kv_cache_gib=1))
    server = ModelServer(spec, startup_timeout_s=240)
    started = time.monotonic()
    with pytest.raises(GenrecError, match="vllm.log: vLLM exited"):
        with server:
            pass
    assert time.monotonic() - started < 200
    assert not server.is_running()
    assert (tmp_path / "run" / "logs" / "vllm.log").read_text().startswith("$ ")


# --------------------------------------------------------------------------- without a server


def test_server_down_raises_llm_unavailable_fast():
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = LLMClient(url, timeout_s=30)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="not reachable"):
        client.recommend([1, 2, 3], width=5)
    with pytest.raises(LLMUnavailable):
        client.models()
    assert time.monotonic() - started < 3
    assert not client.is_up()
    assert not is_healthy(url)


def test_hung_server_times_out_instead_of_hanging():
    # A listener that accepts connections and never answers: the worst kind of "slow".
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        client = LLMClient(url, timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(LLMUnavailable, match="no answer within"):
            client.recommend([1, 2, 3], width=5)
        assert time.monotonic() - started < 5
    finally:
        listener.close()


def test_a_scratch_run_chats_through_smollm2_and_a_pretrained_base_chats_itself(tmp_path):
    from serving.server import chat_server_spec, chat_source, chat_url

    model = tmp_path / "model"
    model.mkdir()
    config = ServeConfig(
        chat=ChatServerConfig(model="auto", engine="vllm")
    )  # (on a CPU, auto serves SmolLM2's GGUF with llama.cpp)
    url = "http://127.0.0.1:8000/v1"
    (model / "genrec.json").write_text(json.dumps({"base": "scratch"}))
    assert (
        chat_source(tmp_path, config) == "smollm2-135m"
        and chat_url(tmp_path, config, url) == "http://127.0.0.1:8001/v1"
    )
    spec = chat_server_spec(tmp_path, config)
    assert spec.served_name == "genrec-chat" and spec.adapter_dir is None and "hermes" in spec.extra_args
    (model / "genrec.json").write_text(json.dumps({"base": "smollm2-135m"}))
    assert chat_source(tmp_path, config) == "base" and chat_url(tmp_path, config, url) == url
    assert chat_server_spec(tmp_path, config) is None
    assert chat_url(tmp_path, ServeConfig(chat=ChatServerConfig(model="none")), url) is None


def test_chat_model_that_is_not_a_causal_lm_is_refused_before_starting_vllm(tmp_path):
    from serving.server import chat_server_spec

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(GenrecError, match="not a causal LM"):
        chat_server_spec(tmp_path / "run", ServeConfig(chat=ChatServerConfig(model=str(tmp_path))))


def test_run_without_model_says_what_to_run_first(tmp_path):
    with pytest.raises(GenrecError, match="genrec train"):
        run_server_spec(tmp_path, ServeConfig())


def test_adapter_rank_is_rounded_up_to_a_rank_vllm_accepts(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12, "rank_pattern": {"q_proj": 4}}))
    assert lora_rank(tmp_path) == 16


def test_adapter_carrying_embeddings_is_refused_before_starting_vllm(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": ["embed_tokens", "lm_head"]}))
    with pytest.raises(GenrecError, match="modules_to_save"):
        lora_rank(tmp_path)


def test_tiny_model_tokenizer_keeps_sid_tokens_whole(tiny_run):
    from transformers import AutoTokenizer

    from inference.sid_tokens import render_sid

    run, trie = tiny_run
    tokenizer = AutoTokenizer.from_pretrained(run / "model" / "base")
    item, code = next(iter(trie.code_of.items()))
    ids = tokenizer(render_sid(code), add_special_tokens=False).input_ids
    assert ids == trie.tokens_of(item) and len(ids) == trie.depth


def test_serving_off_localhost_without_an_api_key_is_refused(tiny_run):
    import typer
    from typer.testing import CliRunner

    from serving.commands import serve

    run, _ = tiny_run
    app = typer.Typer()
    app.command()(serve)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["serve", "--run", str(run), "--host", "0.0.0.0"], env={"GENREC_API_KEY": ""})
    assert isinstance(result.exception, GenrecError) and "without an API key" in str(result.exception)


def test_the_recommender_searches_in_the_engine_unless_its_base_model_also_chats(tiny_run):
    """`serve.search: auto`: a pooling server (one engine request per recommendation) for a run whose
    chat model is another server; the per-step search on a generating server when its base chats."""
    from serving.server import recommend_search, server_command

    run, _ = tiny_run
    spec = run_server_spec(run, ServeConfig())
    command = server_command(spec)
    assert spec.search == "engine" and command[1:3] == ["-m", "serving.trie_engine"]
    assert "pooling" in command and "--enable-lora" not in command and "--max-num-batched-tokens" in command
    assert recommend_search(run, ServeConfig(chat=ChatServerConfig(model="base"))) == "steps"
    steps = run_server_spec(run, ServeConfig(search="steps"))
    command = server_command(steps)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--enable-lora" in command
