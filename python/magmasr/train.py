"""Training and fine-tuning: SRCNN sub-image datasets, ``fit`` with checkpoints and exact resume, and the
transfer-learning recipes of our poster.

Data (the SRCNN protocol): the MATLAB Y channel / 255 of each image, modcropped; the input is
``imresize(imresize(Y, 1/scale), scale)`` (MATLAB bicubic, floating point); 33x33 sub-images with stride 14;
the label is the centre of the ground-truth sub-image that a 'valid' network predicts
(``33 - (f1 + f2 + f3 - 3)`` pixels wide: 21 for 9-1-5, 17 for 9-5-5). Augmentation: random flips and 90-degree rotations per batch.

``fit`` runs forward / MSE / backward / update on the CPU or the GPU. Everything random (batch order,
augmentation) is a function of ``(seed, step)``, so a run resumed from a checkpoint continues exactly
as if it had not stopped.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import image as im
from . import models, nn, optim, weights
from ._core import from_numpy
from ._files import write_text_atomic
from ._core.ops import mse_loss, mse_loss_backward
from .sr import default_device, ground_truth_y, list_images, read_unit_image


# ------------------------------------------------------------------------------------------------ data
@dataclass
class PatchDataset:
    """Input sub-images ``x`` [M, 1, P, P] and labels ``y`` [M, 1, L, L], float32 in [0, 1]."""

    x: np.ndarray
    y: np.ndarray
    scale: int

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def from_images(cls, images: Sequence[np.ndarray], scale: int, *, patch: int = 33, stride: int = 14,
                    label: int = 21, downscales: Sequence[float] = (1.0,)) -> "PatchDataset":
        """Sub-images of gray / RGB uint8 images (see the module docstring); `label` is the network's valid
        output size: 33 - (f1 + f2 + f3 - 3), i.e. 21 for 9-1-5, 19 for 9-3-5, 17 for 9-5-5.

        `downscales`: scale augmentation (as FSRCNN and VDSR enlarge the 91 images): each image also serves
        as ground truth shrunk by each factor in (0, 1] (the uint8 Y channel through MATLAB ``imresize`` in
        uint8 mode, so the shrunk picture is an 8-bit image like the others), 1 being the image itself."""
        if not (1 <= label <= patch) or (patch - label) % 2:
            raise ValueError(f"label size {label} must be <= patch size {patch} with an even difference")
        factors = check_downscales(downscales)

        def ground_truths():
            for img in images:
                y = ground_truth_y(img, 1)  # the Y channel once per image (modcrop commutes with it)
                for f in factors:
                    yield im.to_float(im.modcrop(y if f == 1.0 else im.imresize(y, f), scale))

        off = (patch - label) // 2
        xs, ys = [], []
        for gt in ground_truths():
            if min(gt.shape) < patch:
                continue
            bic = im.imresize(im.imresize(gt, 1.0 / scale), scale)
            for r in range(0, gt.shape[0] - patch + 1, stride):
                for c in range(0, gt.shape[1] - patch + 1, stride):
                    xs.append(bic[r:r + patch, c:c + patch])
                    ys.append(gt[r + off:r + off + label, c + off:c + off + label])
        if not xs:
            raise ValueError(f"no {patch}x{patch} sub-image fits in the given images")
        x = np.asarray(xs, dtype=np.float32)[:, None]
        y = np.asarray(ys, dtype=np.float32)[:, None]
        return cls(np.ascontiguousarray(x), np.ascontiguousarray(y), int(scale))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, scale: int, **kwargs) -> "PatchDataset":
        """:meth:`from_images` on the pictures of `folder`: 8-bit as they are, any other pixel type mapped onto
        [0, 1] as ``magmasr upscale`` and ``eval`` map it (:func:`magmasr.sr.read_unit_image`)."""
        return cls.from_images([read_unit_image(p) for p in list_images(folder)], scale, **kwargs)

    def split(self, fraction: float, seed: int = 0) -> tuple["PatchDataset", "PatchDataset"]:
        """A random (train, validation) split with `fraction` of the sub-images in validation."""
        return split_dataset(self, fraction, seed)


def check_downscales(downscales: Sequence[float]) -> tuple[float, ...]:
    """The scale-augmentation factors of :meth:`PatchDataset.from_images` as floats: distinct, in (0, 1]."""
    factors = tuple(float(f) for f in downscales)
    if not factors or any(not (0.0 < f <= 1.0) for f in factors) or len(set(factors)) != len(factors):
        raise ValueError(f"downscale factors must be distinct numbers in (0, 1], got {list(downscales)}")
    return factors


def split_dataset(data, fraction: float, seed: int = 0):
    """A random (train, validation) split of a dataset with fields ``x``, ``y`` (and others kept as they are)
    with `fraction` of its samples (at least one) in validation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    if len(data) < 2:
        raise ValueError(f"cannot split {len(data)} sample(s) into training and validation")
    order = np.random.default_rng(seed).permutation(len(data))
    k = min(len(data) - 1, max(1, int(round(len(data) * fraction))))
    a, b = order[k:], order[:k]
    return (dataclasses.replace(data, x=data.x[a], y=data.y[a]), dataclasses.replace(data, x=data.x[b], y=data.y[b]))


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random flip / 90-degree rotation (one of the 8 symmetries of the square) of the last two axes
    for the whole batch (images [N, 1, h, w] and clips [N, 1, 5, h, w] alike)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    if flip:
        x, y = x[..., ::-1], y[..., ::-1]
    x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


