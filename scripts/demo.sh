#!/usr/bin/env bash
# The quick start's main job: fetch the model if missing, build, embed a few sentences on the CPU
# backend and print their similarity matrix.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
cargo run --release --quiet --example similarity
