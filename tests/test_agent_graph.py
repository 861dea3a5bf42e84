"""The agent graph's nodes, each alone: plain functions of (state, deps), tested without a model server
and without the graph around them. The whole graph is specified in test_agent.py (rule path) and
test_agent_vllm.py (the chat model plans).
"""

from __future__ import annotations

import json

import pytest
from agent_catalog import agent_run
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.graph import (
    AgentSettings,
    Deps,
    after_plan,
    check_step,
    guard,
    plan,
    release_checked,
    remember,
    reply,
    rules_step,
    sentence_ends,
)
from agent.model_tools import ANSWER, answer_tool, known_args
from agent.prompts import PLANNER_SYSTEM, compact_result, memory_text, planner_messages
from agent.tools import AgentContext, recommend


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> AgentContext:
    return AgentContext.open(agent_run(tmp_path_factory))


@pytest.fixture(scope="module")
def deps(ctx) -> Deps:
    return Deps(ctx, None, AgentSettings(k=4))


def turn(message: str, **memory) -> dict:
    return {"messages": [HumanMessage(message)], **memory}


def tool_message(result: dict, name: str = "recommend", status: str = "success") -> ToolMessage:
    return ToolMessage(json.dumps(result), tool_call_id="c1", name=name, status=status)


# ----------------------------------------------------------------------------- what the model sees


def test_model_facing_schemas_carry_no_examples_no_image_path_and_no_room_for_copied_lists(deps, ctx):
    schemas = {t.name: convert_to_openai_tool(t)["function"] for t in [*deps.tools, answer_tool()]}
    assert set(schemas) == {"search_items", "recommend", "item_details", "explain", "user_history", ANSWER}
    text = json.dumps(schemas)
    assert "e.g." not in text and '("' not in text and "path" not in text  # nothing a small model would copy
    search = schemas["search_items"]["parameters"]["properties"]
    assert "image" not in search and search["by_photo"]["type"] == "boolean"  # the photo comes from the state
    genres = schemas["recommend"]["parameters"]["properties"]["genres"]
    enum = genres["anyOf"][0]["items"]["enum"]  # the catalog's own genres: a call can only name real ones
    assert enum == sorted(ctx.genres.values()) and "Musical" not in enum
    assert genres["anyOf"][0]["maxItems"] == 3  # the 0.5B copied a whole enum; no user asks for more than three
    recommend = schemas["recommend"]["parameters"]["properties"]
    assert {"released_before", "released_after", "decade", "same_decade_as", "exclude_genres"} <= set(recommend)
    assert recommend["decade"]["anyOf"][0]["pattern"] and "year_from" not in recommend
    assert schemas["user_history"]["parameters"]["properties"]["user_id"]["pattern"] == "^[0-9]{1,12}$"
    assert "k" not in schemas["recommend"]["parameters"]["properties"]  # list length is the agent's setting
    assert schemas[ANSWER]["parameters"].get("properties", {}) == {}


def test_arguments_outside_a_schema_are_dropped_and_named(deps):
    tool = next(t for t in deps.tools if t.name == "recommend")
    args, dropped = known_args(tool, {"liked": ["Alien"], "image": "/etc/passwd", "k": 500})
    assert args == {"liked": ["Alien"]} and sorted(dropped) == ["image", "k"]


def test_the_planner_prompt_keeps_fixed_text_first_and_memory_last(deps, ctx):
    state = turn(
        "why the second one?",
        history=["1", "2"],
        excluded=["9"],
        preferences={"genres": ["Comedy"], "exclude_genres": ["Horror"]},
        candidates=[ctx.card("4"), ctx.card("6")],
    )
    messages = planner_messages(state, ctx)
    assert messages[0].content == PLANNER_SYSTEM  # the same every turn: vLLM's prefix cache reuses it
    memory = messages[-2].content
    assert "Star Wars (1977) [id 1]" in memory and "Fargo (1996)" in memory and "no Horror" in memory
    assert "2. Galaxy Quest (1999) [id 6]" in memory
    assert messages[-1].content == "why the second one?"
    assert memory_text({}, ctx) == "The conversation remembers nothing yet."


