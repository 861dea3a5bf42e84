"""Dense next-item networks: one vector per history scored against every catalog item.

from finetune.dense import SASRec, TrainSettings, fit, load_dense
model, stats = fit(SASRec(item_ids), split.train, split.valid, TrainSettings())
model.save_pretrained("runs/x/dense")       # config.json (+ catalog), model.safetensors
model = load_dense("runs/x/dense")          # or SASRec.from_pretrained(...)
model.scores(histories)                     # (batch, n_items) log-softmax, columns = model.item_ids
model.recommend(histories, k=10)            # top-k ids, history excluded
"""

from finetune.dense.bsarec import BSARec
from finetune.dense.model import DenseRecommender, load_dense
from finetune.dense.sasrec import SASRec
from finetune.dense.train import TrainSettings, fit

__all__ = ["BSARec", "DenseRecommender", "SASRec", "TrainSettings", "fit", "load_dense"]
