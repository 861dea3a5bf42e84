"""Shared fixtures: real models from packages, a tiny CLIP, real photos, a `chroma run` server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
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
