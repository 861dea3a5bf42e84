"""genrec as an `genrec.protocol.Recommender`, so `eval/` scores it beside the baselines on one split.

Fitting is `genrec train` (it takes minutes and writes the run's model), so `fit` only loads that
model; `recommend` is constrained beam search with the history excluded.
"""

from __future__ import annotations

from pathlib import Path

from finetune.inference import GenrecModel, load_genrec_model
from genrec.run import RunPaths, open_run


class GenrecRecommender:
    """The fine-tuned model of a run (or one in memory) behind the evaluation protocol."""

    name = "genrec"

    def __init__(self, run: str | Path | None = None, model: GenrecModel | None = None, beam_width: int | None = None):
        self.run, self.genrec, self.beam_width = run, model, beam_width

    @classmethod
    def from_model(cls, model: GenrecModel) -> "GenrecRecommender":
        """Wrap a model already in memory (the training loop's validation)."""
        return cls(model=model)

    def fit(self, train: dict[str, list[str]]) -> None:
        """Load the run's trained model; training itself is `genrec train` (see `finetune.train`)."""
        if self.genrec is None:
            self.genrec = load_run_model(self.run, self.beam_width)

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` catalog items per history by constrained beam search, history items excluded."""
        if self.genrec is None:
            self.fit({})
        found = self.genrec.top_k(histories, k, exclude=[set(h) for h in histories])
        return [[item for item, _ in items] for items in found]


def load_run_model(run: str | Path, beam_width: int | None = None) -> GenrecModel:
    """The trained model of run `run`, with the run's generation settings."""
    from retrieval.semantic_ids import load_semantic_ids

    paths, config = open_run(run)
    codes = load_semantic_ids(RunPaths(paths.root))
    return load_genrec_model(
        paths, codes, beam_width=beam_width or config.generate.beam_width, batch_size=config.generate.batch_size,
        item_weight=config.generate.item_weight,
    )
