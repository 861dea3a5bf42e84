"""What the training loop (`finetune.loop`) and the reports share: a budget, a timed validation pass
on a fixed sample, and the per-stage rows a report is built from.

- `Budget`: a stage's cap in wall minutes and/or training tokens (targets, for the dense model).
  The loop asks `Budget.reason(seconds, tokens)` after every step or epoch, stops when it names one,
  keeps its best validated weights, and records why it stopped (`stopped_by`).
- `timed_validation`: one validation pass (NDCG@10 on a fixed, seeded sample of validation users;
  `genrec.metrics.validation_ndcg`) with its seconds and users, as the loop records it.
- `stage_rows`: minutes and tokens/s per stage (pre-training, its validation passes, LoRA, its
  validation passes, the dense model, its validation passes, the fusion) from a `TrainReport`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Budget:
    """A stage's cap: wall-clock minutes and/or tokens trained (None: no cap on that)."""

    minutes: float | None = None
    tokens: int | None = None
    used: float = 0.0  # the share of the cap spent so far (0..1), kept up to date by the training loop

    def fraction(self, seconds: float, tokens: int) -> float:
        """The share of the cap that `seconds` and `tokens` spend (the larger of the two; 0 without a cap)."""
        shares = [0.0]
        if self.minutes is not None:
            shares.append(seconds / (60 * self.minutes))
        if self.tokens is not None:
            shares.append(tokens / self.tokens)
        return min(1.0, max(shares))

    def reason(self, seconds: float, tokens: int) -> str | None:
        """ "max_minutes" or "max_tokens" once `seconds` / `tokens` spent reach the cap; None before."""
        if self.minutes is not None and seconds >= 60 * self.minutes:
            return "max_minutes"
        if self.tokens is not None and tokens >= self.tokens:
            return "max_tokens"
        return None

    def to_json(self) -> dict:
        """The caps as a report records them."""
        return {"minutes": self.minutes, "tokens": self.tokens}


def timed_validation(score: Callable[[], float], users: int) -> dict:
    """Run one validation pass; its NDCG@10, seconds and users (the record every loop keeps)."""
    started = time.perf_counter()
    value = score()
    return {"valid_ndcg@10": value, "valid_seconds": time.perf_counter() - started, "valid_users": users}


def _row(stage: str, seconds: float, tokens: float | None = None, unit: str = "tokens", **extra) -> dict:
    row = {"stage": stage, "minutes": seconds / 60}
    if tokens is not None:
        row[unit] = tokens
        row[f"{unit}_per_s"] = tokens / seconds if seconds else None
    return row | extra


def stage_rows(report: dict) -> list[dict]:
    """Minutes and throughput of each training stage of a `TrainReport` (as a dict), in order."""
    rows = []
    pre = report.get("pretrain_epochs") or []
    if pre:
        rows.append(
            _row(
                "pre-training",
                sum(e.get("seconds", 0.0) for e in pre),
                sum(e.get("tokens", e.get("tokens_per_s", 0.0) * e.get("seconds", 0.0)) for e in pre),
                epochs=len(pre),
                stopped_by=report.get("pretrain_stopped_by"),
            )
        )
        passes = [e for e in pre if "valid_seconds" in e]
        if passes:
            rows.append(_validation_row("pre-training validation", passes))
    lora = [e for e in report.get("epochs") or [] if e.get("loss") is not None]
    if lora:
        rows.append(
            _row(
                "LoRA",
                report.get("train_seconds", 0.0),
                report.get("tokens_per_s", 0.0) * report.get("train_seconds", 0.0),
                epochs=len(lora),
                stopped_by=report.get("lora_stopped_by"),
            )
        )
        rows.append(_validation_row("LoRA validation", lora))
    dense = report.get("dense") or {}
    if dense.get("reused_from"):  # trained elsewhere with the same settings and data: nothing spent here
        rows.append(
            _row(
                f"dense model ({dense.get('kind')}), reused",
                0.0,
                reused_from=dense["reused_from"],
                minutes_where_trained=dense.get("minutes"),
            )
        )
    elif dense.get("train_seconds") is not None:
        trained = dense.get("targets_per_s", 0.0) * dense["train_seconds"]
        rows.append(
            _row(
                f"dense model ({dense.get('kind')})",
                dense["train_seconds"],
                trained,
                unit="targets",
                epochs=dense.get("epochs"),
                stopped_by=dense.get("stopped_by"),
            )
        )
        rows.append(_row("dense validation", dense.get("valid_seconds", 0.0), passes=dense.get("validations")))
    fusion = report.get("fusion") or {}
    if fusion.get("seconds") is not None:
        rows.append(_row("fusion (all validation users)", fusion["seconds"], users=fusion.get("users")))
    return rows


def _validation_row(stage: str, passes: list[dict]) -> dict:
    seconds = sum(p.get("valid_seconds", 0.0) for p in passes)
    return _row(stage, seconds, passes=len(passes), users_per_pass=passes[-1].get("valid_users"))
