"""Specifications of the Chroma item store and search: text, image, item, filters, server mode."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from genrec.config import RunConfig
from genrec.errors import GenrecError
from genrec.run import init_run
from retrieval.catalog import Catalog, make_interactions, make_items, save_catalog
from retrieval.index import index_catalog
from retrieval.search import Searcher

MOVIES = [
    (
        "1",
        "Star Wars (1977)",
        ["Action", "Adventure", "Sci-Fi"],
        1977,
        "Rebels fight the evil Galactic Empire in space.",
    ),
    (
        "2",
        "Toy Story (1995)",
        ["Animation", "Children's", "Comedy"],
        1995,
        "Toys come to life when their owner leaves the room.",
    ),
    ("3", "Alien (1979)", ["Horror", "Sci-Fi", "Thriller"], 1979, "A creature hunts the crew of a spaceship."),
    (
        "4",
        "When Harry Met Sally... (1989)",
        ["Comedy", "Romance"],
        1989,
        "Two friends wonder whether men and women can be friends.",
    ),
    (
        "5",
        "Fargo (1996)",
        ["Crime", "Drama", "Thriller"],
        1996,
        "A car salesman hires criminals to kidnap his wife in snowy Minnesota.",
    ),
    (
        "6",
        "Heat (1995)",
        ["Action", "Crime", "Thriller"],
        1995,
        "A detective chases a crew of professional bank robbers in Los Angeles.",
    ),
    ("7", "Babe (1995)", ["Children's", "Comedy", "Drama"], 1995, "A pig raised by sheepdogs learns to herd sheep."),
    ("8", "Apollo 13 (1995)", ["Action", "Drama", "Thriller"], 1995, "Astronauts survive a failed moon mission."),
]


def movie_catalog(images: list | None = None) -> Catalog:
    records = [
        {
            "item_id": i,
            "title": t,
            "text": d,
            "attributes": {"genres": g, "year": y},
            "image": (str(images[n]) if images and n < len(images) and images[n] is not None else None),
        }
        for n, (i, t, g, y, d) in enumerate(MOVIES)
    ]
    inter = [{"user_id": "u1", "item_id": "1", "timestamp": 1}, {"user_id": "u1", "item_id": "3", "timestamp": 2}]
    return Catalog(make_items(records, "test"), make_interactions(inter, "test"))


def indexed_run(tmp_path, catalog: Catalog, **encoder) -> Searcher:
    config = RunConfig(name=tmp_path.name)
    for key, value in encoder.items():
        setattr(config.encoder, key, value)
    paths = init_run(tmp_path, config)
    save_catalog(catalog, paths)
    index_catalog(catalog, paths, config)
    return Searcher.open(tmp_path)


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    return indexed_run(tmp_path_factory.mktemp("run"), movie_catalog())


def test_text_query_ranks_the_described_movie_first(searcher):
    hits = searcher.search("space opera with rebels fighting an evil galactic empire", k=3)
    assert hits[0].title == "Star Wars (1977)"
    assert hits[0].score > hits[1].score


def test_genre_filter_returns_only_items_of_that_genre(searcher):
    hits = searcher.search("a funny film", k=8, where={"genre": "Sci-Fi"})
    assert {h.item_id for h in hits} == {"1", "3"}
    assert all("Sci-Fi" in h.attributes["genres"] for h in hits)


def test_numeric_filter_and_combined_filters(searcher):
    hits = searcher.search(
        "movie", k=8, where={"$and": [{"year": {"$gte": 1995}}, {"genre": {"$in": ["Comedy", "Crime"]}}]}
    )
    assert {h.item_id for h in hits} == {"2", "5", "6", "7"}


def test_unknown_filter_field_is_a_one_line_error(searcher):
    with pytest.raises(GenrecError, match="unknown field 'colour'"):
        searcher.search("movie", where={"colour": "red"})


def test_more_like_this_excludes_the_item_itself(searcher):
    hits = searcher.search(item_id="1", k=3)
    assert "1" not in {h.item_id for h in hits}
    assert len(hits) == 3


def test_unknown_item_id_is_an_error(searcher):
    with pytest.raises(GenrecError, match="unknown item id"):
        searcher.search(item_id="nope")


def test_reindexing_is_idempotent_and_forgets_removed_items(tmp_path):
    catalog = movie_catalog()
    indexed_run(tmp_path, catalog)
    smaller = Catalog(catalog.items[catalog.items.item_id != "1"].reset_index(drop=True), catalog.interactions)
    again = indexed_run(tmp_path, smaller)
    assert again.store.text.count() == len(MOVIES) - 1
    assert "1" not in {h.item_id for h in again.search("rebels against the galactic empire", k=7)}


def test_unchanged_texts_are_not_encoded_again(tmp_path, monkeypatch):
    catalog = movie_catalog()
    indexed_run(tmp_path, catalog)
    import retrieval.index as index_module

    def no_model(*args, **kwargs):
        raise AssertionError("the text model was loaded although every text is cached")

    monkeypatch.setattr("retrieval.encoders.load_encoder", no_model)
    config = RunConfig(name=tmp_path.name)
    paths = init_run(tmp_path, config)
    text = index_module.index_catalog(catalog, paths, config).text
    assert text.shape == (len(MOVIES), 384)


def test_images_go_into_a_clip_collection_searchable_by_image(tmp_path, tiny_clip, photos):
    images = photos[:6] + [tmp_path / "missing.png", None]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # a random-weight CLIP's word-to-image scores are noise: at half weight the text decides
        searcher = indexed_run(tmp_path / "run", movie_catalog(images), image_model=str(tiny_clip), image_weight=0.5)
    assert any("missing.png" in str(w.message) and "text-only" in str(w.message) for w in caught)
    assert searcher.store.image is not None and searcher.store.image.count() == 6
    hits = searcher.search(image=str(photos[2]), k=3)
    assert hits[0].item_id == "3"  # the same picture is its own nearest neighbour
    assert searcher.search("rebels against the galactic empire", k=1)[0].item_id == "1"
    assert searcher.words_search_images  # CLIP has a text tower: words search the image collection too
    mask = np.load(tmp_path / "run" / "embeddings" / "image_mask.npy")
    assert mask.tolist() == [True] * 6 + [False, False]


def test_unreadable_query_image_names_the_file(tmp_path, tiny_clip, photos):
    searcher = indexed_run(tmp_path / "run", movie_catalog(photos[:2]), image_model=str(tiny_clip))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(GenrecError, match="broken.png"):
        searcher.search(image=str(bad))


def test_chroma_server_mode_stores_and_searches_remotely(tmp_path, chroma_server):
    host, port = chroma_server
    catalog = movie_catalog()
    config = RunConfig(name="remote")
    config.chroma.host, config.chroma.port = host, port
    paths = init_run(tmp_path, config)
    save_catalog(catalog, paths)
    index_catalog(catalog, paths, config)
    assert not (tmp_path / "chroma").exists()  # nothing embedded: the server holds the vectors
    hits = Searcher.open(tmp_path).search("a pig that herds sheep", k=1)
    assert hits[0].title == "Babe (1995)"


def test_unreachable_chroma_server_is_a_clear_error(tmp_path):
    from conftest import free_port

    config = RunConfig(name="remote")
    config.chroma.host, config.chroma.port = "127.0.0.1", free_port()
    paths = init_run(tmp_path, config)
    save_catalog(movie_catalog(), paths)
    with pytest.raises(GenrecError, match="does not answer"):
        index_catalog(movie_catalog(), paths, config)
