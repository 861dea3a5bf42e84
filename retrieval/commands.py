"""`genrec index` and `genrec search`: typer commands over the retrieval package."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from genrec.errors import GenrecError


def resolve_config(run: Path, config: Path | None):
    """The run's config: an explicit YAML, else the one saved in the run, else defaults."""
    from genrec.config import RunConfig, load_config

    if config is not None:
        return load_config(config)
    if (run / "config.yaml").exists():
        return load_config(run / "config.yaml")
    return RunConfig(name=run.name)


def index(
    run: Path = typer.Option(..., "--run", help="Run directory to create or update."),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="ml-100k, a MovieLens/RecBole folder, an amazon-seq .txt, a catalog .jsonl/.csv, or Amazon Reviews 2023 meta .jsonl.",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Run config YAML (default: RUN/config.yaml, else built-in defaults)."
    ),
    interactions: str | None = typer.Option(None, "--interactions", help="Interactions CSV for a generic catalog."),
    reviews: str | None = typer.Option(None, "--reviews", help="Reviews JSONL for Amazon Reviews 2023."),
    image_root: str | None = typer.Option(
        None, "--image-root", help="Folder that relative image paths are resolved against."
    ),
    min_rating: float | None = typer.Option(None, "--min-rating", help="Drop interactions rated below this."),
    text_model: str | None = typer.Option(
        None, "--text-model", help="sentence-transformers model folder (default: packaged all-MiniLM-L6-v2)."
    ),
    image_model: str | None = typer.Option(
        None,
        "--image-model",
        help="dinov2-s (default; images only), a local CLIP/SigLIP folder (words can search images too), or none.",
    ),
    chroma_host: str | None = typer.Option(
        None, "--chroma-host", help="Use a `chroma run` server instead of the embedded store."
    ),
    chroma_port: int | None = typer.Option(None, "--chroma-port"),
    sid_method: str | None = typer.Option(None, "--sid-method", help="rqvae or rkmeans."),
    sid_source: str | None = typer.Option(
        None,
        "--sid-source",
        help="auto (default: fused where items have text and interactions co-occur), content, collaborative or fused.",
    ),
    seed: int | None = typer.Option(None, "--seed"),
) -> None:
    """Load a dataset, encode items (text and images), fill Chroma and learn semantic IDs."""
    from retrieval.index import build_index

    cfg = resolve_config(run, config)
    overrides = {
        ("data", "dataset"): dataset,
        ("data", "interactions"): interactions,
        ("data", "reviews"): reviews,
        ("data", "image_root"): image_root,
        ("data", "min_rating"): min_rating,
        ("encoder", "text_model"): text_model,
        ("encoder", "image_model"): image_model,
        ("chroma", "host"): chroma_host,
        ("chroma", "port"): chroma_port,
        ("semantic_ids", "method"): sid_method,
        ("semantic_ids", "source"): sid_source,
        ("semantic_ids", "seed"): seed,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            try:
                setattr(getattr(cfg, section), key, value)
            except ValueError as exc:
                raise GenrecError(f"--{key.replace('_', '-')}: {exc.errors()[0]['msg']}") from None  # type: ignore[attr-defined]
    cfg.name = run.name
    build_index(run, cfg)


def search(
    query: str | None = typer.Argument(None, help="What to look for, in words."),
    run: Path = typer.Option(..., "--run", help="An indexed run directory."),
    k: int = typer.Option(10, "-k", help="How many items."),
    image: str | None = typer.Option(
        None, "--image", help="Items that look like this photo (a file or an http(s) URL)."
    ),
    item: str | None = typer.Option(None, "--item", help="More like this item id."),
    where: str | None = typer.Option(None, "--where", help='Metadata filter as JSON, e.g. \'{"genre": "Sci-Fi"}\'.'),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Search the catalog by text, image or item, with optional metadata filters."""
    from rich.console import Console
    from rich.table import Table

    from retrieval.search import Searcher

    filters = None
    if where:
        try:
            filters = json.loads(where)
        except json.JSONDecodeError as exc:
            raise GenrecError(f"--where: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(filters, dict):
            raise GenrecError('--where: expected a JSON object such as {"genre": "Sci-Fi"}')
    hits = Searcher.open(run).search(query, image=image, item_id=item, k=k, where=filters)
    if as_json:
        for hit in hits:
            typer.echo(json.dumps(hit.to_dict(), ensure_ascii=False))
        return
    table = Table("rank", "item_id", "title", "score", "attributes")
    for rank, hit in enumerate(hits, 1):
        attrs = ", ".join(
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in hit.attributes.items()
            if k in ("genres", "year", "brand", "category", "price")
        )
        table.add_row(str(rank), hit.item_id, hit.title, f"{hit.score:.3f}", attrs)
    Console().print(table)


items_app = typer.Typer(
    help="Add items to a trained run or retire them, without retraining or restarting what serves it.",
    no_args_is_help=True,
)


@items_app.command("add")
def items_add(
    file: Path = typer.Argument(
        ..., help="New items: a catalog .jsonl or .csv in the generic format (docs/formats.md)."
    ),
    run: Path = typer.Option(..., "--run", help="An indexed (and trained) run directory."),
    image_root: str | None = typer.Option(
        None, "--image-root", help="Folder that relative image paths are resolved against (default: the file's)."
    ),
) -> None:
    """Validate, encode and store new items, give each a semantic ID with the run's trained quantiser,
    and commit them: recommendable at once by every running server of the run."""
    from retrieval.live import add_items

    report = add_items(run, file, image_root)
    for item, code in report.items.items():
        typer.echo(f"{item}\t{''.join(f'<{chr(97 + level)}_{c}>' for level, c in enumerate(code))}")
    typer.echo(
        f"added {len(report.items)} items to {run} (catalog version {report.version}) in "
        + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items()),
        err=True,
    )


@items_app.command("retire")
def items_retire(
    ids: list[str] = typer.Argument(..., help="Item ids to retire."),
    run: Path = typer.Option(..., "--run", help="An indexed run directory."),
) -> None:
    """Take items out of every recommendation and search path; their ids and semantic IDs stay reserved."""
    from retrieval.live import retire_items

    fresh, version = retire_items(run, ids)
    typer.echo(f"retired {len(fresh)} items from {run} (catalog version {version})", err=True)
