#!/usr/bin/env bash
# The README's language-model speed table, in one run: the CPU model and flags, then
# interleaved rounds of llama.cpp (llama-cpp-python, built from source on this machine into
# .cache/llama-cpp-venv) and `hipinfer bench` on the same GGUF file, threads and shapes
# (prompt processing of PROMPT tokens, then GEN tokens generated); then each one's peak RSS.
#   MODEL (SmolLM2-135M-Instruct Q4_1), ROUNDS (3), SECONDS_EACH (8), THREADS (2),
#   PROMPT (128), GEN (64), HIPINFER_BIN (target/release/hipinfer)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
rounds=${ROUNDS:-3}
seconds=${SECONDS_EACH:-8}
threads=${THREADS:-2}
prompt=${PROMPT:-128}
gen=${GEN:-64}
bin=${HIPINFER_BIN:-target/release/hipinfer}
[ -f "$model" ] || bash scripts/fetch-model.sh smollm2
[ -x "$bin" ] || cargo build --release

# llama-cpp-python builds llama.cpp from source with this CPU's flags (GGML_NATIVE), ~10 min.
# Without AMX: llama.cpp 0.3.36's AMX matrix product (compiled in where -march=native has AMX,
# as on Sapphire Rapids) dies with SIGSEGV in ggml_backend_amx_mul_mat on this Q4_1 model, so on
# such a CPU its AVX-512/VNNI kernels are measured (the compiler's explicit -mno-amx-* wins over
# -march=native whatever their order). The venv's name says which build it holds.
cmake_args="-DGGML_NATIVE=ON"
venv_default=.cache/llama-cpp-venv
if grep -qw amx_tile /proc/cpuinfo; then
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake_args="$cmake_args -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'"
    venv_default=.cache/llama-cpp-venv-no-amx
fi
venv=${LLAMA_CPP_VENV:-$venv_default}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    CMAKE_ARGS="$cmake_args" "$venv/bin/python" -m pip install --quiet \
        --disable-pip-version-check --no-cache-dir cmake ninja "llama-cpp-python==0.3.36"
fi

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores, threads $threads"
echo "# flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|amx_bf16|amx_int8)$' | xargs)"
echo "# llama.cpp: llama-cpp-python 0.3.36, CMAKE_ARGS=$cmake_args"
echo "# model: $model ($(stat -c %s "$model") bytes), prompt $prompt tokens, generate $gen"
for round in $(seq "$rounds"); do
    echo "# round $round"
    "$venv/bin/python" scripts/llama-cpp-baseline.py "$model" --threads "$threads" \
        --prompt-tokens "$prompt" --gen-tokens "$gen" --seconds "$seconds" |
        python3 -c 'import json, sys
d = json.loads(sys.stdin.read())
print("llama.cpp  pp %(pp_tokens_per_second)8.1f tok/s  tg %(tg_tokens_per_second)7.1f tok/s  first token %(ms_to_first_token)7.1f ms" % d)'
    "$bin" bench --backend cpu --threads "$threads" --model "$model" --prompt-tokens "$prompt" \
        --gen-tokens "$gen" --seconds "$seconds" 2>/dev/null |
        python3 -c 'import json, sys
d = json.loads(sys.stdin.read())
print("hipinfer   pp %(pp_tokens_per_second)8.1f tok/s  tg %(tg_tokens_per_second)7.1f tok/s  first token %(ms_to_first_token)7.1f ms  (%(arch)s)" % d)'
done

echo "# peak RSS (file $(stat -c %s "$model") bytes; KV cache of $((prompt + gen)) tokens)"
/usr/bin/time -f "llama.cpp peak RSS %M KB" "$venv/bin/python" scripts/llama-cpp-baseline.py \
    "$model" --threads "$threads" --prompt-tokens "$prompt" --gen-tokens "$gen" --seconds 1 \
    2>&1 >/dev/null | grep 'peak RSS'
/usr/bin/time -f "hipinfer peak RSS %M KB" "$bin" bench --backend cpu --threads "$threads" \
    --model "$model" --prompt-tokens "$prompt" --gen-tokens "$gen" --seconds 1 2>&1 >/dev/null |
    grep 'peak RSS'
