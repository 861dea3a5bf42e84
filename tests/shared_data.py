"""Where the team's data lives for tests: `../shared/data` beside the checkout (a git worktree sits
one level deeper, so every parent is tried)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = next(
    (p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent / "shared" / "data"
)
ML100K = SHARED_DATA / "ml-100k"
needs_ml100k = pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="MovieLens-100K not present in ../shared")
