"""Open a run's served ranking with the generation backend of choice: in-process or vLLM.

    ranker = open_ranker("runs/ml100k")                                   # in-process beam search
    ranker = open_ranker("runs/ml100k", llm_url="http://127.0.0.1:8000/v1")  # beams from vLLM
    ranker.rank([history], k=10, exclude=[set(history)])

Both return the same function of the same models (`inference.ranking.Ranker`): the generative model
of `RUN/model/`, the dense model of `RUN/dense/` and the fusion of `RUN/ranking.json`, chosen on
validation by `genrec train`. A run trained before the dense model existed is ranked by generation
alone, and `notice` says so (every caller shows it); `generate.ranking: generative` asks for that.

The ranker follows the run's live catalog (`genrec items add` / `retire`, `retrieval.live`): each
request checks the catalog version (one `stat`) and, when it changed, ranks with a trie, prompts
and cold items built for the new catalog, swapped in as one reference. No restart is needed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from genrec.errors import GenrecError
from genrec.run import RunPaths, open_run
from inference.decoding.local import check_semantic_ids, load_local_generator, model_meta
from inference.decoding.prompts import HistoryPrompt
from inference.decoding.trie import Scored, SidTrie
from inference.ranking import ColdItems, Fusion, Ranker
from retrieval.live import CatalogState, Watched
from retrieval.semantic_ids import load_semantic_ids


def ranker_for_catalog(base: Ranker, state: CatalogState) -> Ranker:
    """`base` (trained on the indexed catalog) ranking the catalog of `state`: the trie holds the items
    that may be recommended now, prompts read every item's code (histories name retired items too),
    and items the dense model has no column for are cold items, scored through the embeddings of the
    items nearest to them in content."""
    if state.version == 0:
        return base
    generator = copy.copy(base.generator)  # the same model (and, for vLLM, the same client)
    trie = SidTrie(state.active_codes, vocab=base.generator.trie.vocab)
    generator.trie = trie
    generator.prompts = replace(base.generator.prompts, codes=state.codes)
    cold = None
    if base.dense is not None:
        known = set(base.dense.item_ids)
        cold_ids = [i for i in trie.code_of if i not in known]
        if cold_ids:
            ids, vectors = state.content()
            index = {item: row for row, item in enumerate(ids)}
            cold = ColdItems.from_content(cold_ids, index, vectors, base.dense, base.fusion.cold_neighbours)
    return Ranker(generator, base.dense, base.fusion, base.name, cold=cold, retired=state.retired)


class LiveRanker:
    """The served ranking of a run over the catalog of the moment: `Ranker.rank`, with the ranker
    rebuilt (model, dense model and fusion shared) whenever `genrec items add/retire` commits a change.
    A request takes one ranker and keeps it, so it sees the old catalog or the new one, never half."""

    def __init__(self, paths: RunPaths, base: Ranker):
        self.base = base
        self._view = Watched(paths, lambda state: ranker_for_catalog(base, state))

    def current(self) -> Ranker:
        """The ranker of the catalog of this moment."""
        return self._view.get()

    @property
    def version(self) -> int:
        """The catalog version it ranks (0: as indexed)."""
        return self._view.version

    def rank(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        only: Collection[str] | None = None,
    ) -> list[list[Scored]]:
        """`Ranker.rank` over the catalog of this moment."""
        return self.current().rank(histories, k, exclude, only)

    def recommend(self, histories: list[list[str]], k: int) -> list[list[str]]:
        """The evaluation protocol's call (history excluded), over the catalog of this moment."""
        return self.current().recommend(histories, k)

    def fit(self, train: dict[str, list[str]]) -> None:
        """Nothing to fit: `genrec train` trained the models and chose the fusion."""

    def __getattr__(self, name: str):  # name, dense, fusion, generator, hybrid, candidates ...: the current ranker's
        if name.startswith("_") or name == "base":
            raise AttributeError(name)
        return getattr(self.current(), name)


def attach_dense(
    ranker: Ranker, paths: RunPaths, ranking: str, device: str = "cpu", setting: str = "dense device"
) -> str | None:
    """Give `ranker` the run's dense model (on `device`, the config's `setting`) and fusion when `ranking`
    is hybrid; return a notice when the run cannot rank that way (nothing is changed silently)."""
    from inference.dense import load_dense

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
    ranker.dense, ranker.fusion = load_dense(paths.dense, device, setting), fusion
    return None


def open_ranker(
    run: str | Path,
    llm_url: str | None = None,
    ranking: str | None = None,
    beam_width: int | None = None,
    timeout_s: float = 60.0,
    api_key: str | None = None,
) -> tuple[LiveRanker, str | None]:
    """The run's served ranking and a notice (None when it ranks as configured).

    Without `llm_url` the generative model runs in this process; with it, beams come from the vLLM
    server there (`genrec serve`), unless that server searches the trie per beam and level (a
    server that also chats): then in this process, which is faster (`VllmGenerator.describe` says
    which, once, on stderr). `ranking` overrides `generate.ranking` ("hybrid" or "generative").
    """
    paths, config = open_run(run)
    generate = config.generate
    width = beam_width or generate.beam_width
    codes = load_semantic_ids(paths)
    local = dict(beam_width=width, batch_size=generate.batch_size, device=generate.device)
    if llm_url is None:
        generator = load_local_generator(paths, codes, **local)
    else:
        from transformers import AutoTokenizer

        from inference.client import LLMClient
        from inference.vllm_generator import VllmGenerator

        meta = model_meta(paths)
        check_semantic_ids(paths, meta)
        tokenizer = AutoTokenizer.from_pretrained(
            paths.require(paths.model / "base", f"genrec train --run {paths.root}")
        )
        trie = SidTrie(codes)
        prompts = HistoryPrompt(tokenizer, trie.code_of, int(meta["max_history"]), meta.get("template"))
        client = LLMClient(llm_url, timeout_s=timeout_s, connect_timeout_s=2.0, api_key=api_key)
        generator = VllmGenerator(
            client,
            trie,
            prompts,
            beam_width=width,
            # a server that searches per beam is slower than this process: generate here then
            fallback=lambda: load_local_generator(paths, codes, **local),
        )
    ranker = Ranker(generator)
    kind = config.dense.ranker
    device = getattr(config.dense, kind).device if kind != "none" else "cpu"
    notice = attach_dense(ranker, paths, ranking or generate.ranking, device, f"dense.{kind}.device")
    return LiveRanker(paths, ranker), notice


def run_ranker(
    run: str | Path, llm_url: str | None = None, timeout_s: float = 60.0, api_key: str | None = None
) -> LiveRanker | None:
    """The run's served ranking for the agent, or None when the run has no trained model yet.

    With `llm_url` the beams come from that vLLM server (if it is down, `rank` raises
    `inference.client.LLMUnavailable` and the caller falls back); without it they are generated in process.
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
