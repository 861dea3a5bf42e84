"""The one served ranking: generated semantic IDs fused with a dense next-item score.

Every ranking a user can receive (`genrec recommend`, the agent's `recommend` tool, the HTTP API,
the vLLM path) and the `genrec` row of `genrec eval` is `Ranker.rank`. Only the generation backend
differs: in-process beam search (`inference.decoding.local`) or vLLM (`inference.vllm_generator`).

Candidates are the generator's trie-constrained beams (every one a catalog item) and the dense
model's top items. Each candidate's score is a log-linear mix of two next-item log-probabilities:

    score(i) = (1 - a) * g(i) + a * d(i)

`d(i)` is the dense model's full-catalog log-softmax; `g(i)` the item's generated sequence
log-prob when a beam reached it, else the user's lowest beam log-prob minus `miss_penalty` (an item
the beam search did not reach is at most that likely under the generator). `a` and the penalty
are chosen on the validation split only (`tune_fusion`), with the same function that serves them.
With no dense model (`a` = 0) this is pure generation, the `genrec-gen` row.

Items added after training (`genrec items add`) have a semantic ID, so beams can reach them, but
no dense column. They join the candidates two ways (LIGER's way, arXiv 2411.18814): when a beam
reaches them, and as the `cold_candidates` cold items nearest in content to the user's history.
Their `d` is a content term standing in for the dense score:

    d(i) = d_top + b * (cos(i, history) - 1)

with `d_top` the user's best dense score among the candidates and `cos` the cosine between the
item's content vector and the mean of the history's; `b` (`content_weight`) is chosen on validation
when validation has cold targets. A run with no such item ranks exactly as without this term.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from inference.decoding.trie import Exclusions, Histories, Scored, SidTrie


class Generator(Protocol):
    """A generation backend: trie-constrained top items for histories, as (item_id, log-prob)."""

    name: str
    trie: SidTrie
    beam_width: int

    def generate(
        self,
        histories: Histories,
        width: int | None = None,
        exclude: Exclusions = None,
        only: Collection[str] | None = None,
    ) -> list[list[Scored]]: ...


class DenseScorer(Protocol):
    """A dense next-item model: a log-softmax over the whole catalog for each history."""

    item_ids: list[str]  # the columns of `scores`

    def scores(self, histories: Histories) -> Any: ...  # (batch, catalog) log-probabilities, a tensor or an array


@dataclass
class Fusion:
    """How generated and dense scores are mixed (chosen on validation, saved as RUN/ranking.json)."""

    dense_weight: float = 0.0  # a: 0 = pure generation, 1 = the dense model re-ranking the union
    miss_penalty: float = 1.0  # g of a candidate no beam reached: the user's lowest beam log-prob minus this
    dense_candidates: int = 50  # the dense model's top items added to the beams as candidates
    content_weight: float = 10.0  # b: how fast a cold item's stand-in dense score falls with content distance
    cold_candidates: int = 10  # cold items nearest in content to the history added as candidates
    valid_ndcg10: float | None = None  # validation NDCG@10 of this setting (tune_fusion)
    grid: list[dict] = field(default_factory=list)  # every setting tried on validation and its NDCG@10
    seconds: float | None = None  # what choosing it took (tune_fusion over `users` validation users)
    users: int | None = None

    def to_json(self) -> dict:
        """Plain JSON form (RUN/ranking.json)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Fusion:
        """Read RUN/ranking.json."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Candidates:
    """One history's candidates with both scores: the input of every fusion, served or tuned."""

    items: list[str]
    generated: np.ndarray  # g: beam log-prob, NaN where no beam reached the item
    dense: np.ndarray  # d: dense log-softmax (zeros without a dense model; NaN for a cold item)
    content: np.ndarray | None = (
        None  # cosine of each cold item with the history (NaN for the rest); None: no cold item
    )


