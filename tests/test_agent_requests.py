"""Requests as people say them: years, genres wanted and not, misspelt and partial titles, words that
are not titles, follow-ups, and replies that must not claim what their items break. Deterministic
parts only (the chat model's side is measured by bench/chat_requests.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from agent_catalog import agent_run, turn_after_tool

from agent.guard import claim_problems
from agent.lookup import TitleIndex
from agent.model_tools import with_memory
from agent.planner import stated_request, year_range
from agent.tools import AgentContext, recommend, search_items


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> AgentContext:
    return AgentContext.open(agent_run(tmp_path_factory))


@pytest.mark.parametrize(
    "message, expected",
    [
        ("any good musicals made before 1960?", (None, 1959)),
        ("older films please, nothing after 1965", (None, 1965)),
        ("horror movies made after 1990", (1991, None)),
        ("romantic comedies released since 1995", (1995, None)),
        ("I want a drama no older than 1994", (1994, None)),
        ("action films from 1993 onwards", (1993, None)),
        ("movies between 1980 and 1985", (1980, 1985)),
        ("only 1997 films please", (1997, 1997)),
        ("recommend me a horror film from the 80s", (1980, 1989)),
        ("something from the seventies", (1970, 1979)),
        ("películas de terror de los años 80", (1980, 1989)),
        ("Zeig mir Science-Fiction-Filme vor 1980", (None, 1979)),
        ("I loved Star Wars", (None, None)),
    ],
)
def test_year_bounds_are_read_the_way_people_state_them(message, expected):
    assert year_range(message) == expected


def test_genre_and_decade_words_are_never_looked_up_as_titles():
    items = pd.DataFrame(
        {"item_id": ["1", "2", "3"], "title": ["Family Thing, A (1996)", "Drama Queen (1990)", "Star Wars (1977)"]}
    )
    titles = TitleIndex.build(items, reserved={"drama", "family", "comedy", "comedies"})
    for words in ("Drama", "a family film", "1950s", "the 90s", "comedies", "good old dramas"):
        assert titles.find(words) is None, words
    assert titles.find("Drama Queen") == "2" and titles.find("Star Wars") == "3"


@pytest.mark.parametrize(
    "said, title",
    [
        ("Star Wors", "Star Wars (1977)"),  # a near-miss spelling
        ("the terminater", "Terminator, The (1984)"),
        ("Galaxy Qest", "Galaxy Quest (1999)"),
        ("When Harry Met Sally", "When Harry Met Sally... (1989)"),
        ("Back to the Future", "Back to the Future (1985)"),
    ],
)
def test_misspelt_and_partial_titles_resolve(ctx, said, title):
    assert ctx.titles.titles[ctx.titles.find(said)] == title


def test_names_far_from_every_title_stay_unknown(ctx):
    for name in ("Inception", "Zorblax 3000", "The Dark Knight"):
        assert ctx.titles.find(name) is None, name


def test_recommend_honours_years_decades_and_unwanted_genres(ctx):
    def years(result):
        return [ctx.item_year(c["item_id"]) for c in result["items"]]

    before = recommend(ctx, liked=["Star Wars"], released_before=1985, k=8)
    assert before["items"] and all(y < 1985 for y in years(before))
    decade = recommend(ctx, genres=["Comedy"], decade="1990s", k=8)
    assert decade["items"] and all(1990 <= y <= 1999 for y in years(decade))
    assert all("Comedy" in ctx.item_genres(c["item_id"]) for c in decade["items"])
    same = recommend(ctx, same_decade_as="Casablanca", k=8)  # 1942: the 1940s, Casablanca itself left out
    assert same["request"]["year_min"] == 1940 and all(c["title"] != "Casablanca (1942)" for c in same["items"])
    no_scifi = search_items(ctx, query="space adventure", exclude_genres=["Sci-Fi"], released_after=1980, k=8)
    assert all("Sci-Fi" not in ctx.item_genres(c["item_id"]) for c in no_scifi["items"])
    assert all(y > 1980 for y in years(no_scifi))


def test_a_request_nothing_fits_returns_no_items_and_says_what_was_asked(ctx):
    result = recommend(ctx, genres=["Animation"], released_before=1950)
    assert result["items"] == [] and result["note"] == "nothing in the catalog is Animation, from 1949 or earlier"


def test_year_arguments_that_exclude_each_other_are_an_error_naming_them(ctx):
    """The 1.5B wrote "the same decade as Alien" as decade=1980s and same_decade_as=Alien: no year
    fits both, which used to read "nothing is from 1980 to 1979"; now the model is told and re-plans."""
    from agent.tools import run_tool

    result = run_tool(ctx, "recommend", {"decade": "1980s", "same_decade_as": "Alien"})
    assert result["items"] == []
    assert "decade=1980s" in result["error"] and "same_decade_as (the 1970s)" in result["error"]
    fits = run_tool(ctx, "recommend", {"decade": "1970s", "same_decade_as": "Alien"})
    assert not fits.get("error")


def test_a_title_the_user_misspelt_and_the_model_corrected_counts_as_said(ctx):
    from langchain_core.messages import HumanMessage

    from agent.model_tools import said_by_user

    state = {"messages": [HumanMessage("I loved Star Wors and men in blak, and Heet")]}
    kept, invented = said_by_user(ctx, state, ["Star Wars", "Men in Black", "Heat", "Aliens"])
    assert kept == ["Star Wars", "Men in Black"]  # Heat is too short to match by spelling; Aliens was never said
    assert invented == ["Heat", "Aliens"]


def test_arguments_the_user_never_gave_are_sent_back_not_used():
    """The 1.5B copied the planner's examples: `same_decade_as="<A>"` and user 42 for "only recent stuff"."""
    from langchain_core.messages import HumanMessage

    from agent.model_tools import placeholder_error, user_said

    assert "placeholder" in placeholder_error("recommend", {"same_decade_as": "<A>", "genres": ["Crime"]})["error"]
    assert placeholder_error("recommend", {"liked": ["Star Wars", "<B>"]})
    assert placeholder_error("recommend", {"liked": ["Star Wars"], "genres": ["Crime"]}) is None
    state = {"messages": [HumanMessage("only recent stuff, after 1996")]}
    assert not user_said(state, "42") and not user_said(state, "199")
    assert user_said({"messages": [HumanMessage("I'm user 42, what next?")]}, "42")
    assert user_said({**state, "user_id": "42"}, "42")  # said in an earlier turn


