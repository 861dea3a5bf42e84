"""Recommendations for a user of a run, with titles: the served ranking behind `genrec recommend`.

    from inference.recommend import recommend
    recommend("runs/ml100k", "196", k=10)        # -> [Recommendation(item_id, title, score), ...]

`RunRecommender` keeps the ranking loaded for many calls; `recommend` is the one-shot form. Both
rank with `inference.ranker.open_ranker`, the function `genrec eval` scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genrec.errors import GenrecError
from genrec.run import open_run
from inference.explain import Explainer, grounded_explanation
from inference.facts import item_facts
from inference.ranker import open_ranker
from retrieval.catalog import ITEM_COLUMNS
from retrieval.live import Watched
from retrieval.where import catalog_fields, compile_where, filter_items


@dataclass
class Recommendation:
    """One recommended catalog item: id, title, score (the served ranking's, higher is better), why."""

    item_id: str
    title: str
    score: float
    explanation: str | None = None


class RunRecommender:
    """A run's catalog, users and trained model, loaded once, answering many requests."""

    def __init__(self, run: str | Path, llm_url: str | None = None, ranking: str | None = None):
        from retrieval.catalog import load_catalog

        self.paths, self.config = open_run(run)
        catalog = load_catalog(self.paths)
        # the catalog of the moment (items added or retired by `genrec items`), checked per request
        self._catalog = Watched(
            self.paths,
            lambda state: (
                state.items[ITEM_COLUMNS].reset_index(drop=True),
                catalog_fields(state.items),
                item_facts(state.items),
                state.active,
            ),
        )
        self.histories: dict[str, list[str]] = {
            str(user): group.astype(str).tolist()
            for user, group in catalog.interactions.groupby("user_id", sort=False)["item_id"]
        }
        self.ranker, self.notice = open_ranker(self.paths.root, llm_url=llm_url, ranking=ranking)
        self._explainer: Explainer | None = None

    @property
    def items(self):
        """Every item of the catalog of this moment (retired ones too: histories name them)."""
        return self._catalog.get()[0]

    @property
    def facts(self):
        """Titles and attributes of every item of the catalog of this moment."""
        return self._catalog.get()[2]

    def history(self, user_id: str) -> list[str]:
        """The user's items in time order; a one-line error for unknown users or empty histories."""
        history = self.histories.get(str(user_id))
        if history is None:
            raise GenrecError(
                f"{self.paths.interactions}: unknown user id {user_id!r} (users are the user_id values of the "
                f"interactions; e.g. {next(iter(self.histories), '?')!r})"
            )
        if not history:
            raise GenrecError(f"user {user_id!r} has no interactions to recommend from")
        return history

    def recommend(
        self,
        user_id: str | None = None,
        k: int | None = None,
        history: Sequence[str] | None = None,
        exclude_history: bool | None = None,
        where: Mapping[str, Any] | None = None,
        explain: bool | None = None,
    ) -> list[Recommendation]:
        """Top-`k` items for a known user, or for an explicit `history` of item ids (a new user).

        History items are excluded unless `exclude_history=False`; `where` keeps only items whose
        metadata match (`retrieval.where`, the filter language of search too); `explain` adds an explanation from
        the instruction-tuned explainer model.
        """
        generate = self.config.generate
        k = k or generate.k
        items, fields, facts, active = self._catalog.get()  # one catalog for the whole request
        if history is None:
            if user_id is None:
                raise GenrecError("recommend: give a user id or a history of item ids")
            history = self.history(user_id)
        history = [str(i) for i in history]
        unknown = [i for i in history if i not in facts]
        if unknown:
            raise GenrecError(f"recommend: history names item(s) not in the catalog: {', '.join(unknown[:5])}")
        if not history:
            raise GenrecError("recommend: the history is empty; give at least one item id")
        exclude = set(history) if (generate.exclude_history if exclude_history is None else exclude_history) else set()
        only = filter_items(items, compile_where(where, fields))
        if only is not None and not only:
            return []
        found = self.ranker.rank([history], k, exclude=[exclude], only=only)[0]
        # the ranker may already rank a newer catalog (an add committed since this request began)
        out = [Recommendation(item, facts[item].title, round(score, 4)) for item, score in found if item in facts]
        if explain if explain is not None else generate.explain:
            for rec in out:
                rec.explanation = self.explain(rec.item_id, history)
        return out

    def explain(self, item_id: str, history: Sequence[str], use_model: bool = True) -> str:
        """Why `item_id` suits a user with `history`, from real attributes only (model or template)."""
        if item_id not in self.facts:
            raise GenrecError(f"explain: unknown item id {item_id!r}")
        past = [self.facts[i] for i in history if i in self.facts]
        if not use_model:
            return grounded_explanation(self.facts[item_id], past)
        if self._explainer is None:
            generate = self.config.generate
            self._explainer = Explainer(generate.explainer, generate.max_explanation_tokens)
        return self._explainer.explain(self.facts[item_id], past)


def recommend(run: str | Path, user_id: str, k: int = 10, **options) -> list[Recommendation]:
    """Top-`k` recommendations for `user_id` of run `run` (loads the model; see `RunRecommender` for many calls)."""
    return RunRecommender(run).recommend(user_id, k, **options)
