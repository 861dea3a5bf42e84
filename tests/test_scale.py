"""Past one process: training in 2 CPU processes (DDP over gloo) against 1, resuming after a process
dies, one-line errors for settings that cannot work, vLLM's parallelism flags from the run config,
text encoding in a process pool.

Training runs on real MovieLens-100K rows (40 users) with the tiny scratch model of
`test_finetune.py`, attention dropout off: the two process counts then compute the same steps, and
their losses agree to float rounding (measured: 3e-6 relative). The stated tolerance is 0.1%;
with the default dropout (masks drawn per process) `bench/scale.py` measures the 2% of the issue.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_finetune import ml100k_run, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 1e-3  # relative, 1 against 2 processes, dropout off
SCORE_TOLERANCE = 1e-3  # log-prob: scores closer than this are a tie, whose order may differ


def genrec(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m app ARGS` (the `genrec` command) in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory) -> Path:
    """40 users of ML-100K, rkmeans semantic IDs of genres and years, the tiny model without dropout,
    2 pre-training and 2 LoRA epochs, all of them run (no early stop, so both runs take the same
    steps), no dense model."""
    config = tiny_config()
    config.train.dropout, config.train.pretrain_epochs, config.train.epochs = 0.0, 2, 2
    config.train.patience, config.train.pretrain_patience = 2, 2
    config.dense.ranker = "none"
    return ml100k_run(tmp_path_factory.mktemp("scale") / "run", config)


def copy_run(run: Path, name: str) -> Path:
    target = run.parent / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("model", "pretrain", "checkpoints", "logs"))
    return target


@pytest.fixture(scope="module")
def one_process(scale_run) -> Path:
    from finetune.train import train

    run = copy_run(scale_run, "one")
    train(run, progress=False)
    return run


@pytest.fixture(scope="module")
def two_processes(scale_run) -> Path:
    run = copy_run(scale_run, "two")
    done = genrec("train", "--run", str(run), "--processes", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def losses(run: Path) -> list[float]:
    report = json.loads((run / "model" / "train_report.json").read_text())
    return [e["loss"] for e in report["pretrain_epochs"]] + [
        e["loss"] for e in report["epochs"] if e["loss"] is not None
    ]


def top10(run: Path, histories: list[list[str]], width: int = 20) -> list[list[tuple[str, float]]]:
    from finetune.decoding.local import load_local_generator
    from genrec.run import RunPaths
    from retrieval.semantic_ids import load_semantic_ids

    paths = RunPaths(run)
    generator = load_local_generator(paths, load_semantic_ids(paths), beam_width=width, bf16=False)
    return generator.generate(histories, exclude=[set(h) for h in histories])


def fixed_prompts(run: Path, n: int = 20) -> list[list[str]]:
    """The validation histories of the first `n` users (a fixed prompt set)."""
    from genrec.run import RunPaths
    from retrieval.catalog import load_catalog
    from retrieval.split import leave_one_out

    split = leave_one_out(load_catalog(RunPaths(run)).interactions)
    return [list(history) for _, (history, _) in sorted(split.valid.items())[:n]]


def same_within_ties(ours: list[tuple[str, float]], theirs: list[tuple[str, float]], k: int = 10) -> bool:
    """Two rankings agree on their top `k` but for the order (and the cut) of items whose scores tie."""
    mine, other = dict(ours), dict(theirs)
    for a, b in ((ours, other), (theirs, mine)):
        for item, score in a[:k]:
            if item in b:
                if abs(b[item] - score) > SCORE_TOLERANCE:
                    return False
            elif score - a[k - 1][1] > SCORE_TOLERANCE:  # missing from the other's list, and not tied with the cut
                return False
    return True


# ---- training --------------------------------------------------------------------------------


def test_two_processes_follow_the_loss_curve_of_one(one_process, two_processes):
    one, two = losses(one_process), losses(two_processes)
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=LOSS_TOLERANCE)
    report = json.loads((two_processes / "model" / "train_report.json").read_text())
    assert report["processes"] == 2
    assert not (two_processes / "checkpoints" / "lora").exists()  # removed once its stage finished


def test_two_process_model_ranks_a_fixed_prompt_set_like_the_one_process_model(one_process, two_processes):
    prompts = fixed_prompts(one_process)
    for ours, theirs in zip(top10(one_process, prompts), top10(two_processes, prompts)):
        assert same_within_ties(ours, theirs), (ours[:10], theirs[:10])


def test_micro_batches_accumulate_to_the_step_of_one_pass(scale_run):
    """Gradient accumulation (`train.micro_batch_tokens`) changes memory, not the step."""
    import random

    import torch

    from finetune.loop import cosine_schedule, tokenise, train_epoch
    from finetune.models import build_scratch_model
    from finetune.sid_tokens import codebook_sizes
    from finetune.tasks import corpus_texts, next_item_examples
    from finetune.tokenizer import add_sid_tokens, train_scratch_tokenizer
    from finetune.train import load_run_data

    data = load_run_data(scale_run)
    tokenizer = train_scratch_tokenizer(corpus_texts(data.facts), 400)
    add_sid_tokens(tokenizer, codebook_sizes(data.codes.values()))
    users = dict(list(data.split.train.items())[:10])
    examples = tokenise(tokenizer, next_item_examples(tokenizer, users, data.codes, 20, random.Random(0)), 128)
    runs = []
    for micro in (None, 300):  # batches of up to 1024 padded tokens, in passes of at most 300
        model = build_scratch_model(data.config.train, tokenizer)  # seeded: the same weights twice
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        stats = train_epoch(
            model,
            examples,
            optimizer,
            cosine_schedule(optimizer, 100, warmup=1),
            tokenizer.pad_token_id,
            1024,
            random.Random(0),
            False,
            "t",
            progress=False,
            micro_tokens=micro,
        )
        runs.append((stats.loss, [p.detach().clone() for p in model.parameters()]))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs[0][1], runs[1][1]))


def test_only_rank_zero_writes(two_processes):
    from genrec.run import RunPaths

    paths = RunPaths(two_processes)
    assert (paths.model / "base" / "config.json").exists() and (
        paths.model / "adapter" / "adapter_config.json"
    ).exists()
    assert not list(two_processes.rglob("*rank1*"))


@pytest.mark.vllm
def test_the_two_process_model_is_served_by_vllm_as_before(two_processes):
    """Its export loads in vLLM (base + LoRA module) and the server's top-10 is the in-process one."""
    pytest.importorskip("vllm")
    from genrec.config import ServeConfig
    from serving.client import LLMClient
    from serving.server import free_port, serve_run

    prompts = [history[-5:] for history in fixed_prompts(two_processes, 5)]  # within the tiny model's 128 positions
    local = top10(two_processes, prompts)
    from finetune.decoding.local import load_local_generator
    from genrec.run import RunPaths
    from retrieval.semantic_ids import load_semantic_ids

    gen = load_local_generator(
        RunPaths(two_processes), load_semantic_ids(RunPaths(two_processes)), beam_width=20, bf16=False
    )
    with serve_run(two_processes, ServeConfig(kv_cache_gib=1), port=free_port()) as server:
        with LLMClient(server.url, timeout_s=120) as client:
            for history, mine in zip(prompts, local):
                served = client.recommend(gen.prompts.token_ids(history), width=20, k=10, exclude=history)
                assert same_within_ties(mine, served), (mine[:10], served)


