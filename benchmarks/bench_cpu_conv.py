"""CPU convolution speed on the layer shapes our models train with: forward, backward-data and backward-weight
of each layer separately, median of `--repeat` runs after a warm-up, and the GFLOP/s they reach.

    python benchmarks/bench_cpu_conv.py [--repeat 20] [--out docs/results/cpu_conv]

Writes OUT.json and OUT.md (machine, thread count, date and command in the first line). The thread count is
OpenMP's (set OMP_NUM_THREADS before running). Nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from magmasr._core import from_numpy
from magmasr._core import ops
from magmasr._files import write_text_atomic

# name: (N, Cin, Cout, kernel (kD, kH, kW), input spatial (D, H, W)), all 'valid' as in training on patches.
SHAPES = {
    "SRCNN 9-1-5 conv1": (128, 1, 64, (1, 9, 9), (1, 33, 33)),
    "SRCNN 9-1-5 conv2 (1x1)": (128, 64, 32, (1, 1, 1), (1, 25, 25)),
    "SRCNN 9-1-5 conv3": (128, 32, 1, (1, 5, 5), (1, 25, 25)),
    "SRCNN 9-5-5 conv2 (5x5)": (128, 64, 32, (1, 5, 5), (1, 25, 25)),
    "SRCNN 9-5-5 conv3": (128, 32, 1, (1, 5, 5), (1, 21, 21)),
    "3DSRnet conv2 (same)": (16, 32, 32, (3, 3, 3), (5, 64, 64)),
}


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def bench_shape(n, cin, cout, k, s, repeat: int, rng) -> dict:
    three_d = k[0] > 1 or s[0] > 1
    xs = (n, cin) + (s if three_d else s[1:])
    ws = (cout, cin) + (k if three_d else k[1:])
    fwd, bwd_data, bwd_weight = ((ops.conv3d, ops.conv3d_backward_data, ops.conv3d_backward_weight) if three_d
                                 else (ops.conv2d, ops.conv2d_backward_data, ops.conv2d_backward_weight))
    pad = (1, 1, 1) if three_d else 0  # 3DSRnet's conv2 is 'same'; the SRCNN layers train 'valid'
    x = from_numpy(rng.standard_normal(xs, dtype=np.float32))
    w = from_numpy(rng.standard_normal(ws, dtype=np.float32) * 0.01)
    b = from_numpy(np.zeros(cout, np.float32))
    y = fwd(x, w, b, padding=pad)
    dy = from_numpy(rng.standard_normal(tuple(y.shape), dtype=np.float32))
    flops = 2.0 * np.prod(y.shape) * cin * np.prod(k)
    row = {"N": n, "Cin": cin, "Cout": cout, "kernel": list(k), "input": list(s), "gflop": flops / 1e9}
    for name, fn in (("forward", lambda: fwd(x, w, b, padding=pad)),
                     ("backward_data", lambda: bwd_data(dy, w, xs, padding=pad)),
                     ("backward_weight", lambda: bwd_weight(x, dy, ws, padding=pad))):
        ms = median_ms(fn, repeat)
        row[f"{name}_ms"] = ms
        row[f"{name}_gflops"] = flops / ms / 1e6
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--out", default="docs/results/cpu_conv", help="output path without extension")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    rng = np.random.default_rng(0)
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {threads} OpenMP threads"
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    rows = {}
    for name, shape in SHAPES.items():
        rows[name] = bench_shape(*shape, args.repeat, rng)
        r = rows[name]
        print(f"{name:26s} fwd {r['forward_ms']:8.2f} ms  bwd-data {r['backward_data_ms']:8.2f} ms  "
              f"bwd-weight {r['backward_weight_ms']:8.2f} ms", file=sys.stderr)
    doc = {"date": datetime.date.today().isoformat(), "machine": machine, "command": command, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"`{command}` on {machine}, {doc['date']}; median of {args.repeat} runs.", "",
             "| layer | N, Cin -> Cout, kernel, input | forward ms (GFLOP/s) | backward-data ms (GFLOP/s) "
             "| backward-weight ms (GFLOP/s) |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        shape = f"{r['N']}, {r['Cin']} -> {r['Cout']}, {'x'.join(map(str, r['kernel']))}, {'x'.join(map(str, r['input']))}"
        cells = [f"{r[f'{d}_ms']:.2f} ({r[f'{d}_gflops']:.1f})" for d in ("forward", "backward_data", "backward_weight")]
        lines.append(f"| {name} | {shape} | " + " | ".join(cells) + " |")
    for suffix, text in ((".json", json.dumps(doc, indent=1)), (".md", "\n".join(lines) + "\n")):
        write_text_atomic(out.with_name(out.name + suffix), text)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
