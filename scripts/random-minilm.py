#!/usr/bin/env python3
"""Writes model.safetensors with random weights of MiniLM-L6's shapes into a model folder that
already holds its config and tokenizer (the FLOPs of the real model, without carrying 91 MB).

    python3 scripts/random-minilm.py FOLDER [--seed 0]

Needs numpy and safetensors (or torch, whose safetensors is used when numpy's is missing).
"""

import argparse
import json
import pathlib

import numpy as np
from safetensors.numpy import save_file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = pathlib.Path(args.folder)
    config = json.loads((folder / "config.json").read_text())
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    rng = np.random.default_rng(args.seed)

    def normal(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": 1 + normal(h, scale=0.01),
        "embeddings.LayerNorm.bias": normal(h, scale=0.01),
    }
    for layer in range(layers):
        p = f"encoder.layer.{layer}."
        for name in ["attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"]:
            tensors[p + name + ".weight"] = normal(h, h)
            tensors[p + name + ".bias"] = normal(h, scale=0.01)
        tensors[p + "intermediate.dense.weight"] = normal(i, h)
        tensors[p + "intermediate.dense.bias"] = normal(i, scale=0.01)
        tensors[p + "output.dense.weight"] = normal(h, i)
        tensors[p + "output.dense.bias"] = normal(h, scale=0.01)
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"]:
            tensors[p + norm + ".weight"] = 1 + normal(h, scale=0.01)
            tensors[p + norm + ".bias"] = normal(h, scale=0.01)
    save_file(tensors, str(folder / "model.safetensors"))
    print(f"{folder / 'model.safetensors'}: random MiniLM-shaped weights, seed {args.seed}")


if __name__ == "__main__":
    main()
