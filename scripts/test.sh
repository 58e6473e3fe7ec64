#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs and what the README tells users to run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
