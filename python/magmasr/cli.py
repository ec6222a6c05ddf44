"""The ``magmasr`` command line: upscale, eval, train, finetune, models, bench.

    magmasr upscale [INPUT] [-o OUTPUT] [--scale 3] [--model srcnn|3dsrnet|bicubic] [--arch 9-1-5|poster]
                    [--weights FILE] [--device cpu|cuda] [--tile N] [--overwrite]
    magmasr eval DATASET [--model srcnn|3dsrnet|bicubic] [--scale 3] [--arch ...] [--weights FILE | --srcnn-mat FILE]
    magmasr train DATA [--arch 9-5-5] [--scale 3] [--steps N] [--optimizer adam|sgd] -o MODEL.safetensors
    magmasr finetune WEIGHTS DATA --recipe finetune_all|transfer_12|transfer_13 -o MODEL.safetensors
    magmasr models
    magmasr bench [--size 1080x1920] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import image as im
from ._files import finish, temp_beside
from ._signals import Terminated, sigterm_raises
from ._status import STDERR as STATUS_LINE
from ._status import time_left
from .sr import (IMAGE_SUFFIXES, READ_SUFFIXES, ImageSR, default_device, evaluate_image_sr, image_icc_profile,
                 image_info, list_images, read_image, read_unit_image, shipped_models, shipped_weights, first_line,
                 tiff_first_page, to_unit_range)


class CliError(Exception):
    """An error the user can fix: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------------------------- helpers
def shipped_kind(model: str, arch: str | None) -> str:
    """The name under which the shipped weights of --model with --arch are found: srcnn (9-5-5), srcnn_915,
    3dsrnet (published), 3dsrnet_poster."""
    from .video import VideoSR

    try:
        if model == "3dsrnet":
            return VideoSR.shipped_kind(arch or "published")
        return ImageSR.shipped_kind(arch or "9-5-5")
    except ValueError as e:
        raise CliError(f"--arch {arch} with --model {model}: {e}") from None


def _load_weights(cls, model: str, label: str, args, alternative: str):
    """The model in --weights, or the one shipped for --model / --arch and the scale; CliError when neither
    exists."""
    if args.weights and getattr(args, "arch", None):
        raise CliError("--arch picks one of the shipped models; it does not go with --weights FILE (the file says "
                       "what it is)")
    kind = shipped_kind(model, getattr(args, "arch", None))
    path = Path(args.weights) if args.weights else shipped_weights(kind, args.scale)
    if path is None:
        raise CliError(f"no {label} weights ({kind}) for x{args.scale} ship with this version of magmasr (see "
                       f"`magmasr models`); pass --weights FILE, or {alternative}")
    if not path.exists():
        raise CliError(f"--weights {path}: no such file")
    try:
        return cls.load(path), path
    except Exception as e:  # noqa: BLE001 - a bad weight file is a user error
        text = first_line(e)
        text = text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text  # named once is enough
        raise CliError(f"--weights {path}: cannot load ({text})") from None


def load_image_model(args) -> ImageSR | None:
    if args.model == "bicubic":
        if getattr(args, "ensemble", False):
            raise CliError("--ensemble averages a network over rotations and flips; bicubic has none")
        return None
    if args.model != "srcnn":
        raise CliError(f"--model {args.model}: images use 'srcnn' or 'bicubic' (3dsrnet is for videos)")
    model, path = _load_weights(ImageSR, "srcnn", "SRCNN", args, "--model bicubic")
    if model.scale != args.scale:
        print(f"note: {path.name} was trained for x{model.scale}; using it at x{args.scale}", file=sys.stderr)
    return _inference_setup(model.to(args.device), args)


def _inference_setup(model, args):
    """--ensemble; and on a GPU every convolution pinned to the direct kernels ('auto_direct': the fastest per
    layer of three kernels with one fixed summation order per output pixel): the output of `magmasr upscale` is
    then the same bit for bit whatever tile size the free memory leads to, on any machine. On the CPU pictures run
    ImageSR.upscale's default (Winograd's minimal filtering where it applies, tiles cut on its grid: the same
    property)."""
    model.ensemble = bool(getattr(args, "ensemble", False))
    if model.device != "cpu":
        for conv in model.convolutions():
            conv.algo = "auto_direct"
    return model


JPEG_QUALITY = 95  # and no chroma subsampling: Pillow's defaults (75, 4:2:0) blur what was just upscaled
# zlib's level for PNG outputs. At Pillow's default, 6, writing the PNG took a third of a whole `magmasr upscale` of a
# 1024x1024 photo at x3 on 2 cores: 6.7-7.7 s with --png-compression 6, 5.3-6.1 s at 4, the file 6.5 -> 6.8 MB
# (2026-12-07; level 1 wrote 22% more bytes than 6).
PNG_COMPRESSION = 4


def atomic_write_image(path: Path, img: np.ndarray, overwrite: bool, staged: "Staged | None" = None,
                       icc: bytes | None = None, exif: bytes | None = None,
                       resolution: "Resolution | None" = None, quality: int = JPEG_QUALITY,
                       png_level: int = PNG_COMPRESSION) -> None:
    """`img` to `path` (its format by the suffix), atomically; `icc`: an ICC colour profile to embed (PNG, JPEG,
    WebP, TIFF; BMP has no place for one); `exif`: EXIF metadata to embed (PNG, JPEG, WebP); `resolution`: the
    physical pixel density to record (TIFF in its own unit; PNG, JPEG, BMP in dots per inch); `quality`: of a
    JPEG or WebP output, 1..100; `png_level`: zlib's compression level of a PNG output, 0..9 (the same pixels,
    smaller and slower to write as it rises)."""
    import imageio.v3 as iio

    if path.exists() and not overwrite:
        raise CliError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise CliError(f"{path.parent}: no such folder for the output")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise CliError(f"{path}: unsupported output format (use one of {', '.join(IMAGE_SUFFIXES)})")
    if suffix in TIFF_SUFFIXES:
        import tifffile

        write_atomically(path, lambda tmp: tifffile.imwrite(tmp, img, **_tiff_kind(img.shape, icc, resolution)),
                         staged)
        return
    options = dict(quality=int(quality), subsampling=0) if suffix in (".jpg", ".jpeg") else {}
    if suffix == ".webp":  # lossy like JPEG, at the same quality (Pillow's default, 80, blurs fine detail)
        options = dict(quality=int(quality))
    if suffix == ".png":
        options = dict(compress_level=int(png_level))
    if icc and suffix != ".bmp":
        options["icc_profile"] = icc
    if exif and suffix != ".bmp":
        options["exif"] = exif
    if resolution is not None and resolution.dpi is not None and suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        options["dpi"] = resolution.dpi
    write_atomically(path, lambda tmp: iio.imwrite(tmp, img, extension=suffix, **options), staged)


def _tiff_kind(shape: tuple, icc: bytes | None = None, resolution: "Resolution | None" = None) -> dict:
    """tifffile's photometric interpretation for a gray or RGB picture of `shape`, for one with an alpha channel
    (H x W x 2 or 4) the extra sample marked as unassociated alpha, as viewers expect, the ICC profile and the
    resolution."""
    channels = shape[2] if len(shape) == 3 else 1
    kind = dict(photometric="rgb" if channels in (3, 4) else "minisblack")
    if channels in (2, 4):
        kind["extrasamples"] = ["unassalpha"]
    if icc:
        kind["iccprofile"] = icc
    if resolution is not None:
        kind["resolution"], kind["resolutionunit"] = (resolution.x, resolution.y), resolution.unit
    return kind


@dataclasses.dataclass(frozen=True)
class Resolution:
    """Pixels per unit across (x) and down (y); unit as TIFF's ResolutionUnit: 1 none (an aspect ratio only),
    2 inch, 3 centimetre."""

    x: float
    y: float
    unit: int

    @property
    def dpi(self) -> tuple[float, float] | None:
        """Dots per inch, or None without a physical unit."""
        factor = {2: 1.0, 3: 2.54}.get(self.unit)
        return None if factor is None else (self.x * factor, self.y * factor)


def _resolution_for(src: Path, scale: int) -> Resolution | None:
    """The physical pixel density `src` records (a scanner's dots per inch, a microscope's or a slide scanner's
    pixels per centimetre), times `scale`: each upscaled pixel covers 1/scale of an input pixel, so the picture
    keeps its size on paper and its calibration for measurements. None when the file records none."""
    from PIL import Image

    try:
        if src.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(src) as t:
                page = tiff_first_page(t)
                if "XResolution" not in page.tags or "YResolution" not in page.tags:
                    return None
                (x, y), unit = page.resolution, int(page.resolutionunit)
                turned = "Orientation" in page.tags and int(page.tags["Orientation"].value) in (5, 6, 7, 8)
        else:
            with Image.open(src) as f:
                if "dpi" not in f.info:
                    return None
                (x, y), unit = f.info["dpi"], 2
                turned = f.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - metadata that cannot be read: the pixels matter, not it
        return None
    if not (x > 0 and y > 0 and np.isfinite(x) and np.isfinite(y)):
        return None
    if turned:  # the pixels were turned by 90 degrees when read
        x, y = y, x
    return Resolution(float(x) * scale, float(y) * scale, unit if unit in (1, 2, 3) else 1)


def _exif_for(src: Path, height: int, width: int) -> bytes | None:
    """The EXIF metadata of `src` (camera, lens, exposure, date, GPS: what a photo library sorts and shows by)
    for the upscaled picture: the orientation set to 1 (the pixels were turned upright when read), the pixel
    dimensions of the EXIF block set to the new size, the thumbnail left out (it would show the old picture).
    None for a file without EXIF, or one Pillow does not read it from (TIFF: the TIFF writer keeps none)."""
    from PIL import Image

    if src.suffix.lower() in TIFF_SUFFIXES:
        return None
    try:
        with Image.open(src) as f:
            exif = f.getexif()
            if not exif:
                return None
            block = exif.get_ifd(0x8769) if 0x8769 in exif else {}  # the Exif block (tobytes keeps it, and GPS)
    except Exception:  # noqa: BLE001 - metadata Pillow cannot parse: the pixels matter, not it
        return None
    if 0x0112 in exif:
        exif[0x0112] = 1
    if 0xA002 in block:
        block[0xA002], block[0xA003] = int(width), int(height)
    try:
        return exif.tobytes()
    except Exception:  # noqa: BLE001
        return None


