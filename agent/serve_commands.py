"""`genrec serve`: the run's model behind vLLM's OpenAI-compatible API, until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def serve(
    run: Path = typer.Option(..., "--run", help="Run directory whose model/base (+ model/adapter) to serve."),
    port: int | None = typer.Option(None, "--port", help="Port to listen on (default: the run config's serve.port, 8000)."),
    host: str | None = typer.Option(None, "--host", help="Address to bind (default: serve.host, 127.0.0.1)."),
    no_adapter: bool = typer.Option(False, "--no-adapter", help="Serve the base model only, without the LoRA adapter."),
    kv_cache_gib: int | None = typer.Option(None, "--kv-cache-gib", help="CPU KV cache in GiB (default: serve.kv_cache_gib)."),
) -> None:
    """Start vLLM with the run's base model and its LoRA adapter (module `genrec`), wait until it is healthy,
    print the URL, and serve until Ctrl-C. The server log is RUN/logs/vllm.log."""
    from rich.console import Console

    from agent.llm_client import ADAPTER_MODEL, BASE_MODEL
    from agent.serve import serve_run
    from genrec.errors import GenrecError
    from genrec.run import open_run

    console = Console(stderr=True)
    _, config = open_run(run)
    serve_cfg = config.serve.model_copy()
    if host is not None:
        serve_cfg.host = host
    if kv_cache_gib is not None:
        serve_cfg.kv_cache_gib = kv_cache_gib
    server = serve_run(run, serve_cfg, port=port, use_adapter=not no_adapter)
    models = BASE_MODEL if server.spec.adapter_dir is None else f"{ADAPTER_MODEL} (LoRA adapter), {BASE_MODEL}"
    try:
        with console.status(f"starting vLLM on {server.url} (log: {server.spec.log_path}) ..."):
            server.start()
            startup_s = server.wait_healthy()
        console.print(f"vLLM ready in {startup_s:.0f} s, models: {models}")
        print(server.url, flush=True)
        console.print("serving; Ctrl-C to stop")
        while server.is_running():
            time.sleep(1.0)
        raise GenrecError(f"{server.spec.log_path}: vLLM stopped unexpectedly; last lines:\n{server.log_tail()}")
    except KeyboardInterrupt:
        console.print("stopping vLLM ...")
    finally:
        server.stop()
    console.print("vLLM stopped")
