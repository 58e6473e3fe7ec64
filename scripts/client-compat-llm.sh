#!/usr/bin/env bash
# OpenAI's Python client (from PyPI, in the venv of client-compat.sh) against
# `hipinfer serve --model FILE.gguf`, used as a user would: a streamed and a plain chat
# completion and a text completion, each compared with the library's own greedy answer
# (`hipinfer generate --json`). Exits non-zero on any difference. Run by scripts/test.sh.
#
#   bash scripts/client-compat-llm.sh        # HIPINFER_BIN, HIPINFER_GGUF may point elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."

model="${HIPINFER_GGUF:-models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [ ! -f "$model" ]; then
    if [ "${HIPINFER_REQUIRE_MODEL:-}" = 1 ]; then
        echo "error: $model is missing (scripts/fetch-model.sh smollm2) and HIPINFER_REQUIRE_MODEL=1" >&2
        exit 1
    fi
    echo "SKIPPED: $model is missing (scripts/fetch-model.sh smollm2), so the client check did not run"
    exit 0
fi
source scripts/client-lib.sh
bin="$(hipinfer_bin)"
venv="$(client_venv)"
start_server "$bin" "$model"
"$venv/bin/python" scripts/client_compat_llm.py "$address" "$bin" "$model"
stop_server