def _icc_for(src: Path, channels: int) -> bytes | None:
    """The ICC profile of `src` if it describes the colours written out (an RGB profile for RGB, a gray one for
    gray pictures); None otherwise: a CMYK picture is converted to RGB, and its CMYK profile would be wrong."""
    try:
        icc = image_icc_profile(src)
    except ValueError as e:
        raise CliError(str(e)) from None
    space = icc[16:20] if icc and len(icc) >= 128 else None  # the header's data colour space
    return icc if space == (b"GRAY" if channels in (1, 2) else b"RGB ") else None


def _os_reason(e: OSError) -> str:
    """An OS error's reason without the temporary file name it may carry ('Permission denied')."""
    return e.strerror or first_line(e)


def check_writable(path: Path) -> None:
    """CliError naming `path` unless a file can be created in its folder (tried, not guessed from the mode
    bits, which say nothing for root, read-only mounts or /proc): checked before any work, so that a long run
    does not fail at its end."""
    folder = path.parent
    if not folder.is_dir():
        raise CliError(f"{folder}: no such folder for the output {path}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".magmasr-probe.", dir=folder)
    except OSError as e:
        raise CliError(f"{path}: cannot write in {folder} ({_os_reason(e)})") from None
    os.close(fd)
    os.remove(probe)


class Staged:
    """Outputs written to temporary files next to their destinations and renamed into place together by
    :meth:`commit` once all of them are done; :meth:`discard` (on any failure, Ctrl-C included) removes the
    temporary files and the `created` folders (this run's, innermost first, those left empty), so a failed run
    leaves the files that existed before it as they were, and no new ones."""

    def __init__(self, created: Sequence[Path] = ()) -> None:
        self.files: list[tuple[str, Path]] = []
        self.created = list(created)

    def commit(self) -> None:
        for tmp, path in self.files:
            try:
                finish(tmp, str(path))
            except OSError as e:
                raise CliError(f"{path}: cannot write ({_os_reason(e)})") from None
        self.files = []

    def discard(self) -> None:
        for tmp, _ in self.files:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.files = []
        for d in self.created:
            try:
                d.rmdir()
            except OSError:
                break


def write_atomically(path: Path, write, staged: Staged | None = None) -> None:
    """``write(tmp)`` into a temporary file next to `path`, then renamed into place (or, with `staged`, left
    for ``staged.commit()`` to rename): `path` is never seen half-written, and the temporary file is removed
    whatever happens. OS errors become a one-line CliError naming `path`."""
    try:
        fd, tmp, target = temp_beside(path, suffix=path.suffix)
    except OSError as e:
        raise CliError(f"{path}: cannot write ({_os_reason(e)})") from None
    os.close(fd)
    done = False
    try:
        write(tmp)
        if staged is None:
            finish(tmp, target)
        else:
            staged.files.append((tmp, Path(target)))
        done = True
    except OSError as e:
        raise CliError(f"{path}: cannot write ({_os_reason(e)})") from None
    finally:
        if not done and os.path.exists(tmp):
            os.remove(tmp)


def available_memory() -> int:
    """Bytes of host memory available to this process without swapping: MemAvailable (free memory plus the
    reclaimable page cache) on Linux, free pages elsewhere, 4 GiB when neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def auto_tile(model, shape: tuple[int, int], device: str) -> int | None:
    """A tile size that keeps the working set under a quarter of the free memory of the device (GPU) or of
    the host (CPU); None when the whole picture fits. `shape` is the network's input: the bicubic-upscaled
    picture for SRCNN, the LR frames for 3DSRnet (whose feature maps are 5 frames deep)."""
    from .video import WINDOW, VideoSR

    widest = max(getattr(model.net[n], "out_channels", 0) for n in model.net.names())
    depth = WINDOW if isinstance(model, VideoSR) else 1
    free = 4 << 30
    if device.startswith("cuda"):
        import magmasr

        index = int(device.split(":")[1]) if ":" in device else 0
        free = magmasr.cuda.mem_get_info(index)[0] + magmasr.cuda.memory_stats(index)["reserved_bytes"] \
            - magmasr.cuda.memory_stats(index)["allocated_bytes"]
    else:
        free = available_memory()
    # Input, two feature maps and the GEMM workspace: about 4 * widest floats per pixel and frame.
    budget_pixels = free // 4 // (4 * 4 * widest * depth)
    if shape[0] * shape[1] <= budget_pixels:
        return None
    return max(64, int(np.sqrt(budget_pixels)) // 8 * 8)


# On the CPU a picture is upscaled CPU_TILE x CPU_TILE output pixels at a time at most (the same pixels): the
# feature maps of one tile (150 MB for SRCNN's 64 channels) are reused from tile to tile, where the whole picture's
# would be fresh pages every time (2 GB for a 2048 x 2048 output: the kernel zeroing them made a whole 1024 x 1024
# x2 upscale 5.3 s instead of 3.5-3.6 s in tiles of 512-768 on one core, 2026-12-07).
CPU_TILE = 768


def network_tile(model, shape: tuple[int, int], tile: int | None) -> int | None:
    """The tile size the network runs with for a picture whose output is `shape`: `tile`, and on the CPU at most
    CPU_TILE when the picture is larger than that."""
    if model is not None and model.device == "cpu" and max(shape) > CPU_TILE:
        return CPU_TILE if tile is None else min(tile, CPU_TILE)
    return tile


def upscale_array(model: ImageSR | None, img: np.ndarray, scale: int, tile: int | None, device: str,
                  show_tiles: bool = True) -> np.ndarray:
    """One picture through `model` (bicubic when None), tiled when `tile` or the free memory calls for it (on
    the CPU, in tiles of at most CPU_TILE), with a tiles-per-second progress line when it is tiled and
    `show_tiles`."""
    if model is None:
        return im.imresize(img, scale)
    if tile is None:
        shape = (img.shape[0] * scale, img.shape[1] * scale)
        tile = network_tile(model, shape, auto_tile(model, shape, device))
    if not show_tiles or tile is None or max(img.shape[0], img.shape[1]) * scale <= tile:
        return model.upscale(img, scale, tile=tile)
    return model.upscale(img, scale, tile=tile, progress=_tile_progress(tile))


def comparison_image(lr: np.ndarray, bicubic: np.ndarray, ours: np.ndarray, original: np.ndarray,
                     size: int = 192) -> np.ndarray:
    """A side-by-side crop: bicubic | magmasr | original, taken where the original has the most detail."""
    gray = original if original.ndim == 2 else im.rgb2y(original)
    size = min(size, *gray.shape)
    r, c = im.detail_window(gray, size)
    gap = np.full((size, 4) + original.shape[2:], 255, dtype=np.uint8)
    crops = [x[r:r + size, c:c + size] for x in (bicubic, ours, original)]
    return np.concatenate([crops[0], gap, crops[1], gap, crops[2]], axis=1)


# --------------------------------------------------------------------------------------------- commands
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov")


def default_video_model(scale: int, weights: str | None, arch: str | None = None) -> str:
    """What a video goes through without --model: 3DSRnet when --weights is a 3DSRnet file or, without
    --weights, when --arch names a 3DSRnet variant or a 3DSRnet ships for the scale; SRCNN frame by frame
    otherwise (and when --arch names an SRCNN preset)."""
    from .video import VideoSR
    from .weights import load

    if weights:
        try:
            built = load(weights)[1].get("architecture", "")
        except Exception:  # noqa: BLE001 - _load_weights reports an unreadable file properly
            return "srcnn"
        return "3dsrnet" if built in VideoSR.ARCHITECTURES else "srcnn"
    if arch is not None:
        return "3dsrnet" if arch in VideoSR.VARIANTS else "srcnn"
    return "3dsrnet" if shipped_weights("3dsrnet", scale) else "srcnn"


def load_video_model(args):
    """3DSRnet for --model 3dsrnet, else the image model frame by frame."""
    if args.model != "3dsrnet":
        return load_image_model(args)
    from .video import VideoSR

    model, path = _load_weights(VideoSR, "3dsrnet", "3DSRnet", args, "--model srcnn / bicubic (frame by frame)")
    if model.scale != args.scale:
        raise CliError(f"{path.name} is a x{model.scale} 3DSRnet; it cannot upscale x{args.scale}")
    return _inference_setup(model.to(args.device), args)


def upscale_video(src: Path, dst: Path, args) -> int:
    """Streams the video through the model: frames are read, upscaled and written one at a time (3DSRnet
    keeps a 5-frame window, the ends padded by repeating frames); the audio is copied. Written to a temporary
    file renamed into place, removed on failure."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise CliError("video needs the imageio-ffmpeg package: pip install 'magmasr[video]'") from None
    from .video import VideoSR

    if dst.suffix.lower() not in VIDEO_SUFFIXES:
        raise CliError(f"{dst}: the output of a video is a video ({', '.join(VIDEO_SUFFIXES)})")
    if dst.exists() and not args.overwrite:
        raise CliError(f"{dst} exists; pass --overwrite to replace it")
    check_writable(dst)
    model = load_video_model(args)

    def unreadable_video(e: Exception) -> CliError:
        text = first_line(e, "no frames")
        if src.stat().st_size == 0:
            text = "the file is empty"
        elif "meta information" in text:
            text = "not a video ffmpeg can decode, or a damaged one"
        return CliError(f"{src}: cannot read the video ({text})")

    try:
        reader = imageio_ffmpeg.read_frames(str(src))
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as e:
        raise unreadable_video(e) from None
    w, h = meta["size"]
    fps = meta.get("fps") or 25
    n_total = _frame_count(meta)
    s = args.scale
    try:
        fd, tmp, target = temp_beside(dst, suffix=dst.suffix)
    except OSError as e:
        reader.close()
        raise CliError(f"{dst}: cannot write ({_os_reason(e)})") from None
    os.close(fd)
    has_audio = bool(meta.get("audio_codec"))
    # H.264 in 4:2:0 needs even sizes; an odd output size keeps its exact size in 4:4:4 rather than being cropped
    # or padded.
    pix_fmt = "yuv420p" if (w * s) % 2 == 0 and (h * s) % 2 == 0 else "yuv444p"
    writer = imageio_ffmpeg.write_frames(tmp, (w * s, h * s), fps=fps, macro_block_size=1, quality=None,
                                         codec="libx264", output_params=["-crf", str(10 if args.crf is None else args.crf)],
                                         pix_fmt_out=pix_fmt, audio_path=str(src) if has_audio else None,
                                         audio_codec="copy" if has_audio else None, ffmpeg_log_level="error")

    def frames():
        try:
            for raw in reader:
                yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        except (OSError, RuntimeError) as e:
            raise unreadable_video(e) from None

    def emit(rgb_up: np.ndarray | None) -> None:
        try:
            writer.send(rgb_up if rgb_up is None else np.ascontiguousarray(rgb_up))
        except (OSError, RuntimeError) as e:
            raise CliError(f"{dst}: cannot write the video (ffmpeg: {first_line(e)})") from None

    emit(None)  # starts ffmpeg

    t0, done = time.perf_counter(), 0
    try:
        if isinstance(model, VideoSR):
            tile = args.tile if args.tile is not None else auto_tile(model, (h, w), args.device)
            for rgb_up in model.upscale_stream(frames(), tile):
                emit(rgb_up)
                done += 1
                _progress(done, n_total, t0)
        else:
            for rgb in frames():
                emit(upscale_array(model, rgb, s, args.tile, args.device, show_tiles=False))
                done += 1
                _progress(done, n_total, t0)
        if done == 0:
            raise CliError(f"{src}: the video has no frames")
        try:
            writer.close()
        except (OSError, RuntimeError) as e:
            raise CliError(f"{dst}: cannot write the video (ffmpeg: {first_line(e)})") from None
        finish(tmp, target)
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        try:
            for stream in (writer, reader):
                with contextlib.suppress(Exception):  # the original error matters, not ffmpeg's
                    _stop_ffmpeg(stream, interrupted)
        finally:  # even when a second Ctrl-C cuts the writer's flush short
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    _say(f"{src} {w}x{h} -> {dst} {w * s}x{h * s}, {done} frames" + (" with audio" if has_audio else ""))
    return 0


def _stop_ffmpeg(stream, interrupted: bool) -> None:
    """Ends an imageio-ffmpeg reader or writer early: closed (a writer's ffmpeg then finishes the file, which is
    about to be removed), or after a Ctrl-C, with the interrupt passed into it, on which imageio-ffmpeg kills its
    ffmpeg at once instead of waiting for it."""
    if not interrupted:
        stream.close()
        return
    try:
        stream.throw(KeyboardInterrupt)
    except (KeyboardInterrupt, StopIteration):
        pass


def _frame_count(meta: dict) -> int:
    """The number of frames of a video from ffmpeg's metadata: as stated, or its duration times its frame rate
    (an estimate, for the progress line); 0 when unknown."""
    n = meta.get("nframes")
    if isinstance(n, (int, float)) and np.isfinite(n) and n > 0:
        return int(n)
    duration, fps = meta.get("duration"), meta.get("fps")
    try:
        return max(0, int(round(float(duration) * float(fps))))
    except (TypeError, ValueError, OverflowError):
        return 0


def upscale_sequence(src: Path, out_dir: Path, args) -> int:
    """A folder of frames (one sequence, in name order) through 3DSRnet, streamed like a video: each frame is
    read, upscaled with its 5-frame window and written (PNG, same name) in turn. Every frame is checked first
    (one size, all gray or all RGB, 8-bit) and no output may exist without --overwrite; the frames go to
    temporary files renamed into place once the last is done, so a failure or Ctrl-C leaves no partial sequence
    and the files that were there before as they were."""
    files = list_images(src)
    kinds = set()
    for f in files:
        dtype, size, channels = _stored_pixels(f)
        if dtype != np.uint8:
            raise CliError(f"{f}: a frame of a sequence is 8-bit gray or RGB, got {_pixel_kind(dtype, channels)}")
        kinds.add(size + ((3,) if channels == 3 else ()))
    if len(kinds) > 1:
        raise CliError(f"{src}: the frames of a sequence have one size and are all gray or all RGB; found "
                       f"{', '.join(str(k) for k in sorted(kinds))}")
    outs = [out_dir / (f.stem + ".png") for f in files]
    if len(set(outs)) < len(outs):
        raise CliError(f"{src}: two frames share a name apart from the extension; their outputs would collide")
    existing = [o for o in outs if o.exists()]
    if existing and not args.overwrite:
        raise CliError(f"{existing[0]} exists ({len(existing)} of the outputs do); pass --overwrite to replace them")
    missing = [d for d in [out_dir, *out_dir.parents] if not d.exists()]  # the folders this run creates
    check_writable(missing[-1] if missing else out_dir / "x")
    model = load_video_model(args)
    h, w = next(iter(kinds))[:2]
    tile = args.tile if args.tile is not None else auto_tile(model, (h, w), args.device)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{out_dir}: cannot create the output folder ({_os_reason(e)})") from None

    def frames():
        for f in files:
            img = read_image(f)
            yield img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img  # H x W x 1 stored gray

    staged, t0 = Staged(missing), time.perf_counter()
    try:
        for dst, out in zip(outs, model.upscale_stream(frames(), tile)):
            atomic_write_image(dst, out, True, staged, quality=args.quality, png_level=args.png_compression)
            _progress(len(staged.files), len(files), t0)
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    _say(f"{src}: {len(files)} frames -> {out_dir}, x{args.scale}")
    return 0


# The progress line of stderr (shared with fit) and messages on lines of their own after it.
_status, _end_status, _say = STATUS_LINE.update, STATUS_LINE.end, STATUS_LINE.say


def _progress(done: int, total: int, t0: float, what: str = "frames") -> None:
    elapsed = time.perf_counter() - t0
    rate = done / max(elapsed, 1e-9)
    of = f"/{max(total, done)}" if total else ""  # a total from a video's duration is an estimate
    _status(f"{done}{of} {what}, {rate:.2f} {what}/s{time_left(done, total, elapsed)}")


def cmd_upscale(args) -> int:
    from .video import VideoSR

    if args.tile is not None and args.tile < 1:
        raise CliError(f"--tile must be at least 1 pixel, got {args.tile}")
    _check_model_options(args)
    video = args.input is not None and str(args.input).lower().endswith(VIDEO_SUFFIXES)
    if args.crf is not None and not video:
        raise CliError("--crf sets the quality of a video output; the input is not a video "
                       f"({', '.join(VIDEO_SUFFIXES)})")
    model_given = args.model is not None
    if args.model is None:
        if video:
            args.model = default_video_model(args.scale, args.weights, args.arch)
        else:  # a 3DSRnet variant named with --arch means the folder is a sequence of frames
            args.model = "3dsrnet" if args.arch in VideoSR.VARIANTS else "srcnn"
        if video and args.model == "srcnn" and not args.weights:
            have = [f"x{k}" for k in (2, 3, 4) if shipped_weights("3dsrnet", k)]
            print(f"note: no 3DSRnet x{args.scale} ships with this version"
                  + (f" (only {', '.join(have)})" if have else "")
                  + "; the video goes through SRCNN frame by frame", file=sys.stderr)
    src = None if args.input is None else Path(args.input)
    if src is not None and not src.exists():
        raise CliError(f"{src}: no such file or folder")
    sequence = args.model == "3dsrnet" and not video
    if sequence and (src is None or not src.is_dir()):
        what = "--model 3dsrnet" if model_given else f"--arch {args.arch} (a 3DSRnet variant)"
        raise CliError(f"{what} upscales a video or a folder of frames (one sequence, in name order); a single "
                       "picture goes through srcnn (--arch 9-5-5 or 9-1-5) or bicubic")
    into = _output_folder(args.output)  # -o naming a folder: the default file name(s), in that folder
    if src is None:
        outs = _default_outputs(args, into)  # checked before any work
    elif src.is_dir():
        out_dir = into or (Path(args.output) if args.output else src.with_name(src.name + f"_x{args.scale}"))
        if out_dir.exists() and not out_dir.is_dir():
            raise CliError(f"-o {out_dir}: a file; the output of a folder of pictures is a folder")
        if out_dir.exists() and out_dir.resolve() == src.resolve():
            raise CliError(f"-o {out_dir}: the input folder itself; write the upscaled pictures to another folder")
    model = None if video or sequence else load_image_model(args)
    where = args.device + ("" if args.device == "cpu" else f" ({_gpu_name()})")
    print(f"magmasr upscale: {args.model} x{args.scale} on {where}", file=sys.stderr)
    if src is None:
        return _upscale_default(model, args, *outs)
    if src.is_dir():
        if sequence:
            return upscale_sequence(src, out_dir, args)
        return _upscale_folder(model, src, out_dir, args)
    folder = into or src.parent
    if src.suffix.lower() in VIDEO_SUFFIXES:
        out = Path(args.output) if args.output and into is None else folder / f"{src.stem}_x{args.scale}{src.suffix}"
        _not_the_input(src, out)
        return upscale_video(src, out, args)
    if src.suffix.lower() not in READ_SUFFIXES:
        raise CliError(f"{src}: unsupported format (images: {', '.join(READ_SUFFIXES)})")
    out = _image_output(src, folder / f"{src.stem}_x{args.scale}", None if into else args.output, args.overwrite)
    check_writable(out)
    _upscale_file(model, src, out, args)
    return 0


def _check_model_options(args) -> None:
    """Options that contradict --model are refused rather than ignored."""
    if args.model == "bicubic":
        for flag, value in (("--weights", args.weights), ("--arch", args.arch),
                            ("--srcnn-mat", getattr(args, "srcnn_mat", None))):
            if value:
                raise CliError(f"{flag} picks a network's weights; --model bicubic has none (drop {flag}, or "
                               "use --model srcnn)")


def _output_folder(output: str | None) -> Path | None:
    """The folder that -o names: an existing folder, or a path written with a trailing slash (which must
    exist); None when -o names a file or is not given."""
    if not output:
        return None
    path = Path(output)
    if path.is_dir():
        return path
    if output.endswith(("/", os.sep)):
        raise CliError(f"-o {output}: no such folder (create it first, or name an output file)")
    return None


def _not_the_input(src: Path, dst: Path) -> None:
    if dst.exists() and os.path.samefile(src, dst):
        raise CliError(f"-o {dst}: that is the input file; the output must go to another file")


def _upscale_folder(model, src: Path, out_dir: Path, args) -> int:
    """Every picture of `src` into `out_dir`, all or nothing: every input's header and every output name are
    checked before the first picture is computed; the outputs are written to temporary files next to their
    destinations and renamed into place only once every picture is done, so a damaged picture or Ctrl-C half
    way leaves the output folder as it was (and removes it if this run created it)."""
    files = list_images(src)
    outs = [_image_output(f, out_dir / f.stem, None, args.overwrite) for f in files]
    if len(set(outs)) < len(outs):
        raise CliError(f"{src}: two pictures share a name apart from the extension; their outputs would "
                       "collide")
    missing = [d for d in [out_dir, *out_dir.parents] if not d.exists()]  # the folders this run creates
    check_writable(missing[-1] if missing else out_dir / "x")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{out_dir}: cannot create the output folder ({_os_reason(e)})") from None
    staged, t0 = Staged(missing), time.perf_counter()
    try:
        for i, (f, dst) in enumerate(zip(files, outs), 1):
            _upscale_file(model, f, dst, args, staged)
            _progress(i, len(files), t0, "images")
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    _say(f"{src}: {len(files)} pictures -> {out_dir}, x{args.scale}")
    return 0


def _gpu_name() -> str:
    import magmasr

    try:
        return magmasr.cuda.device_name(0)
    except Exception:  # noqa: BLE001
        return "GPU"


TIFF_SUFFIXES = (".tif", ".tiff")


def _pixel_kind(dtype: np.dtype, channels: int) -> str:
    depth = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}.get(np.dtype(dtype), str(np.dtype(dtype)))
    return f"{depth} {'gray' if channels in (1, 2) else 'RGB'}{' + alpha' if channels in (2, 4) else ''}"


