"""The agent with a real model server: SmolLM2-135M-Instruct served by vLLM (CPU) as the chat model
(`genrec-base`, with a tool-calling chat template) and, from the same weights plus semantic-ID tokens
and a LoRA adapter (`genrec`), as the generator of item ids. Marked `vllm`: one server per session.

What SmolLM2 did with each planner request is written to test-artifacts/smollm2_tool_calls.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent_catalog import INJECTED_ID, MOVIES, agent_run

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
TOOL_TEMPLATE = REPO / "agent" / "chat_templates" / "chatml_tools.j2"


def build_model(model_dir: Path, codes: dict[str, list[int]]) -> None:
    """SmolLM2 with one token per (level, code) as model/base, a random LoRA as model/adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.models import smollm2_folder
    from finetune.sid_tokens import codebook_sizes
    from finetune.tokenizer import add_sid_tokens

    source = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(source)
    add_sid_tokens(tokenizer, codebook_sizes(codes.values()))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(model_dir / "base")
    tokenizer.save_pretrained(model_dir / "base")
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                      init_lora_weights=False, task_type="CAUSAL_LM")
    # The SID rows live in model/base; an adapter that carried embeddings would not load in vLLM.
    get_peft_model(model, lora).save_pretrained(model_dir / "adapter", save_embedding_layers=False)
    (model_dir / "genrec.json").write_text(json.dumps({"max_history": 20, "template": None}))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(run dir, URL) of one vLLM server for the session, stopped at the end."""
    pytest.importorskip("vllm")
    from agent.serve import ServerSpec, VllmServer, free_port

    run = tmp_path_factory.mktemp("vllm-agent") / "agent-run"
    shutil.copytree(agent_run(tmp_path_factory), run)
    codes = {item_id: [n // 9, (n // 3) % 3, n % 3] for n, (item_id, *_rest) in enumerate(MOVIES)}
    (run / "semantic_ids.json").write_text(json.dumps(codes))
    build_model(run / "model", codes)
    spec = ServerSpec(base_dir=run / "model" / "base", adapter_dir=run / "model" / "adapter",
                      log_path=run / "logs" / "vllm.log", port=free_port(), kv_cache_gib=1, max_model_len=2048,
                      extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                                  "--chat-template", str(TOOL_TEMPLATE)])
    with VllmServer(spec, startup_timeout_s=900) as server:
        yield run, server.url


@pytest.fixture(scope="module")
def agent(served, tmp_path_factory):
    from agent.session import Agent

    run, url = served
    a = Agent.open(run, llm_url=url, db_path=tmp_path_factory.mktemp("vllm-chat") / "chat.sqlite", llm_timeout_s=180)
    assert a.ctx.generator is not None  # the run has a model: recommend asks it
    yield a
    a.close()


def test_every_reply_is_grounded_whoever_planned_and_wrote_it(agent):
    from agent.guard import find_violations

    record = []
    for message in ["I loved Star Wars and Alien", "something funnier", "why that one?"]:
        answer = agent.ask("real", message)
        state = agent.graph.get_state(agent._config("real")).values
        allowed = set(state["grounded"])
        assert answer.items and {i["item_id"] for i in answer.items} <= allowed
        assert find_violations(answer.reply, allowed, agent.ctx.titles) == [], answer.reply
        record.append({"message": message, "planner": answer.planner, "reply_source": answer.source,
                       "guard": state.get("guard_violations"), "reply": answer.reply})
    recommend = json.loads(next(m.content for m in reversed(state["messages"]) if getattr(m, "name", "") == "recommend"))
    assert recommend.get("model") and "model_unavailable" not in recommend  # the served generator answered
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "smollm2_agent_turns.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))


def test_generated_ids_are_catalog_items_outside_the_history(agent):
    ids = agent.ctx.generator(["1", "2", "13"], 5)
    assert len(ids) == 5 and set(ids) <= set(agent.ctx.titles.ids) and not {"1", "2", "13"} & set(ids)


def test_what_smollm2_does_when_asked_to_call_tools(agent):
    """Recorded, not judged: whatever it returns, only calls that validate are ever run."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from agent.graph import PLANNER_PROMPT
    from agent.tools import bind_tools

    agent.chat.tool_calling = True  # earlier turns may have switched the model planner off; ask anyway
    tools = {t.name: t for t in bind_tools(agent.ctx)}
    schemas = [convert_to_openai_tool(t) for t in tools.values()]
    seen = []
    for message in ["I loved Star Wars and Alien", "tell me about Fargo", "a 90s sci-fi comedy"]:
        calls = agent.chat.choose_tools([{"role": "system", "content": PLANNER_PROMPT},
                                         {"role": "user", "content": message}], schemas)
        for call in calls:
            tool = tools.get(call["name"] or "")
            try:
                valid = tool is not None and isinstance(call["args"], dict) and bool(tool.args_schema.model_validate(call["args"]))
            except Exception:
                valid = False
            call["valid"] = valid
        seen.append({"message": message, "calls": calls})
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "smollm2_tool_calls.json").write_text(json.dumps(seen, indent=2, ensure_ascii=False, default=str))


def test_instructions_in_catalog_text_do_not_steer_a_real_model(agent):
    answer = agent.ask("inject", "tell me about Midnight Static")
    assert [i["item_id"] for i in answer.items] == [INJECTED_ID]
    for leaked in ("Plan 9", "Zardoz", "id 41", "id 999"):
        assert leaked not in answer.reply


def test_interfaces_start_a_model_server_when_none_answers_and_stop_it_on_exit(served):
    """What `genrec chat/ui/api` do when nothing answers at --llm-url: start `genrec serve` for the run
    in the background, and stop it when they exit."""
    import time

    from rich.console import Console

    from agent.commands import model_server
    from agent.serve import free_port, is_healthy, port_is_free

    run, _ = served
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with model_server(run, url, start=True, console=Console(stderr=True)):
        deadline = time.monotonic() + 900
        while not is_healthy(url) and time.monotonic() < deadline:
            time.sleep(2)
        assert is_healthy(url)
    deadline = time.monotonic() + 30
    while not port_is_free("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert port_is_free("127.0.0.1", port)
