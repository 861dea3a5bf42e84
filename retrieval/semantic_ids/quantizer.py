"""The trained quantiser of a run, kept so that items added later get codes without retraining.

RQ-VAE and residual k-means both map an item vector to a latent (the RQ-VAE's MLP encoder; the
principal-component projection of residual k-means) and then pick, level by level, the code
nearest to what the previous levels left over. `Quantizer` holds exactly that: the latent map as
plain (weight, bias) layers with ReLU between them, and the codebooks; numpy only, saved as
`RUN/semantic_ids.quantizer.npz` beside the codes it produced (bound to them by their hash).

A run indexed before the quantiser was saved gets it back by training again with the saved
config and seed (both methods are deterministic); `fit_again` refuses unless the retrained
quantiser reproduces every stored code, so a new item is never coded by a different model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrec.errors import GenrecError

QUANTIZER_FILE = "semantic_ids.quantizer.npz"


@dataclass
class Quantizer:
    """Latent map + residual codebooks of a trained RQ-VAE or residual k-means."""

    method: str
    layers: list[tuple[np.ndarray, np.ndarray]]  # (out x in weight, out bias); ReLU between, none after the last
    codebooks: list[np.ndarray]  # one (codes, latent) array per learned level

    def latent(self, x: np.ndarray) -> np.ndarray:
        """The latent each item vector is quantised from."""
        h = np.asarray(x, dtype=np.float64)
        for i, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T.astype(np.float64) + bias.astype(np.float64)
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def choices(self, x: np.ndarray, allowed: list[np.ndarray]) -> list[list[tuple[int, ...]]]:
        """Per item, its learned-level prefixes in order of preference: the nearest code at every level
        (only codes in `allowed[level]`, the ones the trained model has learned tokens for), with the
        codes of the last level tried from nearest to farthest (where a prefix's suffixes are all taken)."""
        residual = self.latent(x)
        levels = len(self.codebooks)
        fixed = np.zeros((len(residual), max(levels - 1, 0)), dtype=np.int64)
        for level in range(levels - 1):
            book = self.codebooks[level][allowed[level]].astype(np.float64)
            nearest = allowed[level][((residual[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)]
            fixed[:, level] = nearest
            residual = residual - self.codebooks[level][nearest]
        book = self.codebooks[-1][allowed[-1]].astype(np.float64)
        order = allowed[-1][((residual[:, None, :] - book[None]) ** 2).sum(-1).argsort(1, kind="stable")]
        return [[(*map(int, fixed[i]), int(c)) for c in order[i]] for i in range(len(residual))]

    def nearest_prefixes(self, x: np.ndarray, prefixes: np.ndarray, n: int = 64) -> list[list[tuple[int, ...]]]:
        """Per item, the `n` of `prefixes` (learned-level codes of indexed items, (m, levels)) whose
        reconstruction (the sum of their codewords) is nearest to the item's latent, nearest first:
        prefixes the trained model has learned, so its beams can reach an item given one."""
        residual = self.latent(x)
        recon = sum(self.codebooks[level][prefixes[:, level]].astype(np.float64) for level in range(prefixes.shape[1]))
        n = min(n, len(prefixes))
        out = []
        for start in range(0, len(residual), 256):  # (256, m) distances at a time
            block = residual[start : start + 256]
            dist = (block**2).sum(1)[:, None] - 2 * block @ recon.T + (recon**2).sum(1)[None]
            near = np.argpartition(dist, n - 1, axis=1)[:, :n]
            near = np.take_along_axis(near, np.argsort(np.take_along_axis(dist, near, 1), 1, kind="stable"), 1)
            out += [[tuple(int(c) for c in prefixes[j]) for j in row] for row in near]
        return out

    def save(self, path: Path, codes_sha256: str) -> None:
        """Write the quantiser (atomically), bound to the code file it produced."""
        from genrec.atomic import atomic_path

        arrays = {f"w{i}": w for i, (w, _) in enumerate(self.layers)}
        arrays |= {f"b{i}": b for i, (_, b) in enumerate(self.layers)}
        arrays |= {f"book{i}": c for i, c in enumerate(self.codebooks)}
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, method=self.method, codes_sha256=codes_sha256, **arrays)

    @classmethod
    def load(cls, path: Path, codes_sha256: str) -> Quantizer | None:
        """The saved quantiser, or None when there is none or it belongs to other codes."""
        if not path.exists():
            return None
        with np.load(path) as data:
            if str(data["codes_sha256"]) != codes_sha256:
                return None
            n_layers = sum(1 for k in data.files if k.startswith("w"))
            n_books = sum(1 for k in data.files if k.startswith("book"))
            return cls(
                str(data["method"]),
                [(data[f"w{i}"], data[f"b{i}"]) for i in range(n_layers)],
                [data[f"book{i}"] for i in range(n_books)],
            )


def from_rqvae(model) -> Quantizer:
    """The encoder layers and codebooks of a trained `rqvae.RQVAE`."""
    import torch

    layers = [
        (m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
        for m in model.encoder
        if isinstance(m, torch.nn.Linear)
    ]
    return Quantizer("rqvae", layers, [book.detach().numpy().copy() for book in model.codebooks])


def from_rkmeans(mean: np.ndarray | None, components: np.ndarray | None, centroids: list[np.ndarray]) -> Quantizer:
    """The PCA projection (none when the vectors were not reduced) and the centroids of residual k-means."""
    layers = [] if components is None else [(components, -components @ mean)]
    return Quantizer("rkmeans", layers, centroids)


def sha256_of(path: Path) -> str:
    """Content hash of a file (the code map a quantiser is bound to)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit_again(x: np.ndarray, config, stored: np.ndarray) -> Quantizer:
    """Train the quantiser again on the run's item vectors `x` with its saved config and seed, and
    check that it reproduces the stored learned codes `stored` (n, L) of every item."""
    from retrieval.semantic_ids.build import fit_quantizer

    codes, quantizer, _ = fit_quantizer(x, config, progress=False)
    if codes.shape != stored.shape or not np.array_equal(codes, stored):
        differ = int((codes != stored).any(axis=1).sum()) if codes.shape == stored.shape else len(stored)
        raise GenrecError(
            f"semantic IDs: the run saved no quantiser, and training it again with the saved config gives "
            f"other codes for {differ} items (the item vectors or the library changed); new items cannot be "
            "coded like the old ones: index and train the run again"
        )
    return quantizer
