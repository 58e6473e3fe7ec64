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
bin="${HIPINFER_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --quiet --bin hipinfer
    bin=./target/debug/hipinfer
fi

venv="${HIPINFER_CLIENT_VENV:-.cache/client-compat-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai, huggingface_hub' 2>/dev/null; then
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

"$venv/bin/python" scripts/client_compat.py "$address" "$bin" "$model"
kill -TERM "$server"
wait "$server"
trap - EXIT
rm -f "$log"
