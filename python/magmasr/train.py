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

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import image as im
from . import _status, models, nn, optim, weights
from ._checks import as_float, as_int
from ._core import from_numpy
from ._files import write_text_atomic
from ._signals import Terminated, deferred_interrupts  # noqa: F401 - Terminated is part of the API
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
        scale = as_int(scale, "scale", "PatchDataset.from_images", minimum=1)
        patch = as_int(patch, "patch", "PatchDataset.from_images", minimum=1)
        stride = as_int(stride, "stride", "PatchDataset.from_images", minimum=1)
        label = as_int(label, "label", "PatchDataset.from_images")
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
                f3: int = 5, n1: int = 64, n2: int = 32, fb: int = 1, arch: models.Architecture | None = None,
                frozen_lr: float = 0.0, seed: int = 0, init: str = "gaussian") -> Recipe:
    """The poster's training recipes on a 'valid' SRCNN (for patches):

    - ``scratch``: SRCNN trained from the Gaussian initialisation (the self-trained baseline);
    - ``finetune_all``: all parameters fine-tuned from the pretrained weights ("fine-tuned parameters"), in
      the pretrained network's own architecture (a non-linear SRCNN keeps its conv2b);
    - ``transfer_12``: pretrained conv1 and conv2 kept (frozen, or at ``frozen_lr`` times the rate), a new
      reconstruction layer conv3 trained from scratch (a plain SRCNN: a pretrained conv2b is not used);
    - ``scratch_nonlinear``: SRCNN with the added non-linear layer, trained from scratch;
    - ``transfer_13``: pretrained conv1, conv2 (frozen or at ``frozen_lr``) and conv3 (fine-tuned), plus the
      added non-linear layer conv2b trained from scratch (from a plain SRCNN only).

    The architecture: `f1`, `f2`, `f3` (kernel sizes), `n1`, `n2` (filters) and `fb` (conv2b's kernel), or
    `arch`, the pretrained model's :class:`magmasr.models.Architecture` (``ImageSR.arch``), which sets them all.
    The pretrained weights must hold every kept layer with this architecture's shapes (ValueError naming each
    missing or mis-shaped one: a "fine-tune" never starts from random weights). `frozen_lr` (>= 0, transfer
    recipes only): the kept layers' rate multiplier, 0 freezing them.

    The recipe is also set on the model itself: each layer's ``trainable`` flag and its parameters'
    ``lr_mult``, so ``fit(recipe.model, data)`` trains it as the recipe says (passing ``trainable=`` and
    ``lr_mult=`` from the recipe does the same).

    init: how the layers that are not pretrained start: ``gaussian`` (the paper's N(0, 0.001^2), biases 0) or
    ``default`` (the layers' own U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default).
    """
    if init not in ("gaussian", "default"):
        raise ValueError(f"init must be 'gaussian' or 'default', got {init!r}")
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {RECIPES}")
    frozen_lr = as_float(frozen_lr, "frozen_lr", "make_recipe", 0.0)  # a rate multiplier; 0: frozen
    if frozen_lr and name not in ("transfer_12", "transfer_13"):
        raise ValueError(f"make_recipe: frozen_lr is the rate of the layers a transfer recipe keeps; recipe {name!r} "
                         "trains every layer at the full rate (give per-layer rates to fit's lr_mult instead)")
    source_nonlinear = False
    if arch is not None:
        if name in ("scratch", "scratch_nonlinear"):
            raise ValueError(f"make_recipe: arch describes the pretrained weights; recipe {name!r} has none")
        if arch.name not in ("srcnn", "srcnn_nonlinear"):
            raise ValueError(f"make_recipe: the recipes are for SRCNN; the pretrained model is a {arch.name!r}")
        kw = arch.kwargs
        f1, f2, f3 = int(kw.get("f1", 9)), int(kw.get("f2", 5)), int(kw.get("f3", 5))
        n1, n2 = int(kw.get("n1", 64)), int(kw.get("n2", 32))
        source_nonlinear = arch.name == "srcnn_nonlinear"
        if source_nonlinear:
            fb = int(kw.get("fb", 1))
    elif pretrained is not None and name == "finetune_all":
        source_nonlinear = any(k.startswith("conv2b.") for k in pretrained)
        if source_nonlinear and "conv2b.weight" in pretrained:
            fb = int(np.shape(pretrained["conv2b.weight"])[-1])
    if name == "transfer_13" and source_nonlinear:
        raise ValueError("recipe 'transfer_13' adds a new non-linear layer conv2b to a plain SRCNN; the pretrained "
                         "model already has a trained conv2b: fine-tune it whole (finetune_all), or keep its "
                         "conv1 and conv2 with a new conv3 (transfer_12)")
    nonlinear = name in ("scratch_nonlinear", "transfer_13") or (name == "finetune_all" and source_nonlinear)
    build = models.srcnn_nonlinear if nonlinear else models.srcnn
    kw = dict(fb=fb) if nonlinear else {}
    model = build(f1, f2, f3, n1, n2, padding="valid", padding_mode="zeros", seed=seed, **kw)
    if init == "gaussian":
        init_gaussian(model, 1e-3, seed)
    convs = [n for n in model.names() if n.startswith("conv")]
    if name in ("scratch", "scratch_nonlinear"):
        return _set_recipe(Recipe(name, model, convs, {}))
    if pretrained is None:
        raise ValueError(f"recipe {name!r} needs pretrained SRCNN weights")
    keep = convs if name == "finetune_all" else {"transfer_12": ["conv1", "conv2"],
                                                  "transfer_13": ["conv1", "conv2", "conv3"]}[name]
    own = model.state_dict()
    wanted = [k for k in own if k.split(".")[0] in keep]
    problems = [f"{k} missing" for k in wanted if k not in pretrained]
    problems += [f"{k} is {list(np.shape(pretrained[k]))}, this network's is {list(own[k].shape)}"
                 for k in wanted if k in pretrained and tuple(np.shape(pretrained[k])) != tuple(own[k].shape)]
    if name == "finetune_all":
        extra = sorted({k.split(".")[0] for k in pretrained} - set(model.names()))
        if extra:
            problems.append(f"layer(s) {', '.join(extra)} that this network lacks")
    if problems:
        shape = f"{f1}-{f2}-{f3}, n1={n1}, n2={n2}" + (f", conv2b {fb}x{fb}" if nonlinear else "")
        raise ValueError(f"recipe {name!r} keeps {', '.join(keep)} from the pretrained weights, but they do not fit "
                         f"this network ({shape}): {'; '.join(problems)} (give the pretrained model's architecture: "
                         "arch=ImageSR.arch, or f1/f2/f3/n1/n2)")
    model.load_state_dict({k: pretrained[k] for k in wanted}, strict=False)
    if name == "finetune_all":
        return _set_recipe(Recipe(name, model, convs, {}))
    low = ["conv1", "conv2"]
    trainable = [c for c in convs if c not in low or frozen_lr > 0]
    mult = {c: frozen_lr for c in low} if frozen_lr > 0 else {}
    return _set_recipe(Recipe(name, model, trainable, mult))


