"""The one implementation of every ranking metric genrec reports.

Everything starts from what a model returned (ranked lists of item ids) and the held-out targets.
The per-user 1-based rank of the target (0 when it is absent) is the primitive: Recall@K, NDCG@K
and MRR are functions of it, so curves over any K, popularity or cold-start slices and paired
significance tests all reuse the same numbers.

Conventions (leave-one-out, one target per user):
- Recall@K equals HR@K: 1 if the target is among the first K returned ids.
- NDCG@K = 1 / log2(rank + 1) if rank <= K, else 0 (the ideal DCG of one relevant item is 1).
- MRR = 1 / rank within the returned list, 0 if absent. Models that score the whole catalog are
  asked for max(K) ids, so their MRR is the MRR of the list truncated at max(K).
- valid_rate: share of returned ids that exist in the catalog (invalid ids also occupy ranks).
- coverage: distinct catalog items among all users' top-10 lists / catalog size.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from genrec.errors import GenrecError
from genrec.protocol import Recommender

Case = tuple[list[str], str]  # (history in time order, held-out next item)

COVERAGE_K = 10
COLD_START_THRESHOLD = 5


def hit_ranks(ranked: Sequence[Sequence[str]], targets: Sequence[str]) -> np.ndarray:
    """1-based rank of each target in its list (first occurrence), 0 when it is absent."""
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists for {len(targets)} targets")
    ranks = np.zeros(len(targets), dtype=np.int64)
    for row, (items, target) in enumerate(zip(ranked, targets)):
        for position, item in enumerate(items, 1):
            if item == target:
                ranks[row] = position
                break
    return ranks


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user Recall@k (= HR@k for one target): 1.0 if the target is in the top k."""
    return ((ranks > 0) & (ranks <= k)).astype(np.float64)


def ndcg_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k for one target: 1/log2(rank+1) inside the top k, else 0."""
    hit = (ranks > 0) & (ranks <= k)
    out = np.zeros(len(ranks), dtype=np.float64)
    out[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return out


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    """Per-user reciprocal rank within the returned list, 0 when the target is absent."""
    out = np.zeros(len(ranks), dtype=np.float64)
    hit = ranks > 0
    out[hit] = 1.0 / ranks[hit]
    return out


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """Mean Recall@K and NDCG@K for each K, and MRR, over the given per-user ranks."""
    out: dict[str, float] = {}
    n = len(ranks)
    for k in sorted(set(ks)):
        out[f"recall@{k}"] = float(recall_at(ranks, k).mean()) if n else 0.0
        out[f"ndcg@{k}"] = float(ndcg_at(ranks, k).mean()) if n else 0.0
    out["mrr"] = float(reciprocal_rank(ranks).mean()) if n else 0.0
    return out


def cold_start_mask(
    targets: Sequence[str], train_counts: Mapping[str, int], threshold: int = COLD_START_THRESHOLD
) -> np.ndarray:
    """Users whose target item was seen fewer than `threshold` times in training."""
    return np.array([train_counts.get(t, 0) < threshold for t in targets], dtype=bool)


@dataclass
class RankingAccumulator:
    """Collects ranked lists batch by batch and turns them into metrics, keeping per-user ranks.

    Lists are not stored, only what the metrics need: each user's hit rank, the number of
    returned and valid ids, and the set of items in top-`COVERAGE_K` lists.
    """

    catalog: Collection[str]
    users: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    _ranks: list[np.ndarray] = field(default_factory=list)
    returned: int = 0
    valid: int = 0
    recommended: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        # membership is tested for every returned id: a set keeps that O(1) whatever was passed
        self.catalog = frozenset(self.catalog)

    def add(self, users: Sequence[str], ranked: Sequence[Sequence[str]], targets: Sequence[str]) -> None:
        """Score one batch: `ranked[i]` is the list returned for `users[i]`, whose target is `targets[i]`."""
        if not (len(users) == len(ranked) == len(targets)):
            raise ValueError(f"batch sizes differ: {len(users)} users, {len(ranked)} lists, {len(targets)} targets")
        self._ranks.append(hit_ranks(ranked, targets))
        self.users.extend(users)
        self.targets.extend(targets)
        for items in ranked:
            self.returned += len(items)
            self.valid += sum(1 for item in items if item in self.catalog)
            self.recommended.update(item for item in items[:COVERAGE_K] if item in self.catalog)

    @property
    def ranks(self) -> np.ndarray:
        """Per-user 1-based hit ranks (0 = miss), aligned with `users` and `targets`."""
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, dtype=np.int64)

    def summary(self, ks: Iterable[int], train_counts: Mapping[str, int] | None = None) -> dict[str, float]:
        """All headline metrics; with `train_counts`, also the cold-start slice (`cold_*` keys)."""
        ranks = self.ranks
        out = ranking_metrics(ranks, ks)
        out["valid_rate"] = self.valid / self.returned if self.returned else 1.0
        out["coverage"] = len(self.recommended) / len(self.catalog) if len(self.catalog) else 0.0
        out["users"] = len(ranks)
        if train_counts is not None:
            cold = cold_start_mask(self.targets, train_counts)
            out["cold_users"] = int(cold.sum())
            cold_metrics = ranking_metrics(ranks[cold], [COVERAGE_K])
            out[f"cold_recall@{COVERAGE_K}"] = cold_metrics[f"recall@{COVERAGE_K}"]
            out[f"cold_ndcg@{COVERAGE_K}"] = cold_metrics[f"ndcg@{COVERAGE_K}"]
        return out


def score_lists(
    ranked: Sequence[Sequence[str]],
    targets: Sequence[str],
    catalog: Collection[str],
    ks: Iterable[int],
    train_counts: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Metrics for ranked lists in one call (tests, small experiments); users are numbered 0..n-1."""
    acc = RankingAccumulator(catalog=catalog)
    acc.add([str(i) for i in range(len(ranked))], ranked, targets)
    return acc.summary(ks, train_counts)


