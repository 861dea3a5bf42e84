"""A live catalog: items added to and retired from a trained run, without retraining or restarting.

    add_items("runs/ml100k", "new.jsonl")        # validate, encode, code, store; then commit
    retire_items("runs/ml100k", ["1682"])        # out of every recommendation path; its code stays taken
    state = catalog_state(paths)                 # the catalog of the moment: items, codes, retired
    view = Watched(paths, build)                 # something derived from it, rebuilt when it changes

What indexing and training produced (`items.parquet`, `semantic_ids.json`, `embeddings/`, the
models) is never rewritten: the trained model is bound to `semantic_ids.json` by its hash. The
changes live in one more file, `RUN/catalog.live.json`: the added items (rows, codes, content
vectors) and the retired ids, with a version. It is written to a temporary name and renamed, so it
is the one commit point of every change: a reader sees the catalog before or after a change, never
half of it, and a process killed in the middle of an add leaves the file as it was. Chroma is
written before the commit; its entries for items outside the committed catalog (a killed add, a
retirement) are never returned (`retrieval.search` filters by the catalog of the moment) and the
next change deletes them.

New items get semantic IDs from the run's trained quantiser (`semantic_ids.quantizer`), only with
codes the trained model has tokens for: the nearest code at each level, then the first free value
of the uniqueness level under that prefix; where every value is taken, the next-nearest prefix.
Codes of retired items stay taken, so an ID never names two items over a run's life.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd

from genrec.atomic import write_json
from genrec.config import RunConfig
from genrec.errors import GenrecError
from genrec.run import RunPaths, open_run
from retrieval.catalog import ITEM_COLUMNS, image_source, item_caption, make_items

LIVE_FILE = "catalog.live.json"
LOCK_FILE = ".catalog.lock"
FORMAT = 1

Stamp = tuple[int, int, int] | None  # (inode, mtime ns, size) of the live file; None when there is none


def live_path(paths: RunPaths) -> Path:
    """`RUN/catalog.live.json`: the committed changes to the indexed catalog."""
    return paths.root / LIVE_FILE


def file_stamp(path: Path) -> Stamp:
    """What changes whenever the file is replaced (a rename gives a new inode): checked per request."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()