def _set_recipe(recipe: Recipe) -> Recipe:
    """Sets a recipe's trainable flags and rate multipliers on its model."""
    for n in recipe.model.names():
        recipe.model[n].trainable = n in recipe.trainable or not recipe.model[n].parameters()
        for p in recipe.model[n].parameters():
            p.lr_mult = float(recipe.lr_mult.get(n, 1.0))
    return recipe


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


def save_checkpoint(path, model, opt, step: int, extra: dict, run: dict | None = None,
                    state: dict | None = None) -> None:
    """Writes the model, the optimizer's state and `step`; `extra` (JSON) holds what :func:`fit` needs to go on
    (the log so far and its running sums), `run` the record of what defines the run (:func:`run_record`).
    `state`: the model's ``state_dict()`` when the caller has just taken it (not copied off the device again)."""
    state = model.state_dict() if state is None else state
    tensors = {f"model.{k}": v for k, v in state.items()}
    for i, t in enumerate(opt.state()):
        tensors[f"optim.{i}"] = np.array(t.numpy(), copy=True)
    meta = {"step": str(step), "optimizer_steps": str(opt.steps), "optimizer_param_steps": json.dumps(opt.param_steps),
            "extra": json.dumps(extra)}
    if run is not None:
        meta["run"] = json.dumps(run, sort_keys=True)
    weights.save(path, tensors, meta)


