"""SASRec (Kang & McAuley, ICDM 2018), trained with full softmax cross-entropy over the catalog.

The network follows the paper and its reference implementations: item embeddings scaled by
sqrt(d) plus learned absolute positional embeddings, dropout, then blocks of causal self-attention
and a point-wise feed-forward network, each with layer norm, residual connections and dropout, a
final layer norm, and the item embedding matrix shared as the output layer. Padding positions are
zeroed after every block, as in the reference code.

The one departure is the loss: instead of one sampled negative per position (binary
cross-entropy, as in the paper), every position is trained with softmax cross-entropy over the
whole catalog. This is the "SASRec+" / CE variant (Klenitskiy & Vasilev, RecSys 2023), which
matches or beats BERT4Rec and TIGER in public re-runs: the strong baseline.

Training: each epoch visits every user once with the last `max_len + 1` items of their training
sequence (inputs = all but the last, targets = all but the first), Adam, and early stopping on
validation NDCG@10 computed by `genrec.metrics.validation_ndcg` (the one metric code path).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genrec.metrics import validation_ndcg
from retrieval.item_index import ItemIndex
from retrieval.split import Case


class CausalSelfAttention(nn.Module):
    """Multi-head attention whose queries come from the layer-normed input (as in SASRec)."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, query: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, hidden = query.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, length, self.heads, hidden // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads(self.q(query)),
            heads(self.k(keys)),
            heads(self.v(keys)),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(attended.transpose(1, 2).reshape(b, length, hidden))


class PointWiseFeedForward(nn.Module):
    """Two position-wise linear layers with ReLU and dropout, plus the residual (reference code)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), nn.Dropout(dropout), nn.ReLU(), nn.Linear(hidden, hidden), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Block(nn.Module):
    """One SASRec block: Q = LN(x); x = Q + Attn(Q, x, x); x = FFN(LN(x)) with its residual."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = PointWiseFeedForward(hidden, dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        x = q + self.attn(q, x, allowed)
        x = self.ffn(self.ffn_norm(x))
        return x * keep


