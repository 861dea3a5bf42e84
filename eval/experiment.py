"""`genrec experiment FILE.yaml`: a grid of prompt templates x decoding settings x models, cached per cell.

The file names a run (its split, catalog and semantic IDs), a fixed sample of users, next-item
prompt templates (Jinja files), decoding settings (beam width, K, temperature; each a value or a
list) and models: a trained model folder (`RUN/model`, or a run directory) loaded locally with
Hugging Face, or a served vLLM endpoint. See `experiments/example.yaml`.

- The whole file is validated before anything is computed: an unknown key, a template that does not
  render, or a model path that does not exist is a one-line `GenrecError` naming the file and key.
- Each cell's result is cached under `OUTPUT/cells/<hash>.json`, keyed by the cell's settings, the
  template's text, the user sample and the mtimes of the model's files and of the run's data, so a
  re-run only computes what changed. Cells are written atomically as they finish: a later failure
  never loses them.
- Every metric comes from `genrec.metrics` (through `eval.evaluate.rank_cases`). Each cell records the
  exact rendered prompt of its first user.
- Results: `OUTPUT/results.md`, `OUTPUT/results.csv`, `OUTPUT/results.png`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from genrec.atomic import atomic_path, write_json, write_text
from genrec.errors import GenrecError

METRIC_KS = (1, 5, 10, 20)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelEntry(_Strict):
    """One model of the grid: a local folder (`path`) or a served endpoint (`endpoint`)."""

    name: str
    path: str | None = None  # RUN/model (base/ + adapter/ + genrec.json) or a run directory
    endpoint: str | None = None  # an OpenAI-compatible vLLM server serving the run's model
    served_model: str | None = None  # the endpoint's model name (default: the server's LoRA module)


class Decoding(_Strict):
    """Decoding settings; each key is one value or a list (the grid takes every combination)."""

    beam_width: list[int] = [20]
    k: list[int] = [10]
    temperature: list[float] = [1.0]

    @field_validator("beam_width", "k", "temperature", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]

    @field_validator("beam_width", "k")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError("must be one or more positive integers")
        return values

    @field_validator("temperature")
    @classmethod
    def _positive_t(cls, values: list[float]) -> list[float]:
        if not values or any(v <= 0 for v in values):
            raise ValueError("must be one or more numbers > 0")
        return values


class ExperimentFile(_Strict):
    """The experiment YAML, as written (paths relative to the file)."""

    run: str
    templates: list[str] = Field(min_length=1)
    models: list[ModelEntry] = Field(min_length=1)
    decoding: Decoding = Decoding()
    users: int = Field(100, ge=1)
    seed: int = 0
    split: Literal["test", "valid"] = "test"
    batch_size: int = Field(16, ge=1)
    output: str | None = None  # default: <file stem>.results/ beside the file


@dataclass
class Experiment:
    """A validated experiment: resolved paths, template texts, the grid of cells."""

    file: Path
    spec: ExperimentFile
    run: Path
    templates: list[Path]
    template_texts: dict[Path, str]
    model_dirs: dict[str, Path | None]
    out: Path

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of model x template x beam width x K x temperature, in file order."""
        d = self.spec.decoding
        return [
            {"model": m.name, "template": str(t), "beam_width": bw, "k": k, "temperature": temp}
            for m, t, bw, k, temp in itertools.product(
                self.spec.models, self.templates, d.beam_width, d.k, d.temperature
            )
        ]


@dataclass
class ExperimentResult:
    """What a run of the grid produced."""

    out: Path
    rows: list[dict[str, Any]]
    computed: int = 0
    cached: int = 0
    failed: int = 0
    first_error: str = ""
    table_md: Path = field(default_factory=Path)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _model_dir(path: Path) -> Path:
    """The folder holding `genrec.json`, `base/` and `adapter/`, given it or a run directory."""
    return path / "model" if (path / "model" / "genrec.json").exists() else path