def data_fingerprint(data) -> str:
    """A digest of a dataset's arrays (shapes, dtypes and every byte of ``x`` and ``y``): two datasets with the
    same fingerprint hold the same samples in the same order. BLAKE2b, about 1 GB/s."""
    h = hashlib.blake2b(digest_size=12)
    for a in (data.x, data.y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def describe_model(model: nn.Sequential) -> list:
    """The architecture of a network as a JSON-able list: per layer its name, type, kernel and padding (where it
    has them) and its parameters' shapes."""
    out = []
    for n in model.names():
        layer = model[n]
        entry = [n, getattr(layer, "type_name", type(layer).__name__)]
        for attr in ("kernel_size", "padding", "padding_mode"):
            v = getattr(layer, attr, None)
            if v is not None:
                entry.append(f"{attr}={list(v) if isinstance(v, (list, tuple)) else v}")
        entry.append([list(p.shape) for p in layer.parameters()])
        out.append(entry)
    return out


# The fields of a run record, as the messages name them.
_RUN_FIELDS = {"model": "the architecture", "scale": "the scale", "train_samples": "the number of training samples",
               "train_data": "the training data (fingerprint)", "val_samples": "the number of validation samples",
               "val_data": "the validation data (fingerprint)", "val_every": "val_every", "batch_size": "batch_size",
               "seed": "seed", "optimizer": "the optimizer", "lr": "lr", "momentum": "momentum",
               "weight_decay": "weight_decay", "lr_schedule": "lr_schedule", "trainable": "the trainable layers",
               "lr_mult": "the per-parameter rate multipliers", "steps": "steps"}


def run_record(model, train, *, val, val_every: int, batch_size: int, seed: int, optimizer: str, lr: float,
               momentum: float, weight_decay: float, lr_schedule: str, steps: int) -> dict:
    """What defines a run of :func:`fit` (with the model's trainable flags and rate multipliers as they are
    during it): stored in its checkpoints, and compared on resume."""
    rec = {"model": describe_model(model), "scale": int(getattr(train, "scale", 0)), "train_samples": len(train),
           "train_data": data_fingerprint(train), "val_samples": 0 if val is None else len(val),
           "val_data": None if val is None else data_fingerprint(val), "val_every": val_every,
           "batch_size": batch_size, "seed": seed, "optimizer": optimizer, "lr": lr,
           "momentum": momentum if optimizer == "sgd" else None, "weight_decay": weight_decay,
           "lr_schedule": lr_schedule, "steps": steps,
           "trainable": [n for n in model.names() if model[n].parameters() and model[n].trainable],
           "lr_mult": {n: p.lr_mult for n, p in model.named_parameters() if p.lr_mult != 1.0}}
    return json.loads(json.dumps(rec, sort_keys=True))  # as it reads back from a checkpoint


def _show(v) -> str:
    if isinstance(v, str) and len(v) > 40:
        return v[:37] + "..."
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _run_differences(old: dict, new: dict) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new), key=lambda k: list(_RUN_FIELDS).index(k) if k in _RUN_FIELDS else 99):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        what = _RUN_FIELDS.get(key, key)
        if key == "steps":
            if new.get("lr_schedule") == "constant" and old.get("lr_schedule") == "constant":
                continue  # a constant rate does not depend on the total: the run can be extended exactly
            sched = old.get("lr_schedule") if old.get("lr_schedule") != "constant" else new.get("lr_schedule")
            diffs.append(f"steps: {a} in the checkpoint, {b} now (the {sched} schedule depends on the total number "
                         "of steps, so only a run with a constant rate can be extended)")
        elif key == "model" and isinstance(a, list) and isinstance(b, list):
            da = [e for e in a if e not in b]
            db = [e for e in b if e not in a]
            diffs.append(f"the architecture: {_show(da)} in the checkpoint, {_show(db)} now")
        else:
            diffs.append(f"{what}: {_show(a)} in the checkpoint, {_show(b)} now")
    return diffs


