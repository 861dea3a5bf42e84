"""`genrec chat`, `genrec ui` and `genrec api`: the agent in a terminal, a web page and over HTTP.

All three use the model server at `--llm-url`; when nothing answers there and the run has a model,
they start `genrec serve` for the run in the background (answering from retrieval alone until it
is ready) and stop it on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

DEFAULT_LLM_URL = "http://127.0.0.1:8000/v1"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@contextmanager
def model_server(run: Path, llm_url: str | None, start: bool, console: Any, wait: bool = False) -> Iterator[None]:
    """Make sure a model server answers at `llm_url` if one can be started; stop the one we started.

    With `wait`, block until the server is healthy (or failed) instead of answering from retrieval
    alone meanwhile: the demo wants the model in its very first reply."""
    import threading
    from urllib.parse import urlparse

    from agent.serve import is_healthy, serve_run
    from genrec.errors import GenrecError
    from genrec.run import open_run

    if not llm_url or not start or is_healthy(llm_url, timeout_s=1.0):
        yield
        return
    parsed = urlparse(llm_url)
    if parsed.hostname not in _LOCAL_HOSTS or parsed.port is None:
        console.print(f"[yellow]nothing answers at {llm_url}; replies come from retrieval alone[/]")
        yield
        return
    _, config = open_run(run)
    try:
        server = serve_run(run, config.serve, port=parsed.port)
    except GenrecError as exc:
        console.print(f"[yellow]nothing answers at {llm_url} and no model server can be started ({exc}); "
                      "replies come from retrieval alone[/]")
        yield
        return
    server.start()
    console.print(f"[dim]started vLLM for {run} on {server.url} (log {server.spec.log_path}); "
                  "replies come from retrieval alone until it is ready[/]")

    def wait_ready() -> None:
        try:
            seconds = server.wait_healthy()
            console.print(f"[dim]vLLM ready after {seconds:.0f} s[/]")
        except GenrecError as exc:
            console.print(f"[yellow]vLLM did not start: {str(exc).splitlines()[0]}[/]")

    waiter = threading.Thread(target=wait_ready, daemon=True, name="vllm-wait")
    waiter.start()
    if wait:
        waiter.join()
    try:
        yield
    finally:
        server.stop()


def open_agent(run: Path, llm_url: str | None, timeout_s: float) -> Any:
    """The run's agent (memory in RUN/chat.sqlite)."""
    from agent.session import Agent

    return Agent.open(run, llm_url=llm_url, llm_timeout_s=timeout_s)


def chat(
    run: Path = typer.Option(..., "--run", help="An indexed run directory."),
    thread: str = typer.Option("default", "--thread", help="Conversation name; the same name resumes it (RUN/chat.sqlite)."),
    llm_url: str = typer.Option(DEFAULT_LLM_URL, "--llm-url", help="OpenAI-compatible model server (vLLM)."),
    no_llm: bool = typer.Option(False, "--no-llm", help="Answer from retrieval alone; no model server."),
    start_server: bool = typer.Option(True, "--start-server/--no-start-server",
                                      help="Start `genrec serve` for the run when nothing answers at --llm-url."),
    timeout: float = typer.Option(20.0, "--timeout", help="Seconds to wait for the model before answering without it."),
    as_json: bool = typer.Option(False, "--json", help="With piped input: one JSON object (reply, items) per line."),
) -> None:
    """Chat with the recommender in the terminal; piped input gets one reply per line."""
    from rich.console import Console

    from agent.chat_terminal import run_chat

    url = None if no_llm else llm_url
    with model_server(run, url, start_server, Console(stderr=True)):
        with open_agent(run, url, timeout) as agent:
            run_chat(agent, thread, as_json)


def ui(
    run: Path = typer.Option(..., "--run", help="An indexed run directory."),
    port: int = typer.Option(7860, "--port", help="Port of the web page."),
    llm_url: str = typer.Option(DEFAULT_LLM_URL, "--llm-url", help="OpenAI-compatible model server (vLLM)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    no_llm: bool = typer.Option(False, "--no-llm", help="Answer from retrieval alone; no model server."),
    start_server: bool = typer.Option(True, "--start-server/--no-start-server",
                                      help="Start `genrec serve` for the run when nothing answers at --llm-url."),
    timeout: float = typer.Option(20.0, "--timeout", help="Seconds to wait for the model before answering without it."),
) -> None:
    """A web chat page with item cards (title, attributes, image, why) at http://HOST:PORT."""
    import os

    from rich.console import Console

    from agent.web import launch_ui

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    console = Console(stderr=True)
    url = None if no_llm else llm_url
    with model_server(run, url, start_server, console):
        with open_agent(run, url, timeout) as agent:
            console.print(f"chat page on http://{host}:{port} (Ctrl-C to stop)")
            launch_ui(agent, host, port, block=True)


def api(
    run: Path = typer.Option(..., "--run", help="An indexed run directory."),
    port: int = typer.Option(8080, "--port", help="Port of the HTTP API."),
    llm_url: str = typer.Option(DEFAULT_LLM_URL, "--llm-url", help="OpenAI-compatible model server (vLLM)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    no_llm: bool = typer.Option(False, "--no-llm", help="Answer from retrieval alone; no model server."),
    start_server: bool = typer.Option(True, "--start-server/--no-start-server",
                                      help="Start `genrec serve` for the run when nothing answers at --llm-url."),
    timeout: float = typer.Option(20.0, "--timeout", help="Seconds to wait for the model before answering without it."),
) -> None:
    """HTTP API: POST /chat {"thread_id", "message"} -> {"reply", "items"}; /chat/stream (SSE); OpenAPI at /docs."""
    import uvicorn
    from rich.console import Console

    from agent.http_api import create_app

    console = Console(stderr=True)
    url = None if no_llm else llm_url
    with model_server(run, url, start_server, console):
        with open_agent(run, url, timeout) as agent:
            console.print(f"API on http://{host}:{port} (OpenAPI: http://{host}:{port}/docs; Ctrl-C to stop)")
            uvicorn.run(create_app(agent), host=host, port=port, log_level="warning")
