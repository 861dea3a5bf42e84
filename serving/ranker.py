"""Open a run's served ranking with the generation backend of choice: in-process or vLLM.

    ranker = open_ranker("runs/ml100k")                                   # in-process beam search
    ranker = open_ranker("runs/ml100k", llm_url="http://127.0.0.1:8000/v1")  # beams from vLLM
    ranker.rank([history], k=10, exclude=[set(history)])

Both return the same function of the same models (`finetune.ranking.Ranker`): the generative model
of `RUN/model/`, the dense model of `RUN/dense/` and the fusion of `RUN/ranking.json`, chosen on
validation by `genrec train`. A run trained before the dense model existed is ranked by generation
alone, and `notice` says so (every caller shows it); `generate.ranking: generative` asks for that.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.decoding.local import check_semantic_ids, load_local_generator, model_meta
from finetune.decoding.prompts import HistoryPrompt
from finetune.decoding.trie import SidTrie
from finetune.ranking import Fusion, Ranker
from genrec.errors import GenrecError
from genrec.run import RunPaths, open_run
from retrieval.semantic_ids import load_semantic_ids


def attach_dense(ranker: Ranker, paths: RunPaths, ranking: str) -> str | None:
    """Give `ranker` the run's dense model and fusion when `ranking` is hybrid; return a notice when
    the run cannot rank that way (nothing is changed silently)."""
    from finetune.dense import load_dense

    if ranking != "hybrid":
        ranker.name = "genrec-gen"
        return None
    if not paths.ranking.exists() or not paths.dense.exists():
        ranker.name = "genrec-gen"
        return (
            f"{paths.root}: no dense model or fusion (trained before they existed, or dense.ranker is none): "
            f"ranking by generation alone; run `genrec train --run {paths.root} --dense-only` to add them"
        )
    try:
        fusion = Fusion.from_json(json.loads(paths.ranking.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise GenrecError(
            f"{paths.ranking}: unreadable ({exc}); run `genrec train --run {paths.root} --dense-only`"
        ) from None
    ranker.dense, ranker.fusion = load_dense(paths.dense), fusion
    return None


def open_ranker(
    run: str | Path,
    llm_url: str | None = None,
    ranking: str | None = None,
    beam_width: int | None = None,
    timeout_s: float = 60.0,
    api_key: str | None = None,
) -> tuple[Ranker, str | None]:
    """The run's served ranking and a notice (None when it ranks as configured).

    Without `llm_url` the generative model runs in this process; with it, beams come from the vLLM
    server there (`genrec serve`). `ranking` overrides `generate.ranking` ("hybrid" or "generative").
    """
    paths, config = open_run(run)
    generate = config.generate
    width = beam_width or generate.beam_width
    codes = load_semantic_ids(paths)
    if llm_url is None:
        generator = load_local_generator(paths, codes, beam_width=width, batch_size=generate.batch_size)
    else:
        from transformers import AutoTokenizer

        from serving.client import LLMClient
        from serving.vllm_generator import VllmGenerator

        meta = model_meta(paths)
        check_semantic_ids(paths, meta)
        tokenizer = AutoTokenizer.from_pretrained(
            paths.require(paths.model / "base", f"genrec train --run {paths.root}")
        )
        trie = SidTrie(codes)
        prompts = HistoryPrompt(tokenizer, trie.code_of, int(meta["max_history"]), meta.get("template"))
        client = LLMClient(llm_url, timeout_s=timeout_s, connect_timeout_s=2.0, api_key=api_key)
        generator = VllmGenerator(client, trie, prompts, beam_width=width)
    ranker = Ranker(generator)
    notice = attach_dense(ranker, paths, ranking or generate.ranking)
    return ranker, notice


def run_ranker(
    run: str | Path, llm_url: str | None = None, timeout_s: float = 60.0, api_key: str | None = None
) -> Ranker | None:
    """The run's served ranking for the agent, or None when the run has no trained model yet.

    With `llm_url` the beams come from that vLLM server (if it is down, `rank` raises
    `serving.client.LLMUnavailable` and the caller falls back); without it they are generated in process.
    A notice (e.g. no dense model) is printed to stderr once.
    """
    import sys

    paths = RunPaths(Path(run))
    if not (paths.model / "genrec.json").exists() or not paths.semantic_ids.exists():
        return None
    ranker, notice = open_ranker(run, llm_url=llm_url, timeout_s=timeout_s, api_key=api_key)
    if notice:
        print(f"genrec: {notice}", file=sys.stderr)
    return ranker
