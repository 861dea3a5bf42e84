"""Dense next-item networks: one vector per history scored against every catalog item.

Trained by `finetune.dense`; here is what serving them needs:

from inference.dense import load_dense
model = load_dense("runs/x/dense")          # or SASRec.from_pretrained(...)
model.scores(histories)                     # (batch, n_items) log-softmax, columns = model.item_ids
model.recommend(histories, k=10)            # top-k ids, history excluded

`model` holds what every kind shares and knows none of them; each kind (`sasrec`, `bsarec`) builds
on it; `load_dense` picks the kind a saved `config.json` names.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from genrec.device import resolve_device
from genrec.errors import GenrecError
from inference.dense.bsarec import BSARec
from inference.dense.model import DenseRecommender
from inference.dense.sasrec import SASRec

__all__ = ["BSARec", "DenseRecommender", "SASRec", "load_dense"]


def load_dense(directory: str | Path, device: str = "cpu", setting: str = "dense device") -> DenseRecommender:
    """Load a dense network saved with `save_pretrained`, whichever kind it is (from `config.json`), onto
    `device` (auto, cpu, cuda: the run's `dense.KIND.device`, named `setting` in errors); it scores there
    and returns its scores on the CPU."""
    directory = Path(directory)
    config_path = directory / "config.json"
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except FileNotFoundError:
        raise GenrecError(f"{config_path}: missing; save a dense model there with save_pretrained first") from None
    except json.JSONDecodeError as exc:
        raise GenrecError(f"{config_path}: not valid JSON ({exc.msg})") from None
    kinds = {cls.name: cls for cls in (SASRec, BSARec)}
    if model_type not in kinds:
        raise GenrecError(f"{config_path}: model_type {model_type!r} is not one of {', '.join(kinds)}")
    # huggingface_hub prints "Loading weights from local directory" to stdout, where `--json` output goes
    with contextlib.redirect_stdout(sys.stderr):
        model = kinds[model_type].from_pretrained(directory)
    return model.to(resolve_device(device, setting))