def load_experiment(file: str | Path) -> Experiment:
    """Read and validate an experiment file completely (no model is loaded, nothing is computed)."""
    from inference.templates import render

    file = Path(file)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GenrecError(f"{file}: experiment file not found") from None
    except yaml.YAMLError as exc:
        raise GenrecError(f"{file}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise GenrecError(f"{file}: expected a mapping at the top level (run, templates, models, decoding ...)")
    try:
        spec = ExperimentFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise GenrecError(f"{file}: {where}: {what}") from None
    base = file.parent
    run = _resolve(base, spec.run)
    for needed in ("items.parquet", "interactions.parquet", "semantic_ids.json"):
        if not (run / needed).exists():
            raise GenrecError(f"{file}: run: {run / needed} does not exist; run `genrec index --run {run}` first")
    templates, texts = [], {}
    for i, name in enumerate(spec.templates):
        path = _resolve(base, name).resolve()
        key = f"templates[{i}]"
        if path.suffix != ".j2" or not path.is_file():
            raise GenrecError(f"{file}: {key}: {path} is not a .j2 template file")
        try:
            rendered = render(str(path), n=3)
        except GenrecError as exc:
            raise GenrecError(f"{file}: {key}: {exc}") from None
        except Exception as exc:  # Jinja syntax errors and anything a template can raise while rendering
            raise GenrecError(f"{file}: {key}: {path.name} fails to render ({exc.__class__.__name__}: {exc})") from None
        if not rendered.strip():
            raise GenrecError(f"{file}: {key}: {path.name} renders to an empty prompt")
        templates.append(path)
        texts[path] = path.read_text(encoding="utf-8")
    model_dirs: dict[str, Path | None] = {}
    for i, entry in enumerate(spec.models):
        key = f"models[{i}]"
        if entry.name in model_dirs:
            raise GenrecError(f"{file}: {key}.name: {entry.name!r} is used twice")
        if (entry.path is None) == (entry.endpoint is None):
            raise GenrecError(f"{file}: {key}: give exactly one of path (a local model) or endpoint (a served one)")
        if entry.path is not None:
            path = _resolve(base, entry.path)
            if not path.exists():
                raise GenrecError(f"{file}: {key}.path: {path} does not exist")
            folder = _model_dir(path)
            if not (folder / "genrec.json").exists() or not (folder / "base" / "config.json").exists():
                raise GenrecError(
                    f"{file}: {key}.path: {path} holds no trained genrec model (expected genrec.json and "
                    "base/); run `genrec train` first"
                )
            model_dirs[entry.name] = folder
        else:
            if not (run / "model" / "base").exists():
                raise GenrecError(
                    f"{file}: {key}.endpoint: the run {run} has no model/base (its tokenizer builds the prompts)"
                )
            if any(t != 1.0 for t in spec.decoding.temperature):
                raise GenrecError(
                    f"{file}: decoding.temperature: only 1.0 is possible with {key}.endpoint "
                    "(vLLM beam search does not rescale logits); use a local path model"
                )
            model_dirs[entry.name] = None
    out = _resolve(base, spec.output) if spec.output else base / f"{file.stem}.results"
    return Experiment(file, spec, run, templates, texts, model_dirs, out)


def _mtimes(folder: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(folder)), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()
    )