def read_live(paths: RunPaths) -> tuple[dict[str, Any], Stamp]:
    """The committed changes (an empty change set for a run never changed) and the stamp of what was read."""
    path = live_path(paths)
    try:
        with open(path, encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            raw = json.load(fh)
    except FileNotFoundError:
        return {"format": FORMAT, "version": 0, "added": [], "retired": []}, None
    except json.JSONDecodeError as exc:
        raise GenrecError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise GenrecError(f"{path}: not a genrec live catalog of format {FORMAT}")
    return raw, (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class CatalogState:
    """The catalog of one moment: every item the run knows and its code, and which are retired.

    Retired items stay in `items` and `codes`: users' histories still name them (and prompts need
    their codes), and their codes stay taken. `active` is what may be recommended or found."""

    paths: RunPaths
    version: int
    stamp: Stamp
    items: pd.DataFrame  # base items, then added ones (ITEM_COLUMNS), indexed by item_id
    codes: dict[str, list[int]]  # every item's semantic ID, retired ones included
    retired: frozenset[str]
    added: tuple[str, ...]  # ids of items added after indexing, in the order they were added
    added_content: np.ndarray  # (len(added), d) their content vectors (the space semantic IDs are learned in)

    @property
    def active_codes(self) -> dict[str, list[int]]:
        """Codes of the items that may be recommended now."""
        if not self.retired:
            return self.codes
        return {i: c for i, c in self.codes.items() if i not in self.retired}

    @property
    def active(self) -> frozenset[str]:
        """Ids of the items that may be recommended or found now."""
        return frozenset(self.items.index) - self.retired

    def content(self) -> tuple[list[str], np.ndarray]:
        """Every item's content vector, base items then added ones (unit rows): what the served
        ranking compares items added after training with a user's history by."""
        config = open_run(self.paths.root)[1]
        base_ids = self.items.index[: len(self.items) - len(self.added)].tolist()
        base = base_content(self.paths, config)
        if base.shape[0] != len(base_ids):
            raise GenrecError(
                f"{self.paths.embeddings}: {base.shape[0]} vectors for {len(base_ids)} items; "
                f"run `genrec index --run {self.paths.root}` again"
            )
        matrix = np.concatenate([base, self.added_content], axis=0) if len(self.added) else base
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return base_ids + list(self.added), (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def base_content(paths: RunPaths, config: RunConfig) -> np.ndarray:
    """The content vectors of the indexed items (text, plus the centred image part where the run has images)."""
    from retrieval.index import content_vectors

    text = np.load(paths.require(paths.embeddings / "text.npy", f"genrec index --run {paths.root}"))
    image_path = paths.embeddings / "image.npy"
    if not image_path.exists():
        return text
    image, mask = np.load(image_path), np.load(paths.embeddings / "image_mask.npy")
    return content_vectors(text, image, mask, config.encoder.image_weight)


def catalog_state(paths: RunPaths) -> CatalogState:
    """The committed catalog of this moment (base artefacts + `catalog.live.json`)."""
    from retrieval.semantic_ids import load_semantic_ids

    live, stamp = read_live(paths)
    if paths.items.exists() or not paths.semantic_ids.exists():
        base = pd.read_parquet(paths.require(paths.items, f"genrec index --run {paths.root}"))
    else:  # a run that holds only what a model server needs (semantic IDs and the model), no item table
        base = pd.DataFrame(columns=ITEM_COLUMNS)
    # an indexed run searched before its semantic IDs exist has items and no codes yet
    codes = dict(load_semantic_ids(paths)) if paths.semantic_ids.exists() else {}
    added = live["added"]
    if added:
        rows = pd.DataFrame([{c: a[c] for c in ITEM_COLUMNS} for a in added], columns=ITEM_COLUMNS)
        items = pd.concat([base, rows], ignore_index=True)
        for a in added:
            codes[a["item_id"]] = list(a["code"])
        content = np.stack([_unb64(a["content"]) for a in added])
    else:
        items, content = base, np.zeros((0, 0), dtype=np.float32)
    return CatalogState(
        paths,
        int(live["version"]),
        stamp,
        items.set_index("item_id", drop=False),
        codes,
        frozenset(live["retired"]),
        tuple(a["item_id"] for a in added),
        content,
    )


T = TypeVar("T")


class Watched(Generic[T]):
    """A value derived from a run's catalog (a trie, a ranker, an item table), rebuilt when the
    catalog changes: each `get` compares the live file's stamp (one `stat`) with the one the value
    was built from. The value is swapped in as one reference, so a caller that took it keeps a
    consistent catalog for its whole request while the next caller gets the new one."""

    def __init__(self, paths: RunPaths, build: Callable[[CatalogState], T]):
        self.paths, self.build = paths, build
        self._lock = threading.Lock()
        self._current: tuple[Stamp, int, T] | None = None

    def get(self) -> T:
        """The value for the catalog of this moment."""
        stamp = file_stamp(live_path(self.paths))
        current = self._current
        if current is not None and current[0] == stamp:
            return current[2]
        with self._lock:
            current = self._current
            if current is None or current[0] != stamp:
                state = catalog_state(self.paths)
                current = (state.stamp, state.version, self.build(state))
                self._current = current
        return current[2]

    @property
    def version(self) -> int:
        """The catalog version of the value last built (0: as indexed)."""
        self.get()
        return self._current[1] if self._current else 0


@contextlib.contextmanager
def writer_lock(paths: RunPaths) -> Iterator[None]:
    """One change at a time per run, across processes (an advisory lock, released if the process dies)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- adding items ------------------------------------------------------------------------------


def read_new_items(file: Path, image_root: str | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Item rows of a generic JSONL or CSV catalog file (docs/formats.md) and the line of each."""
    from retrieval.loaders.generic import csv_items, jsonl_items

    if not file.exists():
        raise GenrecError(f"{file}: no such file")
    if file.suffix not in (".jsonl", ".json", ".csv"):
        raise GenrecError(f"{file}: expected a .jsonl or .csv item catalog (the generic format of docs/formats.md)")
    records, lines = csv_items(file) if file.suffix == ".csv" else jsonl_items(file)
    return checked_items(records, lines, str(file), image_root or str(file.resolve().parent))


def read_item_objects(objects: object, source: str, image_root: str) -> tuple[pd.DataFrame, list[int]]:
    """Item rows from JSON objects shaped like the lines of a JSONL catalog (the HTTP route's body);
    errors name `source` and the item's position (1-based)."""
    from retrieval.loaders.generic import CORE_KEYS, ID_KEYS, record

    if not isinstance(objects, list) or not objects:
        raise GenrecError(f"{source}: items: expected a non-empty list of item objects")
    records, lines = [], []
    for n, obj in enumerate(objects, 1):
        if not isinstance(obj, dict):
            raise GenrecError(f"{source}:{n}: expected an object with id, title, text, attributes, image")
        item_id = next((obj[k] for k in ID_KEYS if k in obj), None)
        if item_id is None:
            raise GenrecError(f"{source}:{n}: id: missing; every item needs an id")
        attributes = obj.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise GenrecError(f"{source}:{n}: attributes: must be a JSON object")
        extra = {k: v for k, v in obj.items() if k not in ID_KEYS + CORE_KEYS and v not in (None, "", [])}
        records.append(record(item_id, obj, {**extra, **attributes}))
        lines.append(n)
    return checked_items(records, lines, source, image_root)


def checked_items(
    records: list[dict], lines: list[int], source: str, image_root: str
) -> tuple[pd.DataFrame, list[int]]:
    """The rows of new items once every one has an id, a title and (where it names one) an image path."""
    from retrieval.loaders.common import check_nonempty, check_unique, resolve_image

    if not records:
        raise GenrecError(f"{source}: no items")
    ids = [r["item_id"] for r in records]
    check_nonempty(ids, lines, source)
    check_unique(ids, lines, source)
    for r, line in zip(records, lines):
        if not r["title"]:
            raise GenrecError(f"{source}:{line}: title: item {r['item_id']!r} has no title; every item needs one")
        if not r["text"]:
            r["text"] = item_caption(r["title"], r["attributes"])
        r["image"] = resolve_image(r["image"], Path(image_root).expanduser().resolve())
    return make_items(records, source), lines


def allowed_codes(codes: Sequence[Sequence[int]], levels: int) -> list[np.ndarray]:
    """Per learned level, the codes some indexed item uses: the ones the trained model has learned tokens for."""
    matrix = np.asarray(codes, dtype=np.int64)
    return [np.unique(matrix[:, level]) for level in range(levels)]


def assign_codes(
    choices: list[list[tuple[int, ...]]], taken: set[tuple[int, ...]], suffixes: int, item_ids: Sequence[str]
) -> list[list[int]]:
    """A unique code per new item: its first prefix (in order of preference) with a free value of the
    uniqueness level below `suffixes` (the values the model has tokens for); `taken` grows as it goes."""
    out = []
    for item, prefixes in zip(item_ids, choices):
        code = next(
            (p + (s,) for p in prefixes for s in range(suffixes) if p + (s,) not in taken),
            None,
        )
        if code is None:
            raise GenrecError(
                f"item {item!r}: every semantic ID near its content is taken; index and train the run again "
                "to give the catalog room"
            )
        taken.add(code)
        out.append(list(code))
    return out


def run_quantizer(paths: RunPaths, config: RunConfig, state: CatalogState):
    """The run's trained quantiser: the saved one, or (for a run indexed before it was saved) the one
    training gives again with the saved config, checked against every stored code and then saved."""
    from retrieval.catalog import Catalog
    from retrieval.semantic_ids.build import item_vectors
    from retrieval.semantic_ids.quantizer import QUANTIZER_FILE, Quantizer, fit_again, sha256_of

    sha = sha256_of(paths.semantic_ids)
    quantizer = Quantizer.load(paths.root / QUANTIZER_FILE, sha)
    if quantizer is not None:
        return quantizer
    base = pd.read_parquet(paths.items)
    catalog = Catalog(base, pd.read_parquet(paths.interactions))
    x = item_vectors(catalog, config.semantic_ids, base_content(paths, config))
    levels = config.semantic_ids.levels
    stored = np.array([state.codes[i][:levels] for i in base["item_id"].astype(str)], dtype=np.int64)
    quantizer = fit_again(x, config.semantic_ids, stored)
    quantizer.save(paths.root / QUANTIZER_FILE, sha)
    return quantizer


def sid_source(paths: RunPaths, config: RunConfig) -> str:
    """What the run's semantic IDs were learned from (`auto` as resolved at index time)."""
    if paths.semantic_id_stats.exists():
        return str(json.loads(paths.semantic_id_stats.read_text(encoding="utf-8")).get("source", "content"))
    return config.semantic_ids.source if config.semantic_ids.source != "auto" else "fused"


COLLABORATIVE_NEIGHBOURS = 10  # indexed items nearest in content whose collaborative vectors a new item borrows


def quantizer_input(
    content: np.ndarray, quantizer, config: RunConfig, source: str, collaborative: np.ndarray | None = None
) -> np.ndarray:
    """New items' vectors in the space the quantiser was trained on: the L2-normalised content part
    (times its weight), then the collaborative part: `collaborative` (`borrowed_collaborative`), or
    zeros when there is none."""
    from retrieval.semantic_ids.build import l2_normalise

    width = quantizer.layers[0][0].shape[1] if quantizer.layers else quantizer.codebooks[0].shape[1]
    parts = []
    if source in ("content", "fused"):
        parts.append(l2_normalise(content) * config.semantic_ids.content_weight)
    if collaborative is not None and source in ("collaborative", "fused"):
        parts.append(collaborative.astype(np.float32))
    used = sum(p.shape[1] for p in parts)
    if used > width:  # a content-only quantiser fed fused vectors can only mean a broken run
        raise GenrecError(f"semantic IDs: new item vectors have {used} dimensions, the quantiser reads {width}")
    parts.append(np.zeros((len(content), width - used), dtype=np.float32))
    return np.concatenate(parts, axis=1).astype(np.float32)


def indexed_collaborative(paths: RunPaths, config: RunConfig, base: np.ndarray) -> np.ndarray:
    """The collaborative part of the indexed items' quantiser inputs (rows as `base_content`'s), as the
    quantiser was trained on them. Computing it reads every interaction (~4 s on ML-100K), so it is kept
    in `RUN/embeddings/collaborative.npy` with a fingerprint of the items, interactions and semantic-ID
    settings that make it: every add after the first reads it back."""
    import hashlib

    from genrec.atomic import atomic_path
    from retrieval.catalog import Catalog
    from retrieval.semantic_ids.build import item_vectors

    settings = json.dumps(config.semantic_ids.model_dump(mode="json"), sort_keys=True)
    digest = hashlib.sha256(settings.encode())
    for source in (paths.items, paths.interactions):
        digest.update(source.read_bytes())
    fingerprint = digest.hexdigest()
    kept, meta = paths.embeddings / "collaborative.npy", paths.embeddings / "collaborative.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(meta.read_text(encoding="utf-8"))["fingerprint"] == fingerprint:
            found = np.load(kept)
            if found.shape[0] == len(base):
                return found
    catalog = Catalog(pd.read_parquet(paths.items), pd.read_parquet(paths.interactions))
    collab = item_vectors(catalog, config.semantic_ids, base)[:, -config.semantic_ids.collaborative_dim :]
    with atomic_path(kept, ".npy") as tmp:
        np.save(tmp, collab)
    write_json(meta, {"fingerprint": fingerprint})
    return collab


def borrowed_collaborative(content: np.ndarray, paths: RunPaths, config: RunConfig) -> np.ndarray:
    """A collaborative part for new items, which no one has interacted with: the mean direction of
    the collaborative vectors of the `COLLABORATIVE_NEIGHBOURS` indexed items nearest in content,
    scaled as indexed items' are. Zeros instead put most new items on one first-level code, one the
    model rarely generates (ML-100K: 67 of 84 held-out movies on one code, no beam reached any)."""
    from retrieval.semantic_ids.build import l2_normalise

    base = base_content(paths, config)
    weight = config.semantic_ids.collaborative_weight
    collab = indexed_collaborative(paths, config, base) / (weight if weight > 0 else 1.0)
    k = min(COLLABORATIVE_NEIGHBOURS, len(base))
    near = np.argpartition(-(l2_normalise(content) @ l2_normalise(base).T), k - 1, axis=1)[:, :k]
    return l2_normalise(collab[near].mean(axis=1)) * weight


@dataclass
class AddReport:
    """What an add did: the new items' codes, the catalog version it made, where the time went."""

    items: dict[str, list[int]]
    version: int
    seconds: dict[str, float]


def encode_new_items(
    items: pd.DataFrame, lines: list[int], file: Path, paths: RunPaths, config: RunConfig, store, text_model=None
) -> tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray]:
    """Documents, text vectors, image vectors (centred as the indexed ones were; None when the run
    has no image space) and the content vectors of new items, with the run's own encoders."""
    from retrieval.encoders import (
        centre,
        encode_images,
        encode_texts,
        load_encoder,
        load_image_encoder,
        resolve_model_path,
    )
    from retrieval.index import content_vectors

    docs = [item_caption(r.title, json.loads(r.attributes), r.text) for r in items.itertuples(index=False)]
    model = text_model or load_encoder(resolve_model_path(config.encoder.text_model), config.encoder.device)
    text = encode_texts(model, docs, None, config.encoder.batch_size, progress=False)
    mean_path = paths.embeddings / "image_mean.npy"
    sources = items["image"].map(image_source)
    if store.image is None or not config.encoder.image_model or not mean_path.exists():
        return docs, text, None, text
    mask = sources.notna().to_numpy()
    image = np.zeros((len(items), np.load(mean_path).shape[0]), dtype=np.float32)
    if mask.any():
        encoder = load_image_encoder(config.encoder.image_model, config.encoder.device)
        with warnings.catch_warnings():  # an unreadable photo refuses the batch below, by file and line
            warnings.simplefilter("ignore")
            raw, got = encode_images(
                encoder,
                sources.tolist(),
                None,
                config.encoder.batch_size,
                progress=False,
                item_ids=items["item_id"].tolist(),
            )
        bad = np.flatnonzero(mask & ~got)
        if len(bad):
            row = int(bad[0])
            raise GenrecError(f"{file}:{lines[row]}: image: {sources.iloc[row]} could not be read as an image")
        image[mask] = centre(raw[mask], np.load(mean_path))
    return docs, text, image, content_vectors(text, image, mask, config.encoder.image_weight)


def _reconcile(store, active: frozenset[str]) -> None:
    """Delete Chroma entries of items outside the committed catalog (left by a killed add or a retirement)."""
    for collection in (store.text, store.image):
        if collection is None:
            continue
        stray = [i for i in collection.get(include=[])["ids"] if i not in active]
        for start in range(0, len(stray), 1000):
            collection.delete(ids=stray[start : start + 1000])


def new_item_codes(
    content: np.ndarray, ids: list[str], paths: RunPaths, config: RunConfig, state: CatalogState
) -> list[list[int]]:
    """Semantic IDs for new items from the run's quantiser, never retrained: the prefixes the model
    has learned first (a free uniqueness value beside an indexed item's), then the nearest new
    combinations of learned codes; unique against every code ever given."""
    quantizer = run_quantizer(paths, config, state)
    levels = config.semantic_ids.levels
    added = set(state.added)
    base_codes = [c for i, c in state.codes.items() if i not in added]
    allowed = allowed_codes(base_codes, levels)
    suffixes = int(max(c[levels] for c in base_codes)) + 1
    source = sid_source(paths, config)
    borrowed = borrowed_collaborative(content, paths, config) if source in ("collaborative", "fused") else None
    x = quantizer_input(content, quantizer, config, source, borrowed)
    learned = np.array(sorted({tuple(c[:levels]) for c in base_codes}), dtype=np.int64)
    choices = [a + b for a, b in zip(quantizer.nearest_prefixes(x, learned), quantizer.choices(x, allowed))]
    taken = {tuple(c) for c in state.codes.values()}
    return assign_codes(choices, taken, suffixes, ids)


def add_items(
    run: str | Path,
    file: str | Path | None = None,
    image_root: str | None = None,
    *,
    objects: object = None,
    source: str = "request",
    text_model: Any = None,
) -> AddReport:
    """Add the items of a catalog file (or of JSON `objects`, named `source` in errors) to a trained
    run: validate every row (a bad one is a one-line error naming file, line and field, and nothing
    is written), encode them with the run's encoders (`text_model`: one already loaded), give each a
    semantic ID with the run's quantiser, store them in Chroma, then commit."""
    import time

    from retrieval.store import item_metadata, open_store

    paths, config = open_run(run)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    if file is not None:
        file = Path(file)
        new, lines = read_new_items(file, image_root)
    else:
        file = Path(source)
        new, lines = read_item_objects(objects, source, image_root or str(Path.cwd()))
    with writer_lock(paths):
        state = catalog_state(paths)
        for item, line in zip(new["item_id"], lines):
            if item in state.codes or item in state.items.index:
                known = (
                    "a retired item's id: ids are never reused" if item in state.retired else "already in the catalog"
                )
                raise GenrecError(f"{file}:{line}: id: {item!r} is {known}")
        store = open_store(paths, config.chroma)
        seconds["read"] = time.perf_counter() - t
        t = time.perf_counter()
        docs, text, image, content = encode_new_items(new, lines, file, paths, config, store, text_model)
        seconds["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        codes = new_item_codes(content, new["item_id"].tolist(), paths, config, state)
        seconds["semantic_ids"] = time.perf_counter() - t
        t = time.perf_counter()
        _reconcile(store, state.active)
        metas = [item_metadata(row) for _, row in new.iterrows()]
        ids = new["item_id"].tolist()
        store.text.upsert(ids=ids, embeddings=text.tolist(), metadatas=metas, documents=docs)
        if store.image is not None and image is not None:
            has = [i for i in range(len(ids)) if image_source(new["image"].iloc[i])]
            if has:
                store.image.upsert(
                    ids=[ids[i] for i in has],
                    embeddings=image[has].tolist(),
                    metadatas=[metas[i] for i in has],
                    documents=[docs[i] for i in has],
                )
        seconds["store"] = time.perf_counter() - t
        live, _ = read_live(paths)
        added = [
            {**{c: (None if pd.isna(row[c]) else row[c]) for c in ITEM_COLUMNS}, "code": code, "content": _b64(vec)}
            for (_, row), code, vec in zip(new.iterrows(), codes, content)
        ]
        version = int(live["version"]) + 1
        write_json(
            live_path(paths),
            {"format": FORMAT, "version": version, "added": live["added"] + added, "retired": live["retired"]},
            indent=None,
        )
    return AddReport(dict(zip(ids, codes)), version, seconds)


def retire_items(run: str | Path, item_ids: Sequence[str]) -> tuple[list[str], int]:
    """Take items out of every recommendation path (their ids and codes stay reserved); returns the
    ids newly retired and the catalog version. An unknown id is an error and nothing changes."""
    from retrieval.store import open_store

    paths, config = open_run(run)
    with writer_lock(paths):
        state = catalog_state(paths)
        unknown = [i for i in item_ids if i not in state.items.index]
        if unknown:
            raise GenrecError(f"retire: unknown item id {unknown[0]!r}; nothing was retired")
        fresh = list(dict.fromkeys(i for i in item_ids if i not in state.retired))
        live, _ = read_live(paths)
        version = int(live["version"])
        if fresh:
            version += 1
            write_json(
                live_path(paths),
                {**live, "format": FORMAT, "version": version, "retired": live["retired"] + fresh},
                indent=None,
            )
        _reconcile(open_store(paths, config.chroma), state.active - set(fresh))
    return fresh, version
