"""The one served ranking: generated semantic IDs fused with a dense next-item score.

Every ranking a user can receive (`genrec recommend`, the agent's `recommend` tool, the HTTP API,
the vLLM path) and the `genrec` row of `genrec eval` is `Ranker.rank`. Only the generation backend
differs: in-process beam search (`inference.decoding.local`) or vLLM (`inference.vllm_generator`).

Candidates are the generator's trie-constrained beams (every one a catalog item) and the dense
model's top items. Each candidate's score is a log-linear mix of two next-item log-probabilities:

    score(i) = (1 - a) * g(i) + a * d(i)

`d(i)` is the dense model's full-catalog log-softmax; `g(i)` the item's generated sequence
log-prob when a beam reached it. For a dense candidate no beam reached, `g(i)` is either the
generator's own sequence log-prob of its semantic ID, scored in one teacher-forced pass
(`scored_misses`), or a guess: the user's lowest beam log-prob minus `miss_penalty` (an item the
beam search did not reach is at most about that likely). `a`, the way misses are scored and the
penalty are chosen on the validation split only (`tune_fusion`), with the same function that serves
them.
With no dense model (`a` = 0) this is pure generation, the `genrec-gen` row.

Items added after training (`genrec items add`) have a semantic ID, so beams can reach them, but
no dense column. They join the candidates two ways (LIGER's way, arXiv 2411.18814): when a beam
reaches them, and as the `cold_candidates` cold items the dense model scores highest through a
stand-in embedding: the mean direction of the embeddings of the `cold_neighbours` catalog items
nearest in content, at their mean length (a plain mean is shorter and would score ~3 nats lower).
Their `d` is that dense score (the user's state dotted with the stand-in, normalised like every
catalog column) plus an offset `c` (`cold_offset`) chosen on validation when validation has cold
targets:

    d(i) = h . e(i) - log sum_j exp(h . E_j)  +  c

The content decides which catalog items a cold item stands beside; the dense model decides for
whom. A run with no such item ranks exactly as without this term.
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

    def score(self, histories: Histories, items: Sequence[Sequence[str]]) -> list[np.ndarray]: ...


class SharedBeams:
    """A generator whose beams for a (history, width, exclusions, only) request are searched once and
    handed out twice: an evaluation ranks every user with the served fusion and with pure generation
    (`genrec-gen`), whose beams are the same search. Each search's result is kept until the second
    request for it takes it, so one evaluation pass holds at most one model's worth of beams."""

    def __init__(self, inner: Generator):
        self.inner = inner
        self._kept: dict[tuple, list[Scored]] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def trie(self) -> SidTrie:
        return self.inner.trie

    @property
    def beam_width(self) -> int:
        return self.inner.beam_width

    def generate(
        self,
        histories: Histories,
        width: int | None = None,
        exclude: Exclusions = None,
        only: Collection[str] | None = None,
    ) -> list[list[Scored]]:
        """The inner generator's beams; a request already searched once is not searched again."""
        within = frozenset(only) if only is not None else None
        keys = [
            (tuple(h), width, frozenset(exclude[i]) if exclude is not None else None, within)
            for i, h in enumerate(histories)
        ]
        out = {i: self._kept.pop(key) for i, key in enumerate(keys) if key in self._kept}
        missing = [i for i in range(len(keys)) if i not in out]
        if missing:
            found = self.inner.generate(
                [histories[i] for i in missing],
                width,
                [exclude[i] for i in missing] if exclude is not None else None,
                only,
            )
            for i, beams in zip(missing, found):
                out[i] = self._kept[keys[i]] = beams
        return [out[i] for i in range(len(keys))]

    def score(self, histories: Histories, items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """The inner generator's sequence log-probs of `items[i]` after history i."""
        return self.inner.score(histories, items)


class DenseScorer(Protocol):
    """A dense next-item model: a log-softmax over the whole catalog for each history."""

    item_ids: list[str]  # the columns of `scores`

    def scores(self, histories: Histories) -> Any: ...  # (batch, catalog) log-probabilities, a tensor or an array

    def item_vectors(self) -> Any: ...  # (catalog, hidden) item embeddings, rows aligned with `item_ids`

    def scores_with(self, histories: Histories, extra: Any) -> Any: ...  # `scores` plus a column per `extra` row


@dataclass
class Fusion:
    """How generated and dense scores are mixed (chosen on validation, saved as RUN/ranking.json)."""

    dense_weight: float = 0.0  # a: 0 = pure generation, 1 = the dense model re-ranking the union
    miss_penalty: float = 1.0  # g of a candidate no beam reached: the user's lowest beam log-prob minus this
    scored_misses: bool = False  # g of a candidate no beam reached: the generator's own log-prob (no penalty)
    dense_candidates: int = 50  # the dense model's top items added to the beams as candidates
    cold_offset: float = 0.0  # c: added to a cold item's stand-in dense score (chosen on validation)
    cold_candidates: int = 10  # cold items with the best stand-in dense scores added as candidates
    cold_neighbours: int = 50  # catalog items nearest in content whose mean embedding stands in for a cold item's
    cold_beams: bool = True  # may beams reach cold items (chosen on validation: they take beam places from warm ones)
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
    cold: np.ndarray | None = None  # each cold item's stand-in dense score, before the offset (NaN for the rest)
    missed: np.ndarray | None = None  # the generator's log-prob of each candidate no beam reached (NaN for the rest)


@dataclass
class ColdItems:
    """Items the dense model has no column for (added after it was trained), each with a stand-in
    embedding: the mean direction of the embeddings of the catalog items nearest to it in content,
    at their mean length."""

    ids: list[str]  # the cold items that may be recommended now
    embeddings: np.ndarray  # (len(ids), hidden), rows aligned with `ids`
    neighbours: np.ndarray  # (len(ids), k): the dense catalog positions each stand-in averages

    @classmethod
    def from_content(
        cls, ids: Sequence[str], index: dict[str, int], vectors: np.ndarray, dense: DenseScorer, k: int
    ) -> ColdItems:
        """Stand-ins for `ids` from the unit content `vectors` (row `index[item]`, every item's) and the
        embeddings of the `k` dense catalog items nearest to each in content (cosine)."""
        warm = vectors[[index[i] for i in dense.item_ids]]
        table = np.asarray(dense.item_vectors(), dtype=np.float32)
        k = min(k, len(dense.item_ids))
        near = np.zeros((len(ids), k), dtype=np.int64)
        for start in range(0, len(ids), 256):  # a block of cold rows at a time: (256, catalog) at most
            sim = vectors[[index[i] for i in ids[start : start + 256]]] @ warm.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
            near[start : start + len(sim)] = np.take_along_axis(top, order, axis=1)
        mean = table[near].mean(axis=1)  # averaging shortens a vector: give it its neighbours' mean length
        length = np.linalg.norm(table, axis=1)[near].mean(axis=1, keepdims=True)
        return cls(list(ids), mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12) * length, near)


