#!/usr/bin/env python3
"""Prints the latest criterion results as a markdown table: median time per iteration and, where
the bench declares a throughput, the median rate (elements/s scaled to G or M).

usage: scripts/criterion-table.py [GROUP_PREFIX ...]   (run after `cargo bench`)
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
prefixes = sys.argv[1:]


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


rows = []
for bench in sorted(root.glob("**/new/benchmark.json")):
    meta = json.loads(bench.read_text())
    full_id = meta.get("full_id") or meta.get("title")
    if prefixes and not any(full_id.startswith(p) for p in prefixes):
        continue
    estimates = json.loads((bench.parent / "estimates.json").read_text())
    median_ns = estimates["median"]["point_estimate"]
    rate = ""
    throughput = meta.get("throughput") or {}
    if "Elements" in throughput:
        per_second = throughput["Elements"] / (median_ns * 1e-9)
        rate = f"{per_second / 1e9:.1f} G/s" if per_second >= 1e9 else f"{per_second / 1e6:.2f} M/s"
        per_element = median_ns / throughput["Elements"]
        if throughput["Elements"] > 1 and per_element >= 1:
            rate += f" ({fmt_time(per_element)} each)"
    rows.append((full_id, fmt_time(median_ns), rate))

print("| benchmark | median time | median rate |")
print("|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