class SASRecNet(nn.Module):
    """The SASRec network: left-padded item positions (0 = padding) -> one hidden state per position."""

    def __init__(self, num_items: int, hidden: int, layers: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        self.hidden = hidden
        self.max_len = max_len
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_normal_(param)  # as the reference implementations do
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        _, length = seq.shape
        keep = (seq != 0).unsqueeze(-1).to(self.item_emb.weight.dtype)
        # the last item always sits at position max_len - 1, as in the fixed-length padded layout
        positions = torch.arange(self.max_len - length, self.max_len, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.hidden) + self.pos_emb(positions)
        x = self.emb_dropout(x) * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # attend to earlier real items only; a padding query may attend to itself so no row is empty
        allowed = causal & (seq != 0).unsqueeze(1) | torch.eye(length, dtype=torch.bool, device=seq.device)
        allowed = allowed.unsqueeze(1)  # (batch, 1 head-broadcast, query, key)
        for block in self.blocks:
            x = block(x, allowed, keep)
        return self.final_norm(x)

    def item_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Scores of every catalog item (padding excluded) for each hidden state: shared embeddings."""
        return states @ self.item_emb.weight[1:].T


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with `threads` intra-op threads, restoring the previous setting after.

    On a shared or oversubscribed CPU, one thread per process can be many times faster than
    several threads spinning against each other; the caller decides.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _left_pad(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Stack sequences of 1-based item positions into a (len(rows), length) tensor, left-padded with 0."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for r, row in enumerate(rows):
        if len(row):
            out[r, length - len(row) :] = torch.as_tensor(row, dtype=torch.long)
    return out


class SASRec:
    """Self-attentive sequential recommender with full cross-entropy; ranks the whole catalog."""

    name = "sasrec"

    def __init__(
        self,
        catalog: Sequence[str],
        hidden: int = 64,
        layers: int = 2,
        heads: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        lr: float = 3e-3,
        batch_size: int = 128,
        epochs: int = 200,
        patience: int = 10,
        eval_every: int = 1,
        val_users: int | None = None,
        max_minutes: float | None = None,
        seed: int = 0,
        threads: int | None = 1,
        progress: bool = True,
    ):
        self.index = ItemIndex(catalog)
        self.hidden, self.layers, self.heads, self.max_len, self.dropout = hidden, layers, heads, max_len, dropout
        self.lr, self.batch_size, self.epochs, self.patience = lr, batch_size, epochs, patience
        self.eval_every, self.val_users, self.max_minutes = eval_every, val_users, max_minutes
        self.seed, self.threads, self.progress = seed, threads, progress
        self.net: SASRecNet | None = None
        self.train_stats: dict = {}

    # ---- training -------------------------------------------------------------------------
    def fit(self, train: dict[str, list[str]], valid: dict[str, Case] | None = None) -> None:
        """Train on the training sequences; with `valid` (user -> (history, target)), keep the
        epoch with the best validation NDCG@10 and stop after `patience` evaluations without gain."""
        with _torch_threads(self.threads):
            self._fit(train, valid)

    def _fit(self, train: dict[str, list[str]], valid: dict[str, Case] | None) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        encoded = self.index.encode_train(train)
        # 1-based positions: 0 is padding inside the network
        sequences = [[i + 1 for i in items[-(self.max_len + 1) :]] for items in encoded.values() if len(items) >= 2]
        positions = sum(len(s) - 1 for s in sequences)
        self.net = SASRecNet(len(self.index), self.hidden, self.layers, self.heads, self.max_len, self.dropout)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr, betas=(0.9, 0.98))

        best_score, best_state, best_epoch, bad_evals = -1.0, None, 0, 0
        history: list[dict] = []
        started = time.perf_counter()
        train_seconds = 0.0
        trained_positions = 0
        epoch = 0
        stopped_by_clock = False
        for epoch in range(1, self.epochs + 1):
            epoch_start = time.perf_counter()
            self.net.train()
            total_loss, total_n = 0.0, 0
            order = rng.permutation(len(sequences))
            batches = range(0, len(order), self.batch_size)
            bar = tqdm(batches, desc=f"sasrec epoch {epoch}", leave=False, disable=not self.progress, unit="batch")
            for start in bar:
                batch = [sequences[j] for j in order[start : start + self.batch_size]]
                length = max(len(s) for s in batch) - 1  # pad to this batch's longest, not max_len
                inputs = _left_pad([s[:-1] for s in batch], length)
                targets = _left_pad([s[1:] for s in batch], length)
                mask = targets != 0
                states = self.net(inputs)[mask]
                loss = F.cross_entropy(self.net.item_logits(states), targets[mask] - 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = int(mask.sum())
                total_loss += float(loss.detach()) * n
                total_n += n
                bar.set_postfix(loss=f"{total_loss / total_n:.4f}")
            bar.close()
            train_seconds += time.perf_counter() - epoch_start
            trained_positions += total_n
            record = {"epoch": epoch, "loss": total_loss / max(total_n, 1)}
            if valid and epoch % self.eval_every == 0:
                score = validation_ndcg(self, valid, self.index.ids, max_users=self.val_users, seed=self.seed)
                record["valid_ndcg@10"] = score
                if score > best_score:
                    best_score, best_epoch, bad_evals = score, epoch, 0
                    best_state = copy.deepcopy(self.net.state_dict())
                else:
                    bad_evals += 1
            history.append(record)
            if self.progress:
                extra = f" valid ndcg@10 {record['valid_ndcg@10']:.4f}" if "valid_ndcg@10" in record else ""
                tqdm.write(f"sasrec epoch {epoch}: loss {record['loss']:.4f}{extra}")
            if valid and bad_evals >= self.patience:
                break
            if self.max_minutes is not None and time.perf_counter() - started > 60 * self.max_minutes:
                stopped_by_clock = True
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        self.train_stats = {
            "epochs": epoch,
            "best_epoch": best_epoch if best_state is not None else epoch,
            "best_valid_ndcg@10": best_score if best_state is not None else None,
            "train_seconds": train_seconds,
            "total_seconds": time.perf_counter() - started,
            "positions_per_epoch": positions,
            "examples_per_s": trained_positions / train_seconds if train_seconds else 0.0,
            "history": history,
            "stopped_by_clock": stopped_by_clock,
        }

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, histories: list[list[str]]) -> tuple[torch.Tensor, list[list[int]]]:
        """Scores of every catalog item for each history (batch x catalog) and the encoded histories."""
        if self.net is None:
            raise RuntimeError("SASRec.score called before fit")
        self.net.eval()
        encoded = [self.index.encode(h) for h in histories]
        windows = [[i + 1 for i in items[-self.max_len :]] for items in encoded]
        length = max(1, max(len(w) for w in windows))
        states = self.net(_left_pad(windows, length))[:, -1]
        return self.net.item_logits(states), encoded

    @torch.no_grad()
    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """Top-`k` catalog items for each history by the model's next-item scores, history excluded."""
        with _torch_threads(self.threads):
            scores, encoded = self.score(histories)
        for row, items in enumerate(encoded):
            if items:
                scores[row, torch.as_tensor(items, dtype=torch.long)] = -torch.inf
        k_eff = min(k, scores.shape[1])
        values, top = torch.topk(scores, k_eff, dim=1)
        return [
            [self.index.ids[j] for j, v in zip(row, vals) if v != -torch.inf]
            for row, vals in zip(top.tolist(), values.tolist())
        ]
