#!/usr/bin/env bash
# The clients people already use, against `hipinfer serve`: OpenAI's Python client and Hugging
# Face's InferenceClient (installed from PyPI into a throwaway venv), plus plain HTTP for TEI's
# other routes. Every answer is compared with the library's own (`hipinfer embed`); exits non-zero
# on any difference. Run by scripts/test.sh (and so by CI).
#
#   bash scripts/client-compat.sh            # HIPINFER_BIN, HIPINFER_MODEL may point elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."

model="${HIPINFER_MODEL:-models/all-MiniLM-L6-v2}"
if [ ! -f "$model/model.safetensors" ]; then
    if [ "${HIPINFER_REQUIRE_MODEL:-}" = 1 ]; then
        echo "error: $model is missing (scripts/fetch-model.sh) and HIPINFER_REQUIRE_MODEL=1" >&2
        exit 1
    fi
    echo "SKIPPED: $model is missing (scripts/fetch-model.sh), so the client check did not run"
    exit 0
fi
source scripts/client-lib.sh
bin="$(hipinfer_bin)"
venv="$(client_venv)"
start_server "$bin" "$model"
"$venv/bin/python" scripts/client_compat.py "$address" "$bin" "$model"
stop_server
