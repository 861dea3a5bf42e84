"""Semantic IDs: every item gets a distinct code, the same seed gives the same codes, files round-trip.

Real data: MovieLens-100K items (from the recbole wheel or ../shared) with TF-IDF + SVD content
vectors of titles and genres, and a slice of Amazon Beauty sequences for collaborative vectors.
Training runs are kept short; the default-size figures come from bench/.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_limits

from genrec.config import SemanticIdConfig
from genrec.errors import GenrecError
from genrec.run import RunPaths
from retrieval.catalog import Catalog, make_interactions, make_items
from retrieval.semantic_ids import (
    SemanticIds,
    build_semantic_ids,
    code_to_item,
    codebook_sizes,
    collaborative_embeddings,
    item_vectors,
    load_semantic_ids,
    resolve_source,
    save_semantic_ids,
)
from retrieval.semantic_ids.codes import append_uniqueness_level, codebook_usage, collision_stats

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BEAUTY = SHARED / "amazon-seq" / "Beauty.txt"
FAST_RQVAE = dict(method="rqvae", source="content", epochs=20)


def movielens_files() -> tuple[Path, Path] | None:
    """ML-100K items + interactions in RecBole atomic format (shipped in the recbole wheel)."""
    try:
        import recbole
    except ImportError:
        return None
    folder = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    item, inter = folder / "ml-100k.item", folder / "ml-100k.inter"
    return (item, inter) if item.exists() and inter.exists() else None


@pytest.fixture(scope="module")
def movielens() -> Catalog:
    files = movielens_files()
    if files is None:
        pytest.skip("MovieLens-100K not found (recbole's dataset_example)")
    items = pd.read_csv(files[0], sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    records = [
        {
            "item_id": row.item_id,
            "title": f"{row.movie_title} ({row.release_year})",
            "attributes": {"genre": str(row["class"]).split()},
        }
        for _, row in items.iterrows()
    ]
    inter = pd.read_csv(files[1], sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    return Catalog(make_items(records, "ml-100k.item"), make_interactions(inter, "ml-100k.inter"))


@pytest.fixture(scope="module")
def movielens_content(movielens: Catalog) -> np.ndarray:
    """Cheap real content vectors: character n-gram TF-IDF of title + genres, reduced to 64 dims by SVD.

    Character n-grams rather than words: a title's rare words would vanish in the SVD and leave
    dozens of films described by their genres alone, i.e. near-duplicates.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    genres = [" ".join(json.loads(attrs)["genre"]) for attrs in movielens.items["attributes"]]
    texts = [f"{title} {genre}" for title, genre in zip(movielens.items["title"], genres)]
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(texts)
    with threadpool_limits(1):  # BLAS threads fighting over a busy machine's cores only slow this down
        return TruncatedSVD(n_components=64, random_state=0).fit_transform(tfidf).astype(np.float32)


@pytest.fixture(scope="module")
def movielens_rqvae(movielens: Catalog, movielens_content: np.ndarray) -> SemanticIds:
    return build_semantic_ids(movielens, SemanticIdConfig(**FAST_RQVAE), movielens_content, progress=False)


@pytest.fixture(scope="module")
def beauty_slice() -> Catalog:
    """The first 800 users of Amazon Beauty (sequences 'user item item ...', in time order)."""
    if not BEAUTY.exists():
        pytest.skip(f"{BEAUTY} not found")
    rows = []
    with BEAUTY.open() as f:
        for _, line in zip(range(800), f):
            user, *seq = line.split()
            rows += [{"user_id": user, "item_id": item, "timestamp": t} for t, item in enumerate(seq)]
    inter = make_interactions(rows, BEAUTY.name)
    ids = sorted(inter["item_id"].unique(), key=int)
    return Catalog(make_items([{"item_id": i, "title": f"item {i}"} for i in ids], BEAUTY.name), inter)


def distinct(codes: dict[str, list[int]]) -> int:
    return len({tuple(c) for c in codes.values()})


# --- RQ-VAE on real content -----------------------------------------------------------------------


def test_every_movielens_item_gets_a_distinct_four_level_code(movielens, movielens_rqvae):
    codes = movielens_rqvae.codes
    assert list(codes) == movielens.items["item_id"].tolist()
    assert len(codes) == 1682 and distinct(codes) == 1682
    assert {len(c) for c in codes.values()} == {4}
    assert all(0 <= c < 256 for code in codes.values() for c in code[:3])


def test_rqvae_keeps_collisions_rare_and_codebooks_used(movielens_rqvae):
    stats = movielens_rqvae.stats
    # 1,682 items in 256^3 cells: only near-identical items should share a prefix.
    assert stats["collisions"]["rate"] < 0.05
    assert stats["final_level_size"] <= 4
    for level in stats["codebook_usage"]:
        assert level["used"] / level["size"] > 0.8 and level["perplexity"] > 100


