"""The agent with real model servers, in genrec's default layout for a scratch-trained run: the
recommender (a tiny semantic-ID model + LoRA adapter, `genrec`) on one vLLM server, and
SmolLM2-135M-Instruct as the chat model (`genrec-chat`, ChatML with Hermes tool calling) on a
second one. Marked `vllm`: both servers live for this module.

What SmolLM2 did with each planner request is written to test-artifacts/smollm2_tool_calls.json,
its turns to test-artifacts/smollm2_agent_turns.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent_catalog import INJECTED_ID, MOVIES, agent_run
from tiny_models import build_tiny_sid_model

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(run dir, recommender URL, chat URL): the run's two vLLM servers, as `genrec serve` starts them."""
    pytest.importorskip("vllm")
    from serving.server import VllmServer, chat_server_spec, free_port, run_server_spec
    from genrec.config import ServeConfig

    run = tmp_path_factory.mktemp("vllm-agent") / "agent-run"
    shutil.copytree(agent_run(tmp_path_factory), run)
    codes = {item_id: [n // 9, (n // 3) % 3, n % 3] for n, (item_id, *_rest) in enumerate(MOVIES)}
    (run / "semantic_ids.json").write_text(json.dumps(codes))
    build_tiny_sid_model(run / "model", codes)
    (run / "model" / "genrec.json").write_text(json.dumps({"base": "scratch", "max_history": 20, "template": None}))
    config = ServeConfig(kv_cache_gib=1, max_model_len=2048, startup_timeout_s=900, chat_model="auto")
    recommender = VllmServer(run_server_spec(run, config, port=free_port()), 900)
    chat_spec = chat_server_spec(run, config, port=free_port())
    assert chat_spec is not None and "--enable-auto-tool-choice" in chat_spec.extra_args  # scratch base: SmolLM2 chats
    chat = VllmServer(chat_spec, 900)
    try:
        recommender.start()
        chat.start()
        recommender.wait_healthy()
        chat.wait_healthy()
        yield run, recommender.url, chat.url
    finally:
        recommender.stop()
        chat.stop()


@pytest.fixture(scope="module")
def agent(served, tmp_path_factory):
    from agent.session import Agent

    run, url, chat_url = served
    a = Agent.open(run, llm_url=url, chat_url=chat_url, db_path=tmp_path_factory.mktemp("vllm-chat") / "chat.sqlite",
                   llm_timeout_s=180)
    assert a.ctx.ranker is not None and a.ctx.ranker.generator.name == "vllm"  # recommend ranks through the server
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
    assert recommend.get("model") and "model_unavailable" not in recommend  # the served ranking answered
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "smollm2_agent_turns.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))


def test_generated_ids_are_catalog_items_outside_the_history(agent):
    ids = [i for i, _ in agent.ctx.ranker.rank([["1", "2", "13"]], 5, exclude=[{"1", "2", "13"}])[0]]
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


def test_interfaces_start_both_model_servers_when_none_answers_and_stop_them_on_exit(served):
    """What `genrec chat/ui/api` do when nothing answers at --llm-url and --chat-url: start the run's
    recommender and chat servers in the background, and stop them when they exit."""
    import time

    from rich.console import Console

    from agent.commands import model_server
    from serving.server import free_port, is_healthy, port_is_free

    run, _, _ = served
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    with model_server(run, urls[0], start=True, console=Console(stderr=True), wait=True, chat_url=urls[1]):
        assert all(is_healthy(u) for u in urls)
    deadline = time.monotonic() + 30
    while not all(port_is_free("127.0.0.1", p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(port_is_free("127.0.0.1", p) for p in ports)


def test_explanations_come_from_the_chat_model_only_when_grounded(agent):
    from agent.tools import explain
    from finetune.explain import is_grounded

    seen = []
    for item, liked in [("Spaceballs", ["Star Wars", "Alien"]), ("Fargo", ["Heat"]), ("Toy Story", ["Babe"])]:
        card = explain(agent.ctx, item, liked=liked)["items"][0]
        assert card["model_explanation"], "the chat model was asked and answered"
        facts = agent.ctx.explainer.facts
        liked_facts = [facts[agent.ctx.titles.find(t)] for t in liked]
        if card["explained_by"] == "model":
            assert card["explanation"] == card["model_explanation"]
            assert is_grounded(card["explanation"], facts[card["item_id"]], liked_facts)
        else:
            assert not is_grounded(card["model_explanation"], facts[card["item_id"]], liked_facts)
        seen.append({"item": card["title"], "by": card["explained_by"], "model": card["model_explanation"],
                     "shown": card["explanation"]})
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "smollm2_explanations.json").write_text(json.dumps(seen, indent=2, ensure_ascii=False))


def test_a_served_chat_model_plays_the_simulated_user_and_the_agent_stays_grounded(served):
    from eval.simulate import simulate_run, says_title

    run, url, chat_url = served
    result = simulate_run(run, 2, max_turns=2, llm_url=url, chat_url=chat_url, simulator="llm", progress=False)
    assert result["simulator"] == "llm" and result["agent"] == "model" and result["conversations"] == 2
    assert result["grounding_violations"] == 0
    turns = [text for example in result["examples"] for role, text in example["transcript"] if role == "user"]
    assert len(turns) >= 2 and all(text.strip() for text in turns)
    assert result["llm_user_messages"] + result["llm_fallback_messages"] == result["avg_turns"] * 2
    titles = {row[0]: row[1] for row in MOVIES}
    for example in result["examples"]:
        user_turns = [text for role, text in example["transcript"] if role == "user"]
        assert not any(says_title(text, titles[example["target"]]) for text in user_turns)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "smollm2_simulated_user.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