def test_a_negation_covers_every_genre_joined_by_or(ctx):
    from agent.planner import genre_mentions

    wanted, avoided = genre_mentions("light films, not dramas or thrillers", ctx.genres)
    assert wanted == [] and sorted(avoided) == ["Drama", "Thriller"]
    assert genre_mentions("a comedy or a drama, no horror", ctx.genres) == (["Comedy", "Drama"], ["Horror"])


def test_genre_words_given_as_liked_titles_are_not_reported_missing(ctx):
    result = recommend(ctx, liked=["Alien", "Drama", "the 1950s"], k=3)
    assert [c["title"] for c in result["liked"]] == ["Alien (1979)"] and result["unknown"] == []


def test_a_follow_up_keeps_the_remembered_wishes_it_does_not_replace():
    state = {"preferences": {"genres": ["Drama"], "exclude_genres": ["Horror"], "year_min": 1950, "year_max": 1959}}
    assert with_memory({"decade": "1960s"}, state) == {
        "decade": "1960s",
        "genres": ["Drama"],
        "exclude_genres": ["Horror"],
    }
    replaced = with_memory({"genres": ["Horror", "Comedy"]}, state)
    assert replaced == {"genres": ["Horror", "Comedy"], "released_after": 1949, "released_before": 1960}
    swapped = with_memory({"exclude_genres": ["Drama"]}, state)
    assert "genres" not in swapped and swapped["exclude_genres"] == ["Horror", "Drama"]


