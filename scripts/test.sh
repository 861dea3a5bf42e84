#!/usr/bin/env bash
# Lint (ruff), the layering contract (import-linter), then the test suite (sets the project up first on a
# fresh checkout). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/genrec ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false ANONYMIZED_TELEMETRY=False
.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports
exec .venv/bin/python -m pytest -q -ra "$@"
