#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs and what the README tells users to run.
# Runs every test on the CPU build, then again with the HIP backend compiled in when hipcc is
# installed (tests that need a GPU say why they skip when none answers), then checks the
# operations kit in deploy/ with promtool when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
if command -v hipcc >/dev/null 2>&1 || [ -n "${HIPCC:-}" ]; then
    cargo test --all-targets --features hip
else
    echo "note: hipcc not found, so the --features hip build was not tested" \
         "(apt-get install -y --no-install-recommends hipcc libamdhip64-dev g++)"
fi
if command -v promtool >/dev/null 2>&1; then
    HIPINFER_BIN=./target/debug/hipinfer bash scripts/check-deploy.sh
else
    echo "note: promtool not found, so deploy/ was not checked (apt-get install -y prometheus)"
fi
