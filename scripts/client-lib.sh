# Shared by scripts/client-compat.sh, scripts/client-compat-llm.sh and scripts/check-deploy.sh
# (sourced, not run): the hipinfer binary, the client venv, and a `hipinfer serve` on a free
# local port.

# HIPINFER_BIN, or the debug build.
hipinfer_bin() {
    if [ -n "${HIPINFER_BIN:-}" ]; then
        echo "$HIPINFER_BIN"
    else
        cargo build --quiet --bin hipinfer
        echo ./target/debug/hipinfer
    fi
}

# The venv with OpenAI's and Hugging Face's clients (pinned), made once; prints its path.
client_venv() {
    local venv="${HIPINFER_CLIENT_VENV:-.cache/client-compat-venv}"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai, huggingface_hub' 2>/dev/null; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            openai==3.57.0 huggingface_hub==2.4.0 numpy >&2
    fi
    echo "$venv"
}

# Starts `$1 serve --backend cpu --host 127.0.0.1 --port 0 --model $2 [more flags...]` and waits
# for its address: sets `server` (the pid) and `address`; a trap kills it on exit.
start_server() {
    server_log="$(mktemp)"
    "$1" serve --backend cpu --host 127.0.0.1 --port 0 --model "$2" "${@:3}" 2>"$server_log" &
    server=$!
    trap 'kill "$server" 2>/dev/null || true; rm -f "$server_log"' EXIT
    address=""
    for _ in $(seq 1 600); do
        address="$(sed -n 's|.* at http://\(.*\)$|\1|p' "$server_log" | head -1)"
        [ -n "$address" ] && break
        kill -0 "$server" 2>/dev/null || { cat "$server_log"; echo "hipinfer serve exited"; exit 1; }
        sleep 0.1
    done
    [ -n "$address" ] || { cat "$server_log"; echo "hipinfer serve did not start"; exit 1; }
}

# Stops the server gracefully (SIGTERM) and waits for it.
stop_server() {
    kill -TERM "$server"
    wait "$server"
    trap - EXIT
    rm -f "$server_log"
}