def excluding(exclude: Sequence[Collection[str]] | None, more: Collection[str], n: int) -> list[Collection[str]]:
    """Each of `n` histories' excluded items (`exclude`, or none) with `more` added."""
    return [set(exclude[i]) | set(more) if exclude is not None else more for i in range(n)]


def generator_scores(c: Candidates, miss_penalty: float, scored_misses: bool = False) -> np.ndarray:
    """g of every candidate: its beam log-prob; for one no beam reached, the generator's own log-prob
    where it was scored (`scored_misses`), else the lowest beam log-prob minus `miss_penalty`."""
    reached = ~np.isnan(c.generated)
    floor = (c.generated[reached].min() if reached.any() else 0.0) - miss_penalty
    g = np.where(reached, c.generated, floor)
    if scored_misses and c.missed is not None:
        g = np.where(np.isnan(c.missed), g, c.missed)
    return g


def fused_order(
    c: Candidates, dense_weight: float, miss_penalty: float, cold_offset: float = 0.0, scored_misses: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate positions best first, and their fused scores; ties broken by item id."""
    if not len(c.items):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    g = generator_scores(c, miss_penalty, scored_misses)
    d = c.dense
    if c.cold is not None:  # cold items: the stand-in's dense score, offset, in place of the one they lack
        d = np.where(np.isnan(d), c.cold + cold_offset, d)
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
        """Beams, dense top items and (with cold items) the cold items with the best stand-in dense
        scores for each history, with the scores of every candidate (with `fusion.scored_misses`, the
        generator's log-prob of each candidate no beam reached too)."""
        if self.retired:
            exclude = excluding(exclude, self.retired, len(histories))
        searched = exclude
        if self.hybrid and self.cold is not None and self.cold.ids and not self.fusion.cold_beams:
            # cold items join by their stand-in alone; the beams keep every place for warm items
            searched = excluding(exclude, frozenset(self.cold.ids), len(histories))
        beams = self.generator.generate(histories, width, searched, only)
        known = self.generator.trie.code_of  # a server a catalog change ahead may name an item this catalog lacks
        beams = [[(i, s) for i, s in b if i in known] for b in beams]
        if not self.hybrid:
            return [
                Candidates([i for i, _ in b], np.array([s for _, s in b], dtype=np.float64), np.zeros(len(b)))
                for b in beams
            ]
        dense = self.dense
        column = {item: j for j, item in enumerate(dense.item_ids)}
        cold = self.cold if self.cold is not None and self.cold.ids else None
        if cold is None:
            scores = np.asarray(dense.scores(histories), dtype=np.float64)
        else:  # the cold items' stand-in columns after the catalog's, scored in the same pass
            scores = np.asarray(dense.scores_with(histories, cold.embeddings), dtype=np.float64)
            cold_scores, scores = scores[:, len(dense.item_ids) :], scores[:, : len(dense.item_ids)]
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
            if cold is None:
                out.append(Candidates(items, generated, np.array([d[column[i]] for i in items])))
                continue
            hidden = set(exclude[row]) if exclude is not None else set()
            out.append(self._with_cold(items, generated, d, column, cold_scores[row], hidden, only))
        if self.fusion.scored_misses:
            self._score_misses(histories, out)
        return out

    def _score_misses(self, histories: Sequence[Sequence[str]], found: list[Candidates]) -> None:
        """Fill each candidate list's `missed`: the generator's log-prob of the candidates no beam
        reached (those with a semantic ID; the rest stay NaN and take the floor)."""
        known = self.generator.trie.code_of
        wanted = [[j for j, item in enumerate(c.items) if np.isnan(c.generated[j]) and item in known] for c in found]
        scores = self.generator.score(histories, [[c.items[j] for j in js] for c, js in zip(found, wanted)])
        for c, js, s in zip(found, wanted, scores):
            c.missed = np.full(len(c.items), np.nan)
            c.missed[js] = s

    def _with_cold(self, items, generated, d, column, cold_scores, hidden, only) -> Candidates:
        """The candidates plus the `cold_candidates` cold items with the best stand-in dense scores
        (`cold_scores`, one per `self.cold.ids`), none of `hidden`, all in `only` when given."""
        ids = self.cold.ids
        position = {item: j for j, item in enumerate(ids)}
        pool = [j for j, i in enumerate(ids) if i not in hidden and (only is None or i in only)]
        m = min(self.fusion.cold_candidates, len(pool))
        best = sorted(pool, key=lambda j: (-cold_scores[j], ids[j]))[:m]
        seen = set(items)
        extra = [ids[j] for j in best if ids[j] not in seen]
        items = items + extra
        generated = np.concatenate([generated, np.full(len(extra), np.nan)])
        dense = np.array([d[column[i]] if i in column else np.nan for i in items])
        cold = np.array([cold_scores[position[i]] if i in position else np.nan for i in items])
        return Candidates(items, generated, dense, cold)

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
            order, score = fused_order(
                c, a, self.fusion.miss_penalty, self.fusion.cold_offset, self.fusion.scored_misses
            )
            out.append([(c.items[j], float(s)) for j, s in zip(order[:k], score[:k])])
        return out

    # the evaluation protocol (genrec.protocol.Recommender): the same function, history excluded
    def fit(self, train: dict[str, list[str]]) -> None:
        """Nothing to fit: `genrec train` trained the models and chose the fusion."""

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` item ids per history, history excluded."""
        return [[i for i, _ in row] for row in self.rank(histories, k, exclude=[set(h) for h in histories])]


@dataclass
class FusionTable:
    """Every validation user's candidates and held-out item, one row a user (candidates padded to the
    longest list), so that one fusion setting re-ranks all users at once with `fused_order`'s scores
    and ties: a setting over 22,363 Beauty users took minutes as a loop over `fused_order`."""

    generated: np.ndarray  # (users, width) g: beam log-prob, NaN where no beam reached the item (and padding)
    dense: np.ndarray  # d: dense log-softmax, NaN for a cold item (and padding)
    cold: np.ndarray  # a cold item's stand-in dense score before the offset, NaN elsewhere
    missed: np.ndarray  # the generator's log-prob of a candidate no beam reached, NaN elsewhere (and padding)
    real: np.ndarray  # bool: a candidate, not padding
    target: np.ndarray  # (users,) the held-out item's column, -1 when it is no candidate
    before: np.ndarray  # bool: the candidate's id sorts before the held-out item's (`fused_order` breaks ties so)

    @classmethod
    def of(cls, rows: Sequence[tuple[Candidates, str]]) -> FusionTable:
        """Pack (candidates, held-out item) pairs."""
        shape = (len(rows), max((len(c.items) for c, _ in rows), default=0))
        table = cls(
            generated=np.full(shape, np.nan),
            dense=np.full(shape, np.nan),
            cold=np.full(shape, np.nan),
            missed=np.full(shape, np.nan),
            real=np.zeros(shape, dtype=bool),
            target=np.full(len(rows), -1, dtype=np.int64),
            before=np.zeros(shape, dtype=bool),
        )
        for row, (c, target) in enumerate(rows):
            n = len(c.items)
            table.generated[row, :n], table.dense[row, :n], table.real[row, :n] = c.generated, c.dense, True
            if c.cold is not None:
                table.cold[row, :n] = c.cold
            if c.missed is not None:
                table.missed[row, :n] = c.missed
            if target in c.items:
                table.target[row] = c.items.index(target)
                table.before[row, :n] = [item < target for item in c.items]
        return table

    def ranks(self, a: float, penalty: float, cold_offset: float, k: int = 10, scored: bool = False) -> np.ndarray:
        """Each held-out item's place (1-based) in its user's `fused_order` under this setting, 0 past `k`."""
        if not self.real.shape[1]:  # no user has a candidate
            return np.zeros(len(self.target), dtype=np.int64)
        g, d = self.generated, self.dense
        reached = ~np.isnan(g)
        lowest = np.where(reached, g, np.inf).min(axis=1, initial=np.inf)
        floor = np.where(reached.any(axis=1), lowest, 0.0) - penalty
        g = np.where(reached, g, floor[:, None])
        if scored:
            g = np.where(np.isnan(self.missed), g, self.missed)
        d = np.where(np.isnan(d), self.cold + cold_offset, d)
        score = (1.0 - a) * g + a * d  # as `fused_order` computes it, so ties are the same ties
        found = self.target >= 0
        own = score[np.arange(len(score)), np.maximum(self.target, 0)][:, None]
        # `fused_order` sorts by -score (NaN last, NaNs tied), then by item id
        lost, open_ = np.isnan(score), np.isnan(own)
        ahead = (score > own) | (~lost & open_)
        tied = (score == own) | (lost & open_)
        place = ((ahead | (tied & self.before)) & self.real).sum(axis=1)
        return np.where(found & (place < k), place + 1, 0)


def validation_table(
    ranker: Ranker, cases: dict[str, tuple[list[str], str]], users: Sequence[str], batch_size: int, progress: bool
) -> FusionTable:
    """Every validation user's candidates (history excluded) and held-out item: what each fusion
    setting re-ranks with `fused_order`."""
    from tqdm.auto import tqdm

    rows: list[tuple[Candidates, str]] = []
    for start in tqdm(range(0, len(users), batch_size), desc="fusion: candidates", unit="batch", disable=not progress):
        batch = list(users[start : start + batch_size])
        histories = [list(cases[u][0]) for u in batch]
        found = ranker.candidates(histories, exclude=[set(h) for h in histories])
        rows += [(c, cases[u][1]) for c, u in zip(found, batch)]
    return FusionTable.of(rows)


def table_ndcg(table: FusionTable, a: float, penalty: float, cold_offset: float, scored: bool = False) -> float:
    """Validation NDCG@10 of one fusion setting over a `validation_table`."""
    from genrec.metrics import ndcg_at

    return float(ndcg_at(table.ranks(a, penalty, cold_offset, scored=scored), 10).mean())


COLD_OFFSETS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def tune_fusion(
    ranker: Ranker,
    cases: dict[str, tuple[list[str], str]],
    users: Sequence[str],
    weights: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2)),
    penalties: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
    batch_size: int = 256,
    progress: bool = True,
    score_misses: bool = True,
) -> Fusion:
    """The fusion with the best NDCG@10 on validation `cases` (history -> held-out item) of `users`.

    Beams, dense scores and (with `score_misses`) the generator's log-probs of the dense candidates
    no beam reached are computed once; every (weight, penalty) pair, with misses floored or scored,
    then re-ranks the same candidates with `fused_order`, the function `Ranker.rank` serves with.
    On a tie the lower dense weight wins, then floored misses (scoring them costs a pass).
    """
    if ranker.dense is None:
        raise ValueError("tune_fusion needs a dense model")
    probe = Ranker(
        ranker.generator,
        ranker.dense,
        Fusion(dense_weight=1.0, dense_candidates=ranker.fusion.dense_candidates, scored_misses=score_misses),
    )
    table = validation_table(probe, cases, users, batch_size, progress)
    c = ranker.fusion.cold_offset
    grid = [
        {"dense_weight": float(a), "miss_penalty": float(p), "valid_ndcg@10": table_ndcg(table, float(a), float(p), c)}
        for a in weights
        for p in (penalties if a > 0 else penalties[:1])
    ]
    if score_misses:  # the penalty plays no part where every miss is scored
        grid += [
            {
                "dense_weight": float(a),
                "miss_penalty": 0.0,
                "scored_misses": True,
                "valid_ndcg@10": table_ndcg(table, float(a), 0.0, c, scored=True),
            }
            for a in weights
        ]
    best = max(grid, key=lambda g: (g["valid_ndcg@10"], -g["dense_weight"], not g.get("scored_misses", False)))
    return Fusion(
        best["dense_weight"],
        best["miss_penalty"],
        bool(best.get("scored_misses", False)),
        ranker.fusion.dense_candidates,
        valid_ndcg10=best["valid_ndcg@10"],
        grid=grid,
    )


def tune_cold_offset(
    ranker: Ranker,
    cases: dict[str, tuple[list[str], str]],
    users: Sequence[str],
    offsets: Sequence[float] = COLD_OFFSETS,
    batch_size: int = 256,
    progress: bool = True,
) -> Fusion:
    """The ranker's fusion with the cold items' settings chosen on validation: whether beams may
    reach them (`cold_beams`) and the offset `c` of their stand-in dense scores, the pair with the
    best NDCG@10 over `cases`, whose held-out items include cold ones (items added after training,
    LIGER's setting); on a tie the lower offset, then no cold beams, which let fewer cold items in.
    The dense weight and the miss penalty stay as `genrec train` chose them."""
    from dataclasses import replace

    fusion = ranker.fusion
    tried = []
    for beams in (True, False):
        probe = replace(ranker, fusion=replace(fusion, cold_beams=beams))
        table = validation_table(probe, cases, users, batch_size, progress)
        tried += [
            {
                "cold_beams": beams,
                "cold_offset": float(c),
                "valid_ndcg@10": table_ndcg(
                    table, fusion.dense_weight, fusion.miss_penalty, float(c), fusion.scored_misses
                ),
            }
            for c in offsets
        ]
    best = max(tried, key=lambda g: (g["valid_ndcg@10"], -g["cold_offset"], not g["cold_beams"]))
    return replace(
        fusion, cold_beams=best["cold_beams"], cold_offset=best["cold_offset"], grid=fusion.grid + [{"cold": tried}]
    )
