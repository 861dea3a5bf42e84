"""`genrec chat`, `genrec ui` and `genrec api`: the agent in a terminal, a web page and over HTTP.

All three use the recommender's model server at `--llm-url` and the chat model at `--chat-url`
(by default the run's: the same server when the run's base chats, else the SmolLM2 server of
`genrec serve`); when nothing answers there and the run has a model, they start the servers for
the run in the background (answering from retrieval alone until they are ready) and stop them on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_LLM_URL = "http://127.0.0.1:8000/v1"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


API_KEY_HELP = (
    "Clients must send this key (several: comma-separated); also the model servers' key. "
    "Required to bind an address other than localhost."
)


# the options chat, ui and api share, declared once
RunOption = Annotated[Path, typer.Option("--run", help="An indexed run directory.")]
LlmUrlOption = Annotated[str, typer.Option("--llm-url", help="The recommender's model server (vLLM, OpenAI API).")]
ChatUrlOption = Annotated[
    str | None, typer.Option("--chat-url", help="The chat model's server (default: the run's, see serve.chat.model).")
]
HostOption = Annotated[str, typer.Option("--host", help="Address to bind.")]
NoLlmOption = Annotated[bool, typer.Option("--no-llm", help="Answer from retrieval alone; no model server.")]
StartServerOption = Annotated[
    bool,
    typer.Option(
        "--start-server/--no-start-server", help="Start `genrec serve` for the run when nothing answers at --llm-url."
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for a model request before answering without it.")
]
ApiKeyOption = Annotated[str | None, typer.Option("--api-key", envvar="GENREC_API_KEY", help=API_KEY_HELP)]


def split_keys(api_key: str | None) -> list[str]:
    """The keys of `--api-key` / GENREC_API_KEY ("k1,k2" -> ["k1", "k2"])."""
    return [k.strip() for k in (api_key or "").split(",") if k.strip()]


@contextmanager
def model_server(
    run: Path,
    llm_url: str | None,
    start: bool,
    console: Any,
    wait: bool = False,
    chat_url: str | None = None,
    api_key: str | None = None,
    recommender: bool = True,
    meanwhile: str = "replies come from retrieval alone until it is ready",
) -> Iterator[list[Any]]:
    """Make sure the run's model servers answer, at `llm_url` (the recommender) and `chat_url` (the
    chat model, when it is a separate server), if they can be started; stop the ones we started.
    Yields the servers started here (already-answering ones are left alone).

    With `wait`, block until they are healthy (or failed) instead of answering from retrieval
    alone meanwhile: the demo wants the model in its very first reply. Without `recommender`, only
    the chat server is started (it needs no trained model, so the demo starts it while training
    runs). `meanwhile` tells the user what happens until a started server is ready. Servers started
    here require `api_key` when it is given."""
    import threading

    from genrec.errors import GenrecError
    from genrec.run import open_run
    from serving.server import ModelServer, chat_server_spec, run_server_spec, sigterm_as_interrupt

    if not llm_url or not start:
        yield []
        return
    _, config = open_run(run)
    wanted: list[tuple[str, Any]] = []
    if recommender:
        wanted.append((llm_url, lambda port: run_server_spec(run, config.serve, port=port)))
    if chat_url and chat_url != llm_url:
        wanted.append((chat_url, lambda port: chat_server_spec(run, config.serve, port=port)))
    servers = [
        server
        for url, make_spec in wanted
        if (server := _start_missing(url, make_spec, config, api_key, console, "" if wait else f"; {meanwhile}"))
    ]

    def wait_ready(server: ModelServer) -> None:
        try:
            seconds = server.wait_healthy()
            console.print(f"[dim]{server.engine} ({server.spec.served_name}) ready after {seconds:.0f} s[/]")
        except GenrecError as exc:
            console.print(
                f"[yellow]{server.engine} ({server.spec.served_name}) did not start: {str(exc).splitlines()[0]}[/]"
            )

    waiters = [threading.Thread(target=wait_ready, args=(s,), daemon=True, name="vllm-wait") for s in servers]
    for waiter in waiters:
        waiter.start()
    if wait:
        for waiter in waiters:
            waiter.join()
    try:
        with sigterm_as_interrupt():
            yield servers
    finally:
        for server in servers:
            server.stop()


def _start_missing(url: str, make_spec: Any, config: Any, api_key: str | None, console: Any, note: str) -> Any:
    """Start the server `make_spec(port)` describes when nothing answers at `url` and the url is this
    machine's; None when one answers already or none can be started here (said on `console`)."""
    from urllib.parse import urlparse

    from genrec.errors import GenrecError
    from serving.server import ModelServer, is_healthy

    if is_healthy(url, timeout_s=1.0):
        return None
    parsed = urlparse(url)
    if parsed.hostname not in _LOCAL_HOSTS or parsed.port is None:
        console.print(f"[yellow]nothing answers at {url}; replies come from retrieval alone[/]")
        return None
    try:
        spec = make_spec(parsed.port)
    except GenrecError as exc:
        console.print(
            f"[yellow]nothing answers at {url} and no model server can be started there ({exc}); "
            "replies come from retrieval alone[/]"
        )
        return None
    if spec is None:
        return None
    spec.api_key = api_key
    server = ModelServer(spec, config.serve.startup_timeout_s)
    server.start()
    console.print(f"[dim]started {server.engine} ({spec.served_name}) on {server.url} (log {spec.log_path}){note}[/]")
    return server


