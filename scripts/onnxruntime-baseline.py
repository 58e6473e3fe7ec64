#!/usr/bin/env python3
"""ONNX Runtime on this machine, at the shapes of `hipinfer bench`: the peer figure for the README.

The anchors' ONNX Runtime figures were measured on another CPU; this script measures ONNX Runtime
on the machine at hand, so both engines are compared on the same cores. It builds the
all-MiniLM-L6-v2 encoder as an ONNX graph straight from `model.safetensors` (no PyTorch needed),
checks the graph against the PyTorch golden embeddings (`../shared/fixtures/minilm_golden.json`,
every component within 1e-5), lets ONNX Runtime's transformer optimizer fuse it (attention,
LayerNorm, GELU, bias), quantizes the fused graph with ONNX Runtime's own dynamic int8
(`onnxruntime.quantization.quantize_dynamic`, its defaults: int8 weights, uint8 activations),
then times batches of exactly `seq` tokens on `--threads` intra-op threads and prints one JSON
line per variant (f32, int8) and shape, in the shape of `hipinfer bench`'s, each with its lowest
cosine to the golden embeddings. The first line names the CPU and its vector extensions.

    python3 -m pip install onnxruntime==1.32.0 onnx numpy safetensors
    python3 scripts/onnxruntime-baseline.py --threads 2 --seconds 10 1x8 1x128 8x128 32x128
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build_graph(weights, config):
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    eps = config["layer_norm_eps"]
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(array, prefix="c"):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def node(op, inputs, **attrs):
        out = name(op)
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def w(key):
        key = key if key in weights else "bert." + key
        return const(weights[key].astype(np.float32), key.replace(".", "_"))

    def linear(x, prefix):
        weight_t = weights[prefix + ".weight"].T.copy()
        y = node("MatMul", [x, const(weight_t, prefix.replace(".", "_") + "_wt")])
        return node("Add", [y, w(prefix + ".bias")])

    def layer_norm(x, prefix):
        return node("LayerNormalization", [x, w(prefix + ".weight"), w(prefix + ".bias")],
                    axis=-1, epsilon=eps)

    ids, mask = "input_ids", "attention_mask"
    shape = node("Shape", [ids])
    seq_len = node("Gather", [shape, const(np.array(1, dtype=np.int64))], axis=0)
    positions = node("Range", [const(np.array(0, dtype=np.int64)), seq_len,
                               const(np.array(1, dtype=np.int64))])
    x = node("Gather", [w("embeddings.word_embeddings.weight"), ids], axis=0)
    x = node("Add", [x, node("Gather", [w("embeddings.position_embeddings.weight"), positions], axis=0)])
    token_type = weights["embeddings.token_type_embeddings.weight"][0]
    x = node("Add", [x, const(token_type.astype(np.float32))])
    x = layer_norm(x, "embeddings.LayerNorm")

    # The mask as BERT exports write it, so ONNX Runtime's optimizer recognises the attention.
    mask_4d = node("Cast", [node("Unsqueeze", [node("Unsqueeze", [mask, const(np.array([1], dtype=np.int64))]),
                                               const(np.array([2], dtype=np.int64))])], to=TensorProto.FLOAT)
    mask_f = node("Cast", [mask], to=TensorProto.FLOAT)
    mask_bias = node("Mul", [node("Sub", [const(np.array(1.0, dtype=np.float32)), mask_4d]),
                             const(np.array(-10000.0, dtype=np.float32))])
    split_shape = const(np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = const(np.array([0, 0, hidden], dtype=np.int64))
    scale = const(np.array(1.0 / np.sqrt(head_dim), dtype=np.float32))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def heads_of(t, perm):
            return node("Transpose", [node("Reshape", [t, split_shape])], perm=perm)

        q = heads_of(linear(x, p + "attention.self.query"), [0, 2, 1, 3])
        k = heads_of(linear(x, p + "attention.self.key"), [0, 2, 3, 1])
        v = heads_of(linear(x, p + "attention.self.value"), [0, 2, 1, 3])
        scores = node("Add", [node("Div", [node("MatMul", [q, k]),
                                           const(np.array(np.sqrt(head_dim), dtype=np.float32))]),
                              mask_bias])
        probs = node("Softmax", [scores], axis=-1)
        context = node("Reshape", [node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3]),
                                   merge_shape])
        attn = linear(context, p + "attention.output.dense")
        x = layer_norm(node("Add", [attn, x]), p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        gelu = node("Mul", [node("Mul", [h, node("Add", [node("Erf", [node("Div", [
            h, const(np.array(np.sqrt(2.0), dtype=np.float32))])]), const(np.array(1.0, dtype=np.float32))])]),
            const(np.array(0.5, dtype=np.float32))])
        out = linear(gelu, p + "output.dense")
        x = layer_norm(node("Add", [out, x]), p + "output.LayerNorm")
    del scale

    mask_3d = node("Unsqueeze", [mask_f, const(np.array([2], dtype=np.int64))])
    summed = node("ReduceSum", [node("Mul", [x, mask_3d]), const(np.array([1], dtype=np.int64))],
                  keepdims=0)
    counts = node("ReduceSum", [mask_3d, const(np.array([1], dtype=np.int64))], keepdims=0)
    pooled = node("Div", [summed, counts])
    norm = node("Sqrt", [node("ReduceSum", [node("Mul", [pooled, pooled]),
                                            const(np.array([1], dtype=np.int64))], keepdims=1)])
    embeddings = node("Div", [pooled, norm])
    nodes.append(helper.make_node("Identity", [embeddings], ["embeddings"]))
    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", hidden])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def against_golden(sess, golden_path):
    """The largest component difference and the lowest cosine to the golden embeddings."""
    golden = json.load(open(golden_path))
    worst, lowest = 0.0, 1.0
    for ids, expected in zip(golden["input_ids"], golden["embeddings"]):
        ids = np.array([ids], dtype=np.int64)
        got = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
        expected = np.array(expected, dtype=np.float32)
        worst = max(worst, float(np.abs(got - expected).max()))
        cosine = float(np.dot(got, expected) / (np.linalg.norm(got) * np.linalg.norm(expected)))
        lowest = min(lowest, cosine)
    return worst, lowest


def cpu_description():
    """The CPU's model name and the vector extensions that matter to these kernels."""
    name, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and name == "unknown":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_bf16", "amx_int8"]
    return {"cpu": name, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shapes", nargs="+", help="BATCHxSEQ, e.g. 1x8 32x128")
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    parser.add_argument("--golden", default=os.path.join(ROOT, "tests", "fixtures", "minilm_golden.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    config = json.load(open(os.path.join(args.model, "config.json")))
    weights = load_file(os.path.join(args.model, "model.safetensors"))
    weights = {k[5:] if k.startswith("bert.") else k: v for k, v in weights.items()}
    model = build_graph(weights, config)
    workdir = tempfile.mkdtemp(prefix="hipinfer-ort-")
    plain = os.path.join(workdir, "minilm.onnx")
    onnx.save(model, plain)
    from onnxruntime.transformers.optimizer import optimize_model
    fused = os.path.join(workdir, "minilm-fused.onnx")
    optimize_model(plain, model_type="bert", num_heads=config["num_attention_heads"],
                   hidden_size=config["hidden_size"], opt_level=0).save_model_to_file(fused)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    int8 = os.path.join(workdir, "minilm-int8.onnx")
    # The fused graph has contrib ops shape inference cannot type: their outputs are f32.
    quantize_dynamic(fused, int8, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})
    print(json.dumps(cpu_description()), flush=True)

    sessions = []
    for variant, path in [("f32", fused), ("int8", int8)]:
        sess = session(path, args.threads)
        worst, lowest = against_golden(sess, args.golden)
        if variant == "f32" and worst > 1e-5:
            sys.exit(f"the ONNX graph does not match the PyTorch reference: max difference {worst}")
        sessions.append((variant, sess, worst, lowest))

    vocab = config["vocab_size"]
    for (variant, sess, worst, lowest), shape in [(v, s) for s in args.shapes for v in sessions]:
        batch, seq = (int(n) for n in shape.lower().split("x"))
        ids = np.array([[101] + [1000 + (b * 7919 + t * 104729) % (vocab - 1000) for t in range(1, seq - 1)] + [102]
                        for b in range(batch)], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        for _ in range(3):
            sess.run(None, feed)
        times = []
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds or len(times) < 3:
            t = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        print(json.dumps({
            "engine": f"onnxruntime {ort.__version__}", "dtype": variant, "batch": batch, "seq": seq,
            "threads": args.threads, "batches": len(times),
            "tokens_per_second": batch * seq * len(times) / (sum(times) / 1e3),
            "ms_per_batch_median": statistics.median(times),
            "ms_per_batch_p90": times[min(len(times) - 1, round((len(times) - 1) * 0.9))],
            "golden_max_difference": worst,
            "golden_lowest_cosine": lowest,
        }), flush=True)


if __name__ == "__main__":
    main()
