"""One loader per dataset format; each turns files into the normalised `retrieval.catalog.Catalog`.

`retrieval.datasets.load_dataset` picks the loader from the configured dataset.
"""

from retrieval.loaders.amazon2023 import load_amazon2023
from retrieval.loaders.amazon_seq import load_amazon_seq
from retrieval.loaders.generic import load_generic
from retrieval.loaders.movielens import load_movielens
from retrieval.loaders.recbole_atomic import load_recbole

__all__ = ["load_amazon2023", "load_amazon_seq", "load_generic", "load_movielens", "load_recbole"]
