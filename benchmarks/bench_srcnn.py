#!/usr/bin/env python3
"""Whole-model SRCNN 9-5-5 benchmark: magmasr against PyTorch (cuDNN), inference and one training step.

Cases (issue 3):

- inference: SRCNN 9-5-5 (64 and 32 filters) on one Y image, 'same' output size with *replicate* padding, as
  ``magmasr.models.srcnn_preset("9-5-5")`` builds it, at 1920x1080 and 3840x2160 on the GPU;
- training step: batch 128 of 33x33 patches, 'valid' padding (21x21 outputs), forward + MSE loss + backward
  + SGD step (lr 1e-4, momentum 0.9), the input gradient of conv1 not computed (as in PyTorch, whose input
  does not require a gradient). magmasr's ``ops.mse_loss`` returns a Python float, so our step ends with a
  read-back of the loss (a wait that the timing does anyway); PyTorch's step leaves its loss on the device.

PyTorch runs in fp32 with TF32 off (``torch.backends.cudnn.allow_tf32 = False``,
``torch.backends.cuda.matmul.allow_tf32 = False``) and ``cudnn.benchmark = True``. cuDNN has no replicate
padding, so inference is timed twice on the PyTorch side:

- ``torch-zeros``: ``Conv2d(padding=k//2)`` with zero padding, pure cuDNN (a different function at the
  borders: this is the number to beat, the one quoted in issue 3);
- ``torch-replicate``: ``Conv2d(padding_mode='replicate')``, i.e. ``F.pad(mode='replicate')`` and a valid
  convolution: the same function as ours, so its output is the one we compare with.

Timing (the same on both sides): warm-up runs, then for each of ``--reps`` runs (default 50) a device
synchronisation (``magmasr.cuda.synchronize()`` / ``torch.cuda.synchronize()``), ``time.perf_counter()``,
the run, a synchronisation and ``time.perf_counter()`` again; the median is reported (with p10, p90 and
min). Host-clock timing includes the launch overhead of each library, which is part of what a user waits
for; the synchronisation itself costs some microseconds, far below the times measured here. No L2 flush:
the inference activations (1080p x 64 channels = 531 MB) dwarf the 50 MB L2, and a training loop runs warm.

Correctness, before timing, with the same weights (He-normal, seeded) and inputs: the relative L2 error
``||ours - torch|| / ||torch||`` must be below ``--tol`` (1e-4) for the inference output (against
torch-replicate) and for the loss and every parameter gradient of the training step (against PyTorch fp32);
the error against a float64 reference (PyTorch in float64, or NumPy where PyTorch is absent) is reported too.

Usage::

    python benchmarks/bench_srcnn.py [out.json] [--markdown out.md] [--device cuda|cpu] [--reps N]
    python benchmarks/bench_srcnn.py --device cpu          # small CPU comparison, PyTorch optional

Without a usable GPU (``--device cuda``, the default) it says so and exits 0. ``--device cpu`` compares with
PyTorch on the CPU when it is installed, else times magmasr alone and checks it against NumPy in float64,
at a small size (128x128 inference, batch 16 training, 10 runs). Exit status 1 when a check fails (the JSON
is written first), 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

import magmasr
from magmasr import models, ops, optim

PRESET = "9-5-5"
KERNELS = (9, 5, 5)
CHANNELS = (1, 64, 32, 1)
LR, MOMENTUM = 1e-4, 0.9


# ------------------------------------------------------------------------------------------------ helpers
def rel_l2(a, ref) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if a.shape != ref.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {ref.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(ref))):
        return float("nan")
    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(a - ref) / max(den, 1e-300))


def parse_size(s: str) -> tuple[int, int]:
    """'1920x1080' -> (width, height)."""
    try:
        w, h = s.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {s!r}") from None


def he_weights(seed: int) -> dict[str, np.ndarray]:
    """He-normal weights and small random biases for SRCNN 9-5-5 (so activations are O(1), not ~0)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, k in enumerate(KERNELS):
        cin, cout = CHANNELS[i], CHANNELS[i + 1]
        std = np.sqrt(2.0 / (cin * k * k))
        out[f"conv{i + 1}.weight"] = (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        out[f"conv{i + 1}.bias"] = (rng.standard_normal(cout) * 0.01).astype(np.float32)
    return out


def stats_ms(times_s: list[float]) -> dict:
    t = sorted(x * 1e3 for x in times_s)
    q = lambda p: t[min(len(t) - 1, int(round(p * (len(t) - 1))))]  # noqa: E731
    return {"median_ms": statistics.median(t), "p10_ms": q(0.1), "p90_ms": q(0.9), "min_ms": t[0],
            "mean_ms": statistics.fmean(t), "runs": len(t)}


def time_runs(fn: Callable[[], object], sync: Callable[[], None], warmup: int, reps: int) -> dict:
    """Median etc. of reps runs of fn, each bracketed by device synchronisations and host clock reads."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return stats_ms(times)


# ------------------------------------------------------------------------------------------------ magmasr
def ours_model(weights: dict, padding: str, device: str):
    m = models.srcnn_preset(PRESET, padding=padding, padding_mode="replicate")
    m.load_state_dict(weights)
    m.to(device)
    return m


def set_algo(model, algo: str) -> None:
    for n in model.names():
        if hasattr(model[n], "algo"):
            model[n].algo = algo


def ours_sync(device: str) -> Callable[[], None]:
    if device == "cuda":
        return lambda: magmasr.cuda.synchronize()
    return lambda: None


def ours_train_step(model, opt, x, t) -> float:
    y = model.forward(x, training=True)
    model.backward(ops.mse_loss_backward(y, t))  # no input gradient: conv1 is the first layer
    opt.step()
    # ops.mse_loss returns a Python float, i.e. it waits for the device: taken last, so that the backward
    # launches are not held up behind it (the timing synchronises after the step anyway)
    return ops.mse_loss(y, t)


def ours_grads(model) -> dict[str, np.ndarray]:
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------------ PyTorch
def import_torch(want: bool):
    if not want:
        return None
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return torch


def torch_model(torch, weights: dict, padding: str, padding_mode: str, device: str, dtype):
    nn = torch.nn
    layers = []
    for i, k in enumerate(KERNELS):
        pad = k // 2 if padding == "same" else 0
        conv = nn.Conv2d(CHANNELS[i], CHANNELS[i + 1], k, padding=pad, padding_mode=padding_mode)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weights[f"conv{i + 1}.weight"]))
            conv.bias.copy_(torch.from_numpy(weights[f"conv{i + 1}.bias"]))
        layers.append(conv)
        if i < 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device=device, dtype=dtype)


def torch_param_names(i: int) -> tuple[str, str]:
    # nn.Sequential indices of the three convolutions: 0, 2, 4
    return f"conv{i // 2 + 1}.weight", f"conv{i // 2 + 1}.bias"


def torch_grads(model) -> dict[str, np.ndarray]:
    out = {}
    for idx, layer in enumerate(model):
        if hasattr(layer, "weight"):
            wn, bn = torch_param_names(idx)
            out[wn] = layer.weight.grad.detach().cpu().double().numpy()
            out[bn] = layer.bias.grad.detach().cpu().double().numpy()
    return out


def torch_train_step(torch, model, opt, x, t):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(model(x), t)
    loss.backward()
    opt.step()
    return loss


# -------------------------------------------------------------------------------- NumPy float64 reference
def np_conv(x, w, b, pad: int, mode: str):
    """Stride-1 correlation in float64, x [N, C, H, W], w [O, C, k, k]; mode 'edge' (replicate) or 'constant'."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    k = w.shape[2]
    H, W = x.shape[2] - k + 1, x.shape[3] - k + 1
    y = np.zeros((x.shape[0], w.shape[0], H, W))
    for i in range(k):
        for j in range(k):
            y += np.einsum("nchw,oc->nohw", x[:, :, i:i + H, j:j + W], w[:, :, i, j], optimize=True)
    return y + b[None, :, None, None]


def np_forward(weights: dict, x, padding: str):
    acts = [np.asarray(x, np.float64)]
    for i, k in enumerate(KERNELS):
        w = weights[f"conv{i + 1}.weight"].astype(np.float64)
        b = weights[f"conv{i + 1}.bias"].astype(np.float64)
        z = np_conv(acts[-1], w, b, k // 2 if padding == "same" else 0, "edge")
        acts.append(np.maximum(z, 0.0) if i < 2 else z)
    return acts  # input, relu1, relu2, output


def np_train_grads(weights: dict, x, t) -> tuple[float, dict]:
    """Loss and parameter gradients of mean((srcnn_valid(x) - t)^2) in float64."""
    acts = np_forward(weights, x, "valid")
    y = acts[-1]
    t = np.asarray(t, np.float64)
    loss = float(np.mean((y - t) ** 2))
    dy = 2.0 * (y - t) / y.size
    grads = {}
    for i in (2, 1, 0):
        xin = acts[i]
        w = weights[f"conv{i + 1}.weight"].astype(np.float64)
        k = w.shape[2]
        H, W = dy.shape[2], dy.shape[3]
        dw = np.zeros_like(w)
        for a in range(k):
            for c in range(k):
                dw[:, :, a, c] = np.einsum("nohw,nchw->oc", dy, xin[:, :, a:a + H, c:c + W], optimize=True)
        grads[f"conv{i + 1}.weight"] = dw
        grads[f"conv{i + 1}.bias"] = dy.sum(axis=(0, 2, 3))
        if i > 0:
            dx = np.zeros_like(xin)
            for a in range(k):
                for c in range(k):
                    dx[:, :, a:a + H, c:c + W] += np.einsum("nohw,oc->nchw", dy, w[:, :, a, c], optimize=True)
            dy = dx * (xin > 0)  # ReLU backward, on its output
    return loss, grads


# ------------------------------------------------------------------------------------------------ device
def card_info(device: str, torch) -> dict:
    info = {"device": device}
    if device == "cuda":
        info["name"] = magmasr.cuda.device_name(0)
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            if q.returncode == 0:
                info["nvidia_smi"] = q.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        info["name"] = platform.processor() or platform.machine()
        info["cpu_count"] = os.cpu_count()
        info["magmasr_threads"] = magmasr.get_num_threads()
        if torch is not None:
            info["torch_threads"] = torch.get_num_threads()
    return info


def versions(torch) -> dict:
    v = {"magmasr": magmasr.__version__, "magmasr_build": magmasr.build_info(), "numpy": np.__version__,
         "python": platform.python_version()}
    if torch is not None:
        v["torch"] = torch.__version__
        v["torch_cuda"] = torch.version.cuda
        try:
            v["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        except RuntimeError as e:  # a CPU comparison with a PyTorch whose cuDNN does not load still reports
            v["cudnn"] = f"not loadable: {str(e).splitlines()[0][:120]}"
    return v


# ------------------------------------------------------------------------------------------------ cases
class Bench:
    def __init__(self, args, torch):
        self.a = args
        self.torch = torch
        self.dev = args.device
        self.sync = ours_sync(self.dev)
        self.tsync = (lambda: torch.cuda.synchronize()) if (torch is not None and self.dev == "cuda") else (lambda: None)
        self.results: list[dict] = []
        self.checks: list[dict] = []
        self.weights = he_weights(args.seed)

    def record(self, case: str, shape: str, impl: str, st: dict, note: str = "") -> None:
        row = {"case": case, "shape": shape, "impl": impl, **st}
        if note:
            row["note"] = note
        self.results.append(row)
        print(f"  {impl:18s} median {st['median_ms']:9.3f} ms  (p10 {st['p10_ms']:.3f}, p90 {st['p90_ms']:.3f}, "
              f"min {st['min_ms']:.3f}, {st['runs']} runs)", flush=True)

    def check(self, case: str, what: str, err: float, gate: bool) -> None:
        ok = bool(np.isfinite(err) and err < self.a.tol) if gate else None
        self.checks.append({"case": case, "compare": what, "rel_l2": err if np.isfinite(err) else None,
                            "tol": self.a.tol if gate else None, "pass": ok})
        flag = "" if not gate else ("  ok" if ok else "  FAIL")
        print(f"  check {what:38s} rel L2 {err:.2e}{flag}", flush=True)

    # -------------------------------------------------------------------------------- inference
    def inference(self, width: int, height: int) -> None:
        torch, a = self.torch, self.a
        case = f"inference {width}x{height}"
        shape = f"[1, 1, {height}, {width}]"
        print(f"\n== SRCNN {PRESET} {case} ('same', replicate padding)", flush=True)
        x_np = np.random.default_rng(a.seed + 1).random((1, 1, height, width), dtype=np.float32)

        model = ours_model(self.weights, "same", self.dev)
        x = magmasr.from_numpy(x_np).to(self.dev)
        y_ours = model(x).numpy().copy()

        if torch is not None:
            xt = torch.from_numpy(x_np).to(self.dev)
            with torch.no_grad():
                ref_rep = torch_model(torch, self.weights, "same", "replicate", self.dev, torch.float32)
                y_rep = ref_rep(xt).cpu().numpy()
                self.check(case, "ours vs torch-replicate fp32", rel_l2(y_ours, y_rep), True)
                ref64 = torch_model(torch, self.weights, "same", "replicate", self.dev, torch.float64)
                y64 = ref64(xt.double()).cpu().numpy()
                del ref64
                self.check(case, "ours vs float64 (torch)", rel_l2(y_ours, y64), False)
                self.check(case, "torch-replicate fp32 vs float64", rel_l2(y_rep, y64), False)
                if self.dev == "cuda":
                    torch.cuda.empty_cache()
        elif height * width <= 512 * 512:
            y64 = np_forward(self.weights, x_np, "same")[-1]
            self.check(case, "ours vs float64 (NumPy)", rel_l2(y_ours, y64), True)
        else:
            print("  (no PyTorch and the image is too large for the NumPy reference: output not checked)")

        self.record(case, shape, "magmasr", time_runs(lambda: model(x), self.sync, a.warmup, a.reps))
        if self.dev == "cuda":  # what `magmasr upscale` runs on a GPU: every layer pinned to the direct kernels
            convs = [model[n] for n in model.names() if hasattr(model[n], "algo")]
            notes = {"auto_direct": "each layer on the fastest of the direct kernels (the command line's choice on "
                                    "a GPU; the same pixels as direct)",
                     "direct": "all layers on the tiled direct kernels",
                     "direct_async": "all layers on the direct kernels with cp.async double buffering "
                                     "(the same pixels as direct)",
                     "implicit_gemm": "the many-channel layers on the implicit GEMM (the same pixels as direct)"}
            for algo, note in notes.items():
                for c in convs:
                    c.algo = algo
                self.check(case, f"ours {algo} vs ours auto", rel_l2(model(x).numpy(), y_ours), True)
                self.record(case, shape, f"magmasr-{algo}", time_runs(lambda: model(x), self.sync, a.warmup, a.reps),
                            note)
            for c in convs:
                c.algo = "auto"
        else:  # what `magmasr upscale` runs on a CPU: Winograd's minimal filtering for the 5x5 mapping layer
            set_algo(model, "winograd")
            self.check(case, "ours winograd vs ours auto", rel_l2(model(x).numpy(), y_ours), True)
            self.record(case, shape, "magmasr-winograd", time_runs(lambda: model(x), self.sync, a.warmup, a.reps),
                        "the mapping layer by Winograd's F(4x4, 5x5) (the CPU's default for pictures)")
            set_algo(model, "auto")
        if torch is not None:
            with torch.no_grad():
                for mode in ("zeros", "replicate"):
                    tm = torch_model(torch, self.weights, "same", mode, self.dev, torch.float32)
                    note = ("zero padding: pure cuDNN, a different function at the borders" if mode == "zeros"
                            else "F.pad(replicate) + valid conv: the same function as ours")
                    self.record(case, shape, f"torch-{mode}", time_runs(lambda: tm(xt), self.tsync, a.warmup, a.reps),
                                note)
                    del tm
            del xt
            if self.dev == "cuda":
                torch.cuda.empty_cache()
        del model, x

    # -------------------------------------------------------------------------------- training step
    def training(self, batch: int, patch: int) -> None:
        torch, a = self.torch, self.a
        out = patch - sum(k - 1 for k in KERNELS)
        case = f"train step batch {batch} {patch}x{patch}"
        shape = f"[{batch}, 1, {patch}, {patch}] -> [{batch}, 1, {out}, {out}]"
        print(f"\n== SRCNN {PRESET} {case} ('valid' padding; forward + MSE + backward + SGD)", flush=True)
        rng = np.random.default_rng(a.seed + 2)
        x_np = rng.random((batch, 1, patch, patch), dtype=np.float32)
        t_np = rng.random((batch, 1, out, out), dtype=np.float32)

        # one step from the same weights: loss and gradients
        model = ours_model(self.weights, "valid", self.dev)
        opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        x = magmasr.from_numpy(x_np).to(self.dev)
        t = magmasr.from_numpy(t_np).to(self.dev)
        loss = float(ours_train_step(model, opt, x, t))
        g_ours = ours_grads(model)  # the gradients of the step (the step updates the weights, not them)
        names = sorted(g_ours)

        def grad_err(ref: dict) -> float:
            return max(rel_l2(g_ours[n], ref[n]) for n in names)

        if torch is not None:
            xt, tt = torch.from_numpy(x_np).to(self.dev), torch.from_numpy(t_np).to(self.dev)
            for dtype, label, gate in ((torch.float32, "torch fp32", True), (torch.float64, "float64 (torch)", False)):
                tm = torch_model(torch, self.weights, "valid", "zeros", self.dev, dtype)
                topt = torch.optim.SGD(tm.parameters(), lr=LR, momentum=MOMENTUM)
                tl = float(torch_train_step(torch, tm, topt, xt.to(dtype), tt.to(dtype)).item())
                self.check(case, f"loss: ours vs {label}", rel_l2([loss], [tl]), gate)
                self.check(case, f"max grad: ours vs {label}", grad_err(torch_grads(tm)), gate)
                del tm, topt
        elif batch * patch * patch <= 64 * 33 * 33:
            ref_loss, ref_g = np_train_grads(self.weights, x_np, t_np)
            self.check(case, "loss: ours vs float64 (NumPy)", rel_l2([loss], [ref_loss]), True)
            self.check(case, "max grad: ours vs float64 (NumPy)", grad_err(ref_g), True)
        else:
            print("  (no PyTorch and the batch is too large for the NumPy reference: gradients not checked)")

        self.record(case, shape, "magmasr",
                    time_runs(lambda: ours_train_step(model, opt, x, t), self.sync, a.warmup, a.reps))
        if self.dev == "cpu":  # what `magmasr train` runs on a CPU: the mapping layer's forward and
            # backward passes by Winograd; its step from the same weights, checked like ours
            wmodel = ours_model(self.weights, "valid", self.dev)
            set_algo(wmodel, "winograd")
            wopt = optim.SGD(wmodel.parameters(), lr=LR, momentum=MOMENTUM)
            wloss = float(ours_train_step(wmodel, wopt, x, t))
            self.check(case, "loss: ours winograd vs ours auto", rel_l2([wloss], [loss]), True)
            g_w = ours_grads(wmodel)
            self.check(case, "max grad: ours winograd vs ours auto",
                       max(rel_l2(g_w[n], g_ours[n]) for n in names), True)
            self.record(case, shape, "magmasr-winograd",
                        time_runs(lambda: ours_train_step(wmodel, wopt, x, t), self.sync, a.warmup, a.reps),
                        "the mapping layer's three passes by Winograd (the CPU's default in training)")
        if torch is not None:
            tm = torch_model(torch, self.weights, "valid", "zeros", self.dev, torch.float32)
            topt = torch.optim.SGD(tm.parameters(), lr=LR, momentum=MOMENTUM)
            self.record(case, shape, "torch",
                        time_runs(lambda: torch_train_step(torch, tm, topt, xt, tt), self.tsync, a.warmup, a.reps),
                        "valid padding: no padding mode involved")


# ------------------------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# SRCNN {PRESET}: magmasr vs PyTorch",
        "",
        f"{report['card'].get('name')} ({report['card']['device']}), {report['date']}; "
        f"magmasr {report['versions']['magmasr']}, PyTorch {report['versions'].get('torch', 'not installed')}, "
        f"cuDNN {report['versions'].get('cudnn', '-')}; fp32"
        f"{', TF32 off, cudnn.benchmark on' if s['cudnn_benchmark'] else ''}; median of "
        f"{s['reps']} runs after {s['warmup']} warm-up runs, host clock between device synchronisations.",
        "",
        "| case | impl | median ms | p10 ms | p90 ms | impl time / magmasr time |",
        "|---|---|---|---|---|---|",
    ]
    ours = {r["case"]: r["median_ms"] for r in report["results"] if r["impl"] == "magmasr"}
    for r in report["results"]:
        ratio = r["median_ms"] / ours[r["case"]] if r["case"] in ours else float("nan")
        lines.append(f"| {r['case']} | {r['impl']} | {r['median_ms']:.3f} | {r['p10_ms']:.3f} | {r['p90_ms']:.3f} "
                     f"| {ratio:.2f} |")
    lines += ["", "Ratio above 1: magmasr is faster. torch-zeros uses zero padding (cuDNN has no replicate "
              "padding); torch-replicate pads with F.pad and runs a valid convolution, the same function as ours.",
              "", "| case | check | rel L2 | tol | result |", "|---|---|---|---|---|"]
    for c in report["checks"]:
        res = "-" if c["pass"] is None else ("pass" if c["pass"] else "FAIL")
        tol = "-" if c["tol"] is None else f"{c['tol']:.0e}"
        err = "NaN" if c["rel_l2"] is None else f"{c['rel_l2']:.2e}"
        lines.append(f"| {c['case']} | {c['compare']} | {err} | {tol} | {res} |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default="bench_srcnn.json", help="JSON output path (default bench_srcnn.json)")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown table here")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",")],
                   help="inference sizes WxH,WxH (default 1920x1080,3840x2160 on cuda, 128x128 on cpu)")
    p.add_argument("--batch", type=int, help="training batch (default 128 on cuda, 16 on cpu)")
    p.add_argument("--patch", type=int, default=33, help="training patch size (default 33)")
    p.add_argument("--reps", type=int, help="timed runs (default 50 on cuda, 10 on cpu)")
    p.add_argument("--warmup", type=int, help="warm-up runs (default 5 on cuda, 2 on cpu)")
    p.add_argument("--tol", type=float, default=1e-4, help="relative L2 tolerance of the checks (default 1e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch even if installed")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    a = p.parse_args(argv)
    gpu = a.device == "cuda"
    a.sizes = a.sizes or ([(1920, 1080), (3840, 2160)] if gpu else [(128, 128)])
    a.batch = a.batch or (128 if gpu else 16)
    a.reps = a.reps or (50 if gpu else 10)
    a.warmup = a.warmup if a.warmup is not None else (5 if gpu else 2)
    if a.reps < 1 or a.batch < 1 or a.patch < sum(KERNELS) - 2:
        p.error("reps and batch must be >= 1, patch >= 17")

    if gpu and not magmasr.cuda_available():
        why = "magmasr was built without CUDA" if not magmasr.cuda_compiled() else "no usable CUDA GPU or driver"
        print(f"bench_srcnn: {why} (magmasr.cuda_available() is False); nothing to benchmark. "
              "Use --device cpu for a CPU comparison.")
        return 0

    torch = import_torch(not a.no_torch)
    if torch is not None:
        if gpu and not torch.cuda.is_available():
            print("bench_srcnn: PyTorch sees no GPU; timing magmasr alone")
            torch = None
        else:
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")
            if not gpu:
                torch.set_num_threads(magmasr.get_num_threads())
    print(f"bench_srcnn: magmasr {magmasr.__version__} on {a.device}"
          f"{' (' + magmasr.cuda.device_name(0) + ')' if gpu else ''}; PyTorch "
          f"{torch.__version__ if torch is not None else 'not used'}", flush=True)

    b = Bench(a, torch)
    if not a.skip_inference:
        for w, h in a.sizes:
            b.inference(w, h)
    if not a.skip_train:
        b.training(a.batch, a.patch)

    report = {
        "benchmark": "bench_srcnn",
        "model": f"SRCNN {PRESET} (channels 1-64-32-1)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "card": card_info(a.device, torch),
        "versions": versions(torch),
        "settings": {"precision": "fp32, TF32 off", "cudnn_benchmark": torch is not None and gpu, "reps": a.reps,
                     "warmup": a.warmup, "timing": "host perf_counter between device synchronisations, median",
                     "sgd": {"lr": LR, "momentum": MOMENTUM}, "seed": a.seed},
        "results": b.results,
        "checks": b.checks,
        "all_checks_pass": all(c["pass"] is not False for c in b.checks),
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    md = markdown(report)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    print("\n" + md)
    print(f"wrote {a.out}" + (f" and {a.markdown}" if a.markdown else ""))
    if not report["all_checks_pass"]:
        print("bench_srcnn: a correctness check FAILED (see the table above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
