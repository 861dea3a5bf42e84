"""Shared fixtures: real models from packages, a tiny CLIP, real photos, a `chroma run` server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

sys.path.insert(0, str(Path(__file__).parent))

from genrec.memory import keep_freed_memory, limit_onednn_cache  # noqa: E402

keep_freed_memory()
limit_onednn_cache()  # as the CLI does: training in tests runs at the speed it runs for users

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


# The chat model every chat-model test talks to, served once per session (`serving.server.serve_chat`:
# llama.cpp on a CPU, vLLM on a GPU), behind an API key so that the key is tested too.
CHAT_TEST_MODEL = os.environ.get("GENREC_TEST_CHAT_MODEL", "qwen2.5-coder-0.5b")
CHAT_API_KEY = "genrec-test-chat-key"


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory):
    """The session's chat-model server (started and healthy; `.url`, `.spec.api_key`). A test may
    stop it, but must start it again (`start()`, `wait_healthy()`) before it returns."""
    from genrec.config import ServeConfig
    from serving.server import free_port, serve_chat

    config = ServeConfig(chat_model=CHAT_TEST_MODEL, startup_timeout_s=900, chat_parallel=4)
    server = serve_chat(tmp_path_factory.mktemp("chat-server"), config, port=free_port(), api_key=CHAT_API_KEY)
    assert server is not None
    with server:
        yield server
