"""A trained dense model in a run (`RUN/dense/`): saved with safetensors + JSON, loaded back as a scorer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from finetune.dense.sasrec import SASRec, SASRecNet
from genrec.atomic import atomic_dir, write_json
from genrec.config import DenseConfig
from genrec.errors import GenrecError

CONFIG_FILE = "dense.json"
WEIGHTS_FILE = "model.safetensors"


def dense_max_len(config: DenseConfig, train: dict[str, list[str]]) -> int:
    """The history length: the configured one, else 200 for dense data and 50 for sparse data
    (Kang & McAuley's settings for MovieLens and for Amazon)."""
    if config.max_len is not None:
        return config.max_len
    lengths = sorted(len(items) for items in train.values())
    return 200 if lengths and lengths[len(lengths) // 2] > 50 else 50


def build_dense(config: DenseConfig, item_ids: Sequence[str], train: dict[str, list[str]], seed: int = 0,
                progress: bool = True) -> SASRec:
    """An untrained dense model with the run's settings (`fit(train, valid)` trains it)."""
    return SASRec(item_ids, hidden=config.hidden, layers=config.layers, heads=config.heads,
                  max_len=dense_max_len(config, train), dropout=config.dropout, lr=config.lr,
                  batch_size=config.batch_size, epochs=config.epochs, patience=config.patience,
                  val_users=config.val_users, max_minutes=config.max_minutes, seed=seed, threads=config.threads,
                  progress=progress)


class DenseModel:
    """A trained SASRec as the ranking's dense scorer: full-catalog log-softmax per history."""

    def __init__(self, model: SASRec):
        if model.net is None:
            raise ValueError("DenseModel needs a trained SASRec")
        self.model = model
        self.item_ids: list[str] = model.index.ids

    def log_scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(len(histories), catalog) log-softmax of the next item; history items are not hidden."""
        with torch.no_grad():
            logits, _ = self.model.score([list(h) for h in histories])
            return torch.log_softmax(logits.float(), dim=-1).numpy()


def save_dense(model: SASRec, folder: Path, stats: dict | None = None) -> None:
    """Write the model atomically: weights (safetensors), settings and item order (JSON)."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        write_json(tmp / CONFIG_FILE, {
            "kind": "sasrec", "item_ids": model.index.ids, "hidden": model.hidden, "layers": model.layers,
            "heads": model.heads, "max_len": model.max_len, "dropout": model.dropout, "train_stats": stats or {},
        })


def load_dense(folder: Path) -> DenseModel:
    """The dense scorer saved in `folder`; a one-line error when it is missing or unreadable."""
    from safetensors.torch import load_file

    config_path = folder / CONFIG_FILE
    if not config_path.exists():
        raise GenrecError(f"{folder}: no dense model here; run `genrec train` again to train it")
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
        model = SASRec(cfg["item_ids"], hidden=cfg["hidden"], layers=cfg["layers"], heads=cfg["heads"],
                       max_len=cfg["max_len"], dropout=cfg["dropout"], progress=False)
        net = SASRecNet(len(model.index), cfg["hidden"], cfg["layers"], cfg["heads"], cfg["max_len"], cfg["dropout"])
        net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise GenrecError(f"{folder}: cannot load the dense model ({str(exc).splitlines()[0]}); run `genrec train` again") from None
    net.eval()
    model.net = net
    model.train_stats = cfg.get("train_stats", {})
    return DenseModel(model)
