"""`genrec serve` (the run's models behind vLLM, until Ctrl-C) and `genrec recommend` (the served ranking for a user)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer


def _with_flags(settings: Any, host: str | None, kv_cache_gib: int | None, search: str | None) -> Any:
    """The run's `serve` settings with the flags given on the command line in their place."""
    from genrec.errors import GenrecError

    out = settings.model_copy()
    if host is not None:
        out.host = host
    if kv_cache_gib is not None:
        out.kv_cache_gib = kv_cache_gib
    if search is not None:
        if search not in ("auto", "engine", "steps"):
            raise GenrecError(f"--search: {search!r} is not one of auto, engine, steps")
        out.search = search
    return out


def _how(server: Any) -> str:
    """How the recommender server searches the trie, in words."""
    if server.spec.search == "engine":
        return "trie search in the engine, one request per recommendation"
    return "trie search per beam and level (the server also generates text)"


def serve(
    run: Path = typer.Option(..., "--run", help="Run directory whose model/base (+ model/adapter) to serve."),
    port: int | None = typer.Option(
        None, "--port", help="Port to listen on (default: the run config's serve.port, 8000)."
    ),
    host: str | None = typer.Option(None, "--host", help="Address to bind (default: serve.host, 127.0.0.1)."),
    no_adapter: bool = typer.Option(False, "--no-adapter", help="Serve the base model only, without the LoRA adapter."),
    kv_cache_gib: int | None = typer.Option(
        None, "--kv-cache-gib", help="CPU KV cache in GiB (default: serve.kv_cache_gib)."
    ),
    chat: bool = typer.Option(
        True, "--chat/--no-chat", help="Also serve the chat model (serve.chat.model) when the run's base cannot chat."
    ),
    chat_port: int | None = typer.Option(
        None, "--chat-port", help="Port of the chat model's server (default: serve.chat.port, 8001)."
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="GENREC_API_KEY",
        help="Clients must send this key (bearer token); required off localhost.",
    ),
    search: str | None = typer.Option(
        None,
        "--search",
        help="The recommender's trie search (default: serve.search, auto): engine (one vLLM request per "
        "recommendation; the server then generates no text) or steps (one request per beam and level).",
    ),
) -> None:
    """Start vLLM with the run's base model and its LoRA adapter (module `genrec`) and, for a scratch base,
    a second server with the chat model (`genrec-chat`: llama.cpp on a CPU, vLLM on a GPU,
    serve.chat.engine); wait until they are healthy, print their URLs (recommender first), and serve
    until Ctrl-C. Logs: RUN/logs/vllm.log, RUN/logs/llama-chat.log (or vllm-chat.log)."""
    from rich.console import Console

    from genrec.errors import GenrecError
    from genrec.run import open_run
    from inference.client import ADAPTER_MODEL, BASE_MODEL, CHAT_MODEL
    from serving.server import require_key_off_localhost, serve_chat, serve_run, sigterm_as_interrupt

    console = Console(stderr=True)
    _, config = open_run(run)
    serve_cfg = _with_flags(config.serve, host, kv_cache_gib, search)
    require_key_off_localhost(serve_cfg.host, api_key, "genrec serve")
    server = serve_run(run, serve_cfg, port=port, use_adapter=not no_adapter, api_key=api_key)
    chat_server = serve_chat(run, serve_cfg, port=chat_port, api_key=api_key) if chat else None
    servers = [s for s in (server, chat_server) if s is not None]
    models = BASE_MODEL if server.spec.adapter_dir is None else f"{ADAPTER_MODEL} (LoRA adapter), {BASE_MODEL}"
    with sigterm_as_interrupt():  # `kill` stops the servers as Ctrl-C does
        try:
            with console.status(
                f"starting {', '.join(f'{s.engine} on {s.url}' for s in servers)} "
                f"(logs: {', '.join(str(s.spec.log_path) for s in servers)}) ..."
            ):
                for s in servers:  # both load at once; each is waited for in turn
                    s.start()
                startup = [s.wait_healthy() for s in servers]
            console.print(f"vLLM ready in {startup[0]:.0f} s on {server.url}, models: {models}; {_how(server)}")
            if chat_server is not None:
                console.print(
                    f"chat model ready in {startup[1]:.0f} s on {chat_server.url} ({chat_server.engine}), "
                    f"model: {CHAT_MODEL} ({chat_server.spec.base_dir})"
                )
            for s in servers:
                print(s.url, flush=True)
            console.print("serving; Ctrl-C to stop")
            while all(s.is_running() for s in servers):
                time.sleep(1.0)
            dead = next(s for s in servers if not s.is_running())
            raise GenrecError(
                f"{dead.spec.log_path}: {dead.engine} stopped unexpectedly; last lines:\n{dead.log_tail()}"
            )
        except KeyboardInterrupt:
            console.print("stopping the servers ...")
        finally:
            for s in servers:
                s.stop()
    console.print("servers stopped")


def recommend(
    run: Path = typer.Option(..., "--run", help="Run directory with a trained model (`genrec train`)."),
    user: str = typer.Option(..., "--user", help="User id, as in the run's interactions."),
    k: int = typer.Option(10, "-k", "--k", help="How many items."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    explain: bool = typer.Option(False, "--explain", help="Add an explanation per item (instruction-tuned model)."),
    where: str | None = typer.Option(None, "--where", help='Metadata filter as JSON, e.g. \'{"genre": "Comedy"}\'.'),
    llm_url: str | None = typer.Option(
        None, "--llm-url", help="Generate through this vLLM server (`genrec serve`) instead of in process."
    ),
) -> None:
    """Top-K items for a user: the served ranking (trie-constrained beams fused with the dense model), history excluded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning OpenMP threads
    from rich.console import Console
    from rich.table import Table
    from transformers.utils import logging as hf_logging

    from genrec.errors import GenrecError
    from inference.recommend import RunRecommender

    hf_logging.disable_progress_bar()  # keep the terminal (and --json output) to the answer

    try:
        filters = json.loads(where) if where else None
    except json.JSONDecodeError as exc:
        raise GenrecError(f"--where: not valid JSON ({exc.msg})") from None
    recommender = RunRecommender(run, llm_url=llm_url)
    if recommender.notice:
        Console(stderr=True).print(f"[yellow]{recommender.notice}")
    recs = recommender.recommend(user, k, where=filters, explain=explain)
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in recs], ensure_ascii=False))
        return
    table = Table(title=f"top {k} for user {user}")
    table.add_column("#", justify="right")
    table.add_column("item_id")
    table.add_column("title")
    table.add_column("score", justify="right")
    if explain:
        table.add_column("why")
    for rank, r in enumerate(recs, 1):
        table.add_row(str(rank), r.item_id, r.title, f"{r.score:.3f}", *([r.explanation or ""] if explain else []))
    Console().print(table)