# ------------------------------------------------------------------------------------------- init/recipes
def init_gaussian(layer_or_model, std: float = 1e-3, seed: int = 0) -> None:
    """The SRCNN paper's initialisation: weights from N(0, std^2), biases 0."""
    rng = np.random.default_rng(seed)
    named = layer_or_model.named_parameters() if hasattr(layer_or_model, "named_parameters") else [
        (p.name, p) for p in layer_or_model.parameters()]
    for name, p in named:
        shape = tuple(p.shape)
        p.value = (rng.normal(0.0, std, shape) if name.endswith("weight") else np.zeros(shape)).astype(np.float32)


RECIPES = ("scratch", "finetune_all", "transfer_12", "scratch_nonlinear", "transfer_13")


@dataclass
class Recipe:
    """A model to train and how: which layers learn and at what rate multiplier."""

    name: str
    model: nn.Sequential
    trainable: list[str]
    lr_mult: dict[str, float]


def make_recipe(name: str, pretrained: dict[str, np.ndarray] | None = None, *, f1: int = 9, f2: int = 5,
                f3: int = 5, fb: int = 1, frozen_lr: float = 0.0, seed: int = 0, init: str = "gaussian") -> Recipe:
    """The poster's training recipes on a 'valid' SRCNN (for patches):

    - ``scratch``: SRCNN trained from the Gaussian initialisation (the self-trained baseline);
    - ``finetune_all``: all parameters fine-tuned from the pretrained weights ("fine-tuned parameters");
    - ``transfer_12``: pretrained conv1 and conv2 kept (frozen, or at ``frozen_lr`` times the rate), a new
      reconstruction layer conv3 trained from scratch;
    - ``scratch_nonlinear``: SRCNN with the added non-linear layer, trained from scratch;
    - ``transfer_13``: pretrained conv1, conv2 (frozen or at ``frozen_lr``) and conv3 (fine-tuned), plus the
      added non-linear layer conv2b trained from scratch.

    init: how the layers that are not pretrained start: ``gaussian`` (the paper's N(0, 0.001^2), biases 0) or
    ``default`` (the layers' own U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default).
    """
    if init not in ("gaussian", "default"):
        raise ValueError(f"init must be 'gaussian' or 'default', got {init!r}")
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {RECIPES}")
    nonlinear = name in ("scratch_nonlinear", "transfer_13")
    build = models.srcnn_nonlinear if nonlinear else models.srcnn
    kw = dict(fb=fb) if nonlinear else {}
    model = build(f1, f2, f3, padding="valid", padding_mode="zeros", seed=seed, **kw)
    if init == "gaussian":
        init_gaussian(model, 1e-3, seed)
    convs = [n for n in model.names() if n.startswith("conv")]
    if name in ("scratch", "scratch_nonlinear"):
        return Recipe(name, model, convs, {})
    if pretrained is None:
        raise ValueError(f"recipe {name!r} needs pretrained SRCNN weights")
    keep = {"finetune_all": ["conv1", "conv2", "conv3"], "transfer_12": ["conv1", "conv2"],
            "transfer_13": ["conv1", "conv2", "conv3"]}[name]
    state = {k: v for k, v in pretrained.items() if k.split(".")[0] in keep}
    model.load_state_dict(state, strict=False)
    if name == "finetune_all":
        return Recipe(name, model, convs, {})
    low = ["conv1", "conv2"]
    trainable = [c for c in convs if c not in low or frozen_lr > 0]
    mult = {c: frozen_lr for c in low} if frozen_lr > 0 else {}
    return Recipe(name, model, trainable, mult)