def read_checkpoint(path) -> tuple[dict, dict]:
    """The tensors and metadata of a checkpoint file; ValueError "<path>: not a checkpoint ..." for a file that
    cannot be read or holds no training state (a model file)."""
    try:
        tensors, meta = weights.load(path)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a checkpoint (cannot read it: {e})") from None
    if "step" not in meta or "optimizer_steps" not in meta or not any(k.startswith("model.") for k in tensors):
        raise ValueError(f"{path}: not a checkpoint of this run (no training state in it: a model file? a checkpoint "
                         "is the file that fit(checkpoint=...) and --checkpoint write)")
    return tensors, meta


def load_checkpoint(path, model, opt, run: dict | None = None) -> tuple[int, dict]:
    """Restores a checkpoint of :func:`save_checkpoint` into `model` and `opt`; returns (step, extra).

    With `run` (:func:`run_record` of the run that resumes), the checkpoint must be of that run: ValueError
    naming every difference (the data, batch size, seed, optimizer and its settings, schedule, trainable layers,
    rate multipliers...), or if the checkpoint is already past ``run['steps']``. The number of steps may differ
    only with a constant rate (the run is extended, or stopped earlier, exactly). A checkpoint written before
    runs were recorded is accepted with a warning. Nothing is changed before every check has passed.

    Raises ValueError "<path>: not a checkpoint of this run (...)" for a file that is not a checkpoint (a model
    file), or whose model or optimizer state does not fit `model` and `opt`."""
    from .weights import StateDictError, check_state

    tensors, meta = read_checkpoint(path)
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    step = int(meta["step"])
    if run is not None:
        if "run" in meta:
            diffs = _run_differences(json.loads(meta["run"]), run)
            if diffs:
                raise ValueError(f"{path}: not a checkpoint of this run ({'; '.join(diffs)}); pass another checkpoint "
                                 "file, or remove it (resume=False) to start over")
        else:
            warnings.warn(f"{path}: a checkpoint from before magmasr recorded what defines a run; resuming without "
                          "checking that its data, batch size, seed and optimizer are this run's", stacklevel=3)
        if step > run["steps"]:
            raise ValueError(f"{path}: the checkpoint is at step {step}, past this run's {run['steps']} steps; pass "
                             f"steps >= {step} (with a constant rate) or another checkpoint file")
    try:
        check_state({k: tuple(p.shape) for k, p in model.named_parameters()}, state, strict=True)
    except (StateDictError, ValueError) as e:
        raise ValueError(f"{path}: not a checkpoint of this run (its model does not fit this network: {e})") from None
    ostate = opt.state()
    n_saved = sum(1 for k in tensors if k.startswith("optim."))
    kind = type(opt).__name__
    if n_saved != len(ostate):
        raise ValueError(f"{path}: not a checkpoint of this run (its optimizer state has {n_saved} tensors, this "
                         f"{kind} optimizer {len(ostate)}: a checkpoint of another optimizer or momentum setting?)")
    for i, t in enumerate(ostate):
        arr = tensors.get(f"optim.{i}")
        if arr is None or tuple(arr.shape) != tuple(t.shape):
            got = "missing" if arr is None else f"of shape {tuple(arr.shape)}"
            raise ValueError(f"{path}: not a checkpoint of this run (optimizer state optim.{i} is {got}, this {kind} "
                             f"optimizer needs {tuple(t.shape)})")
    model.load_state_dict(state)
    for i, t in enumerate(ostate):
        t.copy_(tensors[f"optim.{i}"])
    opt.steps = int(meta["optimizer_steps"])
    # Checkpoints written before the optimizers counted updates per parameter: every parameter had
    # advanced with the step count.
    counts = meta.get("optimizer_param_steps")
    opt.param_steps = json.loads(counts) if counts is not None else [opt.steps] * len(opt.params())
    return step, json.loads(meta.get("extra", "{}"))