def _stored_pixels(src: Path, keep_alpha: bool = False) -> tuple[np.dtype, tuple[int, int], int]:
    """The pixel type, height x width and channels (1 or 3; with `keep_alpha` 2 or 4 for a picture with an
    alpha channel) that read_image will give for `src`, from the file's header alone
    (:func:`magmasr.sr.image_info`); CliError for an unreadable file or pixels that are not a gray or RGB
    picture."""
    try:
        return image_info(src, keep_alpha)
    except ValueError as e:
        raise CliError(str(e)) from None


NO_ALPHA_SUFFIXES = (".jpg", ".jpeg", ".bmp")  # formats without an alpha channel (Pillow's BMP writer has none)


def _alpha_dropped(img: np.ndarray, dst: Path) -> tuple[np.ndarray, str]:
    """(the picture to upscale, a note for the final message): an alpha channel is kept for 8-bit and 16-bit
    pictures written to a format that holds one, else dropped, and the note says so."""
    if not (img.ndim == 3 and img.shape[2] in (2, 4)):
        return img, ""
    if dst.suffix.lower() in NO_ALPHA_SUFFIXES:
        why = f"a {dst.suffix.lower()} file has none"
    elif img.dtype not in (np.uint8, np.uint16):
        why = f"kept for 8-bit and 16-bit pictures only, this is {img.dtype}"
    else:
        return img, ""
    return (img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]), f" (alpha channel dropped: {why})"