def transplant(model: nn.Sequential, state: dict[str, np.ndarray]) -> dict[str, str]:
    """Starts `model` from another network's weights, layer by layer (same layer names): a layer whose
    parameters all have the same shapes is copied; a convolution with the same channels and a kernel smaller in
    space by an even amount is embedded at the centre of the larger kernel, the rest zero, which computes the
    same function wherever the larger kernel sees no border (SRCNN 9-1-5 grown into 9-5-5: the 1x1 conv2
    becomes the centre tap of a 5x5). Other layers keep their values. Returns {layer: 'copied' | 'embedded
    KxK in K'xK''}."""
    own = model.state_dict()
    layers: dict[str, list[str]] = {}
    for key in own:
        layers.setdefault(key.split(".")[0], []).append(key)

    def fits(src: tuple, dst: tuple) -> bool:
        return len(src) == len(dst) and src[:2] == dst[:2] and all(
            d >= s_ and (d - s_) % 2 == 0 for s_, d in zip(src[2:], dst[2:]))

    new, done = dict(own), {}
    for layer, keys in layers.items():
        if not all(k in state for k in keys) or not all(fits(tuple(state[k].shape), own[k].shape) for k in keys):
            continue
        how = "copied"
        for k in keys:
            src = np.asarray(state[k], dtype=np.float32)
            if src.shape == tuple(own[k].shape):
                new[k] = src
                continue
            out = np.zeros(own[k].shape, np.float32)
            out[(slice(None), slice(None)) + tuple(slice((d - s_) // 2, (d - s_) // 2 + s_)
                                                   for s_, d in zip(src.shape[2:], own[k].shape[2:]))] = src
            new[k] = out
            how = f"embedded {'x'.join(map(str, src.shape[2:]))} in {'x'.join(map(str, own[k].shape[2:]))}"
        done[layer] = how
    model.load_state_dict(new)
    return done


def image_model(model: nn.Sequential, scale: int):
    """The whole-image model ('same' output, replicate borders) of a network trained on patches ('valid'):
    same architecture, same weights. Works for SRCNN and SRCNN with the added non-linear layer."""
    from .sr import ImageSR

    k = {"f1": model["conv1"].kernel_size[-1], "f2": model["conv2"].kernel_size[-1],
         "f3": model["conv3"].kernel_size[-1], "n1": model["conv1"].out_channels, "n2": model["conv2"].out_channels}
    nonlinear = "conv2b" in model.names()
    if nonlinear:
        k["fb"] = model["conv2b"].kernel_size[-1]
    arch = models.Architecture("srcnn_nonlinear" if nonlinear else "srcnn", k)
    out = ImageSR(arch.build(), int(scale), arch)
    out.net.load_state_dict(model.state_dict())
    return out


# ------------------------------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    steps: int
    train_loss: float
    val_psnr: float | None
    history: list[dict]


def psnr_from_mse(mse: float) -> float:
    if math.isnan(mse) or math.isinf(mse):  # a diverged model: fit stops on it, the caller must not crash first
        return float("nan") if math.isnan(mse) else float("-inf")
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def evaluate_patches(model: nn.Sequential, data: PatchDataset, device: str, batch_size: int = 256) -> float:
    """PSNR (peak 1) of the model's output over all validation sub-images."""
    total, n = 0.0, 0
    for i in range(0, len(data), batch_size):
        x = from_numpy(np.ascontiguousarray(data.x[i:i + batch_size])).to(device)
        t = from_numpy(np.ascontiguousarray(data.y[i:i + batch_size])).to(device)
        out = model(x)
        total += mse_loss(out, t) * len(data.x[i:i + batch_size])
        n += len(data.x[i:i + batch_size])
    return psnr_from_mse(total / n)


def _make_optimizer(model, kind: str, lr: float, momentum: float, weight_decay: float):
    params = model.parameters()
    if kind == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {kind!r}")


def save_checkpoint(path, model, opt, step: int, extra: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, t in enumerate(opt.state()):
        tensors[f"optim.{i}"] = np.array(t.numpy(), copy=True)
    meta = {"step": str(step), "optimizer_steps": str(opt.steps), "optimizer_param_steps": json.dumps(opt.param_steps),
            "extra": json.dumps(extra)}
    weights.save(path, tensors, meta)


def load_checkpoint(path, model, opt) -> tuple[int, dict]:
    tensors, meta = weights.load(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = opt.state()
    for i, t in enumerate(state):
        key = f"optim.{i}"
        if key not in tensors:
            raise ValueError(f"{path}: checkpoint lacks optimizer state {key}")
        arr = tensors[key]
        if tuple(arr.shape) != tuple(t.shape):
            raise ValueError(f"{path}: optimizer state {key} has shape {arr.shape}, expected {tuple(t.shape)}")
        t.copy_(arr)
    opt.steps = int(meta["optimizer_steps"])
    # Checkpoints written before the optimizers counted updates per parameter: every parameter had
    # advanced with the step count.
    counts = meta.get("optimizer_param_steps")
    opt.param_steps = json.loads(counts) if counts is not None else [opt.steps] * len(opt.params())
    return int(meta["step"]), json.loads(meta.get("extra", "{}"))


def fit(model: nn.Sequential, train: PatchDataset, *, steps: int | None = None, epochs: float | None = None,
        batch_size: int = 128, optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.9,
        weight_decay: float = 0.0, lr_schedule: str = "constant", lr_mult: dict[str, float] | None = None, trainable: Sequence[str] | None = None,
        val: PatchDataset | None = None, val_every: int | None = None, seed: int = 0, device: str | None = None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 500, resume: bool = True,
        log: str | os.PathLike | None = None, progress: bool = True,
        callback: Callable[[dict], None] | None = None) -> FitResult:
    """Trains `model` (a 'valid' network whose output matches ``train.y``) by MSE.

    steps / epochs: how long (one epoch = len(train) / batch_size steps). optimizer: 'adam' (the modern
    recipe) or 'sgd' (the SRCNN paper's: momentum 0.9, lr 1e-4 with 1e-5 on the last layer via lr_mult).
    lr_mult: {layer name: multiplier}. trainable: the layer names that learn (others are frozen); None keeps
    each layer's own flag. checkpoint: a file written every `checkpoint_every` steps and at the end, from which
    a new call with the same arguments resumes exactly (resume=False starts over). log: a .csv or .json file.
    lr_schedule: 'constant', or 'cosine' (lr * (1 + cos(pi * step / steps)) / 2, down to 0 at the end).
    """
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    if len(train) == 0:
        raise ValueError("empty training set")
    if tuple(train.y.shape[1:]) != tuple(model.output_shape((1,) + tuple(train.x.shape[1:])))[1:]:
        raise ValueError(f"the model maps {train.x.shape[1:]} to "
                         f"{model.output_shape((1,) + tuple(train.x.shape[1:]))[1:]}, but the labels are "
                         f"{train.y.shape[1:]}; build the model with padding='valid' or adjust the label size")
    per_epoch = max(1, len(train) // batch_size)
    if steps is None:
        if epochs is None:
            raise ValueError("give steps or epochs")
        steps = max(1, int(round(epochs * per_epoch)))
    device = device or default_device()
    names = model.names()
    if trainable is not None:
        unknown = set(trainable) - set(names)
        if unknown:
            raise ValueError(f"trainable names unknown layers {sorted(unknown)}; layers: {names}")
        for n in names:
            model[n].trainable = n in trainable
    for n, mult in (lr_mult or {}).items():
        if n not in names:
            raise ValueError(f"lr_mult names an unknown layer {n!r}; layers: {names}")
        for p in model[n].parameters():
            p.lr_mult = float(mult)
    model.to(device)
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    opt.zero_grad()
    start, history = 0, []
    if checkpoint is not None and resume and Path(checkpoint).exists():
        start, extra = load_checkpoint(checkpoint, model, opt)
        history = extra.get("history", [])
    val_every = val_every or per_epoch
    t0, seen, loss_acc, loss_n = time.perf_counter(), 0, 0.0, 0
    val_psnr = history[-1].get("val_psnr") if history else None
    saved = start if checkpoint is not None and start > 0 else None  # the step of the last good checkpoint
    for step in range(start, steps):
        epoch, pos = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(train))
        idx = np.sort(order[pos * batch_size:(pos + 1) * batch_size])
        xb, yb = augment(train.x[idx], train.y[idx], np.random.default_rng([seed, epoch, pos, 1]))
        if lr_schedule == "cosine":
            opt.lr = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        x = from_numpy(xb).to(device)
        t = from_numpy(yb).to(device)
        out = model(x, training=True)
        loss = mse_loss(out, t)
        if not math.isfinite(loss):  # the weights have blown up: stop before they are saved anywhere
            _diverged(f"the loss of step {step + 1} is {loss}", lr, progress, checkpoint, saved)
        model.backward(mse_loss_backward(out, t))
        opt.step()
        loss_acc += loss
        loss_n += 1
        seen += len(idx)
        done = step + 1
        if done % val_every == 0 or done == steps:
            row = {"step": done, "epoch": done / per_epoch, "train_loss": loss_acc / loss_n,
                   "train_psnr": psnr_from_mse(loss_acc / loss_n),
                   "patches_per_s": seen / max(time.perf_counter() - t0, 1e-9)}
            if val is not None:
                val_psnr = evaluate_patches(model, val, device)
                row["val_psnr"] = val_psnr
            history.append(row)
            loss_acc, loss_n = 0.0, 0
            if callback:
                callback(row)
            if log:
                _write_log(log, history)
        if progress and (done % 10 == 0 or done == steps):
            speed = seen / max(time.perf_counter() - t0, 1e-9)
            v = f" val {val_psnr:.2f} dB" if val_psnr is not None else ""
            sys.stderr.write(f"\rstep {done}/{steps} loss {loss:.3e} ({psnr_from_mse(loss):.2f} dB){v} "
                             f"{speed:.0f} patches/s ")
            sys.stderr.flush()
        if done == steps or (checkpoint is not None and done % checkpoint_every == 0):
            if not _finite_weights(model):  # never a checkpoint, nor a result, with NaN weights
                _diverged(f"step {done} left NaN or infinite weights", lr, progress, checkpoint, saved)
        if checkpoint is not None and (done % checkpoint_every == 0 or done == steps):
            save_checkpoint(checkpoint, model, opt, done, {"history": history})
            saved = done
    if progress:
        sys.stderr.write("\n")
    last = history[-1]["train_loss"] if history else float("nan")
    return FitResult(steps, last, val_psnr, history)


class TrainingDiverged(ValueError):
    """Raised by :func:`fit` when the loss or the weights become NaN or infinite (too high a learning rate):
    training stops there, and the checkpoint file keeps the last step whose weights were finite."""


def _finite_weights(model: nn.Sequential) -> bool:
    return all(np.isfinite(np.asarray(v)).all() for v in model.state_dict().values())


def _diverged(what: str, lr: float, progress: bool, checkpoint, saved: int | None):
    if progress:
        sys.stderr.write("\n")  # end the progress line
    kept = "" if checkpoint is None else (f"; {checkpoint} keeps step {saved}" if saved is not None
                                          else f"; no checkpoint was written to {checkpoint}")
    raise TrainingDiverged(f"training diverged: {what} (the learning rate {lr:g} is probably too high){kept}")


def _write_log(path, history: list[dict]) -> None:
    if Path(path).suffix == ".json":
        write_text_atomic(path, json.dumps(history, indent=1))
        return
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=sorted({k for row in history for k in row}))
    w.writeheader()
    w.writerows(history)
    write_text_atomic(path, buf.getvalue())