def test_the_stated_request_is_read_from_the_message(ctx):
    stated = stated_request("a thriller that isn't horror, made before 1990", ctx)
    assert (stated.genres, stated.exclude_genres, stated.year_min, stated.year_max) == (
        ["Thriller"],
        ["Horror"],
        None,
        1989,
    )


def test_a_reply_claiming_years_or_genres_its_items_break_is_caught(ctx):
    cards = [ctx.card("6"), ctx.card("5")]  # Galaxy Quest (1999) and Men in Black (1997): comedies, sci-fi
    assert claim_problems("Here are two musicals made before 1960: Galaxy Quest and Men in Black.", cards, [], ctx)
    assert claim_problems("Both are from the 1980s.", cards, [], ctx)
    assert claim_problems("No sci-fi here: Galaxy Quest (1999) and Men in Black (1997).", cards, [], ctx)
    fine = "Two sci-fi comedies from the 1990s: Galaxy Quest (1999) [id 6] and Men in Black (1997) [id 5]."
    assert claim_problems(fine, cards, [], ctx) == []
    liked = [{"tool": "recommend", "liked": [{"item_id": "18", "title": "Shining, The (1980)"}]}]
    assert claim_problems("Since you liked a horror film, try Galaxy Quest.", cards, liked, ctx) == []


def test_a_genre_said_of_one_named_item_is_checked_against_that_item_only(ctx):
    # Star Wars (1977): Action, Adventure, Sci-Fi; Spaceballs (1987): Comedy, Sci-Fi; Alien (1979): Horror, Sci-Fi, Thriller
    cards = [ctx.card("1"), ctx.card("4"), ctx.card("2")]
    fine = (
        "Star Wars (1977) [id 1] is an action adventure in space, Spaceballs (1987) is a comedy that "
        "parodies it, and Alien (1979) is a horror thriller. It was made in the 1970s."
    )
    assert claim_problems(fine, cards, [], ctx) == []
    assert claim_problems("Spaceballs (1987) is a horror classic.", cards, [], ctx)  # Spaceballs is no horror
    assert claim_problems("Alien (1979) is a thriller. It is from the 1980s.", cards, [], ctx)  # "it": Alien, 1979
    # a lead-in before the named items is said of all of them, and a sentence naming none of the whole list
    assert claim_problems("Three comedies for you: Star Wars, Spaceballs and Alien.", cards, [], ctx)
    assert claim_problems("All of these are sci-fi comedies.", cards, [], ctx)
    assert claim_problems("These are all sci-fi films from 1977 to 1987.", cards, [], ctx) == []
    # words after the last named item that speak of the list are said of every item named
    assert claim_problems(
        "Try Star Wars (1977), Alien (1979) or Spaceballs (1987) for a laugh-out-loud comedy.", cards, [], ctx
    )
    assert claim_problems("Try Star Wars (1977), Alien (1979) or Spaceballs (1987), all sci-fi.", cards, [], ctx) == []
    assert claim_problems(
        "Star Wars, Alien and Spaceballs from the same decade as Jaws, but not a comedy.", cards, [], ctx
    )
    assert claim_problems("Star Wars (1977) and Alien (1979), both from the 1970s.", cards, [], ctx) == []


def test_the_graph_answers_a_decade_request_without_a_model_within_the_decade(ctx, tmp_path):
    from agent.session import Agent

    with Agent(ctx, None, tmp_path / "chat.sqlite") as agent:
        answer = agent.ask("t", "recommend me a comedy from the 80s")
        assert answer.items and all(1980 <= ctx.item_year(i["item_id"]) <= 1989 for i in answer.items)
        later = agent.ask("t", "actually, make it the 1990s")
        assert later.items and all(1990 <= ctx.item_year(i["item_id"]) <= 1999 for i in later.items)
        assert all("Comedy" in ctx.item_genres(i["item_id"]) for i in later.items)


def test_a_claim_problem_names_the_item_its_year_and_genres(ctx):
    cards = [ctx.card("4")]  # Spaceballs (1987): Comedy, Sci-Fi
    [problem] = claim_problems("Spaceballs (1987) [id 4] is a horror classic.", cards, [], ctx)
    assert "Spaceballs (1987)" in problem and "Comedy" in problem and "Horror" in problem


