"""Turn the configured dataset (a bundled name, a folder or a file) into the normalised catalog.

The format is detected from the path and, for JSONL, from the first record; then the matching
loader in `retrieval.loaders` reads it, and the rating filter and the catalog check apply to all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from genrec.config import DataConfig
from genrec.errors import GenrecError
from retrieval.catalog import Catalog, restrict_to_catalog
from retrieval.loaders import load_amazon2023, load_amazon_seq, load_generic, load_movielens, load_recbole
from retrieval.loaders.amazon2023 import is_amazon2023_meta
from retrieval.loaders.common import first_json_object, warn
from retrieval.loaders.movielens import is_movielens_folder
from retrieval.loaders.recbole_atomic import atomic_prefix

BUNDLED = "ml-100k"
ACCEPTED = (
    "accepted: 'ml-100k' (bundled, from the recbole package), a MovieLens folder (u.data + u.item), "
    "RecBole atomic files (DIR or DIR/NAME with NAME.inter [+ NAME.item]), an amazon-seq FILE.txt, "
    "a generic catalog FILE.jsonl or FILE.csv (+ data.interactions), Amazon Reviews 2023 meta FILE.jsonl[.gz] "
    "(+ data.reviews); see docs/formats.md"
)


def load_dataset(data: DataConfig) -> Catalog:
    """Load `data.dataset` in whatever supported format it is, as a validated, time-sorted catalog.

    Interactions below `data.min_rating` are dropped, and so (with a warning) are interactions on
    items the catalog does not have.
    """
    kind, path = detect_format(data.dataset)
    if kind == "recbole":
        catalog = load_recbole(path)
    elif kind == "movielens":
        catalog = load_movielens(path)
    elif kind == "amazon-seq":
        catalog = load_amazon_seq(path)
    elif kind == "generic":
        catalog = load_generic(path, optional_path(data.interactions, "data.interactions"), data.image_root)
    else:
        catalog = load_amazon2023(path, optional_path(data.reviews, "data.reviews"), data.image_root)
    if data.interactions and kind != "generic":
        warn(f"data.interactions is only read for the generic catalog format; ignoring {data.interactions}")
    if data.reviews and kind != "amazon2023":
        warn(f"data.reviews is only read for Amazon Reviews 2023; ignoring {data.reviews}")
    if data.min_rating is not None:
        catalog = filter_rating(catalog, data.min_rating, str(path))
    return restrict_to_catalog(catalog, str(path))


def detect_format(dataset: str) -> tuple[str, Path]:
    """Which loader reads `dataset`, and the path it reads.

    Returns one of "recbole" (also the bundled ml-100k), "movielens", "amazon-seq", "generic",
    "amazon2023", with the folder, prefix or file to load. Fails listing the accepted formats.
    """
    if dataset == BUNDLED:
        return "recbole", bundled_ml100k()
    path = Path(dataset).expanduser()
    if is_movielens_folder(path):
        return "movielens", path
    prefix = atomic_prefix(path)
    if prefix is not None:
        return "recbole", prefix
    if not path.exists():
        raise GenrecError(f"{dataset}: no such file or folder; {ACCEPTED}")
    name = path.name.lower()
    if path.is_file() and name.endswith(".txt"):
        return "amazon-seq", path
    if path.is_file() and name.endswith(".csv"):
        return "generic", path
    if path.is_file() and name.endswith((".jsonl", ".jsonl.gz")):
        if is_amazon2023_meta(first_json_object(path)):
            return "amazon2023", path
        return "generic", path
    raise GenrecError(f"{dataset}: not a dataset format genrec reads; {ACCEPTED}")


def bundled_ml100k() -> Path:
    """The `DIR/ml-100k` prefix of MovieLens-100K inside the installed recbole wheel.

    Found without importing recbole: it is installed without its dependencies, so importing it may fail.
    """
    spec = importlib.util.find_spec("recbole")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        prefix = Path(location) / "dataset_example" / "ml-100k" / "ml-100k"
        if prefix.with_name("ml-100k.inter").is_file():
            return prefix
    if not locations:
        raise GenrecError(
            "dataset 'ml-100k' is read from the recbole package, which is not installed; "
            "run `pip install --no-deps recbole`"
        )
    raise GenrecError(
        f"dataset 'ml-100k': recbole is installed at {locations[0]} but has no dataset_example/ml-100k; "
        "reinstall it with `pip install --no-deps --force-reinstall recbole`"
    )


def optional_path(value: str | None, field: str) -> Path | None:
    """A configured companion file as a Path, failing early (naming the setting) if it does not exist."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise GenrecError(f"{value}: no such file (set by {field})")
    return path


def filter_rating(catalog: Catalog, min_rating: float, source: str) -> Catalog:
    """Keep interactions rated at least `min_rating`; a dataset without ratings cannot be filtered."""
    ratings = catalog.interactions["rating"].to_numpy()
    if len(ratings) and np.isnan(ratings).all():
        raise GenrecError(f"{source}: data.min_rating is set but the dataset has no ratings; unset min_rating")
    keep = ratings >= min_rating
    return Catalog(catalog.items, catalog.interactions[keep].reset_index(drop=True), catalog.has_text)
