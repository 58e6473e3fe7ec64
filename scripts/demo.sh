#!/usr/bin/env bash
# The quick start's main job: fetch the model if missing, build (the library, the `hipinfer`
# command and the example), embed a few sentences on the CPU backend and print their similarity
# matrix. Afterwards `./target/release/hipinfer serve` is ready to run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
cargo build --release --quiet --bin hipinfer --example similarity
cargo run --release --quiet --example similarity
