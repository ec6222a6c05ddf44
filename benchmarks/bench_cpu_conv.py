"""CPU convolution speed on the layer shapes our models train with: forward, backward-data and backward-weight
of each layer separately, median of `--repeat` runs after a warm-up, and the GFLOP/s they reach; then the forward
pass of SRCNN 9-5-5's layers on a whole 512x512 picture and of 3DSRnet's 64 -> 64 layer on a 5-frame window of
180x144 (a Vid4 frame at x4) ('same' padding: what `magmasr upscale` runs on a CPU);
side by side with PyTorch's CPU convolutions (oneDNN) in the same run when PyTorch is importable (`--no-torch`
to skip). Zero padding on both sides (PyTorch's convolutions have no replicated borders; ours cost the same).

    python benchmarks/bench_cpu_conv.py [--repeat 20] [--out docs/results/cpu_conv] [--no-torch]

Writes OUT.json and OUT.md (machine, thread count, date and command in the first line). The thread count is
OpenMP's (set OMP_NUM_THREADS before running; PyTorch is given the same count). Each direction is timed for
magmasr, then for PyTorch, right after each other; magmasr's forward and backward-weight passes twice, run by
run in turn: with the default strategy (the products read the input in place, 'taps') and with a column matrix
('columns', the only strategy before 2026-12-07); a 3x3 / 5x5 layer of 8+ channels once more in each direction,
with algo='winograd' (backward-data: in turn with the default). OMP_WAIT_POLICY is PASSIVE unless set: two OpenMP
runtimes in one process (ours and PyTorch's) whose idle threads spin would slow each other's next calls.
Nothing else should run on the machine meanwhile.
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before either OpenMP runtime starts

import numpy as np  # noqa: E402

from magmasr import _core  # noqa: E402
from magmasr._core import from_numpy  # noqa: E402
from magmasr._core import ops  # noqa: E402
from magmasr._files import write_text_atomic  # noqa: E402

# name: (N, Cin, Cout, kernel (kD, kH, kW), input spatial (D, H, W)), all 'valid' as in training on patches.
SHAPES = {
    "SRCNN 9-1-5 conv1": (128, 1, 64, (1, 9, 9), (1, 33, 33)),
    "SRCNN 9-1-5 conv2 (1x1)": (128, 64, 32, (1, 1, 1), (1, 25, 25)),
    "SRCNN 9-1-5 conv3": (128, 32, 1, (1, 5, 5), (1, 25, 25)),
    "SRCNN 9-5-5 conv2 (5x5)": (128, 64, 32, (1, 5, 5), (1, 25, 25)),
    "SRCNN 9-5-5 conv3": (128, 32, 1, (1, 5, 5), (1, 21, 21)),
    "3DSRnet conv2 (same)": (16, 32, 32, (3, 3, 3), (5, 64, 64)),
}
# Whole-picture / whole-frame inference, forward only, 'same' padding: name: (N, Cin, Cout, kernel, input spatial).
INFERENCE = {
    "SRCNN 9-5-5 conv1, picture": (1, 1, 64, (1, 9, 9), (1, 512, 512)),
    "SRCNN 9-5-5 conv2, picture": (1, 64, 32, (1, 5, 5), (1, 512, 512)),
    "SRCNN 9-5-5 conv3, picture": (1, 32, 1, (1, 5, 5), (1, 512, 512)),
    "3DSRnet conv2, Vid4 frame": (1, 64, 64, (3, 3, 3), (5, 144, 180)),
}


def median_ms(fns: list, repeat: int) -> list[float]:
    """Median milliseconds of each function over `repeat` consecutive runs after a warm-up, one function after
    the other. (Alternating them run by run was tried: magmasr's and PyTorch's OpenMP runtimes are two thread
    pools, and each one's threads, still spinning after its call, slowed the other's next call by up to 4x.)"""
    out = []
    for fn in fns:
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out.append(1e3 * float(np.median(times)))
    return out


def median_ms_in_turn(fns: list, repeat: int) -> list[float]:
    """Median milliseconds of each function, the functions run in turn (one run of each, `repeat` times), after
    a warm-up of each: for variants of one library, whose timings should see the same machine state."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]


def with_strategy(which: str, fn):
    """`fn` run with magmasr's CPU forward strategy `which`, the default ('auto') restored after it."""
    def call():
        _core._cpu_conv_strategy(which)
        try:
            return fn()
        finally:
            _core._cpu_conv_strategy("auto")
    return call


