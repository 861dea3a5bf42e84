"""RQ-VAE as in TIGER (Rajput et al. 2023, "Recommender Systems with Generative Retrieval").

An MLP encoder maps an item vector to a latent z; L codebooks quantise it residually
(level d picks the code nearest to what levels 1..d-1 left over); an MLP decoder reconstructs the
item vector from the sum of the chosen codes. Gradients pass the quantiser by the straight-through
estimator. Loss = reconstruction + sum over levels of codebook loss ||sg[r_d] - e_d||^2 +
beta * commitment loss ||r_d - sg[e_d]||^2.

Three things keep codebook use high on a small catalog:
- a short warm-up trains encoder and decoder as a plain autoencoder first. A random encoder maps
  all items into a tiny cloud, and the first updates move the whole cloud away from codebooks fitted
  to it: on MovieLens, 1,664 distinct codes after k-means init fell to 3 after one epoch. After
  ~200 warm-up steps the latents separate items and the k-means codebooks stay in use;
- codebooks start from k-means on those latents (level by level on residuals, all items);
- during most of training unused codes are re-seeded with residuals of items whose prefix is
  crowded, which splits exactly the groups that would otherwise collide.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from genrec.config import SemanticIdConfig
from retrieval.semantic_ids.rkmeans import kmeans


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Encoder, `levels` residual codebooks of `codebook_size` codes each, decoder."""

    def __init__(self, input_dim: int, hidden_dims: list[int], latent_dim: int, levels: int, codebook_size: int):
        super().__init__()
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, latent_dim))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Residual quantisation of z.

        Returns the sum of the chosen codes, the codes (n, L), the residual entering each level
        (L, n, latent) and the chosen code vectors per level (differentiable w.r.t. the codebooks).
        """
        residual = z
        z_q = torch.zeros_like(z)
        codes, residuals, chosen = [], [], []
        for codebook in self.codebooks:
            idx = torch.cdist(residual.detach(), codebook.detach()).argmin(dim=1)
            e = codebook[idx]
            codes.append(idx)
            residuals.append(residual)
            chosen.append(e)
            z_q = z_q + e
            # The next level quantises what is left; its losses train the encoder, not this codebook.
            residual = residual - e.detach()
        return z_q, torch.stack(codes, dim=1), torch.stack(residuals), chosen

    def forward(self, x: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        """Reconstruct x through the quantiser; return the loss, its parts, codes and residuals."""
        z = self.encoder(x)
        z_q, codes, residuals, chosen = self.quantize(z)
        codebook_loss = sum(((r.detach() - e) ** 2).sum(-1).mean() for r, e in zip(residuals, chosen))
        commitment_loss = sum(((r - e.detach()) ** 2).sum(-1).mean() for r, e in zip(residuals, chosen))
        # Straight-through: the decoder sees z_q, the encoder receives the decoder's gradient as if z.
        x_hat = self.decoder(z + (z_q - z).detach())
        recon_loss = ((x_hat - x) ** 2).sum(-1).mean()
        loss = recon_loss + codebook_loss + beta * commitment_loss
        return {
            "loss": loss,
            "recon": recon_loss,
            "codebook": codebook_loss,
            "commitment": commitment_loss,
            "codes": codes,
            "residuals": residuals.detach(),
        }


@dataclass
class RqvaeResult:
    """Codes of every item (n, L) and what training did."""

    codes: np.ndarray
    seconds: float
    training: dict[str, Any] = field(default_factory=dict)
    model: RQVAE | None = None  # the trained model: its encoder and codebooks code items added later


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch seeded, deterministic algorithms on and one thread; restore all three after.

    One thread because the model is tiny: on a busy machine OpenMP threads spin against each other
    for a step that takes milliseconds, and one thread also fixes the order of floating-point reductions.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0])
            torch.set_num_threads(previous[1])


def warm_up(model: RQVAE, x: torch.Tensor, config: SemanticIdConfig, generator: torch.Generator) -> float:
    """Train encoder + decoder without quantisation for about `config.warmup_steps` steps; return the last loss."""
    params = [*model.encoder.parameters(), *model.decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    steps_per_epoch = -(-len(x) // config.batch_size)
    loss = torch.zeros(())
    for _ in range(-(-config.warmup_steps // steps_per_epoch)):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), config.batch_size):
            batch = x[order[begin : begin + config.batch_size]]
            loss = ((model.decoder(model.encoder(batch)) - batch) ** 2).sum(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return loss.item()


@torch.no_grad()
def init_codebooks(model: RQVAE, x: torch.Tensor, seed: int, generator: torch.Generator) -> None:
    """Set each codebook to k-means centroids of the residuals entering its level (all items)."""
    residual = model.encoder(x)
    levels, size, _ = model.codebooks.shape
    for level in range(levels):
        centroids, labels = kmeans(residual.double().numpy(), size, seed + level)
        book = torch.from_numpy(centroids)
        if len(book) < size:  # fewer items than codes: pad with item residuals, left to the dead-code reset
            extra = residual[torch.randint(len(residual), (size - len(book),), generator=generator)]
            book = torch.cat([book, extra])
        model.codebooks.data[level] = book
        residual = residual - book[torch.from_numpy(labels)]


@torch.no_grad()
def reseed_dead_codes(
    model: RQVAE,
    codes: torch.Tensor,
    residuals: torch.Tensor,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
) -> int:
    """Point every unused code at the residual of an item whose prefix other items share.

    `codes` (n, L) and `residuals` (L, n, latent) are every item's, as seen during the last epoch.
    Items are drawn with weight (size of their prefix group through this level) - 1, so items that
    already have a prefix of their own are never drawn and crowded groups are split first.
    Returns how many codes were re-seeded.
    """
    levels, size, _ = model.codebooks.shape
    group = torch.zeros(len(codes), dtype=torch.long)
    state = optimizer.state.get(model.codebooks, {})
    reseeded = 0
    for level in range(levels):
        dead = torch.nonzero(torch.bincount(codes[:, level], minlength=size) == 0).flatten()
        _, group, group_counts = torch.unique(group * size + codes[:, level], return_inverse=True, return_counts=True)
        crowd = (group_counts[group] - 1).float()
        n = min(len(dead), int((crowd > 0).sum()))
        if n == 0:
            continue
        chosen = torch.multinomial(crowd, n, replacement=False, generator=generator)
        dead = dead[:n]
        model.codebooks.data[level, dead] = residuals[level, chosen]
        for key in ("exp_avg", "exp_avg_sq"):  # stale Adam moments would drag the new code away
            if key in state:
                state[key][level, dead] = 0
        reseeded += n
    return reseeded


@torch.no_grad()
def encode_codes(model: RQVAE, x: torch.Tensor) -> torch.Tensor:
    """Codes (n, L) of every item under the current model."""
    return model.quantize(model.encoder(x))[1]


def train_rqvae(x: np.ndarray, config: SemanticIdConfig, progress: bool = True) -> RqvaeResult:
    """Train an RQ-VAE on item vectors `x` (n, d) and return every item's L codes.

    Deterministic for `config.seed`: torch is seeded inside a forked RNG, batches come from a
    seeded generator and deterministic algorithms are on while training.
    """
    start = time.perf_counter()
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n, levels = len(data), config.levels
    with seeded(config.seed):
        generator = torch.Generator().manual_seed(config.seed)
        model = RQVAE(data.shape[1], config.hidden_dims, config.latent_dim, levels, config.codebook_size)
        warmup_loss = warm_up(model, data, config, generator)
        init_codebooks(model, data, config.seed, generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        reset_epochs = int(config.reset_until * config.epochs) if config.dead_code_reset else 0
        reseeded = 0
        # Every item's codes and residuals as met during the epoch: enough to find dead codes
        # and crowded prefixes without another pass over the data.
        seen_codes = torch.zeros(n, levels, dtype=torch.long)
        seen_residuals = torch.zeros(levels, n, config.latent_dim)
        bar = tqdm(range(config.epochs), desc="RQ-VAE", unit="epoch", disable=not progress)
        for epoch in bar:
            totals = {"loss": 0.0, "recon": 0.0, "codebook": 0.0, "commitment": 0.0}
            order = torch.randperm(n, generator=generator)
            for begin in range(0, n, config.batch_size):
                rows = order[begin : begin + config.batch_size]
                out = model(data[rows], config.commitment_weight)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
                seen_codes[rows] = out["codes"]
                seen_residuals[:, rows] = out["residuals"]
                for key in totals:
                    totals[key] += out[key].item() * len(rows) / n
            if epoch < reset_epochs:
                reseeded += reseed_dead_codes(model, seen_codes, seen_residuals, generator, optimizer)
            used = "/".join(str(int(torch.unique(seen_codes[:, lv]).numel())) for lv in range(levels))
            distinct = int(torch.unique(seen_codes, dim=0).shape[0])
            bar.set_postfix(recon=f"{totals['recon']:.4f}", used=used, distinct=distinct, refresh=False)
        codes = encode_codes(model, data).numpy().astype(np.int64)
    seconds = time.perf_counter() - start
    training = {
        "epochs": config.epochs,
        "warmup_recon_loss": warmup_loss,
        "final_loss": totals["loss"],
        "final_recon_loss": totals["recon"],
        "final_codebook_loss": totals["codebook"],
        "final_commitment_loss": totals["commitment"],
        "dead_codes_reseeded": reseeded,
    }
    return RqvaeResult(codes=codes, seconds=seconds, training=training, model=model)
