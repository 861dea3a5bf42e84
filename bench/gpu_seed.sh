#!/usr/bin/env bash
# One Amazon Beauty seed on a machine with one CUDA GPU: what `bench/accuracy.py --datasets beauty
# --seeds 0` does on a CPU (index, pre-training, LoRA, the dense model, the fusion on every
# validation user, every test user scored), within the device tool's 10-minute command. Nothing else
# depends on it. Run bench/gpu_wheels.sh first, where pip works: it fills .gpu/ and prints the call.
#   bash bench/gpu_seed.sh [more bench/accuracy.py options, e.g. --set train.epochs=0]
# Writes $OUT/accuracy-gpu.json (bench/accuracy.py's JSON; `machine.gpu` names the GPU), the log
# $OUT/gpu_seed.log and the GPU's use every 10 s ($OUT/gpu_use.csv). The same code as on a CPU: every
# device setting is auto (cuda here); what differs is each training stage's cap in minutes (it stops
# at the step that reaches it, keeps its best validated weights and the JSON says so), larger
# beam-search batches, and checkpoints at epochs' ends only (a GPU epoch takes seconds):
#   GENREC_GPU_PRETRAIN  pre-training and its validation passes (default 1.5: train.pretrain_max_minutes)
#   GENREC_GPU_LORA      LoRA and its validation passes (default 0.5: train.max_minutes)
#   GENREC_GPU_DENSE     the dense model (default 1.5: dense.sasrec.max_minutes)
#   GENREC_GPU_BEAMS     users per beam-search batch (default 256: generate.batch_size; 32 on a CPU)
#   GENREC_GPU_LIMIT     seconds after which the seed is stopped, its log kept (default 560)
# The index, the fusion on every validation user and test scoring come on top of the caps.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRIED=${GENREC_GPU_CARRY:-.gpu}
OUT=${OUT:-/tmp/gpu-seed}
LIMIT=${GENREC_GPU_LIMIT:-560}

# the seed's imports, checked before minutes are spent; the GPU and the versions it runs with, said
CHECK='
import importlib.metadata as m
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_seed: no CUDA GPU is visible here (torch.cuda.is_available() is False)")
versions = ", ".join(f"{p} {m.version(p)}" for p in ("torch", "transformers", "peft", "accelerate", "pydantic"))
print(f"gpu_seed: {torch.cuda.get_device_name()}, Python {sys.version.split()[0]}, {versions}")
import eval.run_eval, finetune.train
'

seed() {
  local started watcher status
  started=$(date +%s)
  echo "gpu_seed: $(date -u +%FT%TZ) in $PWD ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
  if [ ! -d "$CARRIED/wheels" ] || [ ! -f "$CARRIED/amazon-seq/Beauty.txt" ]; then
    echo "gpu_seed: $CARRIED/wheels or $CARRIED/amazon-seq/Beauty.txt missing: run bench/gpu_wheels.sh and carry $CARRIED"
    return 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$CARRIED"/wheels/*.whl || { echo "gpu_seed: the carried wheels did not install"; return 1; }
  export PYTHONPATH="$PWD:/tmp/site" GENREC_HOME=/tmp/genrec-home HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  export TQDM_MININTERVAL=30  # progress bars: a line every 30 s in the log, not hundreds a second
  python3 -c "$CHECK" || return 1
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 >"$OUT/gpu_use.csv" 2>&1 &
  watcher=$!
  # an unfinished seed of an earlier call on the same (warm) machine resumes from its checkpoints
  timeout -k 10 "$LIMIT" python3 bench/accuracy.py --datasets beauty --seeds 0 --amazon-dir "$CARRIED/amazon-seq" \
    --set train.pretrain_max_minutes="${GENREC_GPU_PRETRAIN:-1.5}" --set train.max_minutes="${GENREC_GPU_LORA:-0.5}" \
    --set dense.sasrec.max_minutes="${GENREC_GPU_DENSE:-1.5}" --set generate.batch_size="${GENREC_GPU_BEAMS:-256}" \
    --set train.checkpoint_steps=null --out "$OUT/accuracy-gpu.json" "$@"
  status=$?
  kill "$watcher" 2>/dev/null
  [ "$status" = 124 ] && echo "gpu_seed: stopped after $LIMIT s (GENREC_GPU_LIMIT): no JSON; the log says how far it got"
  echo "gpu_seed: exit $status after $(($(date +%s) - started)) s"
  return "$status"
}

mkdir -p "$OUT"
seed "$@" 2>&1 | tee "$OUT/gpu_seed.log"
exit "${PIPESTATUS[0]}"
