#!/usr/bin/env bash
# Prepare, HERE (where pip reaches a package index), what bench/gpu_seed.sh needs on a CUDA machine
# that has no internet and travels with the checkout through the device tool (64 MiB at most):
#   .gpu/wheels/      the packages an Amazon Beauty seed imports that that machine's image lacks
#                     (pydantic and its parts), at this checkout's .venv versions, for its Python 3.12
#   .gpu/amazon-seq/  Beauty.txt (../shared/data beside the checkout does not travel)
# .gpu/ is ignored by git; the device tool's `carry` names it. Prints what travels and the exact call.
#   bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=.gpu
# What a Beauty seed imports (bench/accuracy.py -> finetune, inference, eval, retrieval) that the GPU
# image does not hold (/work/.library/device/KINDS.md lists what it holds: torch, transformers, peft,
# accelerate, tokenizers, huggingface-hub, safetensors, pandas, pyarrow, numpy, scipy, scikit-learn,
# threadpoolctl, pyyaml, jinja2, rich, tqdm, pillow). chromadb, langgraph and vLLM are not imported.
NEEDED=(pydantic pydantic-core annotated-types typing-inspection typing-extensions)

rm -rf "$DEST/wheels" "$DEST/amazon-seq"
mkdir -p "$DEST/wheels" "$DEST/amazon-seq"
git check-ignore -q "$DEST/" || { echo "gpu_wheels: $DEST is not ignored by git (.gitignore)" >&2; exit 1; }
pins=()
for name in "${NEEDED[@]}"; do  # the versions genrec is tested with here (pydantic pins its core exactly)
  pins+=("$name==$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST/wheels" "${pins[@]}"
# the Beauty sequence file where bench/accuracy.py finds it (../shared/data/amazon-seq beside the checkout)
beauty=$("$PY" -c 'import sys; sys.path.insert(0, "bench"); from accuracy import AMAZON, DATA; print(DATA / AMAZON["beauty"])')
[ -f "$beauty" ] || { echo "gpu_wheels: $beauty: missing (the Amazon sequence files live in ../shared/data)" >&2; exit 1; }
cp "$beauty" "$DEST/amazon-seq/"

mib() { awk '{ printf "%.1f", $1 / 1048576 }'; }
carried=$(du -sb "$DEST" | cut -f1)
tree=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
echo "gpu_wheels: $DEST holds $(echo "$carried" | mib) MiB:"
(cd "$DEST" && ls -1 wheels amazon-seq | sed 's/^/  /')
echo "gpu_wheels: with the tracked and untracked tree ($(echo "$tree" | mib) MiB) $(echo $((carried + tree)) | mib) MiB travel (limit 64)"
[ $((carried + tree)) -lt $((60 * 1048576)) ] || { echo "gpu_wheels: too much to travel" >&2; exit 1; }
cat <<EOF
gpu_wheels: on a session lent a GPU (the device tool's status: can_start_another true), call once:
  run(command="bash bench/gpu_seed.sh", carry=["$DEST"], timeout_s=600)
and keep what comes back: cp FILES_AT/accuracy-gpu.json bench/results/accuracy_gpu.json (FILES_AT/gpu_seed.log: the log)
EOF
