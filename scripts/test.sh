#!/usr/bin/env bash
# Run the test suite (sets the project up first on a fresh checkout). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/genrec ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false ANONYMIZED_TELEMETRY=False
exec .venv/bin/python -m pytest -q -ra "$@"
