"""Shared fixtures: real models from packages, a tiny CLIP, real photos, a `chroma run` server, and
the session's one small trained run with its one vLLM recommender server.

Session-scoped fixtures are shared by every test file: a test that changes a run works on a copy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# what outlives a checkout (benchmark runs, shared dense models) goes to a throwaway home in tests
os.environ["GENREC_HOME"] = tempfile.mkdtemp(prefix="genrec-home-")

sys.path.insert(0, str(Path(__file__).parent))

from genrec.memory import keep_freed_memory, limit_onednn_cache  # noqa: E402

keep_freed_memory()
limit_onednn_cache()  # as the CLI does: training in tests runs at the speed it runs for users

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SECONDS_PER_FILE: dict[str, float] = defaultdict(float)


def pytest_collection_modifyitems(items) -> None:
    """A test that starts the session's vLLM server (bounded by its own 900 s start timeout) keeps its
    900 s of pytest-timeout for itself, as the vLLM test modules do."""
    for item in items:
        if "recommender_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(900, func_only=True))


def pytest_runtest_logreport(report) -> None:
    SECONDS_PER_FILE[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """Where the suite's time goes, per file (a session fixture counts in the first file that uses it)."""
    if SECONDS_PER_FILE:
        terminalreporter.write_sep("-", "seconds per test file: setup + call + teardown")
        for path, seconds in sorted(SECONDS_PER_FILE.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{seconds:8.1f}  {path}")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip when the checkout has no shared folder beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real photographs shipped by scikit-image."""
    import skimage

    files = sorted((Path(skimage.__file__).parent / "data").glob("*.png"))
    files = [f for f in files if f.stat().st_size > 10_000]
    assert len(files) >= 6, "scikit-image should ship sample photos"
    return files


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A random-weight CLIP saved like a Hugging Face checkpoint."""
    from tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def text_encoder():
    """The packaged all-MiniLM-L6-v2, loaded once."""
    from retrieval.encoders import load_encoder

    return load_encoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on 127.0.0.1 for the session; yields (host, port)."""
    port = free_port()
    exe = Path(sys.executable).with_name("chroma")
    data = tmp_path_factory.mktemp("chroma-server")
    log = open(data / "server.log", "w")
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    import chromadb

    deadline = time.time() + 60
    while True:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"chroma server did not start: {(data / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield "127.0.0.1", port
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(autouse=True)
def own_genrec_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test its own `$GENREC_HOME`: a dense model one test shares is not reused by the next."""
    home = tmp_path_factory.mktemp("genrec-home")
    monkeypatch.setenv("GENREC_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """The small trained run the tests share (tests/eval_run.py: 150 MovieLens-100K movies, 60 users,
    a tiny scratch model, LoRA, SASRec and the fusion), trained once per session. Read it; copy it
    (`shutil.copytree`) to change it."""
    from eval_run import trained_eval_run

    run = trained_eval_run(tmp_path_factory)
    before = _files_of(run)
    yield run
    changed = sorted(set(before.items()) ^ set(_files_of(run).items()))
    assert not changed, f"a test changed the shared trained run instead of a copy: {changed[:5]}"


def _files_of(run: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of the run's files, but for logs and Chroma's database (reading may touch them)."""
    return {
        str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in run.rglob("*")
        if p.is_file() and p.relative_to(run).parts[0] not in ("logs", "chroma")
    }


# The one API key of the session's servers (the recommender and the chat model), as `genrec serve --api-key` gives both.
SESSION_API_KEY = "genrec-test-key"


@dataclass(frozen=True)
class Served:
    """A running `genrec serve` of a run: its OpenAI-compatible URL and the API key it requires."""

    run: Path
    url: str
    api_key: str


@pytest.fixture(scope="session")
def recommender_server(trained_run, tmp_path_factory) -> Served:
    """ONE vLLM recommender server for the session, serving `trained_run` (base + LoRA module, the
    trie search inside it), started through the `serve` command with an API key; stopped with SIGTERM
    at the end (what `kill`, systemd or a container stop send), which must stop vLLM as Ctrl-C does."""
    pytest.importorskip("vllm")
    with genrec_serve(trained_run, SESSION_API_KEY, tmp_path_factory.mktemp("recommender-server"), 960) as url:
        yield Served(trained_run, url, SESSION_API_KEY)


@contextlib.contextmanager
def genrec_serve(
    run: Path, api_key: str, log_dir: Path, start_timeout_s: float, extra_args: tuple[str, ...] = ()
) -> Iterator[str]:
    """`genrec serve --no-chat` of `run` with `api_key` on a free port; yields its URL. Stopped with
    SIGTERM (what `kill`, systemd or a container stop send), which must stop vLLM as Ctrl-C does:
    exit code 0 and the port free again."""
    from serving.server import free_port as server_port
    from serving.server import port_is_free

    port = server_port()
    cmd = [
        sys.executable, "-c", "import typer; from serving.commands import serve; typer.run(serve)",
        "--run", str(run), "--port", str(port), "--kv-cache-gib", "1", "--no-chat", "--api-key", api_key,
        *extra_args,
    ]  # fmt: skip
    stderr = log_dir / "stderr.log"
    with open(stderr, "w") as err:  # a file, not a pipe nobody reads while the server runs
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    url_line: list[str] = []
    reader = threading.Thread(target=lambda: url_line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=start_timeout_s)
    try:
        if not url_line or not url_line[0].startswith("http"):
            proc.kill()
            raise RuntimeError(f"genrec serve printed no URL; stderr:\n{stderr.read_text()[-3000:]}")
        yield url_line[0].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, f"genrec serve exited with {code} after SIGTERM"
    assert port_is_free("127.0.0.1", port), "the vLLM server still listens after SIGTERM"


# The chat model every chat-model test talks to, served once per session (`serving.server.serve_chat`:
# llama.cpp on a CPU, vLLM on a GPU), behind an API key so that the key is tested too.
CHAT_TEST_MODEL = os.environ.get("GENREC_TEST_CHAT_MODEL", "qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory):
    """The session's chat-model server (started and healthy; `.url`, `.spec.api_key`). A test may
    stop it, but must start it again (`start()`, `wait_healthy()`) before it returns."""
    from genrec.config import ChatServerConfig, ServeConfig
    from serving.server import free_port, serve_chat

    config = ServeConfig(chat=ChatServerConfig(model=CHAT_TEST_MODEL, parallel=4), startup_timeout_s=900)
    server = serve_chat(tmp_path_factory.mktemp("chat-server"), config, port=free_port(), api_key=SESSION_API_KEY)
    assert server is not None
    with server:
        yield server