def test_a_killed_process_leaves_a_checkpoint_that_the_rerun_resumes_from(scale_run, two_processes, tmp_path):
    """Rank 1 is killed mid-epoch: one line names it and the last checkpoint; the exported model stays
    usable; the same command resumes and ends where an uninterrupted run ends."""
    import psutil

    run = copy_run(scale_run, "killed")
    with open(run / "config.yaml") as fh:
        text = fh.read()
    (run / "config.yaml").write_text(text.replace("checkpoint_steps: null", "checkpoint_steps: 3"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "train", "--run", str(run), "--processes", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = run / "checkpoints" / "lora" / "checkpoint.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "no LoRA checkpoint appeared"
    rank1 = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)  # the process, not its helpers
        if p.environ().get("RANK") == "1" and p.parent().environ().get("RANK") != "1"
    ]
    assert rank1, "rank 1 not found"
    rank1[0].send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: training process 1 of 2 (--processes) was killed by SIGKILL; last checkpoint: ")
    assert "checkpoints/lora (lora: epoch" in line and "run the same command to resume" in line
    top10(run, fixed_prompts(run, 2))  # the model exported before the kill serves

    again = genrec("train", "--run", str(run), "--processes", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming LoRA fine-tuning from" in again.stderr and "pre-trained scratch model cached" in again.stderr
    resumed = losses(run)  # pre-training's from the cache the first run wrote (its report travels with it)
    assert len(resumed) == len(losses(two_processes)) == 4
    for a, b in zip(losses(two_processes), resumed):
        assert b == pytest.approx(a, rel=LOSS_TOLERANCE)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "tokens_per_batch: 2048",
            "error: train.tokens_per_batch 200: a batch of 128-token examples holds 1, fewer than the 2 processes",
        ),
        (
            "backend: null",
            "error: train.distributed.backend nccl: not available in this torch build (use gloo on a CPU",
        ),
        ("strategy: ddp", "error: train.distributed.strategy fsdp: accelerate runs FSDP and DeepSpeed on GPUs only"),
    ],
    ids=["batch-smaller-than-the-world", "missing-backend", "fsdp-on-a-cpu"],
)
def test_settings_that_cannot_work_are_one_line_errors_naming_them(scale_run, setting, message):
    run = copy_run(scale_run, "bad")
    text = (run / "config.yaml").read_text()
    bad = {
        "tokens_per_batch: 2048": "tokens_per_batch: 200",
        "backend: null": "backend: nccl",
        "strategy: ddp": "strategy: fsdp",
    }[setting]
    assert setting in text
    (run / "config.yaml").write_text(text.replace(setting, bad))
    done = genrec("train", "--run", str(run), "--processes", "2", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr[-2000:]
    assert not (run / "model").exists()


# ---- serving ---------------------------------------------------------------------------------


def test_vllm_gets_the_parallelism_of_the_run_config_and_the_cpu_command_stays_as_it_was(tmp_path):
    from genrec.config import ServeConfig
    from serving.server import chat_server_spec, run_server_spec, server_command, server_env

    base = tmp_path / "model" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 512})
    )
    plain = server_command(run_server_spec(tmp_path, ServeConfig()))
    assert not {
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--gpu-memory-utilization",
        "--max-num-seqs",
    } & set(plain)

    config = ServeConfig(
        tensor_parallel_size=2,
        pipeline_parallel_size=2,
        gpu_memory_utilization=0.45,
        max_num_seqs=64,
        devices="0,1,2,3",
        extra_args=["--enforce-eager", "--max-num-seqs", "32"],
        chat_model=str(base),
        chat_tensor_parallel_size=2,
        chat_gpu_memory_utilization=0.4,
        chat_devices="4,5",
        chat_extra_args=["--enable-prefix-caching"],
    )
    spec = run_server_spec(tmp_path, config)
    cmd = server_command(spec)
    flags = " ".join(cmd)
    assert (
        "--tensor-parallel-size 2 --pipeline-parallel-size 2 --gpu-memory-utilization 0.45 --max-num-seqs 64 "
        "--enforce-eager --max-num-seqs 32"
    ) in flags  # extra arguments last: they win
    assert server_env(spec)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    chat = chat_server_spec(tmp_path, config)
    chat_flags = " ".join(server_command(chat))
    assert (
        "--tensor-parallel-size 2 --gpu-memory-utilization 0.4 --max-num-seqs 64 --enable-prefix-caching" in chat_flags
    )
    assert "--pipeline-parallel-size" not in chat_flags and server_env(chat)["CUDA_VISIBLE_DEVICES"] == "4,5"


