"""BSARec (Shin et al., "An Attentive Inductive Bias for Sequential Recommendation beyond the
Self-Attention", AAAI 2024, arXiv 2312.10325), written after the paper and its reference code.

Self-attention acts as a low-pass filter over a sequence; BSARec adds an explicit Fourier branch
beside it. Each layer mixes two views of its input x (batch, positions, hidden):
- the filter: x's Fourier transform along the positions keeps its lowest `c // 2 + 1` frequencies
  (the low band, back in the position domain), and the rest is scaled by a learned per-channel
  beta^2: dsp = LN(dropout(low + beta^2 * (x - low)) + x);
- attention (causal, padding keys masked): gsp = LN(dropout(W_o attn(x)) + x);
then h = alpha * dsp + (1 - alpha) * gsp, and a position-wise feed-forward network (GELU, 4x
wider) with its residual and layer norm (post-norm, as BERT). Embeddings are the item embedding
plus a learned absolute position, layer norm and dropout; weights start from N(0, 0.02).

The Fourier filter mixes every position with every other (later ones included), so the network
is not causal: it is trained on one target per example, the last position of a prefix
(`finetune.dense.train`), and its input is always padded to `max_len`, because the filter's
frequencies are those of a sequence of that length. Padding positions are embedded like any other
(the reference code does the same), so they take part in the filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from finetune.dense.model import DenseRecommender, Dropout, attend

MASKED = -10000.0  # additive attention mask of the reference code (a padding query then sees all keys)


class FrequencyFilter(nn.Module):
    """The Fourier branch: low frequencies kept, the high band scaled by a learned beta^2."""

    def __init__(self, hidden: int, c: int, dropout: float):
        super().__init__()
        self.keep = c // 2 + 1
        self.sqrt_beta = nn.Parameter(torch.randn(1, 1, hidden))
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        spectrum = torch.fft.rfft(x.float(), dim=1, norm="ortho")
        spectrum[:, self.keep :, :] = 0
        low = torch.fft.irfft(spectrum, n=length, dim=1, norm="ortho")
        filtered = low + self.sqrt_beta**2 * (x - low)
        return self.norm(self.dropout(filtered) + x)


class Attention(nn.Module):
    """Multi-head self-attention with an additive mask, output projection, dropout, residual, norm."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.attn_dropout = Dropout(dropout)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, hidden = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, hidden // self.heads).transpose(1, 2)

        attended = attend(split(self.q(x)), split(self.k(x)), split(self.v(x)), mask, self.attn_dropout)
        out = self.out(attended.transpose(1, 2).reshape(b, length, hidden))
        return self.norm(self.dropout(out) + x)


class BSARecBlock(nn.Module):
    """alpha * filter(x) + (1 - alpha) * attention(x), then the feed-forward network."""

    def __init__(self, hidden: int, heads: int, dropout: float, alpha: float, c: int):
        super().__init__()
        self.alpha = alpha
        self.filter = FrequencyFilter(hidden, c, dropout)
        self.attention = Attention(hidden, heads, dropout)
        self.ffn_in = nn.Linear(hidden, 4 * hidden)
        self.ffn_out = nn.Linear(4 * hidden, hidden)
        self.ffn_dropout = Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.alpha * self.filter(x) + (1 - self.alpha) * self.attention(x, mask)
        return self.ffn_norm(self.ffn_dropout(self.ffn_out(F.gelu(self.ffn_in(h)))) + h)


class BSARec(
    DenseRecommender,
    PyTorchModelHubMixin,
    library_name="genrec",
    tags=["sequential-recommendation", "bsarec"],
    paper_url="https://arxiv.org/abs/2312.10325",
):
    """The BSARec network over a catalog: item positions padded to `max_len` (0 = padding) -> one
    hidden state per position; `scores`/`recommend` rank the whole catalog from the last one."""

    name = "bsarec"
    causal = False
    fixed_length = True

    def __init__(
        self,
        item_ids: Sequence[str],
        hidden: int = 64,
        layers: int = 2,
        heads: int = 1,
        max_len: int = 50,
        dropout: float = 0.5,
        alpha: float = 0.7,
        c: int = 5,
    ):
        super().__init__(item_ids, hidden, max_len)
        self.layers, self.heads, self.dropout, self.alpha, self.c = layers, heads, dropout, alpha, c
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(BSARecBlock(hidden, heads, dropout, alpha, c) for _ in range(layers))
        for module in self.modules():
            # as the reference: N(0, 0.02) for every linear and embedding weight (the padding row
            # too, which then stays fixed: it gets no gradient), zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, length, hidden) for left-padded 1-based item positions (batch, length)."""
        _, length = seq.shape
        positions = torch.arange(length, device=seq.device)
        x = self.emb_dropout(self.emb_norm(self.item_emb(seq) + self.pos_emb(positions)))
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        allowed = (causal & (seq != 0).unsqueeze(1)).unsqueeze(1)  # (batch, 1, query, key)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=seq.device).masked_fill(~allowed, MASKED)
        for block in self.blocks:
            x = block(x, mask)
        return x