def _image_output(src: Path, default_stem: Path, output: str | None, overwrite: bool) -> Path:
    """Where the upscaled `src` goes, checked before any work: the input is readable with supported pixels
    (8-bit, 16-bit or float; gray or RGB, with or without alpha), the output format can hold them (PNG:
    8-bit and 16-bit gray; JPEG, BMP, WebP: 8-bit; TIFF: all) and the output does not exist without --overwrite.
    Without -o the name is `default_stem` + .png, or + .tif where PNG cannot hold the pixels (an alpha channel
    is kept: 16-bit with alpha is a .tif; JPEG and BMP outputs drop it, and the final message says so)."""
    dtype, _, channels = _stored_pixels(src, keep_alpha=True)
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise CliError(f"{src}: unsupported pixel type {dtype} (integer or floating-point pictures)")
    png_ok = dtype == np.uint8 or (dtype == np.uint16 and channels == 1)
    dst = Path(output) if output else default_stem.with_name(default_stem.name + (".png" if png_ok else ".tif"))
    suffix = dst.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise CliError(f"{dst}: unsupported output format (use one of {', '.join(IMAGE_SUFFIXES)})")
    if output and not dst.parent.is_dir():
        raise CliError(f"{dst.parent}: no such folder for the output")
    _not_the_input(src, dst)
    if suffix not in TIFF_SUFFIXES and dtype != np.uint8 and not (png_ok and suffix == ".png"):
        raise CliError(f"{dst}: a {suffix} file cannot hold the {_pixel_kind(dtype, channels)} pixels of {src}; "
                       "write a .tif" + (" or a .png" if png_ok else ""))
    if dst.exists() and not overwrite:
        raise CliError(f"{dst} exists; pass --overwrite to replace it")
    return dst


def _tile_progress(tile: int):
    """A progress(done, total) printing tiles done and tiles per second on one line of stderr."""
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - t0
        rate = done / max(elapsed, 1e-9)
        _status(f"{done}/{total} tiles of {tile}x{tile}, {rate:.2f} tiles/s{time_left(done, total, elapsed)}")
        if done == total:
            _end_status()

    return progress


def _upscale_file(model, src: Path, dst: Path, args, staged: Staged | None = None) -> None:
    """One picture: 8-bit and 16-bit through the network as they are; other pixel types (scientific data:
    floating point of any range, signed or 32-bit integers) mapped linearly onto [0, 1] by the picture's
    minimum and maximum, upscaled, and mapped back, so the output keeps the input's units and dtype (values
    clipped to the input's range, as 8-bit outputs are to 0..255; integers rounded).

    A tiled picture written as TIFF is streamed: each band of tiles goes to the file as soon as it is done, so
    the upscaled picture never has to fit in memory (a gigapixel scan at x4). Other formats need the whole
    picture in memory; one that would not fit is refused before any work, with the advice to write a TIFF."""
    try:
        img = read_image(src, keep_alpha=True)
    except ValueError as e:
        raise CliError(str(e)) from None
    img, note = _alpha_dropped(img, dst)
    s = args.scale
    if img.dtype == np.uint8 or (img.dtype == np.uint16 and model is not None):
        work, back = img, (lambda block: block)  # the network's pipeline takes them as they are
    else:
        try:
            work, lo, hi = to_unit_range(img, src)  # the mapping eval and train use too
        except ValueError as e:
            raise CliError(str(e)) from None
        integer = np.issubdtype(img.dtype, np.integer)

        def back(block: np.ndarray) -> np.ndarray:
            out = np.clip(block, 0.0, 1.0) * (hi - lo) + lo
            return (np.round(out) if integer else out).astype(img.dtype)
    shape = (img.shape[0] * s, img.shape[1] * s) + img.shape[2:]
    nbytes = int(np.prod(shape)) * img.dtype.itemsize
    tiff = dst.suffix.lower() in TIFF_SUFFIXES
    tile = None
    if model is not None:
        tile = args.tile if args.tile is not None else auto_tile(model, shape[:2], args.device)
        if tile is not None and max(shape[:2]) <= tile:
            tile = None
    free = available_memory()
    if not (tiff and tile is not None) and nbytes > free // 2:
        raise CliError(f"{dst}: the upscaled picture ({nbytes / 2**30:.1f} GiB) would not fit in memory as a "
                       f"{dst.suffix or 'file'} (about {free / 2**30:.1f} GiB free); write a .tif, "
                       "which is streamed to disk tile by tile" + ("" if model is not None else
                                                                   " (with --model srcnn)"))
    if model is None:  # bicubic, whole
        blocks = iter([((0, 0), back(im.imresize(work, s)))])
    else:
        run = tile if args.tile is not None else network_tile(model, shape[:2], tile)
        progress = _tile_progress(run) if run is not None and max(shape[:2]) > run else None
        blocks = (((r, c), back(b)) for (r, c), b in model.upscale_tiles(work, s, run, progress))
    icc = _icc_for(src, 1 if img.ndim == 2 else img.shape[2])  # the colours keep their meaning
    if tiff and tile is not None:
        atomic_write_tiff_stream(dst, blocks, shape, img.dtype, args.overwrite, staged, icc,
                                 _resolution_for(src, s))
    else:
        out = np.empty(shape, img.dtype)
        for (r, c), b in blocks:
            out[r:r + b.shape[0], c:c + b.shape[1]] = b
        atomic_write_image(dst, out, args.overwrite, staged, icc, _exif_for(src, *shape[:2]),
                           _resolution_for(src, s), args.quality, args.png_compression)
    _say(f"{src} {img.shape[1]}x{img.shape[0]} -> {dst} {shape[1]}x{shape[0]}{note}")