def resolve_chat_url(run: Path, llm_url: str | None, chat_url: str | None) -> str | None:
    """The chat model's URL: `chat_url` if given, else the run's (the recommender's own URL when its
    base chats, the chat server's when a separate model chats)."""
    from genrec.run import open_run
    from serving.server import chat_url as run_chat_url

    if chat_url or not llm_url:
        return chat_url if llm_url else None
    _, config = open_run(run)
    return run_chat_url(run, config.serve, llm_url)


def open_agent(
    run: Path, llm_url: str | None, timeout_s: float, chat_url: str | None = None, api_key: str | None = None
) -> Any:
    """The run's agent (memory in RUN/chat.sqlite); `api_key` is sent to the model servers."""
    from agent.session import Agent

    return Agent.open(run, llm_url=llm_url, chat_url=chat_url, llm_timeout_s=timeout_s, api_key=api_key)


@contextmanager
def public_agent(
    run: Path,
    what: str,
    host: str,
    keys: list[str],
    llm_url: str | None,
    chat_url: str | None,
    start_server: bool,
    timeout: float,
    console: Any,
) -> Iterator[Any]:
    """The agent behind a page or an API bound to `host`: refused off localhost without a key, its
    model servers started if needed (with the first key), closed with them on exit."""
    from serving.server import require_key_off_localhost

    key = (keys or [None])[0]
    require_key_off_localhost(host, key, what)
    talk = resolve_chat_url(run, llm_url, chat_url)
    with model_server(run, llm_url, start_server, console, chat_url=talk, api_key=key):
        with open_agent(run, llm_url, timeout, talk, key) as agent:
            yield agent


def chat(
    run: RunOption,
    thread: str = typer.Option(
        "default", "--thread", help="Conversation name; the same name resumes it (RUN/chat.sqlite)."
    ),
    llm_url: LlmUrlOption = DEFAULT_LLM_URL,
    chat_url: ChatUrlOption = None,
    no_llm: NoLlmOption = False,
    start_server: StartServerOption = True,
    timeout: TimeoutOption = 120.0,
    as_json: bool = typer.Option(False, "--json", help="With piped input: one JSON object (reply, items) per line."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="GENREC_API_KEY",
        help="The model servers' key (the one `genrec serve --api-key` was given).",
    ),
) -> None:
    """Chat with the recommender in the terminal; piped input gets one reply per line."""
    from rich.console import Console

    from agent.chat_terminal import run_chat

    url = None if no_llm else llm_url
    talk = resolve_chat_url(run, url, chat_url)
    key = (split_keys(api_key) or [None])[0]
    with model_server(run, url, start_server, Console(stderr=True), chat_url=talk, api_key=key):
        with open_agent(run, url, timeout, talk, key) as agent:
            run_chat(agent, thread, as_json)


def ui(
    run: RunOption,
    port: int = typer.Option(7860, "--port", help="Port of the web page."),
    llm_url: LlmUrlOption = DEFAULT_LLM_URL,
    chat_url: ChatUrlOption = None,
    host: HostOption = "127.0.0.1",
    no_llm: NoLlmOption = False,
    start_server: StartServerOption = True,
    timeout: TimeoutOption = 120.0,
    api_key: ApiKeyOption = None,
) -> None:
    """A web chat page with item cards (title, attributes, image, why) at http://HOST:PORT.
    With --api-key the page asks for a key (as the password) before it opens."""
    import os

    from rich.console import Console

    from agent.web import launch_ui

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    console = Console(stderr=True)
    keys = split_keys(api_key)
    with public_agent(
        run, "genrec ui", host, keys, None if no_llm else llm_url, chat_url, start_server, timeout, console
    ) as agent:
        console.print(f"chat page on http://{host}:{port} (Ctrl-C to stop)")
        launch_ui(agent, host, port, block=True, api_keys=keys)


def api(
    run: RunOption,
    port: int = typer.Option(8080, "--port", help="Port of the HTTP API."),
    llm_url: LlmUrlOption = DEFAULT_LLM_URL,
    chat_url: ChatUrlOption = None,
    host: HostOption = "127.0.0.1",
    no_llm: NoLlmOption = False,
    start_server: StartServerOption = True,
    timeout: TimeoutOption = 120.0,
    api_key: ApiKeyOption = None,
) -> None:
    """HTTP API: POST /chat {"thread_id", "message", "photo"?} -> {"reply", "items"}; /chat/stream (SSE); OpenAPI at /docs.
    With --api-key, requests need `Authorization: Bearer KEY` and a thread is readable only with the key that started it."""
    import uvicorn
    from rich.console import Console

    from agent.http_api import create_app

    console = Console(stderr=True)
    keys = split_keys(api_key)
    with public_agent(
        run, "genrec api", host, keys, None if no_llm else llm_url, chat_url, start_server, timeout, console
    ) as agent:
        console.print(f"API on http://{host}:{port} (OpenAPI: http://{host}:{port}/docs; Ctrl-C to stop)")
        uvicorn.run(create_app(agent, keys), host=host, port=port, log_level="warning")
