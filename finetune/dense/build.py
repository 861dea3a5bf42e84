"""Dense networks built from the run config, with the settings the data's density calls for.

Sequential data comes in two shapes here: Amazon-like (a handful of items per user, a large
catalog) and MovieLens-like (hundreds of items per user). A network's fields left at None in the
config take the preset of the data's shape, chosen on validation NDCG@10 by `bench/baselines.py`
(its sweeps are in `bench/results/baselines.json`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from finetune.checkpoint import fingerprint_of
from finetune.dense.train import TrainSettings
from genrec.atomic import atomic_dir, write_json
from genrec.config import BSARecConfig, DenseModelConfig
from genrec.home import genrec_home
from inference.dense.bsarec import BSARec
from inference.dense.model import DenseRecommender
from inference.dense.sasrec import SASRec

STATS_FILE = "train_stats.json"
# settings that do not change the trained weights
NOT_FINGERPRINTED = {"threads", "device"}

DENSE_MEDIAN_HISTORY = 50  # a median training history longer than this makes the data "dense"

# (network, density) -> settings for the fields left at None
PRESETS: dict[tuple[str, str], dict[str, float | int]] = {
    # Beauty: the published CE-SASRec settings (Xu et al. 2024)
    ("sasrec", "sparse"): {"max_len": 50, "dropout": 0.6, "lr": 5e-4, "batch_size": 512},
    # ML-100K: the paper's length for MovieLens, dropout 0.2; 943 users make 2 steps an epoch at 512
    ("sasrec", "dense"): {"max_len": 200, "dropout": 0.2, "lr": 5e-3, "batch_size": 128},
    # Beauty: the published BSARec settings (Shin et al. 2024)
    ("bsarec", "sparse"): {"max_len": 50, "dropout": 0.5, "lr": 5e-4, "batch_size": 256},
    # ML-100K: BSARec's paper keeps max_len 50 on every dataset (200 took 400 s an epoch here)
    ("bsarec", "dense"): {"max_len": 50, "dropout": 0.2, "lr": 1e-3, "batch_size": 256},
}
NETWORKS: dict[str, type[DenseRecommender]] = {"sasrec": SASRec, "bsarec": BSARec}


def density(train: Mapping[str, Sequence[str]]) -> str:
    """ "dense" when the median training history is longer than 50 items, else "sparse"."""
    lengths = sorted(len(items) for items in train.values())
    return "dense" if lengths and lengths[len(lengths) // 2] > DENSE_MEDIAN_HISTORY else "sparse"


def resolve(kind: str, config: DenseModelConfig, train: Mapping[str, Sequence[str]]) -> DenseModelConfig:
    """The config with every None field filled from the preset for `kind` and the data's density."""
    preset = PRESETS[(kind, density(train))]
    return config.model_copy(update={k: v for k, v in preset.items() if getattr(config, k) is None})


def build(
    kind: str,
    item_ids: Sequence[str],
    config: DenseModelConfig,
    train: Mapping[str, Sequence[str]],
    progress: bool = True,
) -> tuple[DenseRecommender, TrainSettings, DenseModelConfig]:
    """An untrained network of `kind` over the catalog, its training settings, and the resolved config."""
    config = resolve(kind, config, train)
    arch = dict(
        hidden=config.hidden, layers=config.layers, heads=config.heads, max_len=config.max_len, dropout=config.dropout
    )
    if isinstance(config, BSARecConfig):
        arch |= dict(alpha=config.alpha, c=config.c)
    torch.manual_seed(config.seed)  # the initial weights too follow the seed
    model = NETWORKS[kind](list(item_ids), **arch)
    settings = TrainSettings(
        lr=config.lr,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        epochs=config.epochs,
        patience=config.patience,
        eval_every=config.eval_every,
        val_users=config.val_users,
        max_minutes=config.max_minutes,
        seed=config.seed,
        threads=config.threads,
        bf16=config.bf16,
        device=config.device,
        progress=progress,
    )
    return model, settings, config


def training_data_hash(item_ids: Sequence[str], train: Mapping[str, Sequence[str]]) -> str:
    """Hash of what a dense model trains on: the catalog's item order (its output columns) and every
    user's training items. The same for a run folder and for `bench/baselines.py`, which loads the
    dataset file itself."""
    payload = json.dumps([list(item_ids), sorted((str(u), list(v)) for u, v in train.items())])
    return hashlib.sha256(payload.encode()).hexdigest()


def dense_fingerprint(
    kind: str, resolved: DenseModelConfig, item_ids: Sequence[str], train: Mapping[str, Sequence[str]]
) -> str:
    """The fingerprint of a dense model: its kind, its resolved settings and its training data.
    A model with the same fingerprint is the same training, wherever it ran."""
    settings = resolved.model_dump(mode="json", exclude=NOT_FINGERPRINTED)
    return fingerprint_of([kind, settings], training_data_hash(item_ids, train))


def shared_dense_dir(fingerprint: str) -> Path:
    """Where a finished dense model is kept for reuse by fingerprint: `$GENREC_HOME/dense/FP16`."""
    return genrec_home() / "dense" / fingerprint[:16]


def find_shared(fingerprint: str) -> Path | None:
    """A finished dense model with this fingerprint (trained by `genrec train` or `bench/baselines.py`)."""
    folder = shared_dense_dir(fingerprint)
    try:
        stats = json.loads((folder / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return folder if stats.get("fingerprint") == fingerprint else None


def share(model: DenseRecommender, stats: dict, fingerprint: str) -> Path:
    """Keep a finished dense model (weights and `train_stats.json` with its fingerprint) for reuse."""
    folder = shared_dense_dir(fingerprint)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        write_json(tmp / STATS_FILE, {**stats, "fingerprint": fingerprint})
    return folder


def copy_shared(source: Path, target: Path, stats: dict) -> None:
    """Copy a shared dense model into a run's `dense/` folder, its stats saying where it came from."""
    with atomic_dir(target) as tmp:
        for f in source.iterdir():
            if f.is_file() and f.name != STATS_FILE:
                shutil.copy2(f, tmp / f.name)
        write_json(tmp / STATS_FILE, stats)
