#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python, built from source on this machine) on a GGUF file:
prompt processing of N tokens and token generation of M tokens after it, the same shapes as
`hipinfer bench --model FILE.gguf --prompt-tokens N --gen-tokens M`. Prints one JSON line.

    python3 scripts/llama-cpp-baseline.py MODEL.gguf [--threads 2] [--prompt-tokens 128]
        [--gen-tokens 64] [--seconds 10]
"""
import argparse
import json
import statistics
import time

import llama_cpp

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--prompt-tokens", type=int, default=128)
parser.add_argument("--gen-tokens", type=int, default=64)
parser.add_argument("--seconds", type=float, default=10.0)
args = parser.parse_args()

llm = llama_cpp.Llama(
    model_path=args.model,
    n_ctx=args.prompt_tokens + args.gen_tokens + 8,
    n_batch=max(512, args.prompt_tokens),
    n_ubatch=max(512, args.prompt_tokens),
    n_threads=args.threads,
    n_threads_batch=args.threads,
    verbose=False,
)
# The same prompt text as hipinfer's bench, cycled to the length.
base = llm.tokenize(
    b"The quick brown fox jumps over the lazy dog while the engine counts every token. ",
    add_bos=False,
)
prompt = (base * (args.prompt_tokens // len(base) + 1))[: args.prompt_tokens]


def run():
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    token = int(llm.scores[llm.n_tokens - 1].argmax())
    first = time.perf_counter()
    for _ in range(args.gen_tokens - 1):
        llm.eval([token])
        token = int(llm.scores[llm.n_tokens - 1].argmax())
    end = time.perf_counter()
    return (
        args.prompt_tokens / (first - t),
        (args.gen_tokens - 1) / (end - first),
        (first - t) * 1e3,
    )


run()  # warm-up
pp, tg, ttft = [], [], []
started = time.perf_counter()
while time.perf_counter() - started < args.seconds or len(pp) < 3:
    a, b, c = run()
    pp.append(a)
    tg.append(b)
    ttft.append(c)
print(json.dumps({
    "engine": "llama.cpp (llama-cpp-python %s)" % llama_cpp.__version__,
    "system_info": llama_cpp.llama_print_system_info().decode(),
    "threads": args.threads,
    "prompt_tokens": args.prompt_tokens,
    "gen_tokens": args.gen_tokens,
    "runs": len(pp),
    "pp_tokens_per_second": round(statistics.median(pp), 1),
    "tg_tokens_per_second": round(statistics.median(tg), 1),
    "ms_to_first_token": round(statistics.median(ttft), 2),
}))
