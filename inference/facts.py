"""What the catalog says about each item, in the shape prompts and explanations use: title, caption,
kinds (genres, categories), year and a few other attributes. Training's text tasks, the grounded
explanations and the served recommendations all read items through `item_facts`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from retrieval.catalog import KIND_KEYS, YEAR_KEYS, item_caption


@dataclass(frozen=True)
class ItemFacts:
    """What the catalog says about one item, in the shape the templates use."""

    item_id: str
    title: str
    caption: str
    kinds: list[str]
    year: int | None
    facts: list[str]  # other attributes as "key: value"

    @property
    def has_content(self) -> bool:
        """True when the item has something to say beyond an id-like title."""
        return bool(self.kinds or self.year or self.facts or self.caption.strip() != self.title.strip())


def item_facts(items: pd.DataFrame) -> dict[str, ItemFacts]:
    """Per item: title, caption and the attributes the tasks talk about."""
    out: dict[str, ItemFacts] = {}
    for row in items.itertuples(index=False):
        attrs: dict[str, Any] = json.loads(row.attributes) if row.attributes else {}
        kinds: list[str] = []
        year = None
        facts = []
        for key, value in attrs.items():
            if value in (None, "", []):
                continue
            if key in KIND_KEYS:
                kinds.extend(str(v) for v in (value if isinstance(value, list) else [value]))
            elif key in YEAR_KEYS and str(value).isdigit():
                year = int(value)
            elif isinstance(value, (str, int, float)) and len(str(value)) <= 60:
                facts.append(f"{key}: {value}")
        text = row.text if isinstance(row.text, str) else ""
        out[str(row.item_id)] = ItemFacts(
            str(row.item_id), str(row.title), item_caption(str(row.title), attrs, text), kinds, year, facts[:4]
        )
    return out
