"""Super-resolution pipelines: a network plus the pre- and post-processing of its authors' protocol.

:class:`ImageSR` wraps SRCNN-style networks: the image's MATLAB Y channel (/ 255) is upscaled with
MATLAB-compatible bicubic, refined by the network, and recombined with bicubic-upscaled CbCr.
:func:`evaluate_image_sr` runs the SRCNN authors' evaluation protocol on a folder of ground-truth images.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from . import _core
from . import image as im
from . import metrics, models, nn, weights
from ._checks import as_int
from ._core import cuda_available, from_numpy

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")  # read and written
#: Pictures read: those, and GIF (a palette of 256 colours: read, but an upscaled picture is not written as one).
READ_SUFFIXES = IMAGE_SUFFIXES + (".gif",)

# The weights magmasr trained and ships: ``{kind}_x{scale}.safetensors``, kind one of "srcnn" (SRCNN 9-5-5),
# "srcnn_915" / "srcnn_935" (the other presets), "3dsrnet" (the published 3DSRnet), "3dsrnet_poster".
SHIPPED = Path(__file__).resolve().parent / "weights_data"


def shipped_weights(kind: str, scale: int) -> Path | None:
    """The weight file shipped in the package for this kind of model and scale, or None."""
    path = SHIPPED / f"{kind}_x{int(scale)}.safetensors"
    return path if path.is_file() else None


def shipped_models() -> list[dict]:
    """Every weight file that ships in the package, with what its metadata says: ``kind``, ``scale``,
    ``architecture`` (builder and arguments), ``path``, and the figures measured when it was shipped
    (``set5_psnr`` / ``set14_psnr`` for SRCNN, ``vid4_calendar_psnr`` / ``vid4_city_psnr`` for 3DSRnet),
    ``date``, ``trained_on`` and ``train_time`` where recorded. Sorted by kind, then scale."""
    from safetensors import safe_open

    rows = []
    for path in SHIPPED.glob("*_x[0-9].safetensors"):
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        kind, _, scale = path.stem.rpartition("_x")
        row = {"kind": kind, "scale": int(scale), "path": path,
               "architecture": f"{meta.get('architecture', '?')}({meta.get('arch_kwargs', '')})"}
        for key in ("set5_psnr", "set14_psnr", "vid4_calendar_psnr", "vid4_city_psnr"):
            if meta.get(key):
                row[key] = float(meta[key])
        row.update({k: meta[k] for k in ("date", "trained_on", "train_time") if meta.get(k)})
        rows.append(row)
    return sorted(rows, key=lambda r: (r["kind"], r["scale"]))


def cuts(shape: tuple[int, ...], tile: int | None) -> bool:
    """Whether `tile` cuts an array of this shape (its last two axes) into more than one block."""
    return tile is not None and max(shape[-2:]) > tile


def block_start(p: int, halo: int, align: int = 1) -> int:
    """Where a block whose output starts at `p` starts reading: `halo` before it, moved back onto a multiple of
    `align`, and not before 0."""
    return max((p - halo) // align * align, 0)


def tiled(fn, x: np.ndarray, tile: int | None, halo: int, scale: int = 1, progress=None,
          align: int = 1) -> np.ndarray:
    """``fn`` (an array [..., h, w] -> an array [scale * h, scale * w]) over `x` in tile x tile blocks of its
    last two axes, each block read with `halo` pixels of real input around it and only its own part of the
    output kept. When every output pixel depends on the input within `halo` pixels (the receptive radius), the
    result is that of ``fn(x)``, while ``fn`` only ever sees (tile + 2 halo)^2 pixels. `tile` None, or at least
    the input's size: ``fn(x)``. ``progress(done, total)``, if given, is called after each tile. With `align`,
    every block starts on a multiple of it (a Winograd layer's grid of output tiles: :meth:`SRModel._tile_grid`)."""
    h, w = x.shape[-2:]
    if tile is not None:
        tile = as_int(tile, "tile", "upscale", minimum=1)
    if not cuts(x.shape, tile):
        out = fn(x)
        if progress is not None:
            progress(1, 1)
        return out
    out = None
    total, done = -(-h // tile) * -(-w // tile), 0
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            r0, c0 = block_start(r, halo, align), block_start(c, halo, align)
            block = fn(x[..., r0:min(r + tile + halo, h), c0:min(c + tile + halo, w)])
            if out is None:
                out = np.empty((scale * h, scale * w), block.dtype)
            th, tw = min(tile, h - r), min(tile, w - c)
            out[scale * r:scale * (r + th), scale * c:scale * (c + tw)] = \
                block[scale * (r - r0):scale * (r - r0 + th), scale * (c - c0):scale * (c - c0 + tw)]
            done += 1
            if progress is not None:
                progress(done, total)
    return out


def default_device() -> str:
    return "cuda" if cuda_available() else "cpu"


@dataclass
class SRModel:
    """A network with the scale it was trained for, its architecture (builder name and arguments, stored in
    weight files so that :meth:`load` rebuilds it), free-form metadata strings, and its device."""

    net: object
    scale: int
    arch: models.Architecture
    metadata: dict = field(default_factory=dict)
    device: str = "cpu"
    #: Self-ensemble at inference (off by default): the network runs on the 8 rotations and flips of its input
    #: and the 8 outputs, each turned back, are averaged (Timofte et al. 2016, "Seven ways to improve
    #: example-based single image super resolution"; EDSR). 8 times the work for a better picture: +0.13 dB on
    #: Set5 x4 with our SRCNN 9-5-5 (docs/results). Tiles stay exact. Not part of the papers' protocols.
    ensemble: bool = False

    @classmethod
    def load(cls, path: str | os.PathLike):
        """A model saved by :meth:`save` (safetensors with the architecture in its metadata)."""
        state, meta = weights.load(path)
        broken = sorted(k for k, v in state.items() if not np.all(np.isfinite(np.asarray(v))))
        if broken:
            raise ValueError(f"{path}: the weights {', '.join(broken)} hold NaN or infinite values (a diverged "
                             f"training run?); the network would output garbage")
        missing = [k for k in ("architecture", "scale") if k not in meta]
        if missing:
            raise ValueError(f"{path}: not a magmasr model file (its metadata has no {' or '.join(missing)})")
        name = meta["architecture"]
        if name not in models.ARCHITECTURES:
            raise ValueError(f"{path}: unknown architecture {name!r} (this version of magmasr knows "
                             f"{', '.join(sorted(models.ARCHITECTURES))})")
        try:
            kwargs = _parse_kwargs(meta.get("arch_kwargs", ""))
            if not (meta["scale"].isdigit() and int(meta["scale"]) >= 1):
                raise ValueError(f"scale must be a positive integer, got {meta['scale']!r}")
            scale = int(meta["scale"])
            arch = models.Architecture(name, kwargs)
            model = cls(arch.build(), scale, arch, dict(meta))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None
        model.net.load_state_dict(state)
        return model

    def save(self, path: str | os.PathLike, **metadata: str) -> None:
        """Writes the weights and metadata (atomically) as safetensors."""
        meta = {**{k: str(v) for k, v in self.metadata.items()}, **{k: str(v) for k, v in metadata.items()}}
        meta.update(architecture=self.arch.name, arch_kwargs=_format_kwargs(self.arch.kwargs), scale=str(self.scale))
        weights.save(path, self.net.state_dict(), meta)

    def to(self, device: str):
        self.net.to(device)
        self.device = device
        return self

    CONV_ALGOS = nn.CONV_ALGOS

    def _inference_algo(self, algo: str | None, tiled: bool) -> str | None:
        """The convolution strategy to pin for one inference: `algo` when given; else, for a picture cut into
        tiles on a GPU, 'auto_direct' (the fastest per shape of the direct kernels). They all sum each output
        pixel's products in one fixed order (input channel, then filter taps) whatever the block's shape or
        position, so every tile size gives the same pixels; the 'auto' selector may pick cuBLAS for some shapes
        and not others, and cuBLAS may split its sums differently for each shape. None: the layers' own setting
        ('auto' unless changed). 'winograd' (the CPU's Winograd layers; on a GPU 'auto_direct'): tiles are cut
        on its grid (:meth:`_tile_grid`); not with :attr:`ensemble`, whose flipped blocks would put the grid
        elsewhere."""
        if algo is None:
            return "auto_direct" if tiled and self.device != "cpu" else None
        if algo not in self.CONV_ALGOS:
            raise ValueError(f"algo must be one of {', '.join(self.CONV_ALGOS)}, got {algo!r}")
        if algo == "winograd" and self.ensemble:
            raise ValueError("algo='winograd' does not go with the self-ensemble (the flipped pictures would put "
                             "Winograd's tile grid elsewhere, and tiles would no longer be exact); use 'auto'")
        return algo

    def _upscale_algo(self, algo: str | None) -> str | None:
        """The strategy of the upscaling pipelines (pictures, video streams): `algo`, or when not given on the CPU
        'winograd' (about twice as fast there; not with :attr:`ensemble`). refine, residual and the evaluation
        protocols keep the direct sums."""
        return "winograd" if algo is None and self.device == "cpu" and not self.ensemble else algo

    def _tile_grid(self, algo: str | None) -> tuple[int, int]:
        """(align, extra) for tiled inference with `algo`: blocks start on multiples of `align` and read `extra`
        more pixels of halo. With 'winograd' on the CPU, each layer that runs Winograd's F(m x m, r x r) (2-D, or
        3-D per depth tap: :func:`magmasr._core._winograd_tile`) computes its outputs m x m at a time from the
        tile's whole input window, so an output's bits depend on where the tile grid falls and on up to m - 1
        more input pixels: the grid (the lcm of the m) anchored at the picture's corner, m - 1 more halo per such
        layer. Else (1, 0)."""
        if algo != "winograd" or self.device != "cpu":
            return 1, 0
        align, extra = 1, 0
        for c in self.convolutions():
            k = c.kernel_size
            m = _core._winograd_tile(k[-1], c.in_channels, c.out_channels) if k[-2] == k[-1] else 0
            if m:
                align, extra = math.lcm(align, m), extra + m - 1
        return align, extra

    def _run(self, x: np.ndarray, algo: str | None = None) -> np.ndarray:
        """The network on `x` ([N, C, ...], float32) on the model's device, back as a NumPy array; `algo` pins
        the convolution strategy of every layer for this call only (CUDA; on the CPU only 'winograd' changes
        anything)."""
        t = from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        if algo is None:
            return np.asarray(self.net(t).numpy())
        convs = self.convolutions()
        saved = [c.algo for c in convs]
        try:
            for c in convs:
                c.algo = algo
            return np.asarray(self.net(t).numpy())
        finally:
            for c, a in zip(convs, saved):
                c.algo = a

    def _network(self, x: np.ndarray, algo: str | None = None) -> np.ndarray:
        """The network on one input ([..., h, w], batch and channel axes added) as float32: its single output
        channel [H, W], float32 (float64 with :attr:`ensemble`)."""
        return self._ensembled(lambda b: self._run(b[None, None], algo)[0, 0], np.asarray(x, dtype=np.float32))

    def _ensembled(self, fn, x: np.ndarray) -> np.ndarray:
        """``fn(x)`` (an array [..., h, w] -> [H, W]), or with :attr:`ensemble` the mean of ``T^-1 fn(T x)`` over
        the 8 rotations and flips T of the last two axes, summed in float64 in a fixed order."""
        if not self.ensemble:
            return fn(x)
        acc = None
        for k in range(4):
            for flip in (False, True):
                t = np.rot90(x, k, axes=(-2, -1))
                o = fn(np.ascontiguousarray(t[..., ::-1] if flip else t))
                o = np.rot90(o[..., ::-1] if flip else o, -k, axes=(-2, -1)).astype(np.float64)
                acc = o if acc is None else acc + o
        return acc / 8.0

    def convolutions(self) -> list:
        """The network's convolution layers, in order (each with its `algo` and `kernel_size`)."""
        return [layer for layer in (self.net[n] for n in self.net.names()) if hasattr(layer, "algo")]

    @property
    def receptive_radius(self) -> int:
        """How far (in input pixels, in space) an output pixel sees: the sum of the convolutions' kernel radii."""
        return sum((c.kernel_size[-1] - 1) // 2 for c in self.convolutions())

    @classmethod
    def _shipped(cls, kind: str, scale: int, what: str, device: str | None):
        """The shipped ``{kind}_x{scale}`` file loaded on `device` (default: the GPU when usable); a ValueError
        listing the files of the same family that do ship when it does not."""
        path = shipped_weights(kind, scale)
        if path is None:
            family = kind.split("_")[0]
            have = [f"{r['kind']} x{r['scale']}" for r in shipped_models() if r["kind"].split("_")[0] == family]
            raise ValueError(f"no {what} x{scale} ships with this version of magmasr (shipped: "
                             f"{', '.join(have) or 'none'})")
        return cls.load(path).to(device or default_device())


@dataclass
class ImageSR(SRModel):
    """An SRCNN-family network with 'same' output (replicate borders) applied to bicubic-upscaled Y / 255."""

    ARCHITECTURES = ("srcnn", "srcnn_nonlinear")

    def __post_init__(self) -> None:
        if self.arch.name not in self.ARCHITECTURES:
            hint = " (a 3DSRnet is a video model: magmasr.video.VideoSR)" if self.arch.name.startswith("tdsrnet") else ""
            raise ValueError(f"an image model is an SRCNN ({' or '.join(self.ARCHITECTURES)}), "
                             f"got {self.arch.name!r}{hint}")

    # ---------------------------------------------------------------------------------------- building
    @staticmethod
    def shipped_kind(preset: str = "9-5-5") -> str:
        """The name an SRCNN preset's weights ship under: 'srcnn' for 9-5-5, 'srcnn_915' for 9-1-5, ..."""
        if preset not in models.SRCNN_PRESETS:
            raise ValueError(f"unknown SRCNN preset {preset!r}; expected one of {sorted(models.SRCNN_PRESETS)}")
        return "srcnn" if preset == "9-5-5" else "srcnn_" + preset.replace("-", "")

    @property
    def preset(self) -> str | None:
        """'9-1-5', '9-3-5' or '9-5-5' when the network is that SRCNN preset with the paper's 64 and 32
        filters; None for any other network (other widths, the added non-linear layer)."""
        kw = {"f1": 9, "f2": 5, "f3": 5, "n1": 64, "n2": 32, **self.arch.kwargs}
        if self.arch.name != "srcnn" or set(kw) != {"f1", "f2", "f3", "n1", "n2"} or (kw["n1"], kw["n2"]) != (64, 32):
            return None
        return next((name for name, f in models.SRCNN_PRESETS.items() if f == (kw["f1"], kw["f2"], kw["f3"])), None)

    @property
    def kind(self) -> str:
        """The name the model ships under (``{kind}_x{scale}``, see :meth:`shipped_kind`); only the presets ship."""
        if self.preset is None:
            raise ValueError(f"only the SRCNN presets {sorted(models.SRCNN_PRESETS)} with 64 and 32 filters ship; "
                             f"this is {self.arch.name}({_format_kwargs(self.arch.kwargs)})")
        return self.shipped_kind(self.preset)

    @classmethod
    def pretrained(cls, scale: int = 3, preset: str = "9-5-5", device: str | None = None) -> "ImageSR":
        """magmasr's own SRCNN for this scale and preset, as shipped in the package (see :func:`shipped_models`
        and docs/training.md for how each was trained), on `device` (default: the GPU when usable)."""
        return cls._shipped(cls.shipped_kind(preset), scale, f"SRCNN {preset}", device)

    @classmethod
    def srcnn(cls, preset: str = "9-5-5", scale: int = 3, **kwargs) -> "ImageSR":
        if preset not in models.SRCNN_PRESETS:
            raise ValueError(f"unknown SRCNN preset {preset!r}; expected one of {sorted(models.SRCNN_PRESETS)}")
        f1, f2, f3 = models.SRCNN_PRESETS[preset]
        arch = models.Architecture("srcnn", dict(f1=f1, f2=f2, f3=f3, **kwargs))
        return cls(arch.build(), int(scale), arch)

    @classmethod
    def from_srcnn_mat(cls, path: str | os.PathLike, scale: int) -> "ImageSR":
        """The original authors' MATLAB model (``x{scale}.mat``), for evaluation and fine-tuning."""
        state = weights.import_srcnn_mat(path)
        n1, _, f1, _ = state["conv1.weight"].shape
        n2, _, f2, _ = state["conv2.weight"].shape
        f3 = state["conv3.weight"].shape[-1]
        arch = models.Architecture("srcnn", dict(f1=f1, f2=f2, f3=f3, n1=n1, n2=n2))
        model = cls(arch.build(), int(scale), arch, {"source": f"imported from {Path(path).name}"})
        model.net.load_state_dict(state)
        return model

    # ---------------------------------------------------------------------------------------- inference
    def refine(self, y: np.ndarray, tile: int | None = None, progress=None, algo: str | None = None) -> np.ndarray:
        """The network on one bicubic-upscaled channel (H x W float, values / 255), float32 out (float64 with
        :attr:`ensemble`).

        With `tile`, the image is processed in tile x tile blocks, each with a halo of real pixels as wide as
        the receptive radius, so that the result equals whole-image inference while memory stays bounded;
        ``progress(done, total)`` is called after each tile. `algo`: see :meth:`upscale_tiles`."""
        y = np.asarray(y, dtype=np.float32)
        algo = self._inference_algo(algo, cuts(y.shape, tile))
        align, extra = self._tile_grid(algo)
        return tiled(lambda block: self._network(block, algo), y, tile, self.receptive_radius + extra,
                     progress=progress, align=align)

    def upscale(self, img: np.ndarray, scale: int | None = None, tile: int | None = None,
                progress=None, algo: str | None = None) -> np.ndarray:
        """Upscales a gray (H x W) or RGB (H x W x 3) picture, or either with an alpha channel last (H x W x 2 or
        4), uint8, uint16 or float in [0, 1]; returns the same dtype and channels.

        Y goes through the network, CbCr and the alpha channel through bicubic (MATLAB-compatible) interpolation.
        The colour stored under fully transparent pixels (often black) is first replaced by colour spread from the
        visible pixels (each, layer by layer outwards, the mean of its 8-neighbours already filled), so that edges
        next to transparency get no dark fringes; opaque areas away from it are unchanged. With `tile`, the whole
        pipeline runs on tile x tile output pixels at a time (see :meth:`upscale_tiles`): memory beyond the input
        and the output stays bounded, and the result is bit for bit that of the whole picture (on a GPU: of the
        whole picture with ``algo='direct'``; see :meth:`upscale_tiles`).
        ``progress(done, total)`` is called after each tile."""
        img, scale = self._check_picture(img, scale)
        out = np.empty((img.shape[0] * scale, img.shape[1] * scale) + img.shape[2:], img.dtype)
        for (r, c), block in self.upscale_tiles(img, scale, tile, progress, algo):
            out[r:r + block.shape[0], c:c + block.shape[1]] = block
        return out

    def upscale_tiles(self, img: np.ndarray, scale: int | None = None, tile: int | None = None, progress=None,
                      algo: str | None = None):
        """The upscaled picture of :meth:`upscale`, tile by tile in row-major order, as ``((row, col), block)``
        with (row, col) the block's top-left output pixel; blocks are tile x tile (less at the right and bottom
        edges), one block for the whole picture when `tile` is None.

        Each block is computed from only the input it needs: the bicubic upscale of the block and of a halo as
        wide as the network's receptive radius (:class:`magmasr.image.imresize_region`, the same sums as for the
        whole picture), the network on that (replicate padding only where the halo meets the picture's edge,
        as for the whole picture), the halo dropped, colour converted back. So the blocks are bit for bit the
        whole picture's, while the working set is that of one block: pictures whose upscaled version would not
        fit in memory can be streamed to a file block by block.

        `algo` pins the GPU's convolution strategy ('auto', 'direct', 'direct_async', 'implicit_gemm', 'gemm',
        'auto_direct') for this call. By default a picture cut into several tiles on a GPU runs our direct
        kernels ('auto_direct': the fastest per layer of 'direct', 'direct_async' and 'implicit_gemm', three
        kernels for the same sums in the same order), whose sums do not depend on a block's shape: any tile size
        gives the pixels of ``upscale(img, algo='direct')``. The whole picture in one
        block keeps the layers' setting ('auto': the faster strategy per shape, which may differ from the
        direct kernels by float rounding). On the CPU, 'winograd' (the default, except with :attr:`ensemble`):
        2-D 3x3 and 5x5 layers of 8 or more channels by Winograd's minimal filtering (SRCNN 9-5-5 about twice as
        fast; within a few 1e-6 of the direct sums), tiles cut on its grid so that they stay exact; any other
        value: the direct sums (what :meth:`refine` and the evaluation protocols use by default)."""
        img, scale = self._check_picture(img, scale)
        peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype)
        alpha = None
        if img.ndim == 3 and img.shape[2] in (2, 4):  # the alpha channel: bicubic, as CbCr
            if (img[:, :, -1] == 0).any():  # colour under transparency spread from the visible pixels
                img = _core._bleed_transparent(img)
            img, alpha = img[:, :, :-1], img[:, :, -1]
            img = img[:, :, 0] if img.shape[2] == 1 else img

        def unit(block: np.ndarray) -> np.ndarray:  # pixel by pixel: commutes with cropping
            return block.astype(np.float64) / peak if peak else block.astype(np.float64)

        def prepare(block: np.ndarray) -> np.ndarray:
            f = unit(block)
            return im.rgb2ycbcr(f) if f.ndim == 3 else f

        def stored(x: np.ndarray) -> np.ndarray:  # [0, 1] (clipped before) -> the picture's pixel type
            if img.dtype == np.uint8:
                return im.to_uint8(x)  # (a uint8 block is returned as it is)
            if img.dtype == np.uint16:
                return np.round(x.astype(np.float64) * 65535.0).astype(np.uint16)
            return x.astype(img.dtype)

        plan = im.imresize_region(img, scale, prepare=prepare)
        alpha_plan = None if alpha is None else im.imresize_region(alpha, scale, prepare=unit)
        h, w = plan.out_shape
        t = max(h, w) if tile is None else as_int(tile, "tile", "upscale", minimum=1)
        total, done = -(-h // t) * -(-w // t), 0
        algo = self._upscale_algo(self._inference_algo(algo, total > 1))
        align, extra = self._tile_grid(algo)
        halo = self.receptive_radius + extra
        for r in range(0, h, t):
            for c in range(0, w, t):
                r1, c1 = min(r + t, h), min(c + t, w)
                e0, f0 = block_start(r, halo, align), block_start(c, halo, align)
                up = plan(e0, min(r1 + halo, h), f0, min(c1 + halo, w))
                y = self._network(up if up.ndim == 2 else up[:, :, 0], algo)[r - e0:r1 - e0, c - f0:c1 - f0]
                if up.ndim == 2:
                    out = np.clip(y, 0.0, 1.0)
                else:
                    ycc = up[r - e0:r1 - e0, c - f0:c1 - f0]
                    ycc[:, :, 0] = y
                    # ycbcr2rgb clips to [0, 1]; for uint8 in the same pass as the conversion
                    out = im._ycbcr2rgb_uint8(ycc) if img.dtype == np.uint8 else im.ycbcr2rgb(ycc)
                out = stored(out)
                if alpha_plan is not None:
                    a = stored(np.clip(alpha_plan(r, r1, c, c1), 0.0, 1.0))
                    out = np.concatenate([out if out.ndim == 3 else out[:, :, None], a[:, :, None]], axis=2)
                done += 1
                if progress is not None:
                    progress(done, total)
                yield (r, c), out

    def _check_picture(self, img: np.ndarray, scale: int | None) -> tuple[np.ndarray, int]:
        img = np.asarray(img)
        scale = self.scale if scale is None else as_int(scale, "scale", "upscale", minimum=1)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (2, 3, 4)) or 0 in img.shape:
            raise ValueError(f"expected a gray H x W or an RGB H x W x 3 image (or either with an alpha channel, "
                             f"H x W x 2 or 4), got shape {img.shape}")
        if img.dtype not in (np.uint8, np.uint16) and not np.issubdtype(img.dtype, np.floating):
            raise TypeError(f"expected a uint8, uint16 or float image, got dtype {img.dtype}")
        return img, scale


def _format_kwargs(kwargs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))


def _parse_kwargs(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        k, eq, v = item.partition("=")
        if not eq or not k.isidentifier():
            raise ValueError(f"arch_kwargs must be name=value items separated by commas, got {text!r}")
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


# -------------------------------------------------------------------------------------------- evaluation
def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in READ_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(READ_SUFFIXES)})")
    return files


