"""Item-level scores beside the generated IDs: the state before an ID, dotted with each item's vector.

Generating an ID scores an item one code at a time, and a code's softmax only competes with the
other codes of its level. SASRec instead trains one softmax over the whole catalog at every
position, which teaches each state directly which items come next. Here an item's vector is the
sum of the input embeddings of its ID tokens (tied with the output layer in scratch models), so
no weight is added and the saved model stays the plain causal LM that vLLM serves. Training adds
that full-catalog cross-entropy wherever the next tokens spell an item's ID (`train.item_loss`
is its weight); ranking adds `generate.item_weight` times the item log-softmax to each beam's
sequence log-prob, so candidates still come from the trie and every result is a real item.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from finetune.trie import SidTrie


@dataclass
class ItemHead:
    """The catalog as token-id codes: what the item scores and their training targets need."""

    item_ids: list[str]
    code_tokens: torch.Tensor  # (items, depth) token ids of each item's ID
    item_of_tokens: dict[tuple[int, ...], int]
    first_tokens: torch.Tensor  # token ids of the first ID level
    depth: int

    @classmethod
    def from_trie(cls, trie: SidTrie) -> "ItemHead":
        """The head for the trie's items, in the trie's item order."""
        item_ids = trie.item_ids()
        tokens = [tuple(trie.tokens_of(item)) for item in item_ids]
        return cls(
            item_ids=item_ids,
            code_tokens=torch.tensor(tokens, dtype=torch.long),
            item_of_tokens={t: i for i, t in enumerate(tokens)},
            first_tokens=torch.tensor(sorted(trie.token_id[0].values()), dtype=torch.long),
            depth=trie.depth,
        )

    def index(self) -> dict[str, int]:
        """item_id -> column of `scores`."""
        return {item: i for i, item in enumerate(self.item_ids)}

    def item_vectors(self, model) -> torch.Tensor:
        """(items, hidden): the sum of each item's ID token embeddings (differentiable)."""
        return model.get_input_embeddings().weight[self.code_tokens].sum(dim=1)

    def scores(self, model, states: torch.Tensor) -> torch.Tensor:
        """(n, items) logits of every catalog item for each of `states` (n, hidden)."""
        vectors = self.item_vectors(model)
        return states.to(vectors.dtype) @ vectors.T

    def targets(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, position, item) for each state whose next `depth` label tokens spell an item's ID.

        The state at position p predicts label p + 1 (the causal shift), so an ID starting at label
        p is scored from the state at p - 1.
        """
        rows, positions, items = [], [], []
        starts = torch.isin(labels, self.first_tokens).nonzero().tolist()
        cache: dict[int, list[int]] = {}
        for b, p in starts:
            if p == 0:
                continue
            row = cache.get(b)
            if row is None:
                row = cache[b] = labels[b].tolist()
            item = self.item_of_tokens.get(tuple(row[p : p + self.depth]))
            if item is not None:
                rows.append(b)
                positions.append(p - 1)
                items.append(item)
        as_tensor = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
        return as_tensor(rows), as_tensor(positions), as_tensor(items)

    def loss(self, model, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Mean full-catalog cross-entropy at every ID position of `labels`; None if there is none."""
        rows, positions, items = self.targets(labels)
        if not len(items):
            return None
        logits = self.scores(model, states[rows, positions])
        return F.cross_entropy(logits.float(), items)


@contextlib.contextmanager
def final_states(model) -> Iterator[list[torch.Tensor]]:
    """Collect what the output layer reads during the block: the final (normed) hidden states.

    A hook on the output layer's input works for any causal LM, wrapped by PEFT or not, and sees
    exactly the positions whose logits are computed (`logits_to_keep`).
    """
    seen: list[torch.Tensor] = []
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()
