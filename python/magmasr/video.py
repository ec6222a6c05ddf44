"""Video super-resolution with 3DSRnet: the published network's pipeline, the authors' evaluation protocol,
and training clips (from frame folders, or synthesised from still images by simulated camera motion).

3DSRnet (Kim et al.) takes 5 consecutive LR frames (Y / 255) and predicts the residual that, added to the
bicubic-upscaled centre frame, gives the HR centre frame. A sequence is processed with a 5-frame sliding
window; at its ends the window is padded by repeating the first / last frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections import deque
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import image as im
from . import metrics, models, weights
from ._checks import as_int
from .sr import ImageSR, SRModel, cuts, list_images, read_unit_image, tiled

WINDOW = 5


def read_frames(folder: str | os.PathLike) -> list[np.ndarray]:
    """The frames of a sequence folder (sorted by name), gray or RGB: 8-bit as read (uint8), any other pixel
    type as float in [0, 1] (:func:`magmasr.sr.read_unit_image`). ValueError naming the first frame whose size
    differs from the first frame's (a sequence has one size), or the first frame of the other kind (gray among
    RGB frames or the reverse: a sequence is all gray or all RGB, as ``magmasr upscale`` requires)."""
    paths = list_images(folder)
    frames = []

    def kind(f: np.ndarray) -> str:
        return "gray" if f.ndim == 2 or f.shape[2] == 1 else "RGB"

    for p in paths:
        f = read_unit_image(p)
        if frames and f.shape[:2] != frames[0].shape[:2]:
            raise ValueError(f"{p}: {f.shape[1]}x{f.shape[0]} pixels, but the first frame {paths[0].name} is "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}: the frames of a sequence have one size")
        if frames and kind(f) != kind(frames[0]):
            raise ValueError(f"{p}: {'an' if kind(f) == 'RGB' else 'a'} {kind(f)} frame, but the first frame {paths[0].name} is {kind(frames[0])}: the "
                             "frames of a sequence are all gray or all RGB")
        frames.append(f)
    return frames


def windows(n: int, size: int = WINDOW) -> Iterator[list[int]]:
    """For each frame index 0..n-1, the indices of its window, edges padded by repetition."""
    half = size // 2
    for i in range(n):
        yield [min(max(j, 0), n - 1) for j in range(i - half, i + half + 1)]


@dataclass
class VideoSR(SRModel):
    """3DSRnet with its pre- and post-processing: the published architecture (``tdsrnet``) or our poster's
    (``tdsrnet_poster`` with its sub-pixel head), both predicting the residual over the bicubic-upscaled
    centre frame."""

    # architecture -> the name its weight files ship under and its training recipes begin with
    ARCHITECTURES = {"tdsrnet": "3dsrnet", "tdsrnet_poster": "3dsrnet_poster"}
    # the short names of the command line's --arch -> architecture
    VARIANTS = {"published": "tdsrnet", "poster": "tdsrnet_poster"}

    def __post_init__(self) -> None:
        name, kw = self.arch.name, self.arch.kwargs
        if name not in self.ARCHITECTURES:
            raise ValueError(f"a video model is a 3DSRnet ({' or '.join(self.ARCHITECTURES)}), got {name!r}")
        if name == "tdsrnet_poster" and kw.get("head", "shuffle") != "shuffle":
            raise ValueError("the poster's 3DSRnet runs on video with its sub-pixel head (head='shuffle'); "
                             f"got head={kw.get('head')!r}")
        built = int(kw.get("scale", 4 if name == "tdsrnet" else 2))
        if built != self.scale:
            raise ValueError(f"the network upscales x{built}, the model says x{self.scale}")

    @property
    def kind(self) -> str:
        """'3dsrnet' (the published architecture) or '3dsrnet_poster': shipped as ``{kind}_x{scale}``."""
        return self.ARCHITECTURES[self.arch.name]

    @property
    def border(self) -> int:
        """LR pixels per side that the network's unpadded layers take off (the poster's conv4 and conv5: 2);
        :meth:`residual` pads the frames by as much, replicating their edges, so whole frames keep their size."""
        return 2 if self.arch.name == "tdsrnet_poster" else 0

    @classmethod
    def shipped_kind(cls, variant: str = "published") -> str:
        """The name a 3DSRnet variant ('published' or 'poster') ships under."""
        if variant not in cls.VARIANTS:
            raise ValueError(f"unknown 3DSRnet variant {variant!r}; expected one of {sorted(cls.VARIANTS)}")
        return cls.ARCHITECTURES[cls.VARIANTS[variant]]

    @classmethod
    def pretrained(cls, scale: int = 4, variant: str = "published", device: str | None = None) -> "VideoSR":
        """magmasr's own 3DSRnet for this scale, as shipped in the package: the published architecture or
        the poster's (see :func:`magmasr.sr.shipped_models` and docs/training.md), on `device` (default: the
        GPU when usable)."""
        return cls._shipped(cls.shipped_kind(variant), scale, f"3DSRnet ({variant})", device)

    @classmethod
    def tdsrnet(cls, scale: int = 4, **kwargs) -> "VideoSR":
        arch = models.Architecture("tdsrnet", dict(scale=int(scale), **kwargs))
        return cls(arch.build(), int(scale), arch)

    @classmethod
    def tdsrnet_poster(cls, scale: int = 4, **kwargs) -> "VideoSR":
        """Our poster's 3DSRnet (32 filters, conv4 and conv5 unpadded) with a x`scale` sub-pixel head."""
        arch = models.Architecture("tdsrnet_poster", dict(head="shuffle", scale=int(scale), **kwargs))
        return cls(arch.build(), int(scale), arch)

    @classmethod
    def from_3dsrnet_mat(cls, path: str | os.PathLike, scale: int) -> "VideoSR":
        """The authors' MatConvNet model (``x{scale}.mat``)."""
        state = weights.import_3dsrnet_mat(path)
        out = state["conv6.weight"].shape[0]
        if out != scale * scale:
            raise ValueError(f"{path}: conv6 has {out} outputs, a x{scale} model has {scale * scale}")
        model = cls.tdsrnet(scale, filters=state["conv1.weight"].shape[0])
        model.net.load_state_dict(state)
        model.metadata["source"] = f"imported from {Path(path).name}"
        return model

    def residual(self, lr_window: np.ndarray, tile: int | None = None, algo: str | None = None) -> np.ndarray:
        """The network on one window [5, h, w] (float, / 255): the residual [scale*h, scale*w] (the frames
        padded by :attr:`border` first). With `tile`, the window is processed in tile x tile blocks (LR
        pixels), each with a halo of the receptive radius: the same result in bounded memory (on a GPU, the
        result of ``algo='direct'``: tiles default to 'auto_direct', the fastest of the direct kernels, which
        give the same bits; see :meth:`magmasr.sr.ImageSR.upscale_tiles`). ``algo='winograd'`` on the CPU: the
        3x3x3 layers of 8 or more channels by Winograd's F(6x6, 3x3) per depth tap (about twice as fast; within a
        few 1e-5 of the direct sums), tiles cut on its grid so that they stay exact (:meth:`_tile_grid`); the
        default of :meth:`upscale_stream` there. Otherwise the direct sums (what :meth:`upscale_frames` and the
        evaluation protocol use by default)."""
        x = np.asarray(lr_window, dtype=np.float32)
        if x.ndim != 3 or x.shape[0] != WINDOW:
            raise ValueError(f"a window is [{WINDOW}, h, w] LR frames, got shape {x.shape}")
        algo = self._inference_algo(algo, cuts(x.shape, tile))
        align, extra = self._tile_grid(algo)

        def whole(block: np.ndarray) -> np.ndarray:
            b = self.border
            if b:
                block = np.pad(block, ((0, 0), (b, b), (b, b)), mode="edge")
            return np.asarray(self._network(block, algo), np.float64)

        return tiled(whole, x, tile, self.receptive_radius + extra, self.scale, align=align)

    def upscale_frames(self, lr_frames: Sequence[np.ndarray], tile: int | None = None,
                       algo: str | None = None) -> Iterator[np.ndarray]:
        """HR Y frames (float, unclipped) for LR Y frames (float, / 255), one per input frame (`tile`, `algo`:
        see :meth:`residual`)."""
        lr = [np.asarray(f, dtype=np.float64) for f in lr_frames]
        if not lr:
            raise ValueError("no frames")
        for idx in windows(len(lr)):
            centre = lr[idx[WINDOW // 2]]
            yield im.imresize(centre, self.scale) + self.residual(np.stack([lr[j] for j in idx]), tile, algo)

    def upscale_stream(self, frames: Iterable[np.ndarray], tile: int | None = None,
                       algo: str | None = None) -> Iterator[np.ndarray]:
        """Upscales a stream of uint8 frames, all RGB (H x W x 3) or all gray (H x W) and of one size, yielding
        frames of the same kind in order: Y (a gray frame is its own Y) through the network with a 5-frame
        window, CbCr bicubic. Frame i is yielded as soon as frame i+2 has been read (at the end of the stream
        the window is padded by repeating the last frame); only the window is held in memory, and with `tile`
        only tile x tile LR pixels of it go through the network at a time (:meth:`residual`, with `algo`; on the
        CPU 'winograd' unless given, as for pictures)."""
        algo = self._upscale_algo(algo)
        half = WINDOW // 2
        lr: deque = deque()       # LR Y of frames base .. base + len - 1
        pending: deque = deque()  # Y (gray) or YCbCr of the frames read but not yet yielded
        base = done = 0
        first = None

        def finish(n_read: int) -> np.ndarray:
            win = [lr[min(max(j, 0), n_read - 1) - base] for j in range(done - half, done + half + 1)]
            up = im.imresize(pending.popleft(), self.scale)
            if up.ndim == 2:
                return im.to_uint8(np.clip(up + self.residual(np.stack(win), tile, algo), 0.0, 1.0))
            up[:, :, 0] += self.residual(np.stack(win), tile, algo)
            return im._ycbcr2rgb_uint8(np.clip(up, 0.0, 1.0, out=up))

        for n, frame in enumerate(frames):
            a = np.asarray(frame)
            if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
                raise ValueError(f"frame {n}: expected uint8 H x W x 3 (RGB) or H x W (gray), got {a.dtype} "
                                 f"{a.shape}")
            if first is None:
                first = a.shape
            elif a.shape != first:
                raise ValueError(f"frame {n} is {a.shape}, the first frame {first}: a sequence has one size and "
                                 "one kind of frame")
            f = im.to_float(a)
            ycc = f if a.ndim == 2 else im.rgb2ycbcr(f)
            lr.append(ycc if a.ndim == 2 else ycc[:, :, 0])
            pending.append(ycc)
            if base + len(lr) - 1 >= done + half:
                yield finish(base + len(lr))
                done += 1
                while base < done - half:
                    lr.popleft()
                    base += 1
        n_read = base + len(lr)
        while done < n_read:
            yield finish(n_read)
            done += 1


@dataclass
class VideoEval:
    sequence: str
    psnr: float
    psnr_bicubic: float
    psnr_srcnn: float | None
    frames: int
    psnr_baselines: dict = field(default_factory=dict)


def evaluate_video(model: VideoSR, folder: str | os.PathLike, *, srcnn: ImageSR | None = None,
                   baselines: Mapping[str, ImageSR] | None = None, frames: slice | None = None,
                   crop: tuple[int, int] | None = None) -> VideoEval:
    """The 3DSRnet authors' ``test.m`` protocol on a folder of HR Y frames (uint8): frames cropped to a
    multiple of the scale, Y / 255, LR = MATLAB bicubic 1/scale in floating point, for each centre frame
    i = 3..N-2 (1-based) the window i-2..i+2, the residual added to the bicubic-upscaled centre frame, PSNR
    with peak 1 over the whole frame on the unrounded, unclipped output; the mean over the frames.

    `srcnn` also evaluates a single-frame SRCNN on the same frames (bicubic, then the network), and
    `baselines` ({name: model}) more of them, reported in ``psnr_baselines`` under their names.
    `frames` restricts the centre frames (0-based slice of 2..N-3) and `crop` = (rows, cols) crops every
    HR frame at its top-left, both to make quick checks on a part of a sequence.
    """
    scale = model.scale
    hr = []
    for f in read_frames(folder):
        if f.ndim == 3:
            f = im.rgb2ycbcr(f)[:, :, 0] if f.shape[2] == 3 else f[:, :, 0]
        f = im.modcrop(f, scale)
        if crop is not None:
            f = im.modcrop(f[: crop[0], : crop[1]], scale)
        hr.append(im.to_float(f))
    if len(hr) < WINDOW:
        raise ValueError(f"{folder}: {len(hr)} frames, the protocol needs at least {WINDOW}")
    lr = [im.imresize(h, 1.0 / scale) for h in hr]
    centres = list(range(2, len(hr) - 2))
    if frames is not None:
        centres = centres[frames]
    singles = {**({None: srcnn} if srcnn is not None else {}), **(baselines or {})}  # None: the `srcnn` one
    ours, bic = [], []
    others = {name: [] for name in singles}
    for i in centres:
        up = im.imresize(lr[i], scale)
        out = up + model.residual(np.stack(lr[i - 2:i + 3]))
        ours.append(metrics.psnr(out, hr[i], round_uint8=False, data_range=1.0))
        bic.append(metrics.psnr(up, hr[i], round_uint8=False, data_range=1.0))
        for name, m in singles.items():
            others[name].append(metrics.psnr(m.refine(up).astype(np.float64), hr[i], round_uint8=False,
                                             data_range=1.0))
    means = {name: float(np.mean(v)) for name, v in others.items()}
    return VideoEval(Path(folder).name, float(np.mean(ours)), float(np.mean(bic)), means.pop(None, None),
                     len(centres), means)


# -------------------------------------------------------------------------------------- training clips
@dataclass
class ClipDataset:
    """LR clips ``x`` [M, 1, 5, p, p] and residual targets ``y`` [M, 1, s*p, s*p] (HR centre minus the
    bicubic-upscaled LR centre), float32; ``fit`` from :mod:`magmasr.train` trains 3DSRnet on them."""

    x: np.ndarray
    y: np.ndarray
    scale: int

    def __len__(self) -> int:
        return len(self.x)

    def split(self, fraction: float, seed: int = 0) -> tuple["ClipDataset", "ClipDataset"]:
        """A random (train, validation) split with `fraction` of the clips in validation."""
        from .train import split_dataset

        return split_dataset(self, fraction, seed)

    def valid(self, border: int) -> "ClipDataset":
        """The same clips with targets cropped to what a network that takes `border` LR pixels off each side
        predicts (the loss on the valid region, as SRCNN is trained on patches)."""
        if border == 0:
            return self
        b = border * self.scale
        if 2 * b >= self.y.shape[-1]:
            raise ValueError(f"clips of {self.x.shape[-1]} LR pixels are too small for a network that takes "
                             f"{border} off each side")
        return ClipDataset(self.x, np.ascontiguousarray(self.y[..., b:-b, b:-b]), self.scale)

    @staticmethod
    def _clip(hr_frames: Sequence[np.ndarray], scale: int) -> tuple[np.ndarray, np.ndarray]:
        lr = [im.imresize(h, 1.0 / scale) for h in hr_frames]
        centre = hr_frames[WINDOW // 2]
        return np.stack(lr), centre - im.imresize(lr[WINDOW // 2], scale)

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[np.ndarray]], scale: int, *, patch: int = 32,
                       stride: int = 24, frame_stride: int = 1,
                       names: Sequence[str] | None = None) -> "ClipDataset":
        """Clips of 5 consecutive HR Y frames (uint8 or float / 255), cut into LR patches of `patch` pixels,
        every `stride` LR pixels and every `frame_stride` frames. The frames of a sequence have one size.
        `names` (one per sequence, e.g. the folders) are what the error messages call the sequences."""
        fn = "ClipDataset.from_sequences"
        scale = as_int(scale, "scale", fn, minimum=1)
        patch = as_int(patch, "patch", fn, minimum=1)
        stride = as_int(stride, "stride", fn, minimum=1)
        frame_stride = as_int(frame_stride, "frame_stride", fn, minimum=1)
        names = [f"sequence {i}" for i in range(len(sequences))] if names is None else [str(n) for n in names]
        if len(names) != len(sequences):
            raise ValueError(f"{fn}: {len(names)} names for {len(sequences)} sequences")
        hp = patch * scale
        xs, ys = [], []
        found = []  # per sequence: its frame count and size, for the message when no clip fits
        for name, seq in zip(names, sequences):
            seq = [np.asarray(f) for f in seq]
            for i, f in enumerate(seq):
                if f.ndim != 2:
                    raise ValueError(f"{fn}: {name}, frame {i}: a Y frame is H x W, got shape {f.shape}")
                if f.shape != seq[0].shape:
                    raise ValueError(f"{fn}: {name}, frame {i} is {f.shape[1]}x{f.shape[0]} pixels, frame 0 is "
                                     f"{seq[0].shape[1]}x{seq[0].shape[0]}: the frames of a sequence have one size")
            found.append(f"{name}: {len(seq)} frames" + (f" of {seq[0].shape[1]}x{seq[0].shape[0]}" if seq else ""))
            seq = [im.to_float(im.modcrop(f, scale)) if f.dtype == np.uint8 else im.modcrop(f, scale) for f in seq]
            for t in range(0, len(seq) - WINDOW + 1, frame_stride):
                frames = seq[t:t + WINDOW]
                h, w = frames[0].shape
                for r in range(0, h - hp + 1, stride * scale):
                    for c in range(0, w - hp + 1, stride * scale):
                        x, y = cls._clip([f[r:r + hp, c:c + hp] for f in frames], scale)
                        xs.append(x)
                        ys.append(y)
        if not xs:
            shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
            raise ValueError(f"no clip of {WINDOW} frames and {hp}x{hp} pixels (--patch {patch} at x{scale}) fits in "
                             f"the sequences ({shown}): a clip needs at least {WINDOW} frames of at least "
                             f"{hp}x{hp} pixels")
        return cls(np.asarray(xs, np.float32)[:, None], np.asarray(ys, np.float32)[:, None], int(scale))

    @classmethod
    def from_folders(cls, folders: Sequence[str | os.PathLike], scale: int, **kwargs) -> "ClipDataset":
        """Clips from folders of frames (:func:`read_frames`: one size, all gray or all RGB), by their Y channel."""
        seqs = []
        for folder in folders:
            frames = read_frames(folder)
            seqs.append([(im.rgb2ycbcr(f)[:, :, 0] if f.shape[2] == 3 else f[:, :, 0]) if f.ndim == 3 else f
                         for f in frames])
        return cls.from_sequences(seqs, scale, names=[str(f) for f in folders], **kwargs)

    @classmethod
    def synthetic(cls, images: Sequence[np.ndarray], scale: int, *, clips_per_image: int = 8, patch: int = 32,
                  max_shift: float = 3.0, seed: int = 0) -> "ClipDataset":
        """Clips from still images by simulated camera motion: a random smooth path (constant velocity plus
        jitter, up to `max_shift` HR pixels per frame), each frame an HR crop along the path resampled with
        sub-pixel accuracy (bicubic), then downscaled like a real LR video."""
        from scipy.ndimage import shift as nd_shift

        rng = np.random.default_rng(seed)
        hp = patch * scale
        margin = int(np.ceil(max_shift * WINDOW)) + 4
        seqs = []
        for img in images:
            y = im.to_float(im.rgb2ycbcr(img)[:, :, 0] if img.ndim == 3 else img)
            h, w = y.shape
            if h < hp + 2 * margin or w < hp + 2 * margin:
                continue
            for _ in range(clips_per_image):
                r = int(rng.integers(margin, h - hp - margin + 1))
                c = int(rng.integers(margin, w - hp - margin + 1))
                v = rng.uniform(-max_shift, max_shift, 2)
                region = y[r - margin:r + hp + margin, c - margin:c + hp + margin]
                frames = []
                for t in range(WINDOW):
                    d = v * (t - WINDOW // 2) + rng.normal(0.0, 0.25, 2) * (t != WINDOW // 2)
                    moved = nd_shift(region, d, order=3, mode="nearest")
                    frames.append(moved[margin:margin + hp, margin:margin + hp])
                seqs.append(frames)
        if not seqs:
            raise ValueError(f"no image is large enough for {hp}x{hp} clips with motion margin {margin}")
        return cls.from_sequences(seqs, scale, patch=patch, stride=patch,
                                  names=[f"synthetic clip {i}" for i in range(len(seqs))])