@dataclass
class ColdItems:
    """Items the dense model has no column for (added after it was trained), and the content vectors
    (unit rows, every item's) that place them beside a user's history."""

    ids: list[str]  # the cold items that may be recommended now
    index: dict[str, int]  # item id -> row of `vectors`, for every item (histories name warm ones too)
    vectors: np.ndarray
    window: int = 20  # the history's last items whose mean content vector is the user's profile

    def similarity(self, history: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """Cosine between each of `items` and the mean content vector of the history's last items."""
        rows = [self.index[i] for i in history if i in self.index][-self.window :]
        if not rows or not len(items):
            return np.zeros(len(items))
        profile = self.vectors[rows].mean(axis=0)
        profile = profile / max(float(np.linalg.norm(profile)), 1e-12)
        return self.vectors[[self.index[i] for i in items]] @ profile


def fused_order(
    c: Candidates, dense_weight: float, miss_penalty: float, content_weight: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate positions best first, and their fused scores; ties broken by item id."""
    if not len(c.items):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    reached = ~np.isnan(c.generated)
    floor = (c.generated[reached].min() if reached.any() else 0.0) - miss_penalty
    g = np.where(reached, c.generated, floor)
    d = c.dense
    if c.content is not None:  # cold items: the content term stands in for the dense score they lack
        warm = ~np.isnan(d)
        top = d[warm].max() if warm.any() else 0.0
        d = np.where(warm, d, top + content_weight * (np.nan_to_num(c.content) - 1.0))
    score = (1.0 - dense_weight) * g + dense_weight * d
    order = np.lexsort((np.asarray(c.items), -score))
    return order, score[order]


@dataclass
class Ranker:
    """The served ranking of one run: a generator, optionally a dense model and its fusion."""

    generator: Generator
    dense: DenseScorer | None = None
    fusion: Fusion = field(default_factory=Fusion)
    name: str = "genrec"
    cold: ColdItems | None = None  # items added after training (`retrieval.live`); None: none
    retired: frozenset[str] = frozenset()  # items taken out of the catalog: never a candidate

    @property
    def hybrid(self) -> bool:
        """True when a dense model takes part in the ranking."""
        return self.dense is not None and self.fusion.dense_weight > 0

    def candidates(
        self,
        histories: Sequence[Sequence[str]],
        exclude: Sequence[Collection[str]] | None = None,
        only: Collection[str] | None = None,
        width: int | None = None,
    ) -> list[Candidates]:
        """Beams, dense top items and (with cold items) the nearest cold items in content of each
        history, with the scores of every candidate."""
        if self.retired:
            exclude = [
                set(exclude[i]) | self.retired if exclude is not None else self.retired for i in range(len(histories))
            ]
        beams = self.generator.generate(histories, width, exclude, only)
        known = self.generator.trie.code_of  # a server a catalog change ahead may name an item this catalog lacks
        beams = [[(i, s) for i, s in b if i in known] for b in beams]
        if not self.hybrid:
            return [
                Candidates([i for i, _ in b], np.array([s for _, s in b], dtype=np.float64), np.zeros(len(b)))
                for b in beams
            ]
        dense = self.dense
        column = {item: j for j, item in enumerate(dense.item_ids)}
        scores = np.asarray(dense.scores(histories), dtype=np.float64)
        allowed = None
        if only is not None:
            allowed = np.zeros(len(dense.item_ids), dtype=bool)
            allowed[[column[i] for i in only if i in column]] = True
        out = []
        for row, found in enumerate(beams):
            d = np.array(scores[row], dtype=np.float64, copy=True)
            hidden = [column[i] for i in (exclude[row] if exclude is not None else ()) if i in column]
            d_masked = d.copy()
            d_masked[hidden] = -np.inf
            if allowed is not None:
                d_masked[~allowed] = -np.inf
            m = min(self.fusion.dense_candidates, int(np.isfinite(d_masked).sum()))
            top = np.argpartition(-d_masked, m - 1)[:m] if m > 0 else np.zeros(0, dtype=np.int64)
            items = [i for i, _ in found]
            seen = set(items)
            items += [dense.item_ids[j] for j in top if dense.item_ids[j] not in seen]
            generated = np.full(len(items), np.nan)
            generated[: len(found)] = [s for _, s in found]
            if self.cold is None or not self.cold.ids:
                out.append(Candidates(items, generated, np.array([d[column[i]] for i in items])))
                continue
            out.append(self._with_cold(histories[row], items, generated, d, column, exclude, only, row))
        return out

    def _with_cold(self, history, items, generated, d, column, exclude, only, row) -> Candidates:
        """The candidates plus the cold items nearest in content to `history`, scored for the content term."""
        cold = self.cold
        hidden = set(exclude[row]) if exclude is not None else set()
        pool = [i for i in cold.ids if i not in hidden and (only is None or i in only)]
        sim = cold.similarity(history, pool)
        m = min(self.fusion.cold_candidates, len(pool))
        near = [pool[j] for j in np.argsort(-sim, kind="stable")[:m]]
        seen = set(items)
        extra = [i for i in near if i not in seen]
        items = items + extra
        generated = np.concatenate([generated, np.full(len(extra), np.nan)])
        dense = np.array([d[column[i]] if i in column else np.nan for i in items])
        content = np.full(len(items), np.nan)
        is_cold = np.isnan(dense)
        content[is_cold] = cold.similarity(history, [i for i, c in zip(items, is_cold) if c])
        return Candidates(items, generated, dense, content)

    def rank(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        only: Collection[str] | None = None,
    ) -> list[list[Scored]]:
        """Top-`k` (item_id, fused score) per history, best first; never an item of `exclude[i]`,
        never one outside `only`, never one outside the catalog."""
        a = self.fusion.dense_weight if self.hybrid else 0.0
        out = []
        for c in self.candidates(histories, exclude, only, max(self.generator.beam_width, k)):
            order, score = fused_order(c, a, self.fusion.miss_penalty, self.fusion.content_weight)
            out.append([(c.items[j], float(s)) for j, s in zip(order[:k], score[:k])])
        return out

    # the evaluation protocol (genrec.protocol.Recommender): the same function, history excluded
    def fit(self, train: dict[str, list[str]]) -> None:
        """Nothing to fit: `genrec train` trained the models and chose the fusion."""

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` item ids per history, history excluded."""
        return [[i for i, _ in row] for row in self.rank(histories, k, exclude=[set(h) for h in histories])]


def validation_table(
    ranker: Ranker, cases: dict[str, tuple[list[str], str]], users: Sequence[str], batch_size: int, progress: bool
) -> list[tuple[Candidates, str]]:
    """Every validation user's candidates (history excluded) and held-out item: what each fusion
    setting re-ranks with `fused_order`."""
    from tqdm.auto import tqdm

    table: list[tuple[Candidates, str]] = []
    for start in tqdm(range(0, len(users), batch_size), desc="fusion: candidates", unit="batch", disable=not progress):
        batch = list(users[start : start + batch_size])
        histories = [list(cases[u][0]) for u in batch]
        found = ranker.candidates(histories, exclude=[set(h) for h in histories])
        table += [(c, cases[u][1]) for c, u in zip(found, batch)]
    return table


def table_ndcg(table: list[tuple[Candidates, str]], a: float, penalty: float, b: float) -> float:
    """Validation NDCG@10 of one fusion setting over a `validation_table`."""
    from genrec.metrics import ndcg_at

    ranks = np.zeros(len(table), dtype=np.int64)
    for row, (c, target) in enumerate(table):
        order, _ = fused_order(c, a, penalty, b)
        top = [c.items[j] for j in order[:10]]
        ranks[row] = top.index(target) + 1 if target in top else 0
    return float(ndcg_at(ranks, 10).mean())


CONTENT_WEIGHTS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)


def tune_fusion(
    ranker: Ranker,
    cases: dict[str, tuple[list[str], str]],
    users: Sequence[str],
    weights: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2)),
    penalties: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
    batch_size: int = 256,
    progress: bool = True,
) -> Fusion:
    """The fusion with the best NDCG@10 on validation `cases` (history -> held-out item) of `users`.

    Beams and dense scores are computed once; every (weight, penalty) pair then re-ranks the same
    candidates with `fused_order`, the function `Ranker.rank` serves with.
    """
    if ranker.dense is None:
        raise ValueError("tune_fusion needs a dense model")
    probe = Ranker(
        ranker.generator, ranker.dense, Fusion(dense_weight=1.0, dense_candidates=ranker.fusion.dense_candidates)
    )
    table = validation_table(probe, cases, users, batch_size, progress)
    b = ranker.fusion.content_weight
    grid = [
        {"dense_weight": float(a), "miss_penalty": float(p), "valid_ndcg@10": table_ndcg(table, float(a), float(p), b)}
        for a in weights
        for p in (penalties if a > 0 else penalties[:1])
    ]
    best = max(grid, key=lambda g: (g["valid_ndcg@10"], -g["dense_weight"]))
    return Fusion(
        best["dense_weight"],
        best["miss_penalty"],
        ranker.fusion.dense_candidates,
        valid_ndcg10=best["valid_ndcg@10"],
        grid=grid,
    )


def tune_content_weight(
    ranker: Ranker,
    cases: dict[str, tuple[list[str], str]],
    users: Sequence[str],
    weights: Sequence[float] = CONTENT_WEIGHTS,
    batch_size: int = 256,
    progress: bool = True,
) -> Fusion:
    """The ranker's fusion with the content weight `b` of cold items chosen on validation: the one
    with the best NDCG@10 over `cases`, whose held-out items include cold ones (items added after
    training, LIGER's setting). The dense weight and the miss penalty stay as `genrec train` chose them."""
    from dataclasses import replace

    table = validation_table(ranker, cases, users, batch_size, progress)
    fusion = ranker.fusion
    tried = [
        {
            "content_weight": float(w),
            "valid_ndcg@10": table_ndcg(table, fusion.dense_weight, fusion.miss_penalty, float(w)),
        }
        for w in weights
    ]
    best = max(tried, key=lambda g: (g["valid_ndcg@10"], g["content_weight"]))
    return replace(fusion, content_weight=best["content_weight"], grid=fusion.grid + [{"cold": tried}])
