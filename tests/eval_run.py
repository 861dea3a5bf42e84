"""A tiny real run for the evaluation workbench tests: a slice of the bundled MovieLens-100K.

The 150 most-rated movies and the first 60 users' ratings of them, indexed with the packaged
MiniLM into an embedded Chroma store: small enough to build in seconds, real enough that
popularity, item-kNN and content nearest-neighbour rank differently.
"""

from __future__ import annotations

from pathlib import Path

from genrec.config import RunConfig
from genrec.run import init_run
from retrieval.catalog import Catalog, save_catalog
from retrieval.datasets import bundled_ml100k
from retrieval.index import index_catalog
from retrieval.loaders import load_recbole

N_ITEMS = 150
N_USERS = 60


def ml100k_slice(n_items: int = N_ITEMS, n_users: int = N_USERS) -> Catalog:
    """The most popular `n_items` movies and the first `n_users` users' interactions with them."""
    full = load_recbole(bundled_ml100k())
    inter = full.interactions
    top = inter["item_id"].value_counts().index[:n_items]
    users = sorted(inter["user_id"].unique(), key=int)[:n_users]
    inter = inter[inter["item_id"].isin(top) & inter["user_id"].isin(users)].reset_index(drop=True)
    items = full.items[full.items["item_id"].isin(top)].reset_index(drop=True)
    return Catalog(items, inter)


def build_eval_run(root: Path, name: str = "eval-test", config: RunConfig | None = None) -> Path:
    """Create (once) an indexed run of the slice at `root`, with SASRec kept out of quick tests."""
    if (root / "chroma").exists() and (root / "items.parquet").exists():
        return root
    config = config or RunConfig(name=name)
    config.eval.baselines = ["popularity", "itemknn", "content"]
    paths = init_run(root, config)
    catalog = ml100k_slice()
    save_catalog(catalog, paths)
    index_catalog(catalog, paths, config)
    return root


def shared_eval_run(tmp_path_factory) -> Path:
    """The slice run, built once per test session and reused by every workbench test file."""
    return build_eval_run(tmp_path_factory.getbasetemp() / "eval-run")


def trained_eval_run(tmp_path_factory) -> Path:
    """The small trained run the test session shares (conftest's `trained_run`): a copy of the slice
    run with small semantic IDs, a tiny scratch model pre-trained and LoRA-tuned for one epoch each,
    a SASRec dense model and their fusion. Real weights, real tokenizer, real trie; trained once.

    Attention dropout is off, so `--processes 2` on the same inputs takes the same steps
    (tests/test_scale.py compares the two). Tests that change a run work on a copy."""
    import shutil

    import numpy as np

    from finetune.train import train
    from genrec.run import open_run
    from retrieval.catalog import load_catalog
    from retrieval.semantic_ids import build_semantic_ids, save_semantic_ids

    root = tmp_path_factory.getbasetemp() / "eval-run-trained"
    if (root / "model" / "genrec.json").exists():
        return root
    shutil.copytree(shared_eval_run(tmp_path_factory), root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("eval"))
    paths, config = open_run(root)
    config.semantic_ids.method, config.semantic_ids.levels, config.semantic_ids.codebook_size = "rkmeans", 2, 8
    config.semantic_ids.latent_dim = 16
    t = config.train
    t.num_heads, t.hidden_size, t.num_layers, t.intermediate_size, t.vocab_size = 1, 32, 1, 64, 400  # head 32: servable
    t.pretrain_epochs, t.epochs, t.lora_rank, t.lora_alpha, t.dropout = 1, 1, 4, 8, 0.0
    t.max_length, t.max_history, t.val_users, t.aux_ratio, t.tokens_per_batch = 128, 20, 20, 0.2, 2048
    config.generate.beam_width = 10
    config.serve.startup_timeout_s = 900  # a first vLLM start on a busy 2-core machine takes minutes
    d = config.dense.sasrec
    d.hidden, d.max_len, d.epochs, d.patience, d.eval_every = 16, 50, 5, 2, 1
    init_run(root, config)
    catalog = load_catalog(paths)
    save_semantic_ids(
        build_semantic_ids(catalog, config.semantic_ids, np.load(paths.embeddings / "text.npy"), progress=False), paths
    )
    train(root, progress=False)
    return root
