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
bin="${HIPINFER_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --quiet --bin hipinfer
    bin=./target/debug/hipinfer
fi

venv="${HIPINFER_CLIENT_VENV:-.cache/client-compat-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        openai==3.57.0 huggingface_hub==2.4.0 numpy
fi

log="$(mktemp)"
"$bin" serve --backend cpu --host 127.0.0.1 --port 0 --model "$model" 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
address=""
for _ in $(seq 1 600); do
    address="$(sed -n 's|.* at http://\(.*\)$|\1|p' "$log" | head -1)"
    [ -n "$address" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "hipinfer serve exited"; exit 1; }
    sleep 0.1
done
[ -n "$address" ] || { cat "$log"; echo "hipinfer serve did not start"; exit 1; }

"$venv/bin/python" scripts/client_compat_llm.py "$address" "$bin" "$model"
kill -TERM "$server"
wait "$server"
trap - EXIT
rm -f "$log"
