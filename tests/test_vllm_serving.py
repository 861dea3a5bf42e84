"""The vLLM serving path: `genrec serve` on a tiny semantic-ID model, and the client the agent uses.

One real vLLM server (CPU build) runs for the whole session, started through the `serve` command
function; Hugging Face `generate` on the same files is the reference the server must agree with.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.llm_client import ADAPTER_MODEL, BASE_MODEL, LLMClient, LLMError, LLMUnavailable
from agent.serve import free_port, is_healthy, lora_rank, port_is_free, run_server_spec
from finetune.sid_tokens import CodeTrie, SidVocab, prefix_allowed_tokens_fn, render_sid
from genrec.config import ServeConfig
from genrec.errors import GenrecError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_sid_model  # noqa: E402

PROMPTS = [
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
def tiny_run(tmp_path_factory) -> tuple[Path, CodeTrie]:
    """A run directory holding a tiny SID model (model/base + model/adapter) and its trie."""
    run = tmp_path_factory.mktemp("serve-run")
    codes = catalog_codes()
    build_tiny_sid_model(run / "model", codes)
    (run / "semantic_ids.json").write_text(json.dumps(codes))
    return run, CodeTrie(codes)


@pytest.fixture(scope="module")
def vllm_url(tiny_run) -> str:
    """Start ONE vLLM server for the module through the `serve` command; stop it with SIGTERM at the end
    (what `kill`, systemd or a container stop send), which must stop vLLM as Ctrl-C does."""
    pytest.importorskip("vllm")
    run, _ = tiny_run
    port = free_port()
    cmd = [
        sys.executable, "-c", "import typer; from agent.serve_commands import serve; typer.run(serve)",
        "--run", str(run), "--port", str(port), "--kv-cache-gib", "1", "--no-chat",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url_line: list[str] = []
    reader = threading.Thread(target=lambda: url_line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=400)
    try:
        if not url_line or not url_line[0].startswith("http"):
            proc.kill()
            raise RuntimeError(f"genrec serve printed no URL; stderr:\n{proc.stderr.read()[-3000:]}")
        yield url_line[0].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, f"genrec serve exited with {code} after SIGTERM"
    assert port_is_free("127.0.0.1", port), "the vLLM server still listens after SIGTERM"


@pytest.fixture(scope="module")
def client(vllm_url):
    with LLMClient(vllm_url, timeout_s=120) as c:
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


def hf_trie_beam_topk(hf_model, prompt: str, trie: CodeTrie, k: int, beam_width: int) -> list[tuple[tuple[int, ...], float]]:
    """Reference: Hugging Face beam search constrained by the trie through `prefix_allowed_tokens_fn`."""
    model, tokenizer = hf_model
    vocab = SidVocab.from_tokenizer(tokenizer, trie.codebook_sizes)
    enc = tokenizer(prompt, return_tensors="pt")
    n_prompt = enc.input_ids.shape[1]
    out = model.generate(
        **enc,
        num_beams=beam_width,
        num_return_sequences=k,
        max_new_tokens=trie.depth,
        do_sample=False,
        length_penalty=0.0,  # scores are plain sums of log-probabilities, like the client's
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(trie, vocab, n_prompt),
        output_scores=True,
        return_dict_in_generate=True,
    )
    return [
        (vocab.decode(seq[n_prompt:].tolist()), float(score))
        for seq, score in zip(out.sequences, out.sequences_scores)
    ]


# --------------------------------------------------------------------------- with a server


@pytest.mark.vllm
def test_vllm_top_k_equals_hugging_face_trie_beam_search(client, tiny_run, hf_model):
    _, trie = tiny_run
    for prompt in PROMPTS:
        served = client.recommend_ids(prompt, trie, k=10, beam_width=20)
        reference = hf_trie_beam_topk(hf_model, prompt, trie, k=10, beam_width=20)
        assert [code for code, _ in served] == [code for code, _ in reference], prompt
        for (_, s_vllm), (_, s_hf) in zip(served, reference):
            assert s_vllm == pytest.approx(s_hf, abs=1e-3)


@pytest.mark.vllm
def test_recommend_never_returns_unknown_item(client, tiny_run):
    _, trie = tiny_run
    for prompt in PROMPTS:
        for k, width in [(1, 1), (5, 5), (20, 30)]:
            result = client.recommend_ids(prompt, trie, k=k, beam_width=width)
            codes = [code for code, _ in result]
            assert len(codes) == k
            assert all(code in trie for code in codes)
            assert len(set(codes)) == len(codes), "items must be distinct"
            scores = [s for _, s in result]
            assert scores == sorted(scores, reverse=True)


@pytest.mark.vllm
def test_recommend_skips_excluded_history(client, tiny_run):
    _, trie = tiny_run
    first = client.recommend_ids(PROMPTS[0], trie, k=5, beam_width=10)
    history = [code for code, _ in first[:3]]
    again = client.recommend_ids(PROMPTS[0], trie, k=5, beam_width=10, exclude=history)
    assert len(again) == 5
    assert not {code for code, _ in again} & set(history)
    assert all(code in trie for code, _ in again)


@pytest.mark.vllm
@pytest.mark.parametrize("constraint", ["regex", "choice", "grammar"])
def test_sampling_under_each_structured_output_constraint_stays_in_catalog(client, tiny_run, constraint):
    _, trie = tiny_run
    result = client.recommend_ids(PROMPTS[1], trie, k=8, beam_width=16, method="sample", constraint=constraint)
    assert result, "no sample completed a code"
    assert all(code in trie for code, _ in result)
    assert len({code for code, _ in result}) == len(result)


@pytest.mark.vllm
def test_adapter_is_served_and_changes_the_model(client, tiny_run):
    _, trie = tiny_run
    assert set(client.models()) == {ADAPTER_MODEL, BASE_MODEL}
    with_adapter = client.recommend_ids(PROMPTS[0], trie, k=5, beam_width=5)
    base_only = client.recommend_ids(PROMPTS[0], trie, k=5, beam_width=5, model=BASE_MODEL)
    assert [s for _, s in with_adapter] != pytest.approx([s for _, s in base_only], abs=1e-3)


@pytest.mark.vllm
def test_complete_and_chat_return_text(client):
    text = client.complete("Explain why the user would like this item.", max_tokens=8)
    reply = client.chat([{"role": "user", "content": "I loved Star Wars"}], max_tokens=8)
    assert isinstance(text, str) and text
    assert isinstance(reply, str)


@pytest.mark.vllm
def test_unknown_model_is_a_clear_request_error(client, tiny_run):
    _, trie = tiny_run
    with pytest.raises(LLMError) as err:
        client.recommend_ids(PROMPTS[0], trie, k=3, beam_width=3, model="no-such-model")
    assert not isinstance(err.value, LLMUnavailable)


@pytest.mark.vllm
def test_concurrent_recommendations_each_get_their_own_answer(client, tiny_run):
    from concurrent.futures import ThreadPoolExecutor

    _, trie = tiny_run
    expected = {p: client.recommend_ids(p, trie, k=5, beam_width=10) for p in PROMPTS}
    prompts = PROMPTS * 4
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        answers = list(pool.map(lambda p: client.recommend_ids(p, trie, k=5, beam_width=10), prompts))
    for prompt, answer in zip(prompts, answers):
        assert [c for c, _ in answer] == [c for c, _ in expected[prompt]]


@pytest.mark.vllm
def test_server_that_cannot_load_its_model_fails_fast_with_the_log(tmp_path):
    pytest.importorskip("vllm")
    from agent.serve import VllmServer

    base = tmp_path / "run" / "model" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"model_type": "not-a-model"}')
    spec = run_server_spec(tmp_path / "run", ServeConfig(port=free_port(), kv_cache_gib=1))
    server = VllmServer(spec, startup_timeout_s=240)
    started = time.monotonic()
    with pytest.raises(GenrecError, match="vllm.log: vLLM exited"):
        with server:
            pass
    assert time.monotonic() - started < 200
    assert not server.is_running()
    assert (tmp_path / "run" / "logs" / "vllm.log").read_text().startswith("$ ")


# --------------------------------------------------------------------------- without a server


def test_server_down_raises_llm_unavailable_fast(tiny_run):
    _, trie = tiny_run
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = LLMClient(url, timeout_s=30)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="not reachable"):
        client.recommend_ids(PROMPTS[0], trie, k=5)
    with pytest.raises(LLMUnavailable):
        client.chat([{"role": "user", "content": "hi"}])
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
            client.complete("hello")
        assert time.monotonic() - started < 5
    finally:
        listener.close()


def test_a_scratch_run_chats_through_smollm2_and_a_pretrained_base_chats_itself(tmp_path):
    from agent.serve import chat_server_spec, chat_source, chat_url

    model = tmp_path / "model"
    model.mkdir()
    config = ServeConfig(chat_model="auto")
    url = "http://127.0.0.1:8000/v1"
    (model / "genrec.json").write_text(json.dumps({"base": "scratch"}))
    assert chat_source(tmp_path, config) == "smollm2-135m" and chat_url(tmp_path, config, url) == "http://127.0.0.1:8001/v1"
    spec = chat_server_spec(tmp_path, config)
    assert spec.served_name == "genrec-chat" and spec.adapter_dir is None and "hermes" in spec.extra_args
    (model / "genrec.json").write_text(json.dumps({"base": "smollm2-135m"}))
    assert chat_source(tmp_path, config) == "base" and chat_url(tmp_path, config, url) == url
    assert chat_server_spec(tmp_path, config) is None
    assert chat_url(tmp_path, ServeConfig(chat_model="none"), url) is None


def test_chat_model_that_is_not_a_causal_lm_is_refused_before_starting_vllm(tmp_path):
    from agent.serve import chat_server_spec

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(GenrecError, match="not a causal LM"):
        chat_server_spec(tmp_path / "run", ServeConfig(chat_model=str(tmp_path)))


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

    run, trie = tiny_run
    tokenizer = AutoTokenizer.from_pretrained(run / "model" / "base")
    code = trie.codes()[0]
    ids = tokenizer(render_sid(code), add_special_tokens=False).input_ids
    assert SidVocab.from_tokenizer(tokenizer, trie.codebook_sizes).decode(ids) == code
    assert len(ids) == trie.depth