def atomic_write_tiff_stream(path: Path, blocks, shape: tuple, dtype, overwrite: bool,
                             staged: Staged | None = None, icc: bytes | None = None,
                             resolution: Resolution | None = None) -> None:
    """Writes a picture that arrives as row-major blocks ``((row, col), block)`` to a TIFF, holding only one
    band of blocks: each band's rows go to the file as soon as its last block is in. Strips of about 1 MiB,
    BigTIFF beyond 4 GiB; written to a temporary file renamed into place, removed on failure."""
    import tifffile

    if path.exists() and not overwrite:
        raise CliError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise CliError(f"{path.parent}: no such folder for the output")
    h, w = shape[:2]
    dtype = np.dtype(dtype)
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def rows():
        band, top = None, 0
        for (r, c), b in blocks:
            if band is None:
                band, top = np.empty((b.shape[0],) + tuple(shape[1:]), dtype), r
            band[r - top:r - top + b.shape[0], c:c + b.shape[1]] = b
            if c + b.shape[1] == w:  # the band is complete
                yield from band[:r - top + b.shape[0]]
                band = None

    write_atomically(path, lambda tmp: tifffile.imwrite(
        tmp, data=rows(), shape=tuple(shape), dtype=dtype, **_tiff_kind(tuple(shape), icc, resolution),
        rowsperstrip=max(1, (1 << 20) // row_bytes), bigtiff=h * row_bytes > 2**32 - 2**25), staged)


def _default_outputs(args, into: Path | None) -> tuple[Path, Path]:
    """The two outputs of the default picture, the result and its side-by-side comparison (-o: the result's
    file, or a folder for both), both checked before any work: format, --overwrite, a folder to write in."""
    name = f"astronaut_x{args.scale}.png"
    out = (into / name) if into else Path(args.output) if args.output else Path(name)
    cmp_path = out.with_name(out.stem + "_comparison.png")
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise CliError(f"{out}: unsupported output format (use one of {', '.join(IMAGE_SUFFIXES)})")
    for path in (out, cmp_path):
        if path.exists() and not args.overwrite:
            raise CliError(f"{path} exists; pass --overwrite to replace it")
    check_writable(out)
    return out, cmp_path


def _upscale_default(model, args, out: Path, cmp_path: Path) -> int:
    from skimage import data

    original = im.modcrop(data.astronaut(), args.scale)  # 512x512 RGB, bundled with scikit-image
    lr = im.imresize(original, 1.0 / args.scale)
    bicubic = im.imresize(lr, args.scale)
    ours = bicubic if model is None else upscale_array(model, lr, args.scale, args.tile, args.device)
    staged = Staged()  # both files or neither
    try:
        atomic_write_image(out, ours, args.overwrite, staged, quality=args.quality, png_level=args.png_compression)
        atomic_write_image(cmp_path, comparison_image(lr, bicubic, ours, original), args.overwrite, staged,
                           quality=args.quality, png_level=args.png_compression)
        staged.commit()
    finally:
        staged.discard()
    from . import metrics

    p_b = metrics.psnr(bicubic, original, crop_border=args.scale, test_y_channel=True)
    p_o = metrics.psnr(ours, original, crop_border=args.scale, test_y_channel=True)
    name = args.model + (" + self-ensemble" if model is not None and model.ensemble else "")
    print(f"default picture (scikit-image astronaut) downscaled x{args.scale} to {lr.shape[1]}x{lr.shape[0]} "
          f"and upscaled back: {out} and {cmp_path} (bicubic | {name} | original)\n"
          f"PSNR (Y) against the original: bicubic {p_b:.2f} dB, {name} {p_o:.2f} dB", file=sys.stderr)
    return 0


def _eval_video(args) -> int:
    """3DSRnet on one sequence folder of frames, or on a folder of sequence folders (Vid4 style), under the
    authors' test.m protocol, next to bicubic and single-frame SRCNN (the one that ships for the scale)."""
    from .video import evaluate_video

    root = Path(args.dataset)
    if not root.is_dir():
        raise CliError(f"{root}: no such folder (a folder of frames, or of sequence folders)")

    def has_frames(d: Path) -> bool:
        return any(p.suffix.lower() in READ_SUFFIXES and p.is_file() for p in d.iterdir())

    seqs = [root] if has_frames(root) else sorted(d for d in root.iterdir() if d.is_dir() and has_frames(d))
    if not seqs:
        raise CliError(f"{root}: no frames in it or in its sub-folders")
    from .video import WINDOW

    for seq in seqs:  # every sequence checked (from the files' headers) before the table starts
        files = list_images(seq)
        if len(files) < WINDOW:
            raise CliError(f"{seq}: {len(files)} frame{'s' if len(files) != 1 else ''}, the protocol needs at least "
                           f"{WINDOW}")
        first = None
        for f in files:  # the messages of video.read_frames, which reads them
            _, (h, w), channels = _stored_pixels(f)
            kind = "RGB" if channels == 3 else "gray"
            if first is None:
                first = (h, w, kind)
            elif (h, w) != first[:2]:
                raise CliError(f"{f}: {w}x{h} pixels, but the first frame {files[0].name} is {first[1]}x{first[0]}: "
                               "the frames of a sequence have one size")
            elif kind != first[2]:
                raise CliError(f"{f}: {'an' if kind == 'RGB' else 'a'} {kind} frame, but the first frame {files[0].name} is {first[2]}: the frames of "
                               "a sequence are all gray or all RGB")
    model = load_video_model(args)
    srcnn = shipped_weights("srcnn", args.scale)
    baselines = {"SRCNN": _inference_setup(ImageSR.load(srcnn).to(args.device), args)} if srcnn else {}
    print("| sequence | 3DSRnet PSNR (dB) | bicubic | " + "".join(f"{k} (single frame) | " for k in baselines)
          + "frames |\n|---|---|---|" + "---|" * len(baselines) + "---|")
    rows = []
    for seq in seqs:
        try:
            r = evaluate_video(model, seq, baselines=baselines)
        except ValueError as e:
            raise CliError(str(e)) from None
        rows.append(r)
        print(f"| {r.sequence} | {r.psnr:.2f} | {r.psnr_bicubic:.2f} | "
              + "".join(f"{v:.2f} | " for v in r.psnr_baselines.values()) + f"{r.frames} |")
    if len(rows) > 1:
        mean = lambda f: f"{float(np.mean([f(r) for r in rows])):.2f}"  # noqa: E731
        print(f"| **mean** (x{args.scale}) | {mean(lambda r: r.psnr)} | {mean(lambda r: r.psnr_bicubic)} | "
              + "".join(f"{mean(lambda r, k=k: r.psnr_baselines[k])} | " for k in baselines) + " |")
    print("The 3DSRnet authors' test.m protocol: Y / 255, LR by MATLAB bicubic in floating point, centre frames "
          "3..N-2, PSNR (peak 1) of the unrounded output over the whole frame, mean over frames."
          + (" Every network with the self-ensemble (8 rotations and flips averaged)." if args.ensemble else ""))
    return 0


def cmd_eval(args) -> int:
    _check_model_options(args)
    if args.srcnn_mat and (args.weights or args.arch):
        raise CliError("--srcnn-mat is the model to evaluate; it does not go with --weights or --arch")
    if args.model == "3dsrnet":
        if args.srcnn_mat:
            raise CliError("--srcnn-mat evaluates an SRCNN on images; it does not go with --model 3dsrnet")
        return _eval_video(args)
    if args.srcnn_mat:
        model = _inference_setup(ImageSR.from_srcnn_mat(args.srcnn_mat, args.scale).to(args.device), args)
    else:
        model = load_image_model(args)
    rows = evaluate_image_sr(model, args.dataset, args.scale)
    name = "bicubic" if model is None else args.model + (" + self-ensemble" if model.ensemble else "")
    # MAE and MSE in 8-bit levels, as the literature reports them: PSNR = 10 log10(255^2 / MSE).
    print("| image | PSNR (dB) | SSIM | MAE (levels) | MSE (levels^2) | bicubic PSNR (dB) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.psnr:.2f} | {r.ssim:.4f} | {255 * r.mae:.3f} | {255 ** 2 * r.mse:.2f} | "
              f"{r.psnr_bicubic:.2f} |")
    mean = lambda k: float(np.mean([getattr(r, k) for r in rows]))  # noqa: E731
    print(f"| **mean** ({name}, x{args.scale}) | {mean('psnr'):.2f} | {mean('ssim'):.4f} | {255 * mean('mae'):.3f} | "
          f"{255 ** 2 * mean('mse'):.2f} | {mean('psnr_bicubic'):.2f} |")
    print("Y channel of MATLAB rgb2ycbcr, uint8-rounded, scale pixels shaved; MAE and MSE in 8-bit levels (0..255), "
          "so PSNR = 10 log10(255^2 / MSE).")
    return 0


def _int_in(lo: int, hi: int):
    """An argparse type: an integer in lo..hi (--crf 0..51, --quality 1..100)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {lo}..{hi}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer {lo}..{hi}, got {v}")
        return v

    return parse


def _finite(text: str) -> float:
    """argparse type of the float options: a finite number (float() also takes 'nan' and 'inf')."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _factors(text: str) -> tuple[float, ...]:
    """argparse type of --downscales: comma-separated factors in (0, 1], each once."""
    from .train import check_downscales

    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,0.8,0.6, got {text!r}") from None
    try:
        return check_downscales(vals)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected distinct factors in (0, 1], got {text!r}") from None


def _layer_lr(text: str) -> tuple[str, float]:
    """argparse type of --layer-lr: LAYER=LR, a layer name and a finite rate >= 0."""
    name, sep, value = text.partition("=")
    try:
        lr = float(value)
    except ValueError:
        lr = float("nan")
    if not sep or not name.strip() or not np.isfinite(lr) or lr < 0:
        raise argparse.ArgumentTypeError(f"expected LAYER=LR with a rate >= 0, such as conv3=1e-5, got {text!r}")
    return name.strip(), lr


def _layer_rates(args, model, trainable, fixed: dict) -> dict:
    """--layer-lr as fit's lr_mult ({layer: rate / --lr}) merged with `fixed` (the recipe's multipliers),
    checked against the model's layers before any data is read."""
    names = [n for n in model.names() if model[n].parameters()]
    out = dict(fixed)
    for name, lr in args.layer_lr:
        if name not in names:
            raise CliError(f"--layer-lr {name}={lr:g}: no layer {name!r}; the layers with weights: {', '.join(names)}")
        if trainable is not None and name not in trainable:
            raise CliError(f"--layer-lr {name}={lr:g}: {name} is frozen by --recipe {getattr(args, 'recipe', '')} (give the kept "
                           "layers a rate with --frozen-lr)")
        if name in fixed:
            raise CliError(f"--layer-lr {name}={lr:g}: {name} already learns at --frozen-lr times --lr")
        if [n for n, _ in args.layer_lr].count(name) > 1:
            raise CliError(f"--layer-lr {name}: given more than once")
        out[name] = lr / args.lr
    return out


def _size(text: str) -> tuple[int, int]:
    """argparse type of --size: HxW, two positive integers."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(v.strip().isdigit() and int(v) > 0 for v in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with two positive integers such as 1080x1920, got {text!r}")
    return int(parts[0]), int(parts[1])


def _check_training(args) -> None:
    """The options that every training command shares, checked before any data is read (a run can take hours;
    it must not fail at the end on an output it cannot write)."""
    for name, ok, what in (("steps", args.steps >= 1, "at least 1"), ("batch", args.batch >= 1, "at least 1"),
                           ("lr", args.lr > 0, "positive"), ("val_fraction", 0 <= args.val_fraction < 1, "in [0, 1)"),
                           ("checkpoint_every", args.checkpoint_every >= 1, "at least 1"),
                           ("momentum", args.momentum is None or args.momentum >= 0, "0 or more")):
        if not ok:
            raise CliError(f"--{name.replace('_', '-')} must be {what}, got {getattr(args, name)}")
    if args.momentum is not None and args.optimizer != "sgd":
        raise CliError(f"--momentum is SGD's; --optimizer {args.optimizer} has none (add --optimizer sgd)")
    if args.checkpoint_every != 500 and not args.checkpoint:
        raise CliError("--checkpoint-every goes with --checkpoint FILE")
    out = Path(args.output)
    if out.is_dir():
        raise CliError(f"-o {out}: a folder; the trained model is a file (e.g. {out / 'model.safetensors'})")
    if not out.parent.is_dir():
        raise CliError(f"-o {out}: no such folder {out.parent} for the trained model")
    if out.suffix.lower() != ".safetensors":
        raise CliError(f"-o {out}: a trained model is a .safetensors file (e.g. {out.with_suffix('.safetensors')})")
    if out.exists() and not args.overwrite:
        raise CliError(f"-o {out} exists; pass --overwrite to replace it")
    check_writable(out)
    if args.checkpoint and Path(args.checkpoint).is_file():  # a model file given by mistake: say so before any work
        from .train import read_checkpoint

        try:
            read_checkpoint(args.checkpoint)
        except ValueError as e:
            raise CliError(f"--checkpoint {e}") from None
    for name in ("checkpoint", "log"):
        path = getattr(args, name, None)
        if path and not Path(path).parent.is_dir():
            raise CliError(f"--{name} {path}: no such folder {Path(path).parent}")
        if path:
            check_writable(Path(path))


def _train_common(args, recipe, extra: dict | None = None) -> int:
    from . import train

    _check_training(args)
    lr_mult = _layer_rates(args, recipe.model, recipe.trainable, recipe.lr_mult)
    data = train.PatchDataset.from_folder(args.data, args.scale, label=33 - _valid_loss(recipe.model),
                                          downscales=args.downscales)
    if args.downscales != (1.0,):
        extra = {**(extra or {}), "downscales": ",".join(f"{f:g}" for f in args.downscales)}
    tr, va = data.split(args.val_fraction, seed=args.seed) if args.val_fraction > 0 else (data, None)
    print(f"{len(tr)} training and {0 if va is None else len(va)} validation sub-images from {args.data}",
          file=sys.stderr)
    res = train.fit(recipe.model, tr, steps=args.steps, batch_size=args.batch, optimizer=args.optimizer,
                    lr=args.lr, momentum=0.9 if args.momentum is None else args.momentum, lr_schedule=args.lr_schedule,
                    trainable=recipe.trainable, lr_mult=lr_mult, val=va, seed=args.seed, device=args.device,
                    checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, log=args.log, algo=args.algo)
    # Save the trained weights as a whole-image ('same', replicate) model of the same architecture.
    model = train.image_model(recipe.model, args.scale)
    model.save(args.output, **(extra or {}), recipe=recipe.name, data=str(args.data), steps=str(args.steps),
               val_psnr=f"{res.val_psnr:.4f}" if res.val_psnr is not None else "",
               command=" ".join(["magmasr"] + args.argv))
    print(f"saved {args.output}" + ("" if res.val_psnr is None else f" (validation PSNR {res.val_psnr:.2f} dB)"),
          file=sys.stderr)
    return 0


def _valid_loss(model) -> int:
    return sum(model[n].kernel_size[-1] - 1 for n in model.names() if n.startswith("conv"))


def cmd_train(args) -> int:
    from . import train
    from .models import SRCNN_PRESETS

    if args.model == "3dsrnet":
        return _train_video(args)
    args.arch = args.arch or "9-5-5"
    if args.arch not in SRCNN_PRESETS:
        raise CliError(f"--arch {args.arch}: expected one of {sorted(SRCNN_PRESETS)}")
    f1, f2, f3 = SRCNN_PRESETS[args.arch]
    recipe = train.make_recipe("scratch_nonlinear" if args.nonlinear else "scratch", f1=f1, f2=f2, f3=f3,
                               seed=args.seed, init=args.init or "gaussian")
    extra = {}
    if args.init_from:
        _check_training(args)
        copied = _init_from(recipe.model, Path(args.init_from), args.scale, video=False)
        extra["init_from"] = f"{Path(args.init_from).name}: {copied}"
        recipe = dataclasses.replace(recipe, name="init_from")
    return _train_common(args, recipe, extra)


def _is_3dsrnet_file(path: Path) -> bool:
    """Whether a weight file holds a 3DSRnet: a magmasr file of that architecture, or a MATLAB v7.3 (HDF5)
    MatConvNet file (the original SRCNN models are MATLAB v5 files)."""
    if path.suffix.lower() == ".mat":
        import h5py

        return bool(h5py.is_hdf5(path))
    from .video import VideoSR
    from .weights import load

    try:
        return load(path)[1].get("architecture") in VideoSR.ARCHITECTURES
    except Exception:  # noqa: BLE001 - the SRCNN loader reports an unreadable file
        return False


def _init_from(net, path: Path, scale: int, video: bool) -> str:
    """Starts `net` from every layer of a weight file that fits it (:func:`magmasr.train.transplant`: same
    shapes, or a smaller kernel embedded at the centre). The file: a 3DSRnet (ours or the authors' .mat) for
    a 3DSRnet, an SRCNN (ours or the authors' .mat for `scale`) for an SRCNN. Says on stderr which layers start
    from it and which from scratch; returns what was taken, e.g. 'conv1, conv2 (embedded 1x1 in 5x5), conv3'."""
    from .train import transplant
    from .weights import import_3dsrnet_mat, load

    if not path.exists():
        raise CliError(f"--init-from {path}: no such file")
    try:
        if path.suffix.lower() == ".mat":
            src = import_3dsrnet_mat(path) if video else ImageSR.from_srcnn_mat(path, scale).net.state_dict()
        else:
            src = load(path)[0]
    except (OSError, ValueError) as e:
        raise CliError(f"--init-from {path}: cannot load ({e})") from None
    done = transplant(net, src)
    if not done:
        raise CliError(f"--init-from {path}: no layer of it has the shapes of this model's "
                       f"(check --filters / --arch and that it is a {'3DSRnet' if video else 'SRCNN'})")
    taken = ", ".join(n if how == "copied" else f"{n} ({how})" for n, how in sorted(done.items()))
    new = sorted({key.split(".")[0] for key in net.state_dict()} - set(done))
    print(f"{taken} start from {path}; " + (f"{', '.join(new)} from scratch" if new else "no layer from scratch"),
          file=sys.stderr)
    return taken


def _train_video(args, pretrained: Path | None = None) -> int:
    """3DSRnet (the published architecture, or with --arch poster our poster's) on clips: synthetic camera
    motion over the still images in DATA, plus the real frame sequences of each --video folder; the residual
    over the bicubic centre frame by MSE (on the region the network predicts). From the default
    initialisation, or every layer fine-tuned from `pretrained` (a 3DSRnet weight file)."""
    from . import train
    from .video import ClipDataset, VideoSR

    if getattr(args, "nonlinear", False):
        raise CliError("--nonlinear is an SRCNN option; a 3DSRnet takes --arch published|poster and --filters")
    if args.downscales != (1.0,):
        raise CliError("--downscales is an SRCNN option; a 3DSRnet's clips vary by --max-shift and --clips-per-image")
    variant = getattr(args, "arch", None) or "published"
    if variant not in VideoSR.VARIANTS:
        raise CliError(f"--arch {variant}: a 3DSRnet is {' or '.join(VideoSR.VARIANTS)} (SRCNN presets go with "
                       f"--model srcnn)")
    if getattr(args, "filters", None) is None:  # the builder's own default: published 64, the poster's 32
        import inspect

        from .models import ARCHITECTURES

        builder = ARCHITECTURES[VideoSR.VARIANTS[variant]]
        args.filters = inspect.signature(builder).parameters["filters"].default
    if getattr(args, "init", None) == "gaussian":
        raise CliError("--init gaussian is the SRCNN paper's; 3DSRnet starts from the default initialisation")
    if getattr(args, "recipe", "finetune_all") != "finetune_all":
        raise CliError(f"--recipe {args.recipe} is an SRCNN recipe; a 3DSRnet is fine-tuned whole (finetune_all)")
    checks = [("patch", 1), ("clips_per_image", 0), ("max_shift", 0)] + ([("filters", 1)] if pretrained is None else [])
    for name, low in checks:
        if getattr(args, name) < low:
            raise CliError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if not args.clips_per_image and not args.video:
        raise CliError("--clips-per-image 0 and no --video folder: no training clips")
    if getattr(args, "frozen_lr", 0.0):
        raise CliError("--frozen-lr is the rate of the layers an SRCNN transfer recipe keeps; a 3DSRnet is fine-tuned "
                       "whole (give a layer its own rate with --layer-lr)")
    _check_training(args)
    if pretrained is None:
        build = VideoSR.tdsrnet if variant == "published" else VideoSR.tdsrnet_poster
        model = build(args.scale, filters=args.filters, seed=args.seed)
        recipe = model.kind + "_synthetic_clips"
        if args.init_from:
            copied = _init_from(model.net, Path(args.init_from), args.scale, video=True)
            model.metadata["init_from"] = f"{Path(args.init_from).name}: {copied}"
    else:
        try:
            model = VideoSR.from_3dsrnet_mat(pretrained, args.scale) if pretrained.suffix.lower() == ".mat" \
                else VideoSR.load(pretrained)
        except (OSError, ValueError) as e:
            raise CliError(f"{pretrained}: cannot load ({e})") from None
        if model.scale != args.scale:
            raise CliError(f"{pretrained} is a x{model.scale} 3DSRnet; it cannot be fine-tuned for x{args.scale}")
        # The new file describes the new training, not the pretrained model's (its scores no longer hold).
        model.metadata = {"finetuned_from": pretrained.name}
        recipe = model.kind + "_finetune_all_synthetic_clips"
    lr_mult = _layer_rates(args, model.net, None, {})
    parts = []
    try:
        if args.clips_per_image:
            images = [read_unit_image(p) for p in list_images(args.data)]
            parts.append(ClipDataset.synthetic(images, args.scale, clips_per_image=args.clips_per_image,
                                               patch=args.patch, max_shift=args.max_shift, seed=args.seed))
        for folder in args.video or []:
            parts.append(ClipDataset.from_folders([folder], args.scale, patch=args.patch, stride=args.patch))
    except (OSError, ValueError) as e:
        raise CliError(str(e)) from None
    data = ClipDataset(np.concatenate([d.x for d in parts]), np.concatenate([d.y for d in parts]), args.scale)
    try:
        data = data.valid(model.border)
    except ValueError as e:
        raise CliError(f"--patch {args.patch}: {e}") from None
    tr, va = data.split(args.val_fraction, seed=args.seed) if args.val_fraction > 0 else (data, None)
    print(f"{len(tr)} training and {0 if va is None else len(va)} validation clips of 5x{args.patch}x{args.patch} "
          f"LR frames", file=sys.stderr)
    res = train.fit(model.net, tr, steps=args.steps, batch_size=args.batch, optimizer=args.optimizer, lr=args.lr,
                    momentum=0.9 if args.momentum is None else args.momentum, lr_schedule=args.lr_schedule,
                    lr_mult=lr_mult, val=va, seed=args.seed, device=args.device, checkpoint=args.checkpoint,
                    checkpoint_every=args.checkpoint_every, log=args.log, algo=args.algo)
    model.save(args.output, recipe=recipe + ("_and_video" if args.video else ""),
               data=" ".join([str(args.data)] + list(args.video or [])), steps=str(args.steps),
               val_psnr=f"{res.val_psnr:.4f}" if res.val_psnr is not None else "",
               command=" ".join(["magmasr"] + args.argv))
    # The error of the predicted residual is that of the upscaled centre frame: this is its PSNR (peak 1).
    print(f"saved {args.output}" + ("" if res.val_psnr is None else f" (validation PSNR {res.val_psnr:.2f} dB)"),
          file=sys.stderr)
    return 0


def _pretrained_file(args) -> Path:
    """finetune's WEIGHTS: a file, or `srcnn` / `3dsrnet` for the model that ships for --scale (and --arch)."""
    src = Path(args.weights)
    if src.exists() or args.weights not in ("srcnn", "3dsrnet"):
        if not src.exists():
            raise CliError(f"{src}: no such weight file (or name a shipped model: srcnn, 3dsrnet)")
        if args.arch is not None:
            raise CliError("--arch picks one of the shipped models; it goes with WEIGHTS srcnn or 3dsrnet, not with "
                           "a file (the file says what it is)")
        return src
    kind = shipped_kind(args.weights, args.arch)
    path = shipped_weights(kind, args.scale)
    if path is None:
        raise CliError(f"no {kind} x{args.scale} ships with this version of magmasr (see `magmasr models`)")
    print(f"fine-tuning the shipped {path.name}", file=sys.stderr)
    return path


def cmd_finetune(args) -> int:
    from . import train

    src = _pretrained_file(args)
    if _is_3dsrnet_file(src):
        return _train_video(args, pretrained=src)
    base = ImageSR.from_srcnn_mat(src, args.scale) if src.suffix == ".mat" else ImageSR.load(src)
    if args.recipe == "finetune_all" and args.frozen_lr:
        raise CliError("--frozen-lr is the rate of the layers a transfer recipe (transfer_12, transfer_13) keeps; "
                       "finetune_all trains every layer at --lr (give a layer its own rate with --layer-lr)")
    # The network is built from the source's own architecture (name and kwargs): a non-linear SRCNN keeps conv2b.
    try:
        recipe = train.make_recipe(args.recipe, base.net.state_dict(), arch=base.arch, frozen_lr=args.frozen_lr,
                                   seed=args.seed)
    except ValueError as e:
        raise CliError(f"--recipe {args.recipe} from {src}: {e}") from None
    if args.recipe == "transfer_12" and base.arch.name == "srcnn_nonlinear":
        print(f"transfer_12 keeps conv1 and conv2 of {src.name} and trains a new conv3 on them; its conv2b is not "
              "used", file=sys.stderr)
    return _train_common(args, recipe)


def cmd_models(args) -> int:
    rows = shipped_models()
    if not rows:
        print("no weights ship with this installation of magmasr")
        return 0
    print("| model | scale | architecture | measured when shipped | date |\n|---|---|---|---|---|")
    for r in rows:
        if "set5_psnr" in r:
            score = f"Set5 {r['set5_psnr']:.2f} dB, Set14 {r.get('set14_psnr', float('nan')):.2f} dB"
        elif "vid4_calendar_psnr" in r:
            score = f"Vid4 calendar {r['vid4_calendar_psnr']:.2f} dB, city {r.get('vid4_city_psnr', float('nan')):.2f} dB"
        else:
            score = ""
        print(f"| {r['kind']} | x{r['scale']} | {r['architecture']} | {score} | {r.get('date', '')} |")
    print("Use one with `magmasr upscale --model srcnn|3dsrnet --scale N [--arch 9-1-5|poster]`, or from Python "
          "with ImageSR.pretrained(scale, preset) / VideoSR.pretrained(scale, variant). How each was trained: "
          "docs/training.md.")
    return 0


def network_macs(net, x) -> int:
    """The multiply-adds of the direct sums of a network's convolutions on the input `x` (a tensor on the
    network's device), layer by layer: each convolution's outputs times its inputs per output (runs the network
    once)."""
    macs = 0
    for n in net.names():
        x = net[n](x)
        if hasattr(net[n], "algo"):
            macs += int(np.prod(x.shape)) * net[n].in_channels * int(np.prod(net[n].kernel_size))
    return macs


def cmd_bench(args) -> int:
    from ._core import from_numpy
    from .models import SRCNN_PRESETS, srcnn_preset
    from .video import WINDOW, VideoSR

    if args.repeat < 1:
        raise CliError(f"--repeat must be at least 1 (timed runs), got {args.repeat}")
    if args.warmup < 0:
        raise CliError(f"--warmup must be 0 or more (untimed runs first), got {args.warmup}")
    if args.train and args.size is not None:
        raise CliError("--size is the picture or frame size of inference; a training step takes --batch and --patch")
    if not args.train and (args.batch is not None or args.patch is not None):
        raise CliError("--batch and --patch go with --train")
    if args.batch is not None and args.batch < 1:
        raise CliError(f"--batch must be at least 1, got {args.batch}")
    if args.model == "3dsrnet":
        variant = args.arch or "published"
        if variant not in VideoSR.VARIANTS:
            raise CliError(f"--arch of 3dsrnet: one of {', '.join(sorted(VideoSR.VARIANTS))}, got {variant!r}")
        net = (VideoSR.tdsrnet if variant == "published" else VideoSR.tdsrnet_poster)(args.scale).net
        if args.train:  # what `magmasr train --model 3dsrnet` steps on: batches of 5-frame LR clips
            n, p = args.batch or 16, args.patch or 32
            shape = (n, 1, WINDOW, p, p)
            what = f"3DSRnet {variant} x{args.scale} training step, {n} clips of {WINDOW}x{p}x{p},"
        else:
            h, w = args.size or (144, 180)
            shape = (1, 1, WINDOW, h, w)
            what = f"3DSRnet {variant} x{args.scale} inference, a {WINDOW}-frame window of {h}x{w},"
    else:
        if args.arch is not None and args.arch not in SRCNN_PRESETS:
            raise CliError(f"--arch of srcnn: one of {', '.join(sorted(SRCNN_PRESETS))}, got {args.arch!r}")
        arch = args.arch or "9-5-5"
        if args.train:  # what `magmasr train` steps on: sub-images, 'valid' output
            n, p = args.batch or 128, args.patch or 33
            net = srcnn_preset(arch, padding="valid")
            shape, what = (n, 1, p, p), f"SRCNN {arch} training step, {n} sub-images of {p}x{p},"
        else:
            h, w = args.size or (540, 960)
            net = srcnn_preset(arch)
            shape, what = (1, 1, h, w), f"SRCNN {arch} inference {h}x{w}"
    out_shape = None
    if args.train:
        try:
            out_shape = tuple(net.output_shape(shape))
        except ValueError as e:
            raise CliError(f"--patch {shape[-1]}: too small for the network ({first_line(e)})") from None
    net.to(args.device)
    # What `magmasr upscale` runs: Winograd's layers on the CPU, the layers' own selector on a GPU.
    algo = args.algo or ("winograd" if args.device == "cpu" else "auto")
    for n in net.names():
        if hasattr(net[n], "algo"):
            net[n].algo = algo
    x = from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32)).to(args.device)
    macs = network_macs(net, x)
    sync = (lambda: __import__("magmasr").cuda.synchronize()) if args.device.startswith("cuda") else (lambda: None)
    run = lambda: net(x)  # noqa: E731
    if args.train:  # forward, the MSE's gradient, backward (no input gradient), an Adam update
        from . import optim
        from ._core import ops

        target = from_numpy(np.random.default_rng(1).random(out_shape, dtype=np.float32))
        target = target.to(args.device)
        opt = optim.Adam(net.parameters(), lr=1e-4)

        def run():
            y = net(x, training=True)
            net.backward(ops.mse_loss_backward(y, target))
            opt.step()

        macs *= 3  # forward, backward-data and backward-weight (the first layer's backward-data is not needed)
    for _ in range(args.warmup):
        run()
    sync()
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    ms = 1e3 * float(np.median(times))
    rate = f", {shape[0] / ms * 1e3:.0f} {'clips' if args.model == '3dsrnet' else 'sub-images'}/s" if args.train else ""
    print(f"{what} on {args.device} ({algo}): median {ms:.2f} ms over {args.repeat} runs{rate} "
          f"({2 * macs / ms / 1e9:.2f} TFLOP/s, counting the direct sums' multiply-adds"
          f"{', 3 per multiply-add of the forward pass' if args.train else ''})")
    return 0


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magmasr", description="Fast, exact image and video super-resolution.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q, model_default="srcnn", model_help=None):
        q.add_argument("--scale", type=int, choices=(2, 3, 4), default=3, help="upscaling factor (default 3)")
        q.add_argument("--model", default=model_default, choices=("srcnn", "3dsrnet", "bicubic"),
                       help=model_help or f"{model_default} (default), or another of the choices")
        q.add_argument("--weights", help="a magmasr weight file (.safetensors) instead of the shipped one")
        q.add_argument("--arch", default=None,
                       help="which shipped model: an SRCNN preset (9-5-5, the default; 9-1-5 where it ships) or a "
                            "3DSRnet variant (published, the default; poster); see `magmasr models`")
        q.add_argument("--device", default=None, help="cpu or cuda (default: cuda when a GPU is usable)")
        q.add_argument("--ensemble", action="store_true",
                       help="self-ensemble: the network on the 8 rotations and flips of its input, averaged (8 "
                            "times the work; +0.13 dB on Set5 x4 with the shipped SRCNN 9-5-5)")

    u = sub.add_parser("upscale", help="upscale an image, a folder of images, a video, or the default picture")
    u.add_argument("input", nargs="?", help="an image, a folder of images (of frames with --model 3dsrnet), or a "
                                            f"video ({', '.join(VIDEO_SUFFIXES)}); default: a picture bundled "
                                            "with scikit-image")
    u.add_argument("-o", "--output", help="output file, or an existing folder to write the default name into "
                                             "(for a folder input: the output folder)")
    common(u, None, "images: srcnn (default) or bicubic; videos: 3dsrnet (default where it ships for the "
                    "scale or --weights is one), srcnn or bicubic frame by frame; a folder with --model 3dsrnet (or "
                    "--arch published|poster) is one sequence of frames, in name order")
    u.add_argument("--tile", type=int, default=None,
                   help="tile size for large pictures and frames, in pixels of the network's input (SRCNN: the "
                        "upscaled picture; 3DSRnet: the LR frames); the result is the same (default: automatic)")
    u.add_argument("--crf", type=_int_in(0, 51), default=None, metavar="0..51",
                   help="video output: H.264's constant rate factor, lower is better and larger (default 10, "
                        "visually lossless; 18-23 for smaller files; 0 is lossless in YUV)")
    u.add_argument("--quality", type=_int_in(1, 100), default=JPEG_QUALITY, metavar="1..100",
                   help=f"JPEG and WebP outputs: the encoder's quality, higher is better and larger (default "
                        f"{JPEG_QUALITY}; JPEG without chroma subsampling whatever the quality)")
    u.add_argument("--png-compression", type=_int_in(0, 9), default=PNG_COMPRESSION, metavar="0..9",
                   help=f"PNG outputs: zlib's level, the same pixels, smaller files and slower writes as it rises "
                        f"(default {PNG_COMPRESSION}: faster to write than 6 for about 5%% more bytes)")
    u.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    u.set_defaults(fn=cmd_upscale)

    e = sub.add_parser("eval", help="PSNR / SSIM / MAE / MSE table on a folder of ground-truth images; with "
                                    "--model 3dsrnet, PSNR on a folder of frames or of sequence folders")
    e.add_argument("dataset", help="a folder of ground-truth (high-resolution) images; with --model 3dsrnet a "
                                   "folder of frames or of sequence folders")
    common(e)
    e.add_argument("--srcnn-mat", help="evaluate the original authors' SRCNN model (.mat) instead")
    e.set_defaults(fn=cmd_eval)

    def training(q):
        q.add_argument("--scale", type=int, choices=(2, 3, 4), default=3, help="upscaling factor (default 3)")
        q.add_argument("-o", "--output", required=True, help="the trained model (.safetensors)")
        q.add_argument("--overwrite", action="store_true", help="replace an existing model file")
        q.add_argument("--steps", type=int, default=10000, help="optimizer steps (default %(default)s)")
        q.add_argument("--batch", type=int, default=128,
                       help="sub-images (SRCNN) or clips (3DSRnet) per step (default %(default)s)")
        q.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                       help="adam (default), or sgd: the SRCNN paper's, with --momentum")
        q.add_argument("--lr", type=_finite, default=1e-3, help="learning rate (default %(default)s)")
        q.add_argument("--lr-schedule", choices=("constant", "cosine"), default="cosine",
                       help="cosine (default): the rate decays to 0 over --steps; constant")
        q.add_argument("--val-fraction", type=_finite, default=0.05,
                       help="share of the sub-images (SRCNN) or clips (3DSRnet) kept aside for the validation "
                            "PSNR, 0 for none (default %(default)s)")
        q.add_argument("--seed", type=int, default=0,
                       help="seed of the new layers' weights, the validation split, sampling and augmentation "
                            "(default %(default)s): the same command gives the same model")
        q.add_argument("--checkpoint", help="checkpoint file, written every --checkpoint-every steps and at the end; "
                                            "the same command resumes from it exactly (a checkpoint of another run "
                                            "is refused)")
        q.add_argument("--checkpoint-every", type=int, default=500, metavar="N",
                       help="steps between checkpoints (default 500)")
        q.add_argument("--momentum", type=_finite, default=None,
                       help="SGD momentum (with --optimizer sgd; default 0.9)")
        q.add_argument("--layer-lr", action="append", type=_layer_lr, default=[], metavar="LAYER=LR",
                       help="a layer's own learning rate, e.g. conv3=1e-5 (the SRCNN paper's last layer); repeatable")
        q.add_argument("--log", help="CSV or JSON training log")
        q.add_argument("--device", default=None, help="cpu or cuda (default: cuda when a GPU is usable)")
        q.add_argument("--algo", choices=ImageSR.CONV_ALGOS, default=None,
                       help="convolution strategy of the training steps (default: winograd on the CPU, for the "
                            "three passes of 3x3 / 5x5 layers; the layers' own on a GPU)")
        q.add_argument("--downscales", type=_factors, default=(1.0,), metavar="F,F,...",
                       help="SRCNN: scale augmentation, each picture also used shrunk by these factors in (0, 1], "
                            "e.g. 1,0.9,0.8,0.7,0.6 (default 1: as it is)")

    def clips(q):
        q.add_argument("--patch", type=int, default=32,
                       help="3DSRnet: LR patch size of a training clip (default %(default)s)")
        q.add_argument("--clips-per-image", type=int, default=32,
                       help="3DSRnet: synthetic clips per training image (0: only the --video frames; default "
                            "%(default)s)")
        q.add_argument("--max-shift", type=_finite, default=3.0,
                       help="3DSRnet: synthetic motion, HR pixels per frame (default %(default)s)")
        q.add_argument("--video", action="append", help="3DSRnet: a folder of HR frames to cut clips from "
                                                        "(repeatable)")

    t = sub.add_parser("train", help="train SRCNN on a folder of images (SRCNN protocol sub-images), or "
                                     "3DSRnet on clips (synthetic camera motion over them, plus --video folders)")
    t.add_argument("data", help="a folder of training images")
    t.add_argument("--model", choices=("srcnn", "3dsrnet"), default="srcnn", help="srcnn (default) or 3dsrnet")
    t.add_argument("--arch", default=None, help="SRCNN preset (default 9-5-5); 3DSRnet: published (default) or "
                                               "poster (our poster's: 32 filters, conv4-5 unpadded, sub-pixel head)")
    t.add_argument("--nonlinear", action="store_true", help="SRCNN with the added non-linear layer")
    t.add_argument("--init", choices=("gaussian", "default"), default=None,
                   help="gaussian: the SRCNN paper's N(0, 0.001^2) (SRCNN's default); default: U(+-1/sqrt(fan_in))")
    t.add_argument("--filters", type=int, default=None, help="3DSRnet: filters per layer (published: 64, poster: 32)")
    t.add_argument("--init-from", help="start every layer that fits from this weight file of the same model "
                                       "(3DSRnet: e.g. conv1..conv5 of a model for another scale; SRCNN: e.g. a "
                                       "9-1-5 grown into 9-5-5, its 1x1 conv2 the centre of the 5x5), the others "
                                       "from scratch")
    clips(t)
    training(t)
    t.set_defaults(fn=cmd_train)

    f = sub.add_parser("finetune", help="fine-tune pretrained SRCNN or 3DSRnet weights on your own pictures "
                                        "(3DSRnet: clips from them, and from --video frame folders)")
    f.add_argument("weights", help="pretrained weights: srcnn or 3dsrnet (magmasr's own, as shipped for --scale; "
                                   "see --arch), a magmasr .safetensors, an original SRCNN .mat or an original "
                                   "3DSRnet (MatConvNet) .mat")
    f.add_argument("--arch", help="with WEIGHTS srcnn or 3dsrnet, which shipped model: an SRCNN preset (9-5-5, the "
                                  "default; 9-1-5 where it ships) or a 3DSRnet variant (published, the default; "
                                  "poster)")
    f.add_argument("data", help="a folder of pictures")
    f.add_argument("--recipe", choices=("finetune_all", "transfer_12", "transfer_13"), default="finetune_all",
                   help="SRCNN recipes (a 3DSRnet is fine-tuned whole)")
    f.add_argument("--frozen-lr", type=_finite, default=0.0, help="rate multiplier of the layers a transfer recipe keeps (0: frozen; default 0)")
    training(f)
    clips(f)
    f.set_defaults(fn=cmd_finetune)

    m = sub.add_parser("models", help="list the weights that ship with magmasr, with the scores measured when "
                                      "they were shipped")
    m.set_defaults(fn=cmd_models)

    b = sub.add_parser("bench", help="time SRCNN or 3DSRnet inference, or a training step (--train)")
    b.add_argument("--model", choices=("srcnn", "3dsrnet"), default="srcnn",
                   help="the network: SRCNN on a picture (default), or 3DSRnet on a 5-frame window")
    b.add_argument("--arch", default=None,
                   help="SRCNN preset: 9-1-5, 9-3-5 or 9-5-5 (default); 3DSRnet: published (default) or poster")
    b.add_argument("--scale", type=int, choices=(2, 3, 4), default=4, help="3DSRnet's scale (default 4)")
    b.add_argument("--size", type=_size, default=None, metavar="HxW",
                   help="the network's input: SRCNN's picture (the upscaled size, default 540x960) or 3DSRnet's "
                        "LR frames (default 144x180: a Vid4 frame at x4)")
    b.add_argument("--device", default=None, help="cpu or cuda (default: cuda when a GPU is usable)")
    b.add_argument("--warmup", type=int, default=3, help="untimed runs first (default %(default)s)")
    b.add_argument("--repeat", type=int, default=10, help="timed runs; the median is printed (default %(default)s)")
    b.add_argument("--algo", choices=ImageSR.CONV_ALGOS, default=None,
                   help="convolution strategy (default: what upscale and train run: winograd on the CPU, auto on a "
                        "GPU)")
    b.add_argument("--train", action="store_true",
                   help="time a training step instead: forward, the MSE's gradient, backward and an Adam update, on "
                        "what `magmasr train` feeds the network")
    b.add_argument("--batch", type=int, default=None,
                   help="--train: sub-images (SRCNN, default 128) or clips (3DSRnet, default 16) per step")
    b.add_argument("--patch", type=int, default=None,
                   help="--train: their side (SRCNN default 33; 3DSRnet: LR frames, default 32)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "device", None) is None:
        args.device = default_device()
    try:
        if args.device.startswith("cuda"):
            import magmasr

            if not magmasr.cuda_available():
                raise CliError("--device cuda: no usable CUDA GPU (use --device cpu)")
        with sigterm_raises():  # SIGTERM (kill, a scheduler, timeout) cleans up as Ctrl-C does
            return args.fn(args)
    except KeyboardInterrupt as e:  # Ctrl-C: each command has removed what it had half-written
        _end_status()
        terminated = isinstance(e, Terminated)
        print(f"magmasr: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except CliError as e:
        _end_status()
        print(f"magmasr: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as e:
        _end_status()
        print(f"magmasr: error: {first_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk that fills up, a file that vanishes: one line, not a traceback
        _end_status()
        where = f"{e.filename}: " if e.filename else ""
        print(f"magmasr: error: {where}{_os_reason(e)}", file=sys.stderr)
        return 1
    finally:
        _end_status()


if __name__ == "__main__":
    sys.exit(main())
