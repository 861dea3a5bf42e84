"""Benchmark: genrec past one process, on this machine.

- training: the same small ML-100K run (default scratch model, default dropout) trained by 1 and by 2
  CPU processes (`genrec train --processes 2`, DDP over gloo): wall time, tokens/s, the loss of every
  epoch (relative difference), and whether both models give the same top-10 on a fixed prompt set
  (validation histories), to within tie order. With `--baseline-src DIR` (a checkout of the code
  before multi-process training) the 1-process run is also timed with that code, alternating.
- encoding: the same texts encoded in 1 and 2 processes (`encoder.processes`): seconds, texts/s and
  the largest difference between the two sets of vectors.
- index: encoding + Chroma upsert and top-10 query latency (p50/p95, recall against exact search) for
  ML-100K's 1,682 items and a synthetic text-only catalog (`--catalog`, 100,000 by default, item texts
  generated from word lists); the store's size on disk. Above `--encode-limit` items the encoder is
  timed on a sample (encoding is linear in items) and Chroma holds random unit vectors (`index_point`).

Writes bench/results/scale.json (sections merged, so parts can be re-run: --only training|encoding|index).
Run: .venv/bin/python bench/scale.py [--users 120] [--catalog 100000] [--baseline-src /tmp/base]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests"))


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


# ---- training --------------------------------------------------------------------------------


def small_run(root: Path, users: int, pretrain_epochs: int, epochs: int) -> Path:
    """ML-100K's first `users` users, rkmeans IDs of genres and years, the default model, no dense model."""
    from test_finetune import ml100k_run

    from genrec.config import RunConfig

    config = RunConfig(name="bench-scale")
    t = config.train
    t.pretrain_epochs, t.epochs, t.pretrain_val_start, t.val_users = pretrain_epochs, epochs, pretrain_epochs, 50
    config.dense.ranker = "none"
    return ml100k_run(root, config, users)


def train_in(run: Path, processes: int, source: Path = ROOT) -> dict:
    """`genrec train` in a fresh process (with the code in `source`); wall seconds and the report."""
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_WAIT_POLICY": "PASSIVE"}
    # (not `-m app`: the code before this change has no app/__main__.py)
    args = [sys.executable, "-c", "from app.cli import main; main()", "train", "--run", str(run)]
    args += ["--processes", str(processes)] if processes > 1 else []
    import resource

    started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(args, cwd=source, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the processes it waited for included
    cpu_s = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"training with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    report = json.loads((run / "model" / "train_report.json").read_text())
    pre = report["pretrain_epochs"]
    lora = [e for e in report["epochs"] if e["loss"] is not None]
    tokens = sum(e["tokens_per_s"] * e["seconds"] for e in pre) + report["tokens_per_s"] * report["train_seconds"]
    seconds = sum(e["seconds"] for e in pre) + report["train_seconds"]
    return {
        "processes": processes,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_s, 1),
        "train_s": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "losses": [e["loss"] for e in pre] + [e["loss"] for e in lora],
        "valid_ndcg10": [e.get("valid_ndcg@10") for e in pre] + [e["valid_ndcg@10"] for e in lora],
    }


NEW_SETTINGS = {
    "encoder": ["processes"],
    "train": ["micro_batch_tokens", "checkpoint_steps", "distributed"],
    "serve": [
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "gpu_memory_utilization",
        "max_num_seqs",
        "devices",
        "chat_tensor_parallel_size",
        "chat_gpu_memory_utilization",
        "chat_devices",
        "chat_extra_args",
    ],
}


