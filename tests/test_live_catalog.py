"""A live catalog: items added to and retired from a trained run, without retraining or restarting.

The run is the evaluation workbench's trained slice of MovieLens-100K (`eval_run.trained_eval_run`:
150 movies indexed with MiniLM into Chroma, residual k-means semantic IDs, a tiny scratch model
and SASRec); the items added are real MovieLens-100K movies outside that slice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from eval_run import trained_eval_run

from genrec.errors import GenrecError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_eval_run(tmp_path_factory)


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run (adding items changes it)."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def new_movies(run: Path, n: int = 5) -> list[dict]:
    """Real MovieLens-100K movies that are not in the run's catalog, as JSONL catalog objects."""
    from retrieval.datasets import bundled_ml100k
    from retrieval.loaders import load_recbole

    full = load_recbole(bundled_ml100k()).items
    known = set(pd.read_parquet(run / "items.parquet")["item_id"])
    rest = full[~full["item_id"].isin(known)].head(n)
    return [{"id": r.item_id, "title": r.title, "attributes": json.loads(r.attributes)} for r in rest.itertuples()]


def write_jsonl(path: Path, objects: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


def snapshot(run: Path) -> dict[str, str]:
    """Hashes of every file of the run but Chroma's own (whose strays no reader returns) and the lock."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and "chroma" not in p.relative_to(run).parts and p.name != ".catalog.lock"
    }


def chroma_ids(run: Path) -> set[str]:
    from genrec.run import open_run
    from retrieval.store import open_store

    paths, config = open_run(run)
    return set(open_store(paths, config.chroma).text.get(include=[])["ids"])


def test_an_added_item_gets_an_unused_code_of_trained_tokens_and_is_recommendable_at_once(run, tmp_path):
    from genrec.run import RunPaths
    from inference.recommend import RunRecommender
    from retrieval.live import add_items, catalog_state
    from retrieval.search import Searcher
    from retrieval.semantic_ids import load_semantic_ids

    base = load_semantic_ids(RunPaths(run))
    recommender = RunRecommender(run)  # opened before the add, as a running server is
    searcher = Searcher.open(run)
    movies = new_movies(run)
    report = add_items(run, write_jsonl(tmp_path / "new.jsonl", movies))
    done = time.perf_counter()

    new_ids = [m["id"] for m in movies]
    assert list(report.items) == new_ids and report.version == 1
    taken = {tuple(c) for c in base.values()}
    for code in report.items.values():
        assert tuple(code) not in taken  # unique, never an indexed item's code
        taken.add(tuple(code))
        for level, c in enumerate(code):  # only codes the trained model has tokens for
            assert c in {v[level] for v in base.values()}
    state = catalog_state(RunPaths(run))
    assert state.version == 1 and set(new_ids) <= state.active and state.codes[new_ids[0]] == report.items[new_ids[0]]

    # recommendable by the server opened before the add, without a restart, within 5 s
    history = recommender.history(next(iter(recommender.histories)))
    recs = recommender.recommend(history=history, k=5, where={"title": movies[0]["title"]})
    assert [r.item_id for r in recs] == [new_ids[0]] and recs[0].title == movies[0]["title"]
    assert time.perf_counter() - done < 5.0
    ranked = recommender.ranker.rank([history], 200, exclude=[set(history)])[0]
    assert {i for i, _ in ranked} & set(new_ids)  # the cold items join the candidates of the served ranking
    assert {i for i, _ in ranked} <= state.active
    # the beams can reach them: they are in the trie every decoding path uses
    trie = recommender.ranker.current().generator.trie
    assert all(tuple(report.items[i]) in trie for i in new_ids)
    # and search finds them (the searcher too was opened before the add)
    assert searcher.search(movies[0]["title"], k=3)[0].item_id == new_ids[0]


def test_the_vllm_servers_trie_follows_the_catalog_without_a_restart(run, tmp_path):
    from retrieval.live import add_items, retire_items
    from serving.trie_search import narrowed, run_trie

    before = run_trie(str(run))
    movies = new_movies(run, 2)
    report = add_items(run, write_jsonl(tmp_path / "new.jsonl", movies))
    after = run_trie(str(run))
    assert all(i not in before.code_of for i in report.items) and all(
        after.code_of[i] == tuple(report.items[i]) for i in report.items
    )
    # token ids for the new codes come from the base model's tokenizer, as the server needs them
    assert all(len(after.tokens_of(i)) == after.depth for i in report.items)
    retire_items(run, [movies[0]["id"]])
    assert movies[0]["id"] not in run_trie(str(run)).code_of
    assert narrowed(run_trie(str(run)), [], None) is None


def test_a_bad_row_is_one_line_naming_file_line_and_field_and_nothing_is_written(run, tmp_path):
    from retrieval.live import add_items

    movies = new_movies(run, 3)
    before, ids_before = snapshot(run), chroma_ids(run)
    no_title = write_jsonl(tmp_path / "bad.jsonl", [movies[0], {"id": movies[1]["id"], "title": ""}, movies[2]])
    with pytest.raises(GenrecError, match=r"bad\.jsonl:2: title: .* has no title"):
        add_items(run, no_title)
    known = pd.read_parquet(run / "items.parquet")["item_id"].iloc[0]
    taken = write_jsonl(tmp_path / "taken.jsonl", [movies[0], {"id": known, "title": "A new film"}])
    with pytest.raises(GenrecError, match=rf"taken\.jsonl:2: id: '{known}' is already in the catalog"):
        add_items(run, taken)
    bad_attrs = tmp_path / "attrs.jsonl"
    bad_attrs.write_text(json.dumps(movies[0]) + "\n" + '{"id": "x9", "title": "X", "attributes": [1]}\n')
    with pytest.raises(GenrecError, match=r"attrs\.jsonl:2: 'attributes' must be a JSON object"):
        add_items(run, bad_attrs)
    assert snapshot(run) == before  # three rejected batches: not even a cache written
    bad_image = write_jsonl(tmp_path / "image.jsonl", [{**movies[0], "image": "no-such-photo.jpg"}])
    add_items(run, bad_image)  # this run has no image space: an image is stored, never encoded
    with pytest.raises(GenrecError, match="no such file"):
        add_items(run, tmp_path / "missing.jsonl")
    after = snapshot(run)
    # the four failed adds wrote nothing; the one good add wrote the catalog and the run's first add
    # keeps the indexed items' collaborative vectors for the next ones
    good = {"catalog.live.json", "embeddings/collaborative.npy", "embeddings/collaborative.json"}
    assert {k: v for k, v in after.items() if k not in good} == before
    assert chroma_ids(run) == ids_before | {movies[0]["id"]}


def test_a_command_line_add_prints_codes_and_a_bad_file_exits_2_with_one_line(run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    good = write_jsonl(tmp_path / "new.jsonl", new_movies(run, 2))
    ok = subprocess.run(
        [sys.executable, "-m", "app", "items", "add", str(good), "--run", str(run)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.strip().splitlines()) == 2 and "<a_" in ok.stdout and "catalog version 1" in ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "app", "items", "retire", "no-such-item", "--run", str(run)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: retire: unknown item id 'no-such-item'; nothing was retired"
    )


def test_retired_items_leave_every_path_and_their_ids_and_codes_stay_reserved(run, tmp_path):
    from agent.tools import AgentContext, recommend, search_items
    from genrec.run import RunPaths
    from inference.ranker import open_ranker
    from retrieval.live import add_items, catalog_state, retire_items

    ranker = open_ranker(run)[0]
    ctx = AgentContext.open(run, ranker=ranker)
    users = ctx.interactions.groupby("user_id")["item_id"].apply(list)
    histories = [list(h) for h in users.iloc[:12]]
    first = ranker.rank(histories, 10, exclude=[set(h) for h in histories])
    popular = pd.Series([i for row in first for i, _ in row]).value_counts().index[:3].tolist()
    title = ctx.titles.titles[popular[0]]
    assert any(h.item_id == popular[0] for h in ctx.searcher.search(title, k=3))

    fresh, version = retire_items(run, popular)
    assert fresh == popular and version == 1
    again = ranker.rank(histories, 10, exclude=[set(h) for h in histories])
    assert not {i for row in again for i, _ in row} & set(popular)
    assert not any(h.item_id in popular for h in ctx.searcher.search(title, k=10))
    tool = recommend(ctx, liked=[ctx.titles.titles[h] for h in histories[0][:3]], k=20)
    assert tool["items"] and not {i["item_id"] for i in tool["items"]} & set(popular)
    assert not {i["item_id"] for i in search_items(ctx, query=title, k=10)["items"]} & set(popular)
    assert not chroma_ids(run) & set(popular)
    # a history that names a retired item still reads it (its code stays known to the prompts)
    assert ranker.rank([[popular[0]]], 5)[0]
    # its id cannot come back, and its code is never given to a new item
    state = catalog_state(RunPaths(run))
    reserved = {tuple(state.codes[i]) for i in popular}
    with pytest.raises(GenrecError, match="retired item's id: ids are never reused"):
        add_items(run, write_jsonl(tmp_path / "back.jsonl", [{"id": popular[0], "title": "Back again"}]))
    report = add_items(run, write_jsonl(tmp_path / "new.jsonl", new_movies(run, 5)))
    assert not {tuple(c) for c in report.items.values()} & reserved


def test_a_run_indexed_before_quantisers_were_saved_trains_it_again_and_checks_it(run, tmp_path):
    from retrieval.live import add_items
    from retrieval.semantic_ids.quantizer import QUANTIZER_FILE

    saved = run / QUANTIZER_FILE
    kept = saved.read_bytes()
    first = add_items(run, write_jsonl(tmp_path / "a.jsonl", new_movies(run, 3)))
    saved.unlink()
    (run / "catalog.live.json").unlink()  # the same catalog, coded again by a retrained quantiser
    again = add_items(run, write_jsonl(tmp_path / "a.jsonl", new_movies(run, 3)))
    assert again.items == first.items and saved.exists()
    import numpy as np

    with np.load(saved) as a, np.load(__import__("io").BytesIO(kept)) as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)

    # codes the quantiser cannot reproduce (another library, other vectors): refused, never guessed
    saved.unlink()
    codes = json.loads((run / "semantic_ids.json").read_text())
    a, b = list(codes)[:2]
    codes[a], codes[b] = codes[b], codes[a]
    (run / "semantic_ids.json").write_text(json.dumps(codes))
    with pytest.raises(GenrecError, match="gives other codes for 2 items"):
        add_items(run, write_jsonl(tmp_path / "b.jsonl", new_movies(run, 4)[3:]))


def test_without_cold_or_retired_items_the_served_ranking_is_unchanged(run, tmp_path):
    """The live catalog wraps the one ranking function; a run whose catalog never changed ranks
    with exactly the ranker `genrec train` validated, to the last bit."""
    from genrec.run import RunPaths
    from inference.decoding.local import load_local_generator
    from inference.dense import load_dense
    from inference.ranker import open_ranker
    from inference.ranking import Fusion, Ranker
    from retrieval.semantic_ids import load_semantic_ids

    paths = RunPaths(run)
    live = open_ranker(run)[0]
    plain = Ranker(
        load_local_generator(paths, load_semantic_ids(paths), beam_width=live.generator.beam_width),
        load_dense(paths.dense),
        Fusion.from_json(json.loads(paths.ranking.read_text())),
    )
    users = pd.read_parquet(run / "interactions.parquet").groupby("user_id")["item_id"].apply(list)
    histories = [list(h) for h in users.iloc[:20]]
    exclude = [set(h) for h in histories]
    assert live.current() is live.base and live.base.cold is None and not live.base.retired
    assert live.rank(histories, 20, exclude=exclude) == plain.rank(histories, 20, exclude=exclude)
    # once items are added, warm candidates keep their scores: cold items only join the list
    from retrieval.live import add_items

    add_items(run, write_jsonl(tmp_path / "new.jsonl", new_movies(run, 3)))
    fresh = live.current()
    assert fresh is not live.base and fresh.cold is not None
    before = plain.candidates(histories[:4], exclude=exclude[:4])
    after = fresh.candidates(histories[:4], exclude=exclude[:4])
    for b, a in zip(before, after):
        warm = {i: (g, d) for i, g, d in zip(b.items, b.generated, b.dense)}
        for i, g, d in zip(a.items, a.generated, a.dense):
            if i in warm:
                assert (g, d) == warm[i] or (pd.isna(g) and pd.isna(warm[i][0]) and d == warm[i][1])


def relisted_movies(run: Path, n: int) -> tuple[list[str], list[dict]]:
    """The run's `n` most-rated movies and copies of them under new ids: the same title, text and
    attributes, as a shop re-lists a product."""
    items = pd.read_parquet(run / "items.parquet").set_index("item_id")
    top = pd.read_parquet(run / "interactions.parquet")["item_id"].value_counts().index[:n].tolist()
    copies = [
        {"id": f"copy-{i}", "title": items.loc[i, "title"], "text": items.loc[i, "text"],
         "attributes": json.loads(items.loc[i, "attributes"])}
        for i in top
    ]  # fmt: skip
    return top, copies


def test_a_cold_item_is_scored_by_the_dense_model_through_its_nearest_items_in_content(run, tmp_path):
    """A cold item's stand-in dense score is the dense model's own score of the items nearest to it
    in content: with one neighbour, a re-listed copy of a movie scores, user by user, exactly what
    the dense model gives the movie itself (the scale of every other dense score, not a cosine)."""
    import numpy as np

    from genrec.run import RunPaths
    from inference.ranker import open_ranker
    from retrieval.live import add_items

    paths = RunPaths(run)
    fusion = json.loads(paths.ranking.read_text())
    paths.ranking.write_text(json.dumps({**fusion, "cold_neighbours": 1}))
    originals, copies = relisted_movies(run, 3)
    add_items(run, write_jsonl(tmp_path / "copies.jsonl", copies))
    ranker = open_ranker(run)[0].current()
    assert ranker.hybrid and ranker.cold is not None and ranker.cold.ids == [c["id"] for c in copies]
    users = pd.read_parquet(run / "interactions.parquet").groupby("user_id")["item_id"].apply(list)
    histories = [[i for i in h if i not in originals] for h in users.iloc[:20]]
    dense = np.asarray(ranker.dense.scores(histories))
    column = {item: j for j, item in enumerate(ranker.dense.item_ids)}
    for row, c in enumerate(ranker.candidates(histories, exclude=[set(h) for h in histories])):
        for original, copy in zip(originals, copies):
            j = c.items.index(copy["id"])  # three cold items: each is a candidate of every user
            assert np.isnan(c.dense[j]) and np.isclose(c.cold[j], dense[row, column[original]], atol=1e-4)


def test_beams_reach_cold_items_only_where_validation_chose_to_let_them(run, tmp_path):
    """Beams may reach added items (their IDs are in the trie); with `cold_beams` off (a validation
    choice) they keep every place for warm items and cold items join by their stand-in alone."""
    from dataclasses import replace

    import numpy as np

    from inference.ranker import open_ranker
    from retrieval.live import add_items

    report = add_items(run, write_jsonl(tmp_path / "new.jsonl", new_movies(run, 10)))
    ranker = open_ranker(run)[0].current()
    users = pd.read_parquet(run / "interactions.parquet").groupby("user_id")["item_id"].apply(list)
    histories = [list(h) for h in users]
    exclude = [set(h) for h in histories]

    def reached(r):
        return {
            i for c in r.candidates(histories, exclude=exclude) for i, g in zip(c.items, c.generated) if not np.isnan(g)
        }

    assert reached(ranker) & set(report.items)
    closed = replace(ranker, fusion=replace(ranker.fusion, cold_beams=False))
    assert not reached(closed) & set(report.items)
    assert all(set(c.items) & set(report.items) for c in closed.candidates(histories[:5], exclude=exclude[:5]))


def test_a_new_item_borrows_the_collaborative_part_of_its_content_neighbours_and_lands_near_its_kind(run):
    """No one has interacted with a new item, so the collaborative part of its quantiser input is
    borrowed from the indexed items nearest in content: each indexed movie presented as new (its
    content only) then gets its own first-level code more often than with zeros there, and its first
    choices are prefixes the model has learned (so its beams can reach it)."""
    import numpy as np

    from genrec.run import open_run
    from retrieval.live import (
        allowed_codes,
        base_content,
        borrowed_collaborative,
        catalog_state,
        quantizer_input,
        run_quantizer,
    )

    paths, config = open_run(run)
    state = catalog_state(paths)
    quantizer = run_quantizer(paths, config, state)
    content = base_content(paths, config)
    own = np.array([state.codes[i] for i in pd.read_parquet(paths.items)["item_id"]])
    levels = config.semantic_ids.levels
    learned = np.unique(own[:, :levels], axis=0)
    agree = {}
    for name, part in (("zeros", None), ("borrowed", borrowed_collaborative(content, paths, config))):
        x = quantizer_input(content, quantizer, config, "fused", part)
        greedy = quantizer.choices(x, allowed_codes(own, levels))
        agree[name] = np.mean([c[0][0] == o[0] for c, o in zip(greedy, own)])
        nearest = quantizer.nearest_prefixes(x, learned, n=4)
        assert all(len(c) == 4 and all(p in {tuple(r) for r in learned} for p in c) for c in nearest)
    assert agree["borrowed"] > agree["zeros"] + 0.05, agree
    # the indexed items' collaborative part is computed once per run and read back by the next add
    kept = paths.embeddings / "collaborative.npy"
    assert kept.exists()
    before = kept.stat().st_mtime_ns
    assert np.array_equal(borrowed_collaborative(content, paths, config), part)
    assert kept.stat().st_mtime_ns == before


def test_sixteen_concurrent_recommendations_during_an_add_see_the_old_or_the_new_catalog(run, tmp_path):
    from genrec.run import RunPaths
    from inference.recommend import RunRecommender
    from retrieval.live import add_items, catalog_state

    recommender = RunRecommender(run)
    old = catalog_state(RunPaths(run)).active
    movies = new_movies(run, 5)
    new = {m["id"] for m in movies}
    users = list(recommender.histories)[:16]
    errors: list[BaseException] = []
    seen: list[set[str]] = []
    added = threading.Event()
    stop = time.perf_counter() + 120

    def client(user: str) -> None:
        try:
            while time.perf_counter() < stop:
                ranked = recommender.ranker.rank([recommender.history(user)], 200)[0]
                seen.append({i for i, _ in ranked})
                if added.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - any failure of a concurrent call fails the test
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(u,)) for u in users]
    for t in threads:
        t.start()
    add_items(run, write_jsonl(tmp_path / "new.jsonl", movies))
    added.set()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[0]
    assert len(seen) >= 16
    for items in seen:
        assert items <= old | new  # never an item outside the catalog of the moment
    # and after the add returned, the next request ranks the new catalog
    assert {i for i, _ in recommender.ranker.rank([recommender.history(users[0])], 200)[0]} & new


def test_an_add_killed_midway_leaves_the_run_exactly_as_before(run, tmp_path):
    """`genrec items add` in a real process, killed with SIGKILL at points spread over its run time:
    each time the run is as before (every file but Chroma's byte for byte, and no reader sees an
    item of the add) or the add is complete. The next add then cleans Chroma up."""
    from genrec.run import RunPaths
    from retrieval.live import add_items, catalog_state
    from retrieval.search import Searcher

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    movies = new_movies(run, 6)
    batch = write_jsonl(tmp_path / "new.jsonl", movies[:5])
    cmd = [sys.executable, "-m", "app", "items", "add", str(batch), "--run", str(run)]
    rehearsal = Path(shutil.copytree(run, tmp_path / "rehearsal"))
    t = time.perf_counter()
    subprocess.run([*cmd[:-1], str(rehearsal)], check=True, capture_output=True, env=env)
    duration = time.perf_counter() - t

    before = snapshot(run)
    outcomes = []
    for fraction in (0.6, 0.85, 0.95, 0.99):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(duration * fraction)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = catalog_state(RunPaths(run))
        if state.version == 0:
            assert snapshot(run) == before
            hits = Searcher.open(run).search(movies[0]["title"], k=5)
            assert movies[0]["id"] not in {h.item_id for h in hits}
            outcomes.append("before")
        else:  # the kill came after the commit: the whole add is there
            assert {m["id"] for m in movies[:5]} <= state.active
            outcomes.append("after")
            break
    assert "before" in outcomes
    add_items(run, write_jsonl(tmp_path / "one.jsonl", movies[5:]))
    state = catalog_state(RunPaths(run))
    assert chroma_ids(run) == set(state.active)


def test_items_are_added_and_retired_over_http_only_with_an_api_key(run):
    from fastapi.testclient import TestClient

    from agent.http_api import create_app
    from agent.session import Agent
    from agent.tools import AgentContext
    from inference.ranker import run_ranker

    movies = new_movies(run, 2)
    agent = Agent(AgentContext.open(run, ranker=run_ranker(run)), None, run / "chat.sqlite")
    try:
        open_api = TestClient(create_app(agent))
        assert open_api.post("/items", json={"items": movies}).status_code == 403
        api = TestClient(create_app(agent, ["k1"]))
        assert api.post("/items", json={"items": movies}).status_code == 401
        key = {"Authorization": "Bearer k1"}
        bad = api.post("/items", json={"items": [movies[0], {"id": "z1"}]}, headers=key)
        assert (
            bad.status_code == 400
            and bad.json()["error"] == "items:2: title: item 'z1' has no title; every item needs one"
        )
        ok = api.post("/items", json={"items": movies}, headers=key)
        assert ok.status_code == 200 and set(ok.json()["added"]) == {m["id"] for m in movies}
        found = agent.ctx.searcher.search(movies[1]["title"], k=1)
        assert found[0].item_id == movies[1]["id"]
        gone = api.post("/items/retire", json={"ids": [movies[1]["id"]]}, headers=key)
        assert gone.status_code == 200 and gone.json() == {"retired": [movies[1]["id"]], "version": 2}
        assert agent.ctx.searcher.search(movies[1]["title"], k=1)[0].item_id != movies[1]["id"]
    finally:
        agent.close()


def test_the_cold_slice_holds_items_out_of_every_training_input_and_scores_all_models_on_the_same_users(
    trained, tmp_path
):
    """`genrec eval offline --cold-items`: a copy trained without a seeded 10% of the items, those items
    added back by `genrec items add`, every model scored on the original test users, split in slices."""
    from eval.cold import evaluate_cold, sample_cold

    run = Path(shutil.copytree(trained, tmp_path / "run"))
    report = evaluate_cold(run, 0.1, seed=3, progress=False)
    cold = set(json.loads((tmp_path / "run-cold0.1-s3" / "cold.json").read_text())["cold"])
    items = pd.read_parquet(run / "items.parquet")["item_id"].tolist()
    assert cold == set(sample_cold(items, 0.1, 3)) and len(cold) == 15
    copy = tmp_path / "run-cold0.1-s3"
    # no training input of the copy names a cold item: catalog, interactions, semantic IDs, dense model
    assert not cold & set(pd.read_parquet(copy / "items.parquet")["item_id"])
    assert not cold & set(pd.read_parquet(copy / "interactions.parquet")["item_id"])
    assert not cold & set(json.loads((copy / "semantic_ids.json").read_text()))
    assert not cold & set(json.loads((copy / "dense" / "config.json").read_text())["item_ids"])
    # ... and the cold items were then added to it as new items
    live = json.loads((copy / "catalog.live.json").read_text())
    assert {a["item_id"] for a in live["added"]} == cold
    models = report["models"]
    assert set(models) == {"genrec", "genrec-gen", "sasrec", "content", "popularity", "genrec-all-items"}
    users = {m["cold"]["users"] + m["warm"]["users"] for m in models.values()}
    assert users == {models["genrec"]["all"]["users"]}  # the same users for every model
    assert models["genrec"]["cold"]["users"] >= 1
    for name in ("sasrec", "popularity"):  # models that cannot rank an item they never saw
        assert models[name]["cold"]["recall@10"] == 0.0
    assert json.loads((copy / "eval" / "cold.json").read_text())["models"] == models


def test_the_cold_copys_dense_model_gets_the_epochs_of_the_runs_own_when_minutes_cut_it(run):
    """A wall-clock cap buys different epochs on a machine whose load differs, so a copy trained
    without the cold items gets as many dense epochs as the run's own dense model had when its
    `max_minutes` ended it, and keeps the run's schedule otherwise."""
    from eval.cold import match_dense_epochs
    from genrec.run import open_run

    paths, config = open_run(run)
    stats_path = paths.dense / "train_stats.json"
    stats = json.loads(stats_path.read_text())
    for stopped_by, epochs, expected in (("patience", 12, config.dense.sasrec.epochs), ("max_minutes", 7, 7)):
        stats_path.write_text(json.dumps({**stats, "stopped_by": stopped_by, "epochs": epochs, "kind": "sasrec"}))
        copy = config.model_copy(deep=True)
        match_dense_epochs(paths, copy)
        assert copy.dense.sasrec.epochs == expected
        assert copy.dense.sasrec.max_minutes == (
            None if stopped_by == "max_minutes" else config.dense.sasrec.max_minutes
        )


def test_new_items_with_photos_are_found_by_their_photo_and_an_unreadable_photo_is_refused(tmp_path):
    """The kitchenware image example indexed without two of its photographed items; adding them gives
    them image vectors centred as the indexed ones (search by their photo finds them) and codes from
    the image-aware quantiser; a photo that cannot be read refuses the batch, naming line and field."""
    from genrec.config import load_config
    from retrieval.examples import kitchenware_items, write_kitchenware_catalog
    from retrieval.index import build_index
    from retrieval.live import add_items
    from retrieval.search import Searcher

    folder = tmp_path / "kitchenware"
    write_kitchenware_catalog(folder)
    records = kitchenware_items()
    held, kept = records[-2:], records[:-2]
    write_jsonl(folder / "items.jsonl", kept)
    config = load_config(folder / "config.yaml")
    config.data.dataset = str(folder / "items.jsonl")
    run = folder / "run"
    build_index(run, config)
    before = snapshot(run)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    with pytest.raises(GenrecError, match=r"bad\.jsonl:2: image: .*broken\.jpg could not be read"):
        add_items(run, write_jsonl(tmp_path / "bad.jsonl", [held[0], {**held[1], "image": str(broken)}]))
    assert snapshot(run) == before

    report = add_items(run, write_jsonl(tmp_path / "new.jsonl", held))
    assert set(report.items) == {r["id"] for r in held}
    searcher = Searcher.open(run)
    for r in held:
        assert searcher.search(image=r["image"], k=1)[0].item_id == r["id"]