def test_a_streamed_sentence_with_a_false_claim_is_held_back(ctx):
    from agent.graph import release_checked

    cards, sent = [ctx.card("4"), ctx.card("2")], []
    text = release_checked(
        ["Alien (1979) [id 2] is a sci-fi thriller. ", "Spaceballs (1987) [id 4] is a horror classic. ", "Enjoy!"],
        {"2", "4"},
        ctx,
        sent.append,
        claims=lambda said: claim_problems(said, cards, [], ctx),
    )
    assert sent == ["Alien (1979) [id 2] is a sci-fi thriller."] and text.endswith("Enjoy!")


def test_the_guard_sends_a_false_reply_back_once_then_replaces_it(ctx):
    """The model keeps deciding: a reply stating what its items break goes back to the model, told
    why; only a rewrite that fails too is replaced by the deterministic reply."""
    from agent.graph import AgentSettings, Deps, after_guard, guard
    from agent.llm import ChatLLM
    from agent.tools import recommend

    result = recommend(ctx, liked=["Alien"], k=2)
    first = result["items"][0]
    chat = ChatLLM("http://127.0.0.1:9/v1", timeout_s=1)  # a configured model; the guard itself calls none
    draft = {
        "text": f"{first['title']} [id {first['item_id']}] is a musical made before 1930.",
        "fallback": "Here are my picks.",
        "source": "model",
        "cards": result["items"],
    }
    state = turn_after_tool("I loved Alien", result, draft=draft)
    deps = Deps(ctx, chat, AgentSettings(k=2))
    sent_back = guard(state, deps)
    assert sent_back["rewritten"] and "1930" in sent_back["rewrite"] and first["title"] in sent_back["rewrite"]
    assert after_guard(sent_back) == "reply" and "messages" not in sent_back  # nothing reached the user yet
    final = guard({**state, **sent_back}, deps)  # the rewrite broke the request too
    message = final["messages"][-1]
    assert message.content.startswith("Here are my picks.") and message.additional_kwargs["source"] == "rules"
    assert after_guard(final) == "remember"
    assert final["guard_violations"] == sent_back["guard_violations"] * 2  # both drafts' problems are kept


def test_a_reply_may_name_the_titles_the_user_ruled_out_but_never_shows_them_as_picks(ctx):
    """ "Like Star Wars but not Alien": the reply may say "unlike Alien"; Alien is no card, and the
    deterministic reply names it in full instead of redacting it."""
    from agent.graph import AgentSettings, Deps, guard

    result = recommend(ctx, liked=["Star Wars"], exclude=["Alien"], k=2)
    assert [c["title"] for c in result["seen"]] == ["Alien (1979)"] and "2" not in {
        c["item_id"] for c in result["items"]
    }
    first = result["items"][0]
    draft = {
        "text": f"Instead of Alien (1979), try {first['title']} [id {first['item_id']}].",
        "fallback": "unused",
        "source": "model",
        "cards": result["items"],
    }
    state = turn_after_tool("like Star Wars but not Alien, seen it", result, draft=draft)
    out = guard(state, Deps(ctx, None, AgentSettings(k=2)))
    message = out["messages"][-1]
    assert out["guard_violations"] == [] and "Alien (1979)" in message.content
    assert "2" not in {c["item_id"] for c in message.additional_kwargs["items"]}


def test_the_sentence_genrec_appends_about_unknown_titles_is_not_read_as_the_models_claim(ctx):
    from agent.graph import reply_problems
    from agent.reply import unknown_sentence

    cards = [ctx.card("6"), ctx.card("5")]  # two comedies
    said = "Try Galaxy Quest (1999) [id 6] or Men in Black (1997) [id 5]."
    draft = {"text": f"{said}\n\n{unknown_sentence(['Comedy'])}", "model_text": said, "cards": cards}
    assert reply_problems(draft["text"], draft, {"6", "5"}, [], ctx) == []  # "could not find Comedy" is ours