def test_same_seed_gives_identical_ids_and_another_seed_does_not(movielens, movielens_content, movielens_rqvae):
    flags = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.rand(7), np.random.rand(7)  # whatever the global RNGs did since must not matter
    again = build_semantic_ids(movielens, SemanticIdConfig(**FAST_RQVAE), movielens_content, progress=False)
    other = build_semantic_ids(movielens, SemanticIdConfig(**FAST_RQVAE, seed=1), movielens_content, progress=False)
    assert again.codes == movielens_rqvae.codes
    assert other.codes != movielens_rqvae.codes
    # training must not leave torch's global switches changed for the rest of the process
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == flags


# --- residual k-means -----------------------------------------------------------------------------


def test_residual_kmeans_gives_distinct_deterministic_codes_of_the_same_shape(movielens, movielens_content):
    config = SemanticIdConfig(method="rkmeans")
    first = build_semantic_ids(movielens, config, movielens_content, progress=False)
    second = build_semantic_ids(movielens, config, movielens_content, progress=False)
    assert first.codes == second.codes
    assert distinct(first.codes) == 1682 and {len(c) for c in first.codes.values()} == {4}
    assert first.stats["method"] == "rkmeans"
    assert first.stats["collisions"]["rate"] < 0.1


# --- collaborative and fused inputs ---------------------------------------------------------------


