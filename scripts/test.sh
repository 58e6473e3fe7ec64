#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs and what the README tells users to run.
# Runs every test on the CPU build, then the backend tests again with the HIP backend compiled
# in when hipcc is installed (tests that need a GPU say why they skip when none answers), the
# library without default features, the clients people use against a live server, and the
# operations kit in deploy/ with promtool when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
# A program embedding the engine (default-features = false) compiles neither the CLI's argument
# parser nor the HTTP client nor the log formatter, and cannot inject aborts or hangs.
cargo build --lib --no-default-features
if cargo tree --no-default-features -e normal --prefix none | grep -E '^(clap|reqwest|tracing-subscriber) '; then
    echo "error: the library without default features depends on the crates above" >&2
    exit 1
fi
if command -v hipcc >/dev/null 2>&1 || [ -n "${HIPCC:-}" ]; then
    # The HIP build: the kernels compiled and embedded, and the tests that touch a backend
    # (the rest runs the same code as above).
    cargo test --features hip --lib --test kernels --test backend_choice --test hip_error_classes
else
    echo "note: hipcc not found, so the --features hip build was not tested" \
         "(apt-get install -y --no-install-recommends hipcc libamdhip64-dev g++)"
fi
# The CUDA build: the same kernels compiled by nvcc into fatbins, the driver loaded at run time.
# Without an NVIDIA driver the CUDA tests print "SKIPPED on cuda" (HIPINFER_REQUIRE_GPU=1 makes
# that a failure, as on the lent GPU machine); the check that it does fail runs here too.
if [ -z "${NVCC:-}" ] && [ -x "$HOME/.cache/hipinfer/cuda-13.0/nvidia/cu13/bin/nvcc" ]; then
    export NVCC=$HOME/.cache/hipinfer/cuda-13.0/nvidia/cu13/bin/nvcc
fi
if [ -n "${NVCC:-}" ] || command -v nvcc >/dev/null 2>&1; then
    cargo test --features cuda --lib --test kernels --test backend_choice --test hip_error_classes
    if ! command -v nvidia-smi >/dev/null 2>&1 &&
        HIPINFER_REQUIRE_GPU=1 cargo test --features cuda --quiet --test backend_choice \
            >/dev/null 2>&1; then
        echo "error: HIPINFER_REQUIRE_GPU=1 passed on a machine without a GPU" >&2
        exit 1
    fi
else
    echo "note: nvcc not found, so the --features cuda build was not tested" \
         "(bash scripts/install-cuda-toolchain.sh)"
fi
# The clients people use (OpenAI's, Hugging Face's, from PyPI) against a live server.
HIPINFER_BIN=./target/debug/hipinfer bash scripts/client-compat.sh
HIPINFER_BIN=./target/debug/hipinfer bash scripts/client-compat-llm.sh
if command -v promtool >/dev/null 2>&1; then
    HIPINFER_BIN=./target/debug/hipinfer bash scripts/check-deploy.sh
else
    echo "note: promtool not found, so deploy/ was not checked (apt-get install -y prometheus)"
fi
