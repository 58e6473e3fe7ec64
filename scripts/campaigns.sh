#!/usr/bin/env bash
# The README's fault-campaign table: `hipinfer chaos` under faults as hardware has them, each
# campaign's JSON summary on one line after its name. Exits non-zero if any campaign lost,
# duplicated or mismatched a request (chaos itself exits non-zero then).
#   HIPINFER_BIN (target/release/hipinfer)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HIPINFER_BIN:-target/release/hipinfer}
[ -x "$bin" ] || cargo build --release
run() { # name, chaos arguments...
    local name=$1
    shift
    printf '%s ' "$name"
    "$bin" chaos --backend cpu --threads 2 "$@" 2>/dev/null
}
# ROCm >= 6 / CUDA: a memory fault poisons the process; a worker is killed and replaced.
run sticky-subprocess --sticky-scope process --isolation subprocess --requests 1000 \
    --reset-rate 0.005 --seed 3
# The same fault in process, with a CPU fallback serving until the device answers again.
run sticky-fallback --sticky-scope process --isolation in_process --fallback cpu --requests 1000 \
    --reset-rate 0.005 --seed 3
# ROCm <= 5: the runtime aborts the process on a memory fault.
run abort-on-fault --abort-on-fault --isolation subprocess --requests 500 --reset-rate 0.003 --seed 5
# HIP never times out a hung kernel: the step deadline abandons it.
run hang --isolation in_process --requests 200 --concurrency 8 --hang-rate 0.002 \
    --step-timeout 2s --request-deadline 30s --seed 9
