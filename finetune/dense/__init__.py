"""Training the dense next-item networks of `inference.dense`.

from inference.dense import SASRec, load_dense
from finetune.dense import TrainSettings, fit
model, stats = fit(SASRec(item_ids), split.train, split.valid, TrainSettings())
model.save_pretrained("runs/x/dense")       # config.json (+ catalog), model.safetensors
model = load_dense("runs/x/dense")
"""

from finetune.dense.train import TrainSettings, fit

__all__ = ["TrainSettings", "fit"]