def cell_key(exp: Experiment, cell: dict[str, Any]) -> str:
    """Hash of everything a cell's result depends on: its settings, the template text, the model
    entry, the model files' mtimes, the run's data files' mtimes and the user sample."""
    entry = next(m for m in exp.spec.models if m.name == cell["model"])
    folder = exp.model_dirs[cell["model"]]
    data = [
        (n, (exp.run / n).stat().st_mtime_ns) for n in ("items.parquet", "interactions.parquet", "semantic_ids.json")
    ]
    material = {
        "cell": {k: v for k, v in cell.items() if k != "template"},
        "template": exp.template_texts[Path(cell["template"])],
        "model": entry.model_dump(exclude={"name", "path"}),
        "model_files": _mtimes(folder) if folder else [],
        "run_data": data,
        "sample": [exp.spec.users, exp.spec.seed, exp.spec.split],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _local_cell(gen: Any, cell: dict[str, Any]) -> Any:
    """A grid cell ranked in process: the model with the cell's template, beam width and temperature."""
    from inference.ranking import Ranker

    prompts = replace(gen.prompts, template=cell["template"])
    return Ranker(
        replace(gen, prompts=prompts, beam_width=cell["beam_width"], temperature=cell["temperature"]),
        name=cell["model"],
    )


def _endpoint_cell(exp: Experiment, entry: ModelEntry, cell: dict[str, Any]) -> Any:
    """A grid cell ranked by a served model: the same prompts, beams from the vLLM server."""
    from transformers import AutoTokenizer

    from genrec.run import RunPaths
    from inference.client import LLMClient
    from inference.decoding.local import model_meta
    from inference.decoding.prompts import HistoryPrompt
    from inference.decoding.trie import SidTrie
    from inference.ranking import Ranker
    from inference.vllm_generator import VllmGenerator
    from retrieval.semantic_ids import load_semantic_ids
    from serving.server import API_KEY_ENV

    paths = RunPaths(exp.run)
    trie = SidTrie(load_semantic_ids(paths))
    tokenizer = AutoTokenizer.from_pretrained(paths.model / "base")
    prompts = HistoryPrompt(tokenizer, trie.code_of, int(model_meta(paths)["max_history"]), cell["template"])
    client = LLMClient(
        entry.endpoint,
        api_key=os.environ.get(API_KEY_ENV) or None,  # the key `genrec serve` reads, for a server that wants one
        **({"model": entry.served_model} if entry.served_model else {}),
    )
    return Ranker(
        VllmGenerator(client, trie, prompts, beam_width=cell["beam_width"], model=client.model), name=cell["model"]
    )


def run_experiment(exp: Experiment, force: bool = False, progress: bool = True) -> ExperimentResult:
    """Compute every cell not already cached (or all with `force`), then write the results table."""
    from rich.console import Console
    from tqdm.auto import tqdm

    from eval.run_eval import load_split
    from genrec.metrics import rank_cases, sample_users
    from genrec.run import RunPaths
    from inference.decoding.local import load_local_generator
    from retrieval.semantic_ids import load_semantic_ids

    console = Console(stderr=True)
    paths = RunPaths(exp.run)
    split, item_ids = load_split(paths)
    cases = split.test if exp.spec.split == "test" else split.valid
    users = sample_users(cases, exp.spec.users, exp.spec.seed)
    cells_dir = exp.out / "cells"
    result = ExperimentResult(exp.out, [])
    loaded: dict[str, Any] = {}
    grid = exp.cells()
    for cell in tqdm(grid, desc="experiment cells", unit="cell", disable=not progress):
        key = cell_key(exp, cell)
        path = cells_dir / f"{key}.json"
        if path.exists() and not force:
            result.rows.append(json.loads(path.read_text(encoding="utf-8")))
            result.cached += 1
            continue
        try:
            entry = next(m for m in exp.spec.models if m.name == cell["model"])
            if entry.path is not None:
                if cell["model"] not in loaded:
                    folder = exp.model_dirs[cell["model"]]
                    loaded[cell["model"]] = load_local_generator(
                        _ModelPaths(exp.run, folder), load_semantic_ids(paths), batch_size=exp.spec.batch_size
                    )
                model = _local_cell(loaded[cell["model"]], cell)
            else:
                model = _endpoint_cell(exp, entry, cell)
            t0 = time.perf_counter()
            acc, seconds = rank_cases(
                model, cases, users, item_ids, cell["k"], batch_size=exp.spec.batch_size, progress=False
            )
            ks = sorted({k for k in METRIC_KS if k <= cell["k"]} | {cell["k"]})
            row = {
                **cell,
                "template": Path(cell["template"]).name,
                "key": key,
                "status": "ok",
                **{m: v for m, v in acc.summary(ks).items()},
                "users_per_s": len(users) / seconds if seconds else None,
                "seconds": time.perf_counter() - t0,
                "example_user": users[0],
                "example_prompt": model.generator.prompts.text(list(cases[users[0]][0])),
            }
            write_json(path, row)  # atomic: a crash later never loses or corrupts this cell
            result.computed += 1
        except Exception as exc:  # one failing cell must not cost the others; it is reported and retried next time
            message = (
                f"{cell['model']} / {Path(cell['template']).name} / beam {cell['beam_width']} k {cell['k']} "
                f"T {cell['temperature']}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            row = {**cell, "template": Path(cell["template"]).name, "key": key, "status": "failed", "error": message}
            result.failed += 1
            result.first_error = result.first_error or message
            console.print(f"[red]cell failed[/red] {message}")
        result.rows.append(row)
        write_results(exp, result)  # the table so far, so partial progress is visible
    write_results(exp, result)
    return result


@dataclass(frozen=True)
class _ModelPaths:
    """`RunPaths` of the experiment's run whose `model` is the chosen model folder."""

    root: Path
    model: Path

    @property
    def semantic_ids(self) -> Path:
        return self.root / "semantic_ids.json"

    def require(self, path: Path, produced_by: str) -> Path:
        if not path.exists():
            raise GenrecError(f"{path}: missing; run `{produced_by}` first")
        return path


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    first = ["model", "template", "beam_width", "k", "temperature", "status"]
    metrics = sorted(
        {c for r in rows for c in r if c.startswith(("recall@", "ndcg@"))},
        key=lambda c: (c.split("@")[0], int(c.split("@")[1])),
    )
    return first + metrics + ["mrr", "valid_rate", "coverage", "users", "users_per_s", "key"]


def write_results(exp: Experiment, result: ExperimentResult) -> None:
    """`results.md`, `results.csv` and `results.png` for the current grid (cached and new cells)."""
    rows = result.rows
    cols = _columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols + ["error"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(exp.out / "results.csv", buf.getvalue())

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [
        f"# Experiment `{exp.file.name}`",
        "",
        f"Run `{exp.run}`, {exp.spec.users} {exp.spec.split} users (seed {exp.spec.seed}); metrics from `genrec.metrics`.",
        "",
        "| " + " | ".join(cols) + " |",
        "|---" * len(cols) + "|",
    ]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    lines += ["", "![results](results.png)", "", "## Rendered prompt of one example per cell", ""]
    for r in rows:
        if r.get("example_prompt"):
            lines += [
                f"### {r['model']} / {r['template']} / beam {r['beam_width']} / k {r['k']} / T {r['temperature']}",
                f"user {r['example_user']}:",
                "",
                "```",
                r["example_prompt"],
                "```",
                "",
            ]
    for r in rows:
        if r.get("status") == "failed":
            lines.append(f"- failed: {r['error']}")
    result.table_md = exp.out / "results.md"
    write_text(result.table_md, "\n".join(lines) + "\n")
    _plot(rows, exp.out / "results.png")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """NDCG@min(10, K) per cell, bars labelled by the cell's settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    labels = [f"{r['model']}\n{Path(r['template']).stem}\nb{r['beam_width']} k{r['k']} T{r['temperature']}" for r in ok]
    values = [r.get(f"ndcg@{min(10, r['k'])}", 0.0) for r in ok]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(ok) + 2), 4))
    ax.bar(range(len(ok)), values, color="tab:blue")
    ax.set_xticks(range(len(ok)), labels, fontsize=7)
    ax.set_ylabel("NDCG@min(10, K)")
    ax.grid(axis="y", alpha=0.3)
    with atomic_path(path, suffix=".png") as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