def test_tool_results_reach_the_model_as_compact_text(ctx):
    result = recommend(ctx, liked=["Star Wars", "Zorblax 3000"], k=3)
    text = compact_result(result)
    assert "liked: Star Wars (1977) [id 1]" in text and "Zorblax 3000" in text
    assert text.count("\n") <= 6 and "{" not in text


# ----------------------------------------------------------------------------- plan


def test_without_a_chat_model_the_rule_planner_plans_and_says_why(deps):
    update = plan(turn("I loved Star Wars and Alien"), deps)
    assert update["planner"] == "rules" and update["llm_note"] == "no language model is configured"
    call = update["messages"][-1].tool_calls[0]
    assert call["name"] == "recommend" and call["args"]["liked"] == ["Star Wars", "Alien"]
    assert update["calls"] == [{"name": "recommend", "args": call["args"], "by": "rules", "valid": True}]


def test_an_unreadable_message_is_answered_directly(deps):
    assert "empty" in plan(turn("   "), deps)["direct"]


def test_an_attached_photo_makes_the_rule_planner_search_by_it(deps):
    update = rules_step(turn("what is this?", photo="aGVsbG8="), deps, "what is this?")
    assert [c["name"] for c in update["messages"][-1].tool_calls] == ["search_items"]
    assert update["messages"][-1].tool_calls[0]["args"] == {"by_photo": True}


def test_after_plan_runs_tools_only_when_the_step_called_some():
    assert after_plan({"messages": [AIMessage("", tool_calls=[{"name": "x", "args": {}, "id": "1"}])]}) == "tools"
    assert after_plan({"messages": [HumanMessage("thanks")]}) == "reply"


def after_tools(state: dict, deps: Deps) -> str:
    return check_step(state, deps)["route"]


def test_a_failed_model_call_gets_exactly_one_more_planning_step(deps):
    failed = {
        "planner": "model",
        "steps": 1,
        "messages": [
            HumanMessage("I loved Star Wars"),
            tool_message({"tool": "recommend", "items": []}, status="error"),
        ],
    }
    assert after_tools(failed, deps) == "plan"
    assert after_tools({**failed, "retries": 1}, deps) == "reply"  # retried once already
    assert after_tools({**failed, "planner": "rules"}, deps) == "reply"  # rules never re-plan
    ok = {
        **failed,
        "messages": [
            HumanMessage("I loved Star Wars"),
            tool_message({"tool": "recommend", "items": [{"item_id": "1", "title": "Star Wars (1977)"}]}),
        ],
    }
    assert after_tools(ok, deps) == "reply"
    always = Deps(deps.ctx, None, AgentSettings(replan="always", max_steps=2), deps.tools)
    assert after_tools(ok, always) == "plan" and after_tools({**ok, "steps": 2}, always) == "reply"


def test_items_that_break_the_stated_request_send_the_model_back_once_with_what_broke(deps, ctx):
    asked = HumanMessage("any comedies made before 1980?")
    result = {
        "tool": "recommend",
        "items": [ctx.card("6"), ctx.card("16")],
    }  # Galaxy Quest 1999, Young Frankenstein 1974
    state = {"planner": "model", "steps": 1, "messages": [asked, tool_message(result)]}
    update = check_step(state, deps)
    assert update["route"] == "plan" and update["checked"]
    assert (
        "Comedy, from 1979 or earlier" in update["check_note"]
        and "Galaxy Quest (1999) is from 1999" in update["check_note"]
    )
    assert check_step({**state, **update}, deps)["route"] == "reply"  # once: then the model's second answer stands
    # with the model's call in the transcript, the note writes the call that matches the message
    called = AIMessage(
        "", tool_calls=[{"name": "recommend", "args": {"genres": ["Comedy"], "released_after": 1980}, "id": "c1"}]
    )
    update = check_step({**state, "messages": [asked, called, tool_message(result)]}, deps)
    assert 'recommend(genres=["Comedy"], released_before=1980)' in update["check_note"]
    decade = HumanMessage("thrillers from the 1970s")
    called = AIMessage(
        "", tool_calls=[{"name": "recommend", "args": {"decade": "1970s", "same_decade_as": None}, "id": "c2"}]
    )
    update = check_step({**state, "messages": [decade, called, tool_message(result)]}, deps)
    assert 'recommend(genres=["Thriller"], decade="1970s")' in update["check_note"]
    fits = {**state, "messages": [asked, tool_message({"tool": "recommend", "items": [ctx.card("16")]})]}
    assert check_step(fits, deps)["route"] == "reply"


