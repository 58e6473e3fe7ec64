#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler from PyPI into a cache folder (no NVIDIA driver, no GPU, no
# root needed) and prints the NVCC=… line for `cargo build --features cuda`. Pinned to 13.0:
# the lent GPU machines run a 13.0 driver, which refuses PTX from a newer nvcc (error 222), and
# pip would otherwise pull a newer nvvm/crt beside nvcc 13.0.
#   CUDA_TOOLCHAIN_DIR (default ~/.cache/hipinfer/cuda-13.0)
set -euo pipefail
dir=${CUDA_TOOLCHAIN_DIR:-$HOME/.cache/hipinfer/cuda-13.0}
nvcc=$dir/nvidia/cu13/bin/nvcc
if [ ! -x "$nvcc" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir" \
        'nvidia-cuda-nvcc==13.0.*' 'nvidia-nvvm==13.0.*' 'nvidia-cuda-runtime==13.0.*' \
        'nvidia-cuda-crt==13.0.*' >&2
fi
command -v g++ >/dev/null 2>&1 || echo "warning: nvcc needs a host g++ (apt-get install -y g++)" >&2
"$nvcc" --version | tail -2 >&2
echo "NVCC=$nvcc"