def test_a_cpu_server_on_a_small_machine_computes_on_every_core_and_larger_ones_keep_vllms_binding():
    from serving.server import cpu_binding

    assert cpu_binding("auto", usable={0, 1}) == "0,1"  # vLLM's own would leave core 1 to its scheduler
    assert cpu_binding("auto", usable={2, 3, 5}) == "2,3,5"  # the cores this process may use, not 0..n
    assert cpu_binding("auto", usable=set(range(32))) is None  # vLLM's NUMA-aware binding
    assert cpu_binding("auto", ranks=2, usable={0, 1}) is None  # sharded: one list per rank is vLLM's job
    assert cpu_binding("vllm", usable={0, 1}) is None
    assert cpu_binding(" 0-3|4-7 ", usable={0, 1}) == "0-3|4-7"  # an explicit list is the user's


def test_the_chat_server_computes_in_bfloat16_only_where_the_hardware_does(monkeypatch):
    import finetune.decoding.local as local
    from serving.server import chat_dtype

    monkeypatch.setattr(local, "bf16_supported", lambda: True)
    assert chat_dtype("auto") == "bfloat16"
    monkeypatch.setattr(local, "bf16_supported", lambda: False)  # an AVX2 CPU
    assert chat_dtype("auto") == "float32"
    assert chat_dtype("bfloat16") == "bfloat16"  # a choice in the config is kept


def test_each_server_of_a_run_gets_the_cpu_binding_of_its_own_config_entry(tmp_path):
    from genrec.config import ServeConfig
    from serving.server import chat_server_spec, cpu_binding, run_server_spec, server_env

    base = tmp_path / "model" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    config = ServeConfig(cpus="0", chat_cpus="1", chat_model=str(base))
    assert server_env(run_server_spec(tmp_path, config))["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert server_env(chat_server_spec(tmp_path, config))["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    default = server_env(run_server_spec(tmp_path, ServeConfig()))
    assert default.get("VLLM_CPU_OMP_THREADS_BIND") == cpu_binding("auto")


# ---- encoding --------------------------------------------------------------------------------


def test_encoding_in_two_processes_gives_the_embeddings_of_one(text_encoder):
    import numpy as np

    from genrec.config import DataConfig
    from retrieval.datasets import load_dataset
    from retrieval.encoders import encode_texts
    from retrieval.index import item_documents

    docs = item_documents(load_dataset(DataConfig(dataset="ml-100k")))[:300]
    one = encode_texts(text_encoder, docs, batch_size=32, progress=False)
    two = encode_texts(text_encoder, docs, batch_size=32, progress=False, processes=2)
    assert one.shape == two.shape == (300, 384)
    assert np.abs(one - two).max() < 1e-5
    assert (np.argmax(one @ one[:50].T, axis=0) == np.argmax(two @ two[:50].T, axis=0)).all()