def test_an_empty_list_under_filters_nobody_asked_for_sends_the_model_back_once_naming_them(deps):
    """The 1.5B turned "made before 1980 that isn't a comedy" into Musical + the 1980s: nothing came back (here Horror)."""
    asked = HumanMessage("something made before 1980 that isn't a comedy")
    empty = {
        "tool": "recommend",
        "items": [],
        "request": {"genres": ["Horror"], "exclude_genres": ["Comedy"], "year_min": 1980, "year_max": 1979},
    }
    state = {"planner": "model", "steps": 1, "messages": [asked, tool_message(empty)]}
    update = check_step(state, deps)
    assert update["route"] == "plan" and update["checked"]
    assert "genres Horror" in update["check_note"] and "Comedy" not in update["check_note"]
    assert check_step({**state, **update}, deps)["route"] == "reply"  # once
    # filters the message or the conversation asked for: an empty list stands, the reply says so
    said = {**empty, "request": {"genres": ["Horror"], "year_max": 1979}}
    horror = HumanMessage("horror films made before 1980 please")
    assert check_step({**state, "messages": [horror, tool_message(said)]}, deps)["route"] == "reply"
    remembered = {**state, "preferences": {"genres": ["Horror"]}, "messages": [asked, tool_message(said)]}
    assert check_step(remembered, deps)["route"] == "reply"


def test_a_call_with_arguments_outside_the_schema_is_answered_with_a_sentence_not_an_exception(deps):
    from langgraph.graph import END, START, StateGraph

    from agent.graph import tools_node
    from agent.state import AgentState

    graph = StateGraph(AgentState)
    graph.add_node("tools", tools_node(deps))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = {"name": "recommend", "args": {"released_before": "long ago", "genres": ["Polka"]}, "id": "c1"}
    out = graph.compile().invoke({"messages": [HumanMessage("old polka films"), AIMessage("", tool_calls=[call])]})
    result = json.loads(out["messages"][-1].content)
    assert result["bad_arguments"] and "released_before" in result["error"] and "genres" in result["error"]
    assert "Error" not in result["error"] and "pydantic" not in result["error"]
    from agent.reply import rules_reply

    said = rules_reply([result])
    assert "released_before" not in said and "could not" in said


# ----------------------------------------------------------------------------- tools with memory


def test_recommend_keeps_memory_the_model_did_not_repeat(deps, ctx):
    """The bound tool adds the remembered likes and exclusions and leaves out the items shown last."""
    from langgraph.graph import END, START, StateGraph

    from agent.graph import tools_node
    from agent.state import AgentState

    graph = StateGraph(AgentState)
    graph.add_node("tools", tools_node(deps))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = {
        "name": "recommend",
        "args": {"exclude": ["Empire Strikes Back", "Casablanca"], "liked": ["Heat", "Fargo"], "genres": ["Sci-Fi"]},
        "id": "c1",
    }
    state = {
        "messages": [
            HumanMessage("I loved Heat but have seen The Empire Strikes Back"),
            AIMessage("", tool_calls=[call]),
        ],
        "history": ["1"],
        "excluded": ["3"],
        "candidates": [ctx.card("13")],
    }
    result = json.loads(graph.compile().invoke(state)["messages"][-1].content)
    ids = {c["item_id"] for c in result["items"]}
    assert [c["item_id"] for c in result["liked"]] == ["1", "10"]  # remembered like, and the new one the user wrote
    assert {c["item_id"] for c in result["seen"]} == {"3", "21"}  # remembered and new exclusions
    assert not ids & {"1", "3", "21", "13"} and len(ids) == 4  # nor the item shown last
    assert result["ignored"] == ["Fargo", "Casablanca"]  # titles the model wrote that no message named


