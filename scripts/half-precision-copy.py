#!/usr/bin/env python3
"""Writes a copy of a Hugging Face model folder whose model.safetensors holds F16 (or BF16)
weights: half the bytes (MiniLM: 91 MB -> 45 MB), loaded by hipinfer widened to f32.

    python3 scripts/half-precision-copy.py models/all-MiniLM-L6-v2 models/all-MiniLM-L6-v2-f16 [--bf16]

Needs numpy and safetensors (pip install numpy safetensors). Every file but model.safetensors
is copied as it is; non-float tensors (position_ids) keep their dtype.
"""

import argparse
import pathlib
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def to_bf16_bits(values):
    """f32 -> bfloat16 bits, rounded to nearest even (as torch does), NaN kept a NaN."""
    bits = values.astype(np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    rounded = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    rounded[nan] = 0x7FC0
    return rounded


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--bf16", action="store_true", help="BF16 instead of F16")
    args = parser.parse_args()
    source, target = pathlib.Path(args.source), pathlib.Path(args.target)
    weights = source / "model.safetensors"
    if not weights.is_file():
        sys.exit(f"error: {weights} does not exist")
    if target.exists():
        sys.exit(f"error: {target} exists; remove it or choose another folder")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx"))
    tensors = load_file(str(weights))
    if args.bf16:
        # numpy has no bfloat16: write the header and bytes by hand through safetensors' own
        # serializer (torch-free), via a uint16 view renamed to BF16.
        import json
        import struct

        header, blobs, offset = {}, [], 0
        for name in sorted(tensors):
            value = tensors[name]
            if value.dtype == np.float32:
                data, dtype = to_bf16_bits(value).tobytes(), "BF16"
            else:
                data, dtype = value.tobytes(), {np.dtype("int64"): "I64"}.get(value.dtype, "F32")
            header[name] = {"dtype": dtype, "shape": list(value.shape),
                            "data_offsets": [offset, offset + len(data)]}
            blobs.append(data)
            offset += len(data)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(target / "model.safetensors", "wb") as out:
            out.write(struct.pack("<Q", len(text)))
            out.write(text)
            for blob in blobs:
                out.write(blob)
    else:
        half = {name: (v.astype(np.float16) if v.dtype == np.float32 else v)
                for name, v in tensors.items()}
        save_file(half, str(target / "model.safetensors"))
    size = (target / "model.safetensors").stat().st_size
    print(f"{target / 'model.safetensors'}: {size / 1e6:.1f} MB ({'BF16' if args.bf16 else 'F16'})")


if __name__ == "__main__":
    main()
