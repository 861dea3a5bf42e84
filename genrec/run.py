"""The run directory: where every artefact of one pipeline lives, and how to find it.

A stage reads its inputs from here and can be re-run alone; a missing input is a one-line error
that names the command to run first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genrec.config import RunConfig, load_config, save_config
from genrec.errors import GenrecError


@dataclass(frozen=True)
class RunPaths:
    """Paths of the artefacts inside one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def items(self) -> Path:
        return self.root / "items.parquet"

    @property
    def interactions(self) -> Path:
        return self.root / "interactions.parquet"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def chroma(self) -> Path:
        return self.root / "chroma"

    @property
    def semantic_ids(self) -> Path:
        return self.root / "semantic_ids.json"

    @property
    def semantic_id_stats(self) -> Path:
        return self.root / "semantic_ids.stats.json"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        """Resumable training state of a stage that has not finished (`finetune.checkpoint`)."""
        return self.root / "checkpoints"

    @property
    def dense(self) -> Path:
        """The dense next-item model fused into the served ranking (`finetune.dense`, saved with `save_pretrained`)."""
        return self.root / "dense"

    @property
    def ranking(self) -> Path:
        """The fusion chosen on validation (`inference.ranking.Fusion`)."""
        return self.root / "ranking.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def require(self, path: Path, produced_by: str) -> Path:
        """Return `path` if it exists, else fail with a message naming the command that makes it."""
        if not path.exists():
            raise GenrecError(f"{path}: missing; run `{produced_by}` first")
        return path


def open_run(root: str | Path) -> tuple[RunPaths, RunConfig]:
    """Open an existing run directory and its saved config."""
    paths = RunPaths(Path(root))
    if not paths.root.is_dir():
        raise GenrecError(f"{paths.root}: no such run directory; run `genrec index --run {paths.root}` first")
    config = load_config(paths.config) if paths.config.exists() else RunConfig(name=paths.root.name)
    return paths, config


def init_run(root: str | Path, config: RunConfig) -> RunPaths:
    """Create (or reuse) a run directory and save the config that drives it."""
    paths = RunPaths(Path(root))
    paths.root.mkdir(parents=True, exist_ok=True)
    save_config(config, paths.config)
    return paths