def test_a_title_both_liked_and_excluded_is_excluded_and_a_copied_avoid_list_is_dropped(deps, ctx):
    from langgraph.graph import END, START, StateGraph

    from agent.graph import tools_node
    from agent.state import AgentState

    graph = StateGraph(AgentState)
    graph.add_node("tools", tools_node(deps))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = {
        "name": "recommend",
        "args": {
            "liked": ["Star Wars", "Empire Strikes Back"],
            "exclude": ["empire strikes back"],
            "genres": ["Comedy"],
            "exclude_genres": ["Comedy", "Horror"],
        },
        "id": "c1",
    }
    message = HumanMessage("I loved Star Wars and Empire Strikes Back, comedies please, no horror")
    out = graph.compile().invoke({"messages": [message, AIMessage("", tool_calls=[call])]})
    result = json.loads(out["messages"][-1].content)
    assert [c["title"] for c in result["liked"]] == ["Star Wars (1977)"]
    assert [c["title"] for c in result["seen"]] == ["Empire Strikes Back, The (1980)"]
    assert result["request"]["genres"] == ["Comedy"] and result["request"]["exclude_genres"] == ["Horror"]


def test_titles_written_with_an_id_resolve_by_the_pair_and_a_wrong_id_loses_to_the_title(ctx):
    assert ctx.titles.find("Alien (1979) [id 2]") == "2"
    assert ctx.titles.find("Empire Strikes Back (1980) [id 194]") == "21"  # no such id: the title decides
    assert ctx.titles.find("Fargo (1996) [id 2]") == "9"  # a real id of another item: the title decides


# ----------------------------------------------------------------------------- reply, guard, remember


def test_streamed_sentences_are_released_only_while_grounded(ctx):
    sent: list[str] = []
    text = release_checked(
        ["Try Spaceballs (1987) [id 4]. ", "Or The Godfather", " (1972). And more."], {"4"}, ctx, sent.append
    )
    assert sent == ["Try Spaceballs (1987) [id 4]."]  # the sentence naming an ungrounded item is held back
    assert text.endswith("And more.")


def test_the_reply_without_a_model_is_the_deterministic_one(deps, ctx):
    result = recommend(ctx, liked=["Alien"], k=2)
    state = {
        "messages": [
            HumanMessage("I loved Alien"),
            AIMessage("", tool_calls=[{"name": "recommend", "args": {}, "id": "c1"}]),
            tool_message(result),
        ],
        "planner": "rules",
    }
    draft = reply(state, deps)["draft"]
    assert draft["source"] == "rules" and "Alien (1979) [id 2]" in draft["text"] and len(draft["cards"]) == 2


def test_the_guard_replaces_a_model_reply_that_names_an_item_no_tool_returned(deps, ctx):
    result = recommend(ctx, liked=["Alien"], k=2)
    state = {
        "messages": [HumanMessage("I loved Alien"), tool_message(result)],
        "planner": "model",
        "draft": {
            "text": "You will love The Godfather (1972).",
            "fallback": "Here are my picks.",
            "source": "model",
            "cards": result["items"],
        },
    }
    out = guard(state, deps)
    message = out["messages"][-1]
    assert message.content.startswith("Here are my picks.") and message.additional_kwargs["source"] == "rules"
    assert out["guard_violations"] and message.additional_kwargs["planner"] == "model"


def test_remember_records_likes_exclusions_the_request_and_the_items_shown(deps, ctx):
    result = recommend(ctx, liked=["Alien"], genres=["Comedy"], k=2)
    result["seen"] = [{"item_id": "9", "title": "Fargo (1996)"}]
    shown = AIMessage("picks", additional_kwargs={"items": result["items"]})
    state = {"messages": [HumanMessage("x"), tool_message(result), shown], "planner": "model", "history": ["1"]}
    memory = remember(state, deps)
    assert memory["history"] == ["1", "2"] and memory["excluded"] == ["9"]
    assert memory["preferences"] == {"genres": ["Comedy"]}
    assert [c["item_id"] for c in memory["candidates"]] == [c["item_id"] for c in result["items"]]
    assert memory["photo"] is None  # a photo belongs to the message it came with


def test_a_list_number_is_not_the_end_of_a_sentence():
    text = "Two picks: 1. Alien (1979) [id 2] is scary. 2. Spaceballs is from 1987. 3."
    assert [text[:e] for e in sentence_ends(text)][-1].endswith("from 1987.")
    assert not any(text[:e].endswith((" 1.", " 2.", " 3.")) for e in sentence_ends(text))