def test_collaborative_embeddings_place_co_consumed_items_closer_than_random_pairs(beauty_slice):
    vectors = collaborative_embeddings(beauty_slice, dim=32, window=5, holdout=0)
    assert vectors.shape == (len(beauty_slice.items), 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    row = {item: i for i, item in enumerate(beauty_slice.items["item_id"])}
    inter = beauty_slice.interactions
    same_user_next = inter["user_id"].eq(inter["user_id"].shift(-1))
    firsts, seconds = inter["item_id"][same_user_next], inter["item_id"].shift(-1)[same_user_next]
    pairs = np.array([(row[a], row[b]) for a, b in zip(firsts, seconds) if a != b])
    neighbour_cos = (vectors[pairs[:, 0]] * vectors[pairs[:, 1]]).sum(1).mean()
    rng = np.random.default_rng(0)
    random_pairs = rng.integers(0, len(vectors), size=(len(pairs), 2))
    random_cos = (vectors[random_pairs[:, 0]] * vectors[random_pairs[:, 1]]).sum(1).mean()
    assert neighbour_cos > random_cos + 0.2


def test_collaborative_embeddings_ignore_each_users_last_interactions(beauty_slice):
    inter = beauty_slice.interactions
    from_end = inter.groupby("user_id", sort=False).cumcount(ascending=False)
    only_last = set(inter["item_id"][from_end < 2]) - set(inter["item_id"][from_end >= 2])
    assert only_last, "the slice should hold items seen only as a user's last two"
    rows = beauty_slice.items["item_id"].isin(only_last).to_numpy()
    held_out = collaborative_embeddings(beauty_slice, dim=32, holdout=2)
    everything = collaborative_embeddings(beauty_slice, dim=32, holdout=0)
    assert not held_out[rows].any()
    assert everything[rows].any(axis=1).mean() > 0.9


def test_collaborative_semantic_ids_are_distinct_without_any_text(beauty_slice):
    config = SemanticIdConfig(**{**FAST_RQVAE, "source": "collaborative", "collaborative_dim": 32})
    sids = build_semantic_ids(beauty_slice, config, content=None, progress=False)
    assert distinct(sids.codes) == len(beauty_slice.items)
    assert sids.stats["source"] == "collaborative" and sids.stats["input_dim"] == 32


def test_fused_vectors_are_weighted_unit_parts_side_by_side(movielens, movielens_content):
    config = SemanticIdConfig(source="fused", collaborative_dim=16, content_weight=2.0, collaborative_weight=0.5)
    x = item_vectors(movielens, config, movielens_content)
    assert x.shape == (1682, 64 + 16)
    assert np.allclose(np.linalg.norm(x[:, :64], axis=1), 2.0, atol=1e-4)
    collab_norms = np.linalg.norm(x[:, 64:], axis=1)
    assert np.allclose(collab_norms[collab_norms > 0], 0.5, atol=1e-4)


def test_content_source_without_embeddings_says_what_to_do(movielens):
    with pytest.raises(GenrecError, match="needs item content embeddings"):
        build_semantic_ids(movielens, SemanticIdConfig(source="content"), content=None, progress=False)
    with pytest.raises(GenrecError, match=r"shape \(10, 8\) does not match the catalog's 1682 items"):
        build_semantic_ids(movielens, SemanticIdConfig(), content=np.zeros((10, 8)), progress=False)


def test_auto_source_fuses_content_and_co_occurrence_where_both_exist(movielens, movielens_content):
    config = SemanticIdConfig(collaborative_dim=16)
    assert config.source == "auto" and resolve_source(movielens, config, movielens_content) == "fused"
    assert item_vectors(movielens, config, movielens_content).shape == (1682, 64 + 16)


def test_auto_source_is_collaborative_for_items_without_text(beauty_slice):
    textless = dataclasses.replace(beauty_slice, has_text=False)
    titles_only = np.random.default_rng(0).normal(size=(len(beauty_slice.items), 8)).astype(np.float32)
    assert resolve_source(textless, SemanticIdConfig(), titles_only) == "collaborative"
    assert resolve_source(beauty_slice, SemanticIdConfig(), None) == "collaborative"


def test_auto_source_is_content_when_no_two_items_co_occur(movielens, movielens_content):
    firsts = movielens.interactions.groupby("user_id", sort=False).head(3)  # 2 held out, 1 left per user
    sparse = dataclasses.replace(movielens, interactions=firsts.reset_index(drop=True))
    assert resolve_source(sparse, SemanticIdConfig(), movielens_content) == "content"
    sids = build_semantic_ids(sparse, SemanticIdConfig(epochs=5), movielens_content, progress=False)
    assert sids.stats["source"] == "content" and sids.stats["config"]["source"] == "auto"


# --- the uniqueness level and statistics ----------------------------------------------------------


def test_uniqueness_level_numbers_items_sharing_a_prefix_in_catalog_order():
    prefix = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3], [1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert append_uniqueness_level(prefix)[:, 3].tolist() == [0, 0, 1, 2, 1, 0]
    stats = collision_stats(prefix)
    assert stats["count"] == 3 and stats["rate"] == 0.5
    assert stats["colliding_groups"] == 2 and stats["shared_prefix_items"] == 5
    assert stats["final_level_size"] == 3 and stats["max_suffix"] == 2


def test_codebook_usage_reports_used_codes_and_perplexity():
    codes = np.array([[0, 5], [1, 5], [2, 5], [3, 5]])
    even, collapsed = codebook_usage(codes, [4, 8])
    assert (even["used"], even["size"], even["usage"]) == (4, 4, 1.0)
    assert even["perplexity"] == pytest.approx(4.0)
    assert (collapsed["used"], collapsed["perplexity"]) == (1, pytest.approx(1.0))


def test_codebook_sizes_cover_every_level_including_the_final_one(movielens_rqvae):
    codes = movielens_rqvae.codes
    sizes = codebook_sizes(codes)
    assert len(sizes) == 4
    assert sizes[3] == movielens_rqvae.stats["final_level_size"]
    for level, size in enumerate(sizes):
        assert max(c[level] for c in codes.values()) == size - 1
    assert len(code_to_item(codes)) == 1682


# --- files ----------------------------------------------------------------------------------------


def test_saved_ids_load_back_with_their_statistics(tmp_path, movielens_rqvae):
    paths = RunPaths(tmp_path)
    save_semantic_ids(movielens_rqvae, paths)
    assert load_semantic_ids(paths) == movielens_rqvae.codes
    stats = json.loads(paths.semantic_id_stats.read_text())
    assert stats["method"] == "rqvae" and stats["seed"] == 0 and stats["source"] == "content"
    assert stats["collisions"]["count"] == 1682 - stats["collisions"]["distinct_prefixes"]
    assert 0 <= stats["collisions"]["rate"] < 1
    assert [u["level"] for u in stats["codebook_usage"]] == [1, 2, 3]
    assert all({"used", "size", "usage", "perplexity"} <= set(u) for u in stats["codebook_usage"])
    assert stats["training_seconds"] > 0 and stats["training"]["epochs"] == FAST_RQVAE["epochs"]
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporaries behind


def test_loading_without_ids_tells_to_run_index(tmp_path):
    with pytest.raises(GenrecError, match="genrec index"):
        load_semantic_ids(RunPaths(tmp_path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"1": [1, 2, 3, 0], "2": [1, 2', "not valid JSON"),
        ("[[1, 2, 3, 0]]", "expected a non-empty object"),
        ('{"1": [1, 2, 3, 0], "2": [1, "x", 3, 0]}', "item '2'.*not a list of integers"),
        ('{"1": [1, 2, 3, 0], "2": [1, 2, 3]}', "item '2': code has 3 levels, others 4"),
        ('{"1": [1, 2, 3, 0], "2": [1, 2, 3, 0]}', "items '1' and '2' share the code"),
    ],
)
def test_malformed_ids_file_is_a_one_line_error_naming_the_file(tmp_path, content, message):
    paths = RunPaths(tmp_path)
    paths.semantic_ids.write_text(content)
    with pytest.raises(GenrecError, match=message) as err:
        load_semantic_ids(paths)
    assert str(paths.semantic_ids) in str(err.value) and "\n" not in str(err.value)