def torch_directions(torch, xs, ws, k3, pad, x_np, w_np, dy_np) -> list:
    """PyTorch's forward, backward-data and backward-weight of the same problem (fp32, no autograd graph)."""
    F = torch.nn.functional
    conv, grad_in, grad_w = ((F.conv3d, torch.nn.grad.conv3d_input, torch.nn.grad.conv3d_weight) if k3
                             else (F.conv2d, torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight))
    x, w, dy = torch.from_numpy(x_np), torch.from_numpy(w_np), torch.from_numpy(dy_np)
    b = torch.zeros(ws[0])

    def run(f):
        def call():
            with torch.no_grad():
                f()
        return call
    return [run(lambda: conv(x, w, b, padding=pad)), run(lambda: grad_in(xs, w, dy, padding=pad)),
            run(lambda: grad_w(x, ws, dy, padding=pad))]


def bench_shape(n, cin, cout, k, s, repeat: int, rng, torch=None, same: bool = False) -> dict:
    """All three directions, or with `same` (a whole picture, padded to keep its size) the forward pass only."""
    three_d = k[0] > 1 or s[0] > 1
    xs = (n, cin) + (s if three_d else s[1:])
    ws = (cout, cin) + (k if three_d else k[1:])
    fwd, bwd_data, bwd_weight = ((ops.conv3d, ops.conv3d_backward_data, ops.conv3d_backward_weight) if three_d
                                 else (ops.conv2d, ops.conv2d_backward_data, ops.conv2d_backward_weight))
    pad = (1, 1, 1) if three_d else 0  # 3DSRnet's conv2 is 'same'; the SRCNN layers train 'valid'
    if same:
        pad = tuple(d // 2 for d in k) if three_d else (k[1] // 2, k[2] // 2)
    x_np = rng.standard_normal(xs, dtype=np.float32)
    w_np = rng.standard_normal(ws, dtype=np.float32) * 0.01
    x, w = from_numpy(x_np), from_numpy(w_np)
    b = from_numpy(np.zeros(cout, np.float32))
    y = fwd(x, w, b, padding=pad)
    dy_np = rng.standard_normal(tuple(y.shape), dtype=np.float32)
    dy = from_numpy(dy_np)
    flops = 2.0 * np.prod(y.shape) * cin * np.prod(k)
    row = {"N": n, "Cin": cin, "Cout": cout, "kernel": list(k), "input": list(s), "gflop": flops / 1e9}
    ours = [lambda: fwd(x, w, b, padding=pad), lambda: bwd_data(dy, w, xs, padding=pad),
            lambda: bwd_weight(x, dy, ws, padding=pad)]
    theirs = torch_directions(torch, xs, ws, three_d, pad, x_np, w_np, dy_np) if torch else []
    # A 3x3 / 5x5 layer of 8+ channels: also with algo='winograd', the CPU's default for pictures, video and
    # training (all three directions)
    winograd = k[1] == k[2] and _core._winograd_tile(k[2], cin, cout) > 0
    wino = [lambda: fwd(x, w, b, padding=pad, algo="winograd"),
            lambda: bwd_data(dy, w, xs, padding=pad, algo="winograd"),
            lambda: bwd_weight(x, dy, ws, padding=pad, algo="winograd")]
    if hasattr(_core, "_cpu_conv_strategy") and cout > 1:  # the directions with two strategies
        for d in (0,) if same else (0, 2):
            name = DIRECTIONS[d]
            fns = [ours[d], with_strategy("columns", ours[d])] + ([wino[d]] if winograd else [])
            ms = median_ms_in_turn(fns, repeat)
            row[f"{name}_ms"], row[f"{name}_columns_ms"] = ms[:2]
            if winograd:
                row[f"{name}_winograd_ms"] = ms[2]
    if winograd and not same:  # backward-data: the default and Winograd in turn
        row["backward_data_ms"], row["backward_data_winograd_ms"] = median_ms_in_turn([ours[1], wino[1]], repeat)
    for d, name in enumerate(DIRECTIONS[:1] if same else DIRECTIONS):
        if f"{name}_ms" in row:  # timed above beside another strategy
            ms = [row[f"{name}_ms"]] + (median_ms(theirs[d:d + 1], repeat) if torch else [])
        else:
            ms = median_ms([ours[d]] + theirs[d:d + 1], repeat)
        row[f"{name}_ms"] = ms[0]
        row[f"{name}_gflops"] = flops / ms[0] / 1e6
        if torch:
            row[f"{name}_torch_ms"] = ms[1]
    return row


DIRECTIONS = ("forward", "backward_data", "backward_weight")


def cpu_name() -> str:
    """The processor's model and widest vector extension, from /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in info.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value)
    model = " ".join(fields.get("model name", "").split()) or platform.machine()
    flags = set(fields.get("flags", "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({isa})"


def import_torch(threads: int):
    try:
        import torch
    except Exception:  # noqa: BLE001 - any failure to import means no baseline
        return None
    torch.set_num_threads(threads)
    return torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--out", default="docs/results/cpu_conv", help="output path without extension")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch alongside even if installed")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    rng = np.random.default_rng(0)
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    torch = None if args.no_torch else import_torch(int(threads))
    kernels = _core._cpu_kernels() if hasattr(_core, "_cpu_kernels") else "?"
    machine = (f"{cpu_name()}, {os.cpu_count()} CPUs, {threads} OpenMP threads "
               f"(OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), magmasr's {kernels} kernels")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    rows = {}
    for name, shape, same in [(n, s, False) for n, s in SHAPES.items()] + [(n, s, True) for n, s in INFERENCE.items()]:
        rows[name] = bench_shape(*shape, args.repeat, rng, torch, same=same)
        r = rows[name]
        print(f"{name:28s} " + "  ".join(
            f"{d} {r[f'{d}_ms']:8.2f} ms" + (f" (torch {r[f'{d}_torch_ms']:.2f})" if torch else "")
            for d in DIRECTIONS if f"{d}_ms" in r), file=sys.stderr)
    doc = {"date": datetime.date.today().isoformat(), "machine": machine, "command": command,
           "torch": torch.__version__ if torch else None, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    baseline = f"; PyTorch {torch.__version__} (oneDNN) in the same run, same thread count" if torch else ""
    lines = [f"`{command}` on {machine}, {doc['date']}; median of {args.repeat} runs{baseline}.", ""]
    if torch:
        lines += ["Each cell: magmasr ms (GFLOP/s) / PyTorch ms; the ratio is PyTorch's time over ours (above 1: "
                  "magmasr is faster).", ""]
    lines += ["In brackets: the same forward or backward-weight pass with the column-matrix strategy (`columns`, the "
              "only one before 2026-12-07), timed run by run in turn with the default; one output channel has a path "
              "of its own. In braces: the same pass with `algo='winograd'` (Winograd's F(4x4, 5x5) or F(6x6, 3x3), per "
              "depth tap in 3-D; the CPU's default for pictures, video and training since 2026-12-07; within a few "
              "1e-5 of the direct sums), timed in the same turns.", ""]
    lines += ["| layer | N, Cin -> Cout, kernel, input | forward ms (GFLOP/s) [columns ms] | backward-data ms (GFLOP/s) "
              "| backward-weight ms (GFLOP/s) [columns ms] |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        shape = f"{r['N']}, {r['Cin']} -> {r['Cout']}, {'x'.join(map(str, r['kernel']))}, {'x'.join(map(str, r['input']))}"
        cells = []
        for d in DIRECTIONS:
            if f"{d}_ms" not in r:  # a whole picture: the forward pass only
                cells.append("")
                continue
            cell = f"{r[f'{d}_ms']:.2f} ({r[f'{d}_gflops']:.1f})"
            if f"{d}_columns_ms" in r:
                cell += f" [{r[f'{d}_columns_ms']:.2f}]"
            if f"{d}_winograd_ms" in r:
                cell += f" {{{r[f'{d}_winograd_ms']:.2f} Winograd}}"
            if torch:
                cell += f" / {r[f'{d}_torch_ms']:.2f}: {r[f'{d}_torch_ms'] / r[f'{d}_ms']:.2f}x"
            cells.append(cell)
        lines.append(f"| {name} | {shape} | " + " | ".join(cells) + " |")
    for suffix, text in ((".json", json.dumps(doc, indent=1)), (".md", "\n".join(lines) + "\n")):
        write_text_atomic(out.with_name(out.name + suffix), text)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