def sample_users(cases: Mapping[str, Case], max_users: int | None, seed: int = 0) -> list[str]:
    """The users to evaluate: all (sorted), or a fixed seeded sample so every model sees the same ones."""
    users = sorted(cases)
    if max_users is None or max_users >= len(users):
        return users
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(users), size=max_users, replace=False)
    return [users[i] for i in sorted(picked)]


def rank_cases(
    model: Recommender,
    cases: Mapping[str, Case],
    users: Sequence[str],
    catalog_item_ids: Iterable[str],
    k: int,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[RankingAccumulator, float]:
    """Ask `model` for top-`k` lists for `users`' cases in batches; returns the scored lists and
    the seconds spent inside `recommend` (for throughput)."""
    acc = RankingAccumulator(catalog=frozenset(catalog_item_ids))
    seconds = 0.0
    with tqdm(total=len(users), desc=f"eval {model.name}", unit="user", disable=not progress, leave=False) as bar:
        for start in range(0, len(users), batch_size):
            batch = list(users[start : start + batch_size])
            histories = [list(cases[u][0]) for u in batch]
            targets = [cases[u][1] for u in batch]
            t0 = time.perf_counter()
            ranked = model.recommend(histories, k)
            seconds += time.perf_counter() - t0
            if len(ranked) != len(batch):
                raise GenrecError(f"model {model.name!r} returned {len(ranked)} lists for {len(batch)} histories")
            acc.add(batch, [list(r)[:k] for r in ranked], targets)
            bar.update(len(batch))
    return acc, seconds


def validation_ndcg(
    model: Recommender,
    valid: Mapping[str, Case],
    catalog_item_ids: Iterable[str],
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    progress: bool = False,
) -> float:
    """NDCG@10 on validation cases alone: the early-stopping signal of training loops, which see
    only the train and valid parts of a split. `progress` shows a bar (a generative model's
    validation on all Amazon Beauty users takes minutes)."""
    users = sample_users(valid, max_users, seed)
    acc, _ = rank_cases(model, valid, users, catalog_item_ids, 10, batch_size, progress=progress)
    return acc.summary([10])["ndcg@10"]