def first_line(error: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message (readers and ffmpeg write several), or `default` (the
    exception's type name) when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else (default or type(error).__name__)


def unreadable(path: str | os.PathLike, error: Exception) -> str:
    """One line saying why an image file cannot be read (imageio's own message runs over several lines and
    suggests installing plugins, which would not help with a damaged or mislabelled file)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        return f"{path}: cannot read the image (the file is empty)"
    text = first_line(error)
    if "Could not find a backend" in text or "cannot identify image file" in text:
        text = f"not a valid {path.suffix.lstrip('.').upper() or 'image'} file, or a damaged one"
    return f"{path}: cannot read the image ({text})"


@contextlib.contextmanager
def _read_errors(path: Path):
    """Any failure of the readers inside becomes a one-line ValueError naming the file (:func:`unreadable`);
    the ValueErrors that name it already (a stack refused, an unsupported kind) pass as they are."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file to the user
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(unreadable(path, e)) from None


def read_image(path: str | os.PathLike, keep_alpha: bool = False) -> np.ndarray:
    """The pixels of an image file as stored (uint8, uint16, or for TIFF any integer or float type), gray H x W
    or RGB H x W x 3, as a viewer shows them:

    - an alpha channel is dropped, or with `keep_alpha` kept as the last channel (gray + alpha H x W x 2, RGB +
      alpha H x W x 4; a palette or 8-bit picture with a transparent colour gets the alpha it stands for);
    - a 1-bit picture is 8-bit gray (0 / 255); a palette picture is RGB;
    - CMYK, YCbCr, LAB and HSV pictures (a CMYK JPEG from a print workflow) are converted to RGB by Pillow;
    - the EXIF orientation of a JPEG (a phone held upright) or the Orientation tag of a TIFF is applied;
    - a TIFF gives its first picture (a stack of pages in one series, a z-stack, is refused);
    - 16-bit PNGs keep their 16 bits (Pillow reads colour ones as 8-bit; ffmpeg decodes them).

    ValueError naming the file when it cannot be read or holds pixels of another kind."""
    path = Path(path)
    with _read_errors(path), open(path, "rb") as f:
        head = f.read(33)
    if head[:4] in _TIFF_MAGIC:
        img = _read_tiff(path)
        keep_alpha = keep_alpha and _tiff_alpha(path)
    elif (png16 := _png16_header(head)) is not None:
        img = _read_png16(path, png16)
    else:
        img = _read_pil(path, keep_alpha)
    if img.ndim == 3 and img.shape[2] in (2, 4) and not keep_alpha:  # gray + alpha, RGB + alpha
        img = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
    return img


def image_icc_profile(path: str | os.PathLike) -> bytes | None:
    """The ICC colour profile embedded in an image file (PNG iCCP, JPEG APP2, TIFF tag 34675), or None: what a
    colour-managed viewer needs to show the pixels as meant (a phone's Display P3 photo looks dull as sRGB).
    ValueError naming the file when it cannot be read."""
    path = Path(path)
    with _read_errors(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head in _TIFF_MAGIC:
            import tifffile

            with tifffile.TiffFile(path) as t:
                page = tiff_first_page(t)
                tag = page.tags.get(34675)
                return bytes(tag.value) if tag is not None and tag.value else None
        from PIL import Image

        with Image.open(path) as f:
            return f.info.get("icc_profile") or None


def image_info(path: str | os.PathLike, keep_alpha: bool = False) -> tuple[np.dtype, tuple[int, int], int]:
    """The pixel type, height x width and channels (1 or 3; with `keep_alpha`, 2 or 4 for a picture with an alpha
    channel) that :func:`read_image` gives for `path`, from the file's header alone (the EXIF orientation
    applied). ValueError naming the file when it cannot be read or its pixels are not a gray or RGB picture."""
    path = Path(path)
    with _read_errors(path):
        with open(path, "rb") as f:
            head = f.read(33)
        if head[:4] in _TIFF_MAGIC:
            shape, dtype = _tiff_layout(path)[:2]
            keep_alpha = keep_alpha and _tiff_alpha(path)
        elif (ihdr := _png16_header(head)) is not None:
            w, h, _, colour = ihdr
            shape, dtype = (h, w) + ((), (), (3,), (), (2,), (), (4,))[colour], np.dtype(np.uint16)
        else:
            from PIL import Image

            with Image.open(path) as f:
                dtype, channels = _pil_kind(path, f.mode)
                _refuse_animation(path, f)
                channels += int(keep_alpha and _pil_alpha(f, dtype))
                w, h = f.size
                if f.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90 degrees
                    w, h = h, w
            shape = (h, w) + (() if channels == 1 else (channels,))
    channels = 1 if len(shape) == 2 else shape[2] if len(shape) == 3 else 0
    if not keep_alpha:
        channels = {2: 1, 4: 3}.get(channels, channels)
    if channels not in (1, 2, 3, 4) or (not keep_alpha and channels in (2, 4)):
        raise ValueError(f"{path}: expected a gray or RGB picture, got pixels of shape {shape}")
    return dtype, shape[:2], channels


def to_unit_range(img: np.ndarray, path: str | os.PathLike = "the picture") -> tuple[np.ndarray, float, float]:
    """``(x, lo, hi)``: the picture as float64 in [0, 1] with ``img = lo + x * (hi - lo)``. 8-bit over 0..255,
    16-bit over 0..65535, floating point already in [0, 1] as it is; other pictures (scientific data:
    floating point of any range, signed or 32-bit integers) by their own minimum and maximum. The one mapping
    that ``magmasr upscale``, ``eval`` and ``train`` use. ValueError naming `path` for NaN or infinite
    values."""
    img = np.asarray(img)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * np.uint8(255)
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise ValueError(f"{path}: unsupported pixel type {img.dtype} (integer or floating-point pictures)")
    f = img.astype(np.float64)
    if img.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    elif img.dtype == np.uint16:
        lo, hi = 0.0, 65535.0
    else:
        finite = np.isfinite(f)
        if not finite.all():
            raise ValueError(f"{path}: {int(f.size - finite.sum())} pixels are NaN or infinite; a "
                             "floating-point picture needs finite values")
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 1.0)
        if lo >= 0.0 and hi <= 1.0 and np.issubdtype(img.dtype, np.floating):
            lo, hi = 0.0, 1.0  # already in the networks' range: no rescaling
        elif hi == lo:
            hi = lo + 1.0
    return (f - lo) / (hi - lo), lo, hi


def read_unit_image(path: str | os.PathLike) -> np.ndarray:
    """:func:`read_image`, then 8-bit pictures as they are (uint8, so that MATLAB's uint8 colour conversion of
    the evaluation protocols applies) and every other pixel type as float64 in [0, 1] by
    :func:`to_unit_range`: what ``eval`` and ``train`` read."""
    img = read_image(path)
    return img if img.dtype == np.uint8 else to_unit_range(img, path)[0]


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pil_kind(path, mode: str) -> tuple[np.dtype, int]:
    """The pixel type and channels (1 or 3) :func:`read_image` gives for a picture Pillow opens in `mode`."""
    if mode in ("1", "L", "LA", "La"):
        return np.dtype(np.uint8), 1
    if mode in ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.dtype(np.uint8), 3
    if mode.startswith("I;16"):
        return np.dtype(np.uint16), 1
    if mode in ("I", "F"):
        return np.dtype(np.int32 if mode == "I" else np.float32), 1
    raise ValueError(f"{path}: unsupported kind of picture (Pillow mode {mode}); expected gray, RGB, CMYK or a "
                     "palette")


def _pil_alpha(f, dtype: np.dtype) -> bool:
    """Whether a picture Pillow opened has an alpha channel, or a transparent colour (a palette, gray or RGB
    picture's tRNS) that stands for one; only 8-bit pictures have one here."""
    return dtype == np.uint8 and (f.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        f.mode in ("P", "L", "RGB") and "transparency" in f.info))


def _refuse_animation(path: Path, f) -> None:
    """ValueError for an animation (WebP, APNG); not for a multi-picture JPEG (a camera's MPO with its preview
    or depth map), whose first picture is the photo, as viewers show it."""
    if f.format in ("WEBP", "PNG", "GIF") and getattr(f, "n_frames", 1) > 1:
        raise ValueError(f"{path}: an animation of {f.n_frames} frames; magmasr upscales one picture, or a video "
                         "(save the frames as pictures, or the animation as a video)")


def _read_pil(path: Path, keep_alpha: bool = False) -> np.ndarray:
    from PIL import Image, ImageOps

    with _read_errors(path), Image.open(path) as f:
        dtype, channels = _pil_kind(path, f.mode)
        _refuse_animation(path, f)
        alpha = keep_alpha and _pil_alpha(f, dtype)
        f = ImageOps.exif_transpose(f)
        if f.mode in ("P", "PA", "La"):  # through RGBA / LA: a transparent palette converts without a warning
            f = f.convert("RGBA" if f.mode != "La" else "LA")
        if dtype == np.uint8:  # CMYK etc. by Pillow's own conversion
            f = f.convert(("LA" if channels == 1 else "RGBA") if alpha else ("L" if channels == 1 else "RGB"))
        img = np.asarray(f)
    return img.astype(dtype, copy=False)


# TIFF Orientation (tag 274, the values of EXIF's): how the stored rows and columns become what a viewer shows.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _tiff_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, str, int, str]:
    """(shape as :func:`read_image` gives it, pixel type, axes of the stored series, orientation, photometric)
    of the first picture of a TIFF, from its header. A stack of pictures in one series (a multi-page scan, a
    microscopy z-stack) is a ValueError: magmasr upscales one picture. Further series (another picture of a
    multi-page document, a thumbnail, a pathology slide's label) are not read: viewers show the first."""
    import tifffile

    with tifffile.TiffFile(path) as t:
        if not t.series:
            raise ValueError(f"{path}: the TIFF holds no picture")
        series = t.series[0]
        axes, shape = series.axes, tuple(series.shape)
        page = tiff_first_page(t)
        tag = page.tags.get(274)
        orientation = int(tag.value) if tag is not None else 1
        photometric = page.photometric.name
        dtype = np.dtype(series.dtype)
    extra = [(a, n) for a, n in zip(axes, shape) if a not in "YXS" and n > 1]
    if extra:
        pages = int(np.prod([n for _, n in extra]))
        raise ValueError(f"{path}: a stack of {pages} pictures (a multi-page TIFF, axes {axes}, shape "
                         f"{'x'.join(map(str, shape))}); magmasr upscales one picture at a time: save each page as "
                         "its own file (tifffile.imread(path, key=i) reads page i)")
    picture = dict(zip(axes, shape))
    if "Y" not in picture or "X" not in picture:
        raise ValueError(f"{path}: the TIFF's first picture has no rows and columns (axes {axes})")
    h, w = picture["Y"], picture["X"]
    if orientation in (5, 6, 7, 8):
        h, w = w, h
    channels = picture.get("S", 1)
    if channels == 4 and photometric == "SEPARATED":
        channels = 3  # CMYK: converted to RGB
    return (h, w) + ((channels,) if "S" in picture else ()), dtype, axes, orientation, photometric


def tiff_first_page(t):
    """The page (IFD) of an open ``tifffile.TiffFile``'s first picture, whose tags describe it: the first page of
    its first series (the file's first page when tifffile finds no series)."""
    return t.series[0].pages[0] if t.series and t.series[0].pages else t.pages[0]


def _tiff_alpha(path: Path) -> bool:
    """Whether the extra sample of a TIFF's first picture is unassociated alpha (what magmasr writes and keeps);
    an unspecified extra sample (RGBX padding) or premultiplied alpha is dropped, as before alpha was kept."""
    import tifffile

    with tifffile.TiffFile(path) as t:
        page = tiff_first_page(t)
        return tuple(int(e) for e in (page.extrasamples or ())) == (2,)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with _read_errors(path):
        _, dtype, axes, orientation, photometric = _tiff_layout(path)
        if photometric == "SEPARATED" and len(axes) == 3:  # CMYK: Pillow's conversion where it reads the file
            if dtype != np.uint8:
                raise ValueError(f"{path}: a {dtype} CMYK TIFF is not supported (8-bit CMYK, or RGB)")
            return _read_pil(path)  # which applies the orientation itself
        img = tifffile.imread(path, series=0, level=0)
    if img.ndim == len(axes):  # drop the series' axes of length 1; planar RGB (samples first): samples last
        kept = [a for a in axes if a in "YXS"]
        img = img.reshape([n for a, n in zip(axes, img.shape) if a in "YXS"])
        img = np.moveaxis(img, [kept.index(a) for a in "YXS" if a in kept], range(len(kept)))
    if orientation in _ORIENT:
        img = np.ascontiguousarray(_ORIENT[orientation](img))
    return img


def _png16_header(head: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) of a 16-bit PNG in colour or with alpha (which Pillow reads as
    8-bit), from the first 33 bytes of the file; None for any other file."""
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    depth, colour = head[24], head[25]
    return (w, h, depth, colour) if depth == 16 and colour in (2, 4, 6) else None


def _read_png16(path: Path, header: tuple[int, int, int, int]) -> np.ndarray:
    """A 16-bit RGB, RGBA or gray + alpha PNG at full depth, as uint16 H x W x channels, decoded by ffmpeg
    (imageio-ffmpeg, which the video path already needs): Pillow reads these as 8-bit."""
    import imageio_ffmpeg

    w, h, _, colour = header
    channels, pix_fmt = {2: (3, "rgb48le"), 4: (2, "ya16le"), 6: (4, "rgba64le")}[colour]
    try:
        frames = imageio_ffmpeg.read_frames(str(path), pix_fmt=pix_fmt, bits_per_pixel=16 * channels)
        try:
            meta = next(frames)
            raw = next(frames)
        finally:
            frames.close()
        if tuple(meta["size"]) != (w, h) or len(raw) != 2 * h * w * channels:
            raise ValueError("the pixel data does not match the header")
    except (OSError, RuntimeError, StopIteration, ValueError) as e:
        raise ValueError(unreadable(path, e)) from None
    return np.frombuffer(raw, "<u2").reshape(h, w, channels).copy()


def ground_truth_y(img: np.ndarray, scale: int) -> np.ndarray:
    """modcrop, then the MATLAB Y channel as uint8 (gray images are their own Y)."""
    img = im.modcrop(img, scale)
    if img.ndim == 3:
        img = im.rgb2ycbcr(img)[:, :, 0] if img.shape[2] == 3 else img[:, :, 0]
    return img


@dataclass
class EvalRow:
    name: str
    psnr: float
    ssim: float
    mae: float
    mse: float
    psnr_bicubic: float


def evaluate_image_sr(model: ImageSR | None, folder: str | os.PathLike, scale: int,
                      names: Iterable[str] | None = None) -> list[EvalRow]:
    """The SRCNN authors' protocol on each image of `folder`: Y of MATLAB rgb2ycbcr (uint8) / 255,
    modcrop, LR = MATLAB bicubic 1/scale in floating point, input = bicubic x scale, output and ground truth
    rounded to uint8, `scale` pixels shaved, PSNR with peak 255 (SSIM, MAE, MSE likewise).
    model=None evaluates bicubic alone."""
    rows = []
    for path in list_images(folder):
        if names is not None and path.stem not in names:
            continue
        gt = ground_truth_y(read_unit_image(path), scale)
        least = 2 * scale + 11  # the shaved border on each side, then SSIM's 11 x 11 window
        if min(gt.shape) < least:
            raise ValueError(f"{path}: {gt.shape[1]}x{gt.shape[0]} pixels (after cropping to a multiple of "
                             f"{scale}) is too small to evaluate at x{scale}: at least {least}x{least}, as "
                             f"{scale} pixels are shaved on each side and SSIM's window is 11x11")
        y = im.to_float(gt)
        bic = im.imresize(im.imresize(y, 1.0 / scale), scale)
        out = bic if model is None else model.refine(bic).astype(np.float64)
        kw = dict(crop_border=scale)
        rows.append(EvalRow(
            path.stem,
            metrics.psnr(out, y, **kw), metrics.ssim(out, y, **kw), metrics.mae(out, y, **kw),
            metrics.mse(out, y, **kw), metrics.psnr(bic, y, **kw),
        ))
    return rows
