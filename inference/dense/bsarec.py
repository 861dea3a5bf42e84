"""BSARec (Shin et al., "An Attentive Inductive Bias for Sequential Recommendation beyond the
Self-Attention", AAAI 2024, arXiv 2312.10325), written after the paper and its reference code.

Self-attention acts as a low-pass filter over a sequence; BSARec adds an explicit Fourier branch
beside it. Each layer mixes two views of its input x (batch, positions, hidden):
- the filter: x's Fourier transform along the positions keeps its lowest `c // 2 + 1` frequencies
  (the low band, back in the position domain; applied here as the equivalent fixed matrix), and the rest is scaled by a learned per-channel
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

from inference.dense.model import DenseRecommender, Dropout, MultiHeadAttention

MASKED = -10000.0  # additive attention mask of the reference code (a padding query then sees all keys)


def low_pass(length: int, keep: int) -> torch.Tensor:
    """The (length x length) matrix that keeps a sequence's lowest `keep` frequencies: the rfft along
    the positions, the higher bins zeroed, the inverse rfft (orthonormal), applied to the identity.
    `low_pass(L, k) @ x` equals `irfft(rfft(x)[:k])`, and a row of it gives one position alone."""
    spectrum = torch.fft.rfft(torch.eye(length, dtype=torch.float64), dim=0, norm="ortho")
    spectrum[keep:] = 0
    return torch.fft.irfft(spectrum, n=length, dim=0, norm="ortho").to(torch.float32)


class FrequencyFilter(nn.Module):
    """The Fourier branch: low frequencies kept, the high band scaled by a learned beta^2."""

    def __init__(self, hidden: int, max_len: int, c: int, dropout: float):
        super().__init__()
        self.sqrt_beta = nn.Parameter(torch.randn(1, 1, hidden))
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.register_buffer("low_pass", low_pass(max_len, c // 2 + 1), persistent=False)

    def forward(self, x: torch.Tensor, last: bool = False) -> torch.Tensor:
        """Filtered states at every position, or (`last`) at the last one only: (batch, 1, hidden)."""
        rows = self.low_pass[-1:] if last else self.low_pass
        low = torch.einsum("ts,bsh->bth", rows, x.float())
        x = x[:, -1:] if last else x
        return self.norm(self.dropout(low + self.sqrt_beta**2 * (x - low)) + x)


class Attention(MultiHeadAttention):
    """Self-attention followed, as in BERT, by dropout, the residual and layer norm."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__(hidden, heads, dropout)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last: bool = False) -> torch.Tensor:
        """Attended states at every position, or (`last`) for the last query only: (batch, 1, hidden)."""
        queries = x[:, -1:] if last else x
        out = super().forward(queries, x, mask[:, :, -1:] if last else mask)
        return self.norm(self.dropout(out) + queries)


class BSARecBlock(nn.Module):
    """alpha * filter(x) + (1 - alpha) * attention(x), then the feed-forward network."""

    def __init__(self, hidden: int, heads: int, max_len: int, dropout: float, alpha: float, c: int):
        super().__init__()
        self.alpha = alpha
        self.filter = FrequencyFilter(hidden, max_len, c, dropout)
        self.attention = Attention(hidden, heads, dropout)
        self.ffn_in = nn.Linear(hidden, 4 * hidden)
        self.ffn_out = nn.Linear(4 * hidden, hidden)
        self.ffn_dropout = Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last: bool = False) -> torch.Tensor:
        """Every position's output, or (`last`) the last position's alone, which the last block of a
        network scored at its last position needs: the filter and the attention keys still read
        every position, but queries, the feed-forward network and the norms run on one."""
        h = self.alpha * self.filter(x, last) + (1 - self.alpha) * self.attention(x, mask, last)
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
        super().__init__(item_ids, hidden, layers, heads, max_len, dropout)
        self.alpha, self.c = alpha, c
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(BSARecBlock(hidden, heads, max_len, dropout, alpha, c) for _ in range(layers))
        for module in self.modules():
            # as the reference: N(0, 0.02) for every linear and embedding weight (the padding row
            # too, which then stays fixed: it gets no gradient), zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, seq: torch.Tensor, last: bool = False) -> torch.Tensor:
        """Hidden states (batch, length, hidden) for left-padded 1-based item positions (batch, length),
        or (`last`) the last position's alone, (batch, 1, hidden), computed without the rest of the
        final block's positions (the same numbers; about 40% less work)."""
        _, length = seq.shape
        positions = torch.arange(length, device=seq.device)
        x = self.emb_dropout(self.emb_norm(self.item_emb(seq) + self.pos_emb(positions)))
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        allowed = (causal & (seq != 0).unsqueeze(1)).unsqueeze(1)  # (batch, 1, query, key)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=seq.device).masked_fill(~allowed, MASKED)
        for n, block in enumerate(self.blocks):
            x = block(x, mask, last=last and n == len(self.blocks) - 1)
        return x

    def last_state(self, seq: torch.Tensor) -> torch.Tensor:
        """The hidden state at the last position of each row: (batch, hidden)."""
        return self(seq, last=True)[:, -1]