# The columns of the training log, in this order (then any others, alphabetically).
LOG_COLUMNS = ("step", "epoch", "train_loss", "train_psnr", "val_psnr", "patches_per_s")


def fit(model: nn.Sequential, train: PatchDataset, *, steps: int | None = None, epochs: float | None = None,
        batch_size: int = 128, optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.9,
        weight_decay: float = 0.0, lr_schedule: str = "constant", lr_mult: dict[str, float] | None = None, trainable: Sequence[str] | None = None,
        val: PatchDataset | None = None, val_every: int | None = None, seed: int = 0, device: str | None = None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 500, resume: bool = True,
        log: str | os.PathLike | None = None, progress: bool = True,
        callback: Callable[[dict], None] | None = None, algo: str | None = None) -> FitResult:
    """Trains `model` (a 'valid' network whose output matches ``train.y``) by MSE.

    steps / epochs: how long, one of them (steps an integer >= 1; epochs > 0, one epoch = len(train) //
    batch_size steps, at least one). optimizer: 'adam' (the modern recipe) or 'sgd' (the SRCNN paper's:
    momentum 0.9, lr 1e-4 with 1e-5 on the last layer via lr_mult). lr_mult: {layer name: multiplier >= 0},
    set on the layer's parameters (others keep their own ``lr_mult``). trainable: the layer names that learn
    (others are frozen); None keeps each layer's own flag. The flags and multipliers that fit changes are
    restored when it returns (or raises): the model keeps none of this call's settings.

    val / val_every: a non-empty validation set, scored (and a row logged) every `val_every` steps (default:
    once an epoch) and at the end. checkpoint: a file written every `checkpoint_every` steps and at the end,
    from which a new call with the same arguments resumes exactly, log included (resume=False starts over).
    The checkpoint records what defines the run (architecture, scale, a fingerprint of the data, batch size,
    seed, optimizer and its settings, schedule, trainable layers, rate multipliers, steps): resuming with any
    of them different is a ValueError naming each; `steps` may change only with a constant rate (the run is
    extended exactly), and a checkpoint past `steps` is refused. A checkpoint from before this record is
    accepted with a warning. With a checkpoint (in the main thread), a Ctrl-C or SIGTERM lets the step under
    way finish, saves it to the checkpoint and then raises KeyboardInterrupt (SIGTERM: its subclass
    ``magmasr.train.Terminated``), so that nothing done is lost; a second one stops at once.

    log: a .csv or .json file, one row per validation: step, epoch, train_loss (the mean loss of the steps since
    the previous row), train_psnr, val_psnr (with `val`), patches_per_s (of this process), in this order.
    lr_schedule: 'constant', or 'cosine' (lr * (1 + cos(pi * step / steps)) / 2, down to 0 at the end).

    algo: the convolution strategy of every layer during the call (restored after). None: on the CPU
    'winograd', whose forward, backward-data and backward-weight passes of the 3x3 and 5x5 layers with 8 or more
    channels each way use Winograd's minimal filtering (an SRCNN 9-5-5 step 1.5x faster; the same gradients to a
    few 1e-6 of their scale), elsewhere the layers' own ('auto'). Like the device, it changes only the rounding: a
    checkpoint resumes under another strategy, no longer bit for bit.
    """
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if len(train) == 0:
        raise ValueError("empty training set")
    if val is not None and len(val) == 0:
        raise ValueError("fit: the validation set is empty; pass val=None to train without one")
    batch_size = as_int(batch_size, "batch_size", "fit", minimum=1)
    checkpoint_every = as_int(checkpoint_every, "checkpoint_every", "fit", minimum=1)
    seed = as_int(seed, "seed", "fit", minimum=0)
    if val_every is not None:
        val_every = as_int(val_every, "val_every", "fit", minimum=1)
    lr = as_float(lr, "lr", "fit", 0.0, exclusive=True)
    momentum = as_float(momentum, "momentum", "fit", 0.0)
    weight_decay = as_float(weight_decay, "weight_decay", "fit", 0.0)
    if tuple(train.y.shape[1:]) != tuple(model.output_shape((1,) + tuple(train.x.shape[1:])))[1:]:
        raise ValueError(f"the model maps {train.x.shape[1:]} to "
                         f"{model.output_shape((1,) + tuple(train.x.shape[1:]))[1:]}, but the labels are "
                         f"{train.y.shape[1:]}; build the model with padding='valid' or adjust the label size")
    per_epoch = max(1, len(train) // batch_size)
    if steps is not None and epochs is not None:
        raise ValueError("fit: give steps or epochs, not both")
    if steps is None:
        if epochs is None:
            raise ValueError("give steps or epochs")
        e = as_float(epochs, "epochs", "fit", 0.0, exclusive=True)
        steps = max(1, int(round(e * per_epoch)))
    steps = as_int(steps, "steps", "fit", minimum=1)
    device = device or default_device()
    names = model.names()
    if trainable is not None:
        if isinstance(trainable, str):
            raise TypeError(f"fit: trainable is a list of layer names, got the string {trainable!r}")
        unknown = set(trainable) - set(names)
        if unknown:
            raise ValueError(f"trainable names unknown layers {sorted(unknown)}; layers: {names}")
    for n, mult in (lr_mult or {}).items():
        if n not in names:
            raise ValueError(f"lr_mult names an unknown layer {n!r}; layers: {names}")
        as_float(mult, f"lr_mult[{n!r}]", "fit", 0.0)
    if algo is None:
        algo = "winograd" if device == "cpu" else None
    elif algo not in nn.CONV_ALGOS:
        raise ValueError(f"fit: algo must be one of {', '.join(nn.CONV_ALGOS)}, got {algo!r}")
    # What this call changes on the model, restored when it returns.
    flags = {n: model[n].trainable for n in names}
    mults = [(p, p.lr_mult) for p in model.parameters()]
    convs = [model[n] for n in names if hasattr(model[n], "algo")]
    algos = [c.algo for c in convs]
    try:
        if algo is not None:
            for c in convs:
                c.algo = algo
        if trainable is not None:
            for n in names:
                model[n].trainable = n in trainable
        for n, mult in (lr_mult or {}).items():
            for p in model[n].parameters():
                p.lr_mult = float(mult)
        return _fit(model, train, steps, per_epoch, batch_size, optimizer, lr, momentum, weight_decay, lr_schedule,
                    val, val_every or per_epoch, seed, device, checkpoint, checkpoint_every, resume, log, progress,
                    callback)
    finally:
        for n, flag in flags.items():
            model[n].trainable = flag
        for p, m in mults:
            p.lr_mult = m
        for c, a in zip(convs, algos):
            c.algo = a


def _fit(model, train, steps, per_epoch, batch_size, optimizer, lr, momentum, weight_decay, lr_schedule, val,
         val_every, seed, device, checkpoint, checkpoint_every, resume, log, progress, callback) -> FitResult:
    model.to(device)
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    opt.zero_grad()
    start, history = 0, []
    loss_acc, loss_n = 0.0, 0  # the running sums of the current log row
    run = None
    if checkpoint is not None:
        run = run_record(model, train, val=val, val_every=val_every, batch_size=batch_size, seed=seed,
                         optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         lr_schedule=lr_schedule, steps=steps)
        if resume and Path(checkpoint).exists():
            start, extra = load_checkpoint(checkpoint, model, opt, run)
            history = extra.get("history", [])
            loss_acc, loss_n = float(extra.get("loss_sum", 0.0)), int(extra.get("loss_count", 0))
    t0, seen = time.perf_counter(), 0
    val_psnr = history[-1].get("val_psnr") if history else None
    saved = start if checkpoint is not None and start > 0 else None  # the step of the last good checkpoint
    line = _status.STDERR if progress else _status.QUIET
    # With a checkpoint, a Ctrl-C or SIGTERM ends the step under way and saves it before stopping.
    guard = contextlib.nullcontext() if checkpoint is None else deferred_interrupts(
        lambda: line.say(f"stopping after this step, to save it in {checkpoint} (Ctrl-C again to stop at once)"))
    try:
        with guard as pending:
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
                    _diverged(f"the loss of step {step + 1} is {loss}", lr, line, checkpoint, saved)
                model.backward(mse_loss_backward(out, t))
                opt.step()
                loss_acc += loss
                loss_n += 1
                seen += len(idx)
                done = step + 1
                if done % val_every == 0 or done == steps:
                    row = {"step": done, "epoch": done / per_epoch, "train_loss": loss_acc / loss_n,
                           "train_psnr": psnr_from_mse(loss_acc / loss_n)}
                    if val is not None:
                        val_psnr = evaluate_patches(model, val, device)
                        row["val_psnr"] = val_psnr
                    row["patches_per_s"] = seen / max(time.perf_counter() - t0, 1e-9)
                    history.append(row)
                    loss_acc, loss_n = 0.0, 0
                    if callback:
                        callback(row)
                    if log:
                        _write_log(log, history)
                if progress and (done % 10 == 0 or done == steps):
                    elapsed = time.perf_counter() - t0
                    speed = seen / max(elapsed, 1e-9)
                    v = f" val {val_psnr:.2f} dB" if val_psnr is not None else ""
                    # (the pace of this run's steps: a resumed run does not count the steps it skipped)
                    line.update(f"step {done}/{steps} loss {loss:.3e} ({psnr_from_mse(loss):.2f} dB){v} "
                                f"{speed:.0f} patches/s{_status.time_left(done - start, steps - start, elapsed)}")
                stop = bool(pending) and done < steps  # read once: a signal from here on waits for the next step
                if done == steps or (checkpoint is not None and (done % checkpoint_every == 0 or stop)):
                    state = model.state_dict()  # one copy (off the device) for the check and the checkpoint
                    if not _finite(state):  # never a checkpoint, nor a result, with NaN weights
                        _diverged(f"step {done} left NaN or infinite weights", lr, line, checkpoint, saved)
                    if checkpoint is not None:
                        save_checkpoint(checkpoint, model, opt, done,
                                        {"history": history, "loss_sum": loss_acc, "loss_count": loss_n}, run, state)
                        saved = done
                if stop:
                    line.say(f"stopped after step {done}/{steps}; {checkpoint} keeps it, and the same call (or "
                             "command) resumes from there")
                    pending.raise_if_any()
    finally:
        line.end()  # what follows starts on a line of its own
    last = history[-1]["train_loss"] if history else float("nan")
    return FitResult(steps, last, val_psnr, history)


class TrainingDiverged(ValueError):
    """Raised by :func:`fit` when the loss or the weights become NaN or infinite (too high a learning rate):
    training stops there, and the checkpoint file keeps the last step whose weights were finite."""


def _finite(state: dict) -> bool:
    return all(np.isfinite(np.asarray(v)).all() for v in state.values())


def _diverged(what: str, lr: float, line: _status.StatusLine, checkpoint, saved: int | None):
    line.end()
    kept = "" if checkpoint is None else (f"; {checkpoint} keeps step {saved}" if saved is not None
                                          else f"; no checkpoint was written to {checkpoint}")
    raise TrainingDiverged(f"training diverged: {what} (the learning rate {lr:g} is probably too high){kept}")


def _write_log(path, history: list[dict]) -> None:
    if Path(path).suffix == ".json":
        write_text_atomic(path, json.dumps(history, indent=1))
        return
    buf = io.StringIO(newline="")
    keys = {k for row in history for k in row}
    w = csv.DictWriter(buf, fieldnames=[k for k in LOG_COLUMNS if k in keys] + sorted(keys - set(LOG_COLUMNS)))
    w.writeheader()
    w.writerows(history)
    write_text_atomic(path, buf.getvalue())
