"""`RUN/semantic_ids.json` and `RUN/semantic_ids.stats.json`: writing them atomically, reading them strictly."""

from __future__ import annotations

import json

from genrec.atomic import write_json
from genrec.errors import GenrecError
from genrec.run import RunPaths
from retrieval.semantic_ids.build import SemanticIds
from retrieval.semantic_ids.quantizer import QUANTIZER_FILE, sha256_of


def save_semantic_ids(sids: SemanticIds, paths: RunPaths) -> None:
    """Write the code map (`{"<item_id>": [c1, ..., cL+1]}`) and its statistics into the run."""
    write_json(paths.semantic_ids, sids.codes, indent=None)
    write_json(paths.semantic_id_stats, sids.stats)
    quantizer_path = paths.root / QUANTIZER_FILE
    if sids.quantizer is not None:
        sids.quantizer.save(quantizer_path, sha256_of(paths.semantic_ids))
    else:  # a quantiser of earlier codes must not code new items
        quantizer_path.unlink(missing_ok=True)


def load_semantic_ids(paths: RunPaths) -> dict[str, list[int]]:
    """Read the code map of a run, checking it is well formed: equal-length lists of codes >= 0, all distinct.

    Later stages build tokens and a decoding trie from it, so a broken file fails here, by name.
    """
    path = paths.require(paths.semantic_ids, f"genrec index --run {paths.root}")
    redo = f"rebuild it with `genrec index --run {paths.root}`"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GenrecError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); {redo}") from None
    if not isinstance(raw, dict) or not raw:
        raise GenrecError(f"{path}: expected a non-empty object {{item_id: [codes]}}; {redo}")
    length = None
    seen: dict[tuple[int, ...], str] = {}
    for item, code in raw.items():
        if not isinstance(code, list) or not code or not all(type(c) is int and c >= 0 for c in code):
            raise GenrecError(f"{path}: item {item!r}: code {code!r} is not a list of integers >= 0; {redo}")
        if length is None:
            length = len(code)
        elif len(code) != length:
            raise GenrecError(f"{path}: item {item!r}: code has {len(code)} levels, others {length}; {redo}")
        key = tuple(code)
        if key in seen:
            raise GenrecError(f"{path}: items {seen[key]!r} and {item!r} share the code {code}; {redo}")
        seen[key] = item
    return raw
