"""The contract between the evaluation protocol and every model it compares.

A model is fitted on training histories and asked, for a batch of histories, for its top-K items.
Metrics are computed from those ranked lists only, by one implementation (`genrec.metrics`), so
two models can never be scored by two code paths.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Recommender(Protocol):
    """Anything that can be fitted on histories and rank items for a history."""

    name: str

    def fit(self, train: dict[str, list[str]]) -> None:
        """Learn from training histories: user id -> item ids in time order."""
        ...

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` item ids for each history, best first, never an item of that history,
        never an id outside the catalog (invalid ids count against the model's valid-ID rate)."""
        ...
