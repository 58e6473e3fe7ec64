#!/usr/bin/env bash
# The one-command check for a lent NVIDIA machine (no network, no Rust, no compiler needed there).
#
#   bash scripts/gpu-check.sh prepare        # here: builds the carried set into .device/ (< 64 MiB)
#   bash scripts/gpu-check.sh run OUT_DIR    # there (or here, to dry-run): every step, summary in
#                                            # OUT_DIR/summary.json, the log in OUT_DIR/log.txt
#
# Steps of `run`: nvidia-smi; every kernel test against the CPU backend on the GPU
# (HIPINFER_REQUIRE_GPU=1: no device is a failure, not a skip); the backend-choice tests;
# compute-sanitizer memcheck on the kernel tests; MiniLM-shaped random weights (written there by
# scripts/random-minilm.py) embedded on CUDA and on the CPU and compared (max |difference|);
# `hipinfer bench --backend cuda` at 32 × 128 and 256 × 128 next to PyTorch fp32 (TF32 off) on
# the same weights in the same run; a real-fault campaign (`hipinfer chaos --real-fault-rate`:
# kernels that write out of bounds, genuine sticky 700s, workers in subprocesses replaced, zero
# lost). Each step's outcome goes to the summary; a step whose tool is missing says so and the
# others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
device_dir=.device

prepare() {
    set -e
    if [ -z "${NVCC:-}" ]; then eval "$(bash scripts/install-cuda-toolchain.sh)"; export NVCC; fi
    cargo build --release --features cuda --bin hipinfer
    local tests
    tests=$(cargo test --release --features cuda --no-run --test kernels --test backend_choice \
        --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
    rm -rf "$device_dir" && mkdir -p "$device_dir/minilm"
    cp target/release/hipinfer "$device_dir/"
    while read -r name path; do cp "$path" "$device_dir/$name"; done <<<"$tests"
    strip "$device_dir"/hipinfer "$device_dir"/kernels "$device_dir"/backend_choice
    local model=models/all-MiniLM-L6-v2
    [ -f "$model/tokenizer.json" ] || bash scripts/fetch-model.sh
    cp -r "$model/config.json" "$model/tokenizer.json" "$model/sentence_bert_config.json" \
        "$model/1_Pooling" "$device_dir/minilm/"
    local bytes
    bytes=$(du -sb "$device_dir" scripts | awk '{s += $1} END {print s}')
    du -sh "$device_dir"/*
    echo "carried set: $bytes bytes (limit $((64 << 20)))"
    [ "$bytes" -lt $((64 << 20)) ] || { echo "error: over 64 MiB" >&2; exit 1; }
}

run() {
    local out=$1
    mkdir -p "$out"
    exec > >(tee "$out/log.txt") 2>&1
    local summary="$out/summary.json" steps=()
    step() { # name, command...: runs it, records pass/fail/missing
        local name=$1
        shift
        echo "=== $name: $*"
        local start=$SECONDS rc
        "$@"
        rc=$?
        steps+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}")
        echo "=== $name: rc $rc"
    }
    [ -x "$device_dir/kernels" ] || { echo "error: run '$0 prepare' first" >&2; exit 2; }
    step nvidia-smi nvidia-smi
    step kernels env HIPINFER_REQUIRE_GPU=1 "$device_dir/kernels" --test-threads 1
    step backend-choice env HIPINFER_REQUIRE_GPU=1 "$device_dir/backend_choice" --test-threads 1
    if command -v compute-sanitizer >/dev/null 2>&1; then
        step memcheck compute-sanitizer --tool memcheck --error-exitcode 9 \
            "$device_dir/kernels" --test-threads 1 cuda
    else
        echo "compute-sanitizer not found: memcheck skipped"
        steps+=('{"step": "memcheck", "rc": null, "missing": "compute-sanitizer"}')
    fi
    local model=/tmp/hipinfer-minilm-random
    rm -rf "$model" && cp -r "$device_dir/minilm" "$model"
    step random-weights python3 scripts/random-minilm.py "$model"
    local text="a sentence to embed on two backends"
    step embed-cuda sh -c "'$device_dir/hipinfer' embed --backend cuda --model '$model' '$text' > '$out/cuda.json'"
    step embed-cpu sh -c "'$device_dir/hipinfer' embed --backend cpu --model '$model' '$text' > '$out/cpu.json'"
    python3 - "$out" <<'PY' || true
import json, sys
out = sys.argv[1]
try:
    a = json.load(open(f"{out}/cuda.json"))["embeddings"][0]
    b = json.load(open(f"{out}/cpu.json"))["embeddings"][0]
    diff = max(abs(x - y) for x, y in zip(a, b))
    print(f"GPU vs CPU max |difference| {diff:.3g} (gate 1e-4)")
    json.dump({"gpu_vs_cpu_max_difference": diff}, open(f"{out}/gpu_vs_cpu.json", "w"))
except Exception as e:  # a missing side was already recorded as a failed step
    print(f"GPU vs CPU comparison not made: {e}")
PY
    for batch in 32 256; do
        step "bench-cuda-${batch}x128" sh -c "'$device_dir/hipinfer' bench --backend cuda --model '$model' --batch $batch --seq 128 --seconds 10 > '$out/bench-cuda-$batch.json'"
    done
    step real-fault-campaign sh -c "'$device_dir/hipinfer' chaos --backend cuda --model '$model' --isolation subprocess --real-fault-rate 0.02 --requests 300 --seed 4 > '$out/real-fault.json'"
    step pytorch-fp32 python3 - "$model" "$out" <<'PY'
import json, sys, time
import torch
from transformers import BertConfig, BertModel
from safetensors.torch import load_file
folder, out = sys.argv[1], sys.argv[2]
if not torch.cuda.is_available():
    sys.exit("no CUDA device for PyTorch")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
model = BertModel(BertConfig.from_pretrained(folder), add_pooling_layer=False)
model.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=False)
model = model.cuda().eval()
results = {}
for batch in (32, 256):
    ids = torch.randint(1000, 30000, (batch, 128), device="cuda")
    with torch.inference_mode():
        for _ in range(3):
            model(input_ids=ids)
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 10:
            model(input_ids=ids)
            n += 1
        torch.cuda.synchronize()
    results[f"{batch}x128"] = batch * 128 * n / (time.perf_counter() - start)
    print(f"pytorch fp32 {batch}x128: {results[f'{batch}x128']:.0f} tok/s")
json.dump(results, open(f"{out}/pytorch.json", "w"))
PY
    local IFS=,
    echo "{\"steps\": [${steps[*]}]}" > "$summary"
    echo "summary: $summary"
}

case "$mode" in
    prepare) prepare ;;
    run) [ $# -ge 2 ] || { echo "usage: $0 run OUT_DIR" >&2; exit 2; }; run "$2" ;;
    *) echo "usage: $0 prepare | run OUT_DIR" >&2; exit 2 ;;
esac