def older_config(path: Path) -> None:
    """Drop the settings this change added (at their defaults here), which the code before it refuses."""
    import yaml

    from genrec.config import FLAT_CHAT_KEYS

    config = yaml.safe_load(path.read_text())
    chat = config["serve"].pop("chat", {})  # the code before it read the chat server's settings as serve.chat_*
    config["serve"].update({f"chat_{key}": value for key, value in chat.items() if key in FLAT_CHAT_KEYS})
    for section, keys in NEW_SETTINGS.items():
        for key in keys:
            config[section].pop(key, None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def top10_agreement(a: Path, b: Path, users: int = 50) -> dict:
    from test_scale import fixed_prompts, same_within_ties, top10

    prompts = fixed_prompts(a, users)
    ours, theirs = top10(a, prompts), top10(b, prompts)
    overlap = [len({i for i, _ in x[:10]} & {i for i, _ in y[:10]}) / 10 for x, y in zip(ours, theirs)]
    return {
        "prompts": len(prompts),
        "same_within_ties": sum(same_within_ties(x, y) for x, y in zip(ours, theirs)),
        "identical_top10": sum([i for i, _ in x[:10]] == [i for i, _ in y[:10]] for x, y in zip(ours, theirs)),
        "mean_overlap": round(float(np.mean(overlap)), 4),
    }


def training(args) -> dict:
    out: dict = {"users": args.users, "pretrain_epochs": args.pretrain_epochs, "lora_epochs": args.epochs, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = small_run(Path(tmp) / "base", args.users, args.pretrain_epochs, args.epochs)
        order = [(1, ROOT), (2, ROOT)] + ([(1, Path(args.baseline_src))] if args.baseline_src else [])
        runs = {}
        for repeat in range(args.repeats):
            for processes, source in order:
                name = f"{processes}-{'before' if source != ROOT else 'now'}"
                run = Path(tmp) / f"{name}-{repeat}"
                shutil.copytree(base, run)
                if source != ROOT:
                    older_config(run / "config.yaml")
                result = train_in(run, processes, source)
                result["code"] = "before" if source != ROOT else "now"
                out["runs"].append(result)
                runs.setdefault(name, run)
                print(json.dumps(result), flush=True)
        one, two = out["runs"][0], out["runs"][1]
        out["loss_relative_difference"] = [round(abs(b - a) / a, 6) for a, b in zip(one["losses"], two["losses"])]
        out["top10_1_vs_2_processes"] = top10_agreement(runs["1-now"], runs["2-now"])
        if args.baseline_src:
            out["top10_now_vs_before"] = top10_agreement(runs["1-now"], runs["1-before"])
    return out


# ---- encoding and index ----------------------------------------------------------------------

WORDS = {
    "adjective": "compact sturdy vintage modern handmade rugged elegant minimalist classic premium lightweight foldable "
    "waterproof ergonomic portable cordless rustic glossy matte quiet".split(),
    "material": "ceramic bamboo steel oak walnut glass cotton linen leather wool silicone copper marble aluminium "
    "cast-iron porcelain hemp canvas rattan brass".split(),
    "noun": "mug teapot skillet lamp chair backpack blanket kettle knife board vase planter stool jacket wallet "
    "speaker clock bowl candle tray".split(),
    "colour": "red blue green black white grey navy olive sand rust teal amber ivory charcoal plum".split(),
    "brand": "Norda Kaveh Lumio Birchwell Okapi Tessel Varro Quill Maren Hollis Ardent Soma Fenwick Brio Caldo".split(),
    "category": "Kitchen Home Outdoor Office Travel Garden Lighting Furniture Apparel Audio".split(),
    "feature": [
        "dishwasher safe",
        "gift boxed",
        "made to order",
        "two-year warranty",
        "recycled packaging",
        "fits small spaces",
        "easy to clean",
        "stackable",
        "hand finished",
        "lifetime repairs",
    ],
}


def synthetic_items(n: int, seed: int = 0) -> list[dict]:
    """`n` generated catalog items with distinct titles and short descriptions."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        pick = {k: rng.choice(v) for k, v in WORDS.items()}
        title = f"{pick['brand']} {pick['adjective']} {pick['material']} {pick['noun']} #{i}"
        text = (
            f"A {pick['adjective']} {pick['noun']} in {pick['colour']} {pick['material']}, "
            f"{rng.randint(1, 40) * 5} cm, {pick['feature']}."
        )
        items.append(
            {
                "item_id": f"s{i}",
                "title": title,
                "text": text,
                "image": None,
                "attributes": {"category": pick["category"], "brand": pick["brand"], "price": rng.randint(5, 400)},
            }
        )
    return items


def encoding(args) -> dict:
    import pandas as pd

    from retrieval.catalog import Catalog, make_items
    from retrieval.encoders import encode_texts, load_encoder
    from retrieval.index import item_documents

    items = make_items(synthetic_items(args.encode_texts, seed=1), "synthetic")
    docs = item_documents(Catalog(items, pd.DataFrame(columns=["user_id", "item_id", "timestamp", "rating"])))
    model = load_encoder("all-MiniLM-L6-v2")
    model.encode(docs[:64])  # warm-up
    out = {"texts": len(docs), "runs": []}
    vectors = {}
    for processes in (1, 2, 1, 2)[: 2 * args.repeats]:
        started = time.perf_counter()
        vectors[processes] = encode_texts(model, docs, progress=False, processes=processes)
        seconds = time.perf_counter() - started
        out["runs"].append(
            {
                "processes": processes,
                "seconds": round(seconds, 1),
                "texts_per_s": round(len(docs) / seconds, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
        print(json.dumps(out["runs"][-1]), flush=True)
    out["max_abs_difference"] = float(np.abs(vectors[1] - vectors[2]).max())
    return out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def index_point(catalog, name: str, queries: list[str], processes: int, encode_limit: int) -> dict:
    """Index `catalog` into a fresh run and time top-10 queries.

    Up to `encode_limit` items: the real path (`retrieval.index.index_catalog`: encode + Chroma upsert),
    queried with encoded `queries`. Larger: the text encoder is timed on a sample of `encode_limit`
    items (its cost is linear: the total is projected from that rate), and Chroma is filled with
    random unit vectors of the encoder's width and queried with random unit vectors: the store's
    upsert and HNSW costs at full size, which do not depend on what the vectors mean.
    """
    from genrec.config import RunConfig
    from genrec.run import init_run
    from retrieval.encoders import encode_texts, load_encoder
    from retrieval.index import index_catalog, item_documents
    from retrieval.store import open_store, upsert_items

    n = len(catalog.items)
    ids = catalog.items["item_id"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(name=name)
        config.encoder.image_model = None
        config.encoder.processes = processes
        config.chroma.collection = f"bench-{name}"
        paths = init_run(Path(tmp) / name, config)
        model = load_encoder("all-MiniLM-L6-v2")
        seconds: dict[str, float] = {}
        if n <= encode_limit:
            vectors = index_catalog(catalog, paths, config, seconds).text
            qvecs = model.encode(queries, normalize_embeddings=True, convert_to_numpy=True)
            kind = "encoded (all-MiniLM-L6-v2)"
        else:
            docs = item_documents(catalog)
            started = time.perf_counter()
            encode_texts(model, docs[:encode_limit], progress=False, processes=processes)
            rate = encode_limit / (time.perf_counter() - started)
            seconds["encode"] = n / rate
            rng = np.random.default_rng(0)
            vectors = rng.standard_normal((n, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            qvecs = rng.standard_normal((len(queries), 384)).astype(np.float32)
            qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
            started = time.perf_counter()
            store = open_store(paths, config.chroma, create=True)
            upsert_items(store, catalog.items, docs, vectors, None, np.zeros(n, dtype=bool), config.chroma.batch_size)
            seconds["store"] = time.perf_counter() - started
            kind = f"random unit vectors; encoding projected from {encode_limit} encoded items"
        store = open_store(paths, config.chroma)
        latency, recall = [], []
        for q in qvecs:
            t = time.perf_counter()
            res = store.text.query(query_embeddings=[q.tolist()], n_results=10, include=["distances"])
            latency.append(time.perf_counter() - t)
            exact = {ids[i] for i in np.argpartition(-(vectors @ q), 10)[:10]}
            recall.append(len(set(res["ids"][0]) & exact) / 10)
        return {
            "items": n,
            "vectors": kind,
            "encode_processes": processes,
            ("encode_s" if n <= encode_limit else "encode_s_projected"): round(seconds["encode"], 1),
            "encode_texts_per_s": round(n / seconds["encode"], 1),
            "store_s": round(seconds["store"], 1),
            "store_items_per_s": round(n / seconds["store"], 1),
            "query_top10_ms_p50": round(float(np.percentile(latency, 50)) * 1000, 2),
            "query_top10_ms_p95": round(float(np.percentile(latency, 95)) * 1000, 2),
            "recall_at_10_vs_exact": round(float(np.mean(recall)), 4),
            "chroma_dir_mib": round(folder_bytes(paths.chroma) / 2**20, 1),
            "vectors_mib": round(vectors.nbytes / 2**20, 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }


def index(args) -> dict:
    import pandas as pd

    from genrec.config import DataConfig
    from retrieval.catalog import Catalog, make_items
    from retrieval.datasets import load_dataset

    rng = random.Random(2)
    queries = [
        f"a {rng.choice(WORDS['adjective'])} {rng.choice(WORDS['noun'])} for the {rng.choice(WORDS['category']).lower()}"
        for _ in range(args.queries)
    ]
    ml = load_dataset(DataConfig(dataset="ml-100k"))
    out = {"queries": args.queries, "points": []}
    out["points"].append(
        {"catalog": "ml-100k", **index_point(ml, "ml100k", queries, args.encode_processes, args.encode_limit)}
    )
    print(json.dumps(out["points"][-1]), flush=True)
    empty = pd.DataFrame(columns=["user_id", "item_id", "timestamp", "rating"])
    synthetic = Catalog(make_items(synthetic_items(args.catalog), "synthetic"), empty)
    out["points"].append(
        {
            "catalog": f"synthetic-{args.catalog}",
            **index_point(synthetic, "synthetic", queries, args.encode_processes, args.encode_limit),
        }
    )
    print(json.dumps(out["points"][-1]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["training", "encoding", "index"], action="append")
    parser.add_argument("--users", type=int, default=120, help="ML-100K users in the training run")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="LoRA epochs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-src", help="a checkout of genrec before this change, timed in 1 process too")
    parser.add_argument("--encode-texts", type=int, default=2000)
    parser.add_argument("--catalog", type=int, default=100_000, help="items of the synthetic catalog")
    parser.add_argument("--encode-processes", type=int, default=1, help="encoder.processes for the index points")
    parser.add_argument(
        "--encode-limit",
        type=int,
        default=2000,
        help="catalogs larger than this: encoder timed on this many items, Chroma filled with random vectors",
    )
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "scale.json"
    for part in args.only or ["training", "encoding", "index"]:
        measured = {**globals()[part](args), "machine": machine()}
        figures = json.loads(path.read_text()) if path.exists() else {}  # read late: parts may run side by side
        figures[part] = measured
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(measured, indent=2))


if __name__ == "__main__":
    main()
