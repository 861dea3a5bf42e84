"""SASRec (Kang & McAuley, ICDM 2018), trained with full softmax cross-entropy over the catalog.

The network follows the paper and its reference implementations: item embeddings scaled by
sqrt(d) plus learned absolute positional embeddings (the last item always at position max_len - 1),
dropout, then blocks of causal self-attention and a point-wise feed-forward network, each with
layer norm, residual connections and dropout, a final layer norm, and the item embedding matrix
shared as the output layer. Padding positions are zeroed after every block and are never attended
to (as the original TensorFlow code's key masking does), so a batch can be padded to its longest
history rather than to max_len without changing any result.

The one departure from the paper is the loss: instead of one sampled negative per position
(binary cross-entropy), every position is trained with softmax cross-entropy over the whole
catalog: the "CE-SASRec" / "SASRec+" variant (Klenitskiy & Vasilev, RecSys 2023; Xu et al. 2024,
arXiv 2402.06216), which matches or beats BERT4Rec and TIGER in public re-runs. Training lives in
`finetune.dense.train` (shared with BSARec).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from inference.dense.model import DenseRecommender, Dropout, MultiHeadAttention


class PointWiseFeedForward(nn.Module):
    """Two position-wise linear layers with ReLU and dropout, plus the residual (reference code)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), Dropout(dropout), nn.ReLU(), nn.Linear(hidden, hidden), Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Block(nn.Module):
    """One SASRec block: x = x + Attn(LN(x), x, x); x = FFN(LN(x)) with its residual.

    The attention residual adds the block input, as the code behind the published CE-SASRec figures
    does (Xu et al. 2024); Kang's TensorFlow code adds the normalised queries instead.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attn = MultiHeadAttention(hidden, heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = PointWiseFeedForward(hidden, dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), x, allowed)
        x = self.ffn(self.ffn_norm(x))
        return x * keep


class SASRec(
    DenseRecommender,
    PyTorchModelHubMixin,
    library_name="genrec",
    tags=["sequential-recommendation", "sasrec"],
    paper_url="https://arxiv.org/abs/1808.09781",
):
    """The SASRec network over a catalog: left-padded item positions (0 = padding) -> one hidden state
    per position; `scores`/`recommend` rank the whole catalog from the last one."""

    name = "sasrec"
    causal = True
    fixed_length = False

    def __init__(
        self,
        item_ids: Sequence[str],
        hidden: int = 64,
        layers: int = 2,
        heads: int = 1,
        max_len: int = 50,
        dropout: float = 0.5,
    ):
        super().__init__(item_ids, hidden, layers, heads, max_len, dropout)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_normal_(param)  # as the reference implementations do
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, length, hidden) for left-padded 1-based item positions (batch, length)."""
        _, length = seq.shape
        real = seq != 0
        keep = real.unsqueeze(-1).to(self.item_emb.weight.dtype)
        positions = torch.arange(self.max_len - length, self.max_len, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.hidden) + self.pos_emb(positions)
        x = self.emb_dropout(x) * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # attend to earlier real items only; a padding query may attend to itself so no row is empty
        allowed = causal & real.unsqueeze(1) | torch.eye(length, dtype=torch.bool, device=seq.device)
        allowed = allowed.unsqueeze(1)  # (batch, 1 head-broadcast, query, key)
        for block in self.blocks:
            x = block(x, allowed, keep)
        return self.final_norm(x)
