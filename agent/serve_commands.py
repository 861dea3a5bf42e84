"""`genrec serve`: the run's models behind vLLM's OpenAI-compatible API, until Ctrl-C."""

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
    chat: bool = typer.Option(True, "--chat/--no-chat",
                              help="Also serve the chat model (serve.chat_model) when the run's base cannot chat."),
    chat_port: int | None = typer.Option(None, "--chat-port", help="Port of the chat model's server (default: serve.chat_port, 8001)."),
) -> None:
    """Start vLLM with the run's base model and its LoRA adapter (module `genrec`) and, for a scratch base,
    a second vLLM with the chat model (`genrec-chat`); wait until they are healthy, print their URLs
    (recommender first), and serve until Ctrl-C. Logs: RUN/logs/vllm.log, RUN/logs/vllm-chat.log."""
    from rich.console import Console

    from agent.llm_client import ADAPTER_MODEL, BASE_MODEL, CHAT_MODEL
    from agent.serve import serve_chat, serve_run, sigterm_as_interrupt
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
    chat_server = serve_chat(run, serve_cfg, port=chat_port) if chat else None
    servers = [s for s in (server, chat_server) if s is not None]
    models = BASE_MODEL if server.spec.adapter_dir is None else f"{ADAPTER_MODEL} (LoRA adapter), {BASE_MODEL}"
    with sigterm_as_interrupt():  # `kill` stops the servers as Ctrl-C does
        try:
            with console.status(f"starting vLLM on {', '.join(s.url for s in servers)} "
                                f"(logs: {', '.join(str(s.spec.log_path) for s in servers)}) ..."):
                for s in servers:  # both load at once; each is waited for in turn
                    s.start()
                startup = [s.wait_healthy() for s in servers]
            console.print(f"vLLM ready in {startup[0]:.0f} s on {server.url}, models: {models}")
            if chat_server is not None:
                console.print(f"chat model ready in {startup[1]:.0f} s on {chat_server.url}, model: {CHAT_MODEL} "
                              f"({chat_server.spec.base_dir})")
            for s in servers:
                print(s.url, flush=True)
            console.print("serving; Ctrl-C to stop")
            while all(s.is_running() for s in servers):
                time.sleep(1.0)
            dead = next(s for s in servers if not s.is_running())
            raise GenrecError(f"{dead.spec.log_path}: vLLM stopped unexpectedly; last lines:\n{dead.log_tail()}")
        except KeyboardInterrupt:
            console.print("stopping vLLM ...")
        finally:
            for s in servers:
                s.stop()
    console.print("vLLM stopped")
