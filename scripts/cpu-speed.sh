#!/usr/bin/env bash
# The README's CPU speed table, in one run: the CPU model and flags, then interleaved rounds of
# ONNX Runtime (f32 and its own dynamic int8) and `hipinfer bench` (f32, bf16, int8) at the same
# shapes on the same threads; then the lower dispatch levels forced; then the peak memory of
# `hipinfer bench --batch 32 --seq 128` per dtype; then each dtype's lowest cosine to PyTorch.
#   ROUNDS (2), SECONDS_EACH (8), THREADS (2), HIPINFER_BIN (target/release/hipinfer)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-2}
seconds=${SECONDS_EACH:-8}
threads=${THREADS:-2}
bin=${HIPINFER_BIN:-target/release/hipinfer}
[ -x "$bin" ] || cargo build --release
shapes="1x8 1x128 32x128"

bench() { # dtype shape [env...]
    local dtype=$1 shape=$2
    shift 2
    env "$@" "$bin" bench --backend cpu --threads "$threads" --dtype "$dtype" \
        --batch "${shape%x*}" --seq "${shape#*x}" --seconds "$seconds" 2>/dev/null |
        python3 -c 'import json, sys
d = json.loads(sys.stdin.read())
print("hipinfer %(dtype)-5s %(batch)sx%(seq)-4s %(tokens_per_second)9.0f tok/s  median %(ms_per_batch_median)8.2f ms  (%(arch)s)" % d)'
}

for round in $(seq "$rounds"); do
    echo "# round $round"
    python3 scripts/onnxruntime-baseline.py --threads "$threads" --seconds "$seconds" $shapes
    for dtype in f32 bf16 int8; do
        for shape in $shapes; do bench "$dtype" "$shape"; done
    done
done

echo "# forced lower levels (HIPINFER_CPU_LEVEL), 32x128"
for level in avx512 avx2; do
    for dtype in f32 bf16 int8; do bench "$dtype" 32x128 HIPINFER_CPU_LEVEL=$level; done
done

echo "# peak RSS of hipinfer bench --batch 32 --seq 128"
for dtype in f32 bf16 int8; do
    /usr/bin/time -f "hipinfer $dtype peak RSS %M KB" "$bin" bench --backend cpu \
        --threads "$threads" --dtype "$dtype" --seconds 2 2>&1 >/dev/null | grep 'peak RSS'
done

echo "# lowest cosine to PyTorch over the golden sentences"
cargo test --release --test model_golden reduced_precision -- --nocapture 2>&1 |
    grep 'lowest cosine' || true
