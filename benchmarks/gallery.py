"""A gallery of crops: one row per image, columns bicubic | magmasr | original, for people who would rather
look than read.

Each image is modcropped, downscaled by the scale with MATLAB-style bicubic ``imresize`` (as ``magmasr
upscale`` does with its default picture) and upscaled back, by bicubic interpolation and by magmasr's
shipped SRCNN weights. The crop is the window of the original with the highest gradient energy, shown with
nearest-neighbour magnification and labelled with its PSNR (Y channel) against the original crop.

The committed gallery (docs/results/gallery.png) uses only scikit-image's bundled sample images: benchmark
datasets must never be copied into the repository. ``--folder`` (any folder of images) and
``--authors-weights`` (the SRCNN authors' .mat weights, research use only) are for local use; with either,
the gallery goes to ./gallery.png unless --out says otherwise.

Usage: python benchmarks/gallery.py [--out docs/results/gallery.png] [--scale 3] [--crop 96]
                                    [--images astronaut,hubble_deep_field,...] [--folder DIR]
                                    [--authors-weights x3.mat]
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from magmasr import image as im
from magmasr import metrics
from magmasr.sr import shipped_weights
from magmasr.sr import ImageSR, list_images, read_image
from plot_results import new_figure, save_figure
from reproduce_tables import card

SAMPLES = ("astronaut", "hubble_deep_field", "coffee", "chelsea")  # bundled with scikit-image, offline
# Layout, inches: crops of CELL_IN (96 px crops at DPI 100: 3x), GAP_IN between columns, a PSNR label of
# LABEL_H_IN under each crop, row labels LEFT_IN wide, title and column titles TOP_IN, footer BOTTOM_IN.
CELL_IN, GAP_IN, LABEL_H_IN, LEFT_IN, TOP_IN, BOTTOM_IN = 2.88, 0.1, 0.3, 1.4, 0.65, 0.3


def gallery_row(name: str, img: np.ndarray, models: dict[str, ImageSR | None], scale: int,
                crop: int) -> dict[str, Any]:
    """One row of the gallery: the crop position ``at`` (row, col in the modcropped original), the crops
    (uint8) of each model's upscale (None = bicubic) and of the original, and each model's PSNR (dB, Y
    channel) against the original crop."""
    original = im.modcrop(img, scale)
    lr = im.imresize(original, 1.0 / scale)
    gray = im.rgb2y(original) if original.ndim == 3 else original
    r, c = im.detail_window(gray, crop, margin=scale)
    window = (slice(r, r + crop), slice(c, c + crop))
    crops = {label: (im.imresize(lr, scale) if m is None else m.upscale(lr, scale))[window]
             for label, m in models.items()}
    psnr = {label: metrics.psnr(x, original[window], test_y_channel=True) for label, x in crops.items()}
    return {"name": name, "at": (r, c), "crops": {**crops, "original": original[window]}, "psnr": psnr}


def gallery_inches(n_rows: int, n_cols: int) -> tuple[float, float]:
    """(width, height) in inches of a gallery of ``n_rows`` images and ``n_cols`` columns."""
    return (LEFT_IN + CELL_IN * n_cols + GAP_IN * n_cols,
            TOP_IN + BOTTOM_IN + (CELL_IN + LABEL_H_IN) * n_rows)


def draw_gallery(rows: list[dict[str, Any]], title: str, footer: str, path: Path) -> None:
    """The grid of crops (nearest-neighbour magnification), each labelled with its PSNR, into PNG ``path``."""
    labels = list(rows[0]["crops"])
    width, height = gallery_inches(len(rows), len(labels))
    fig = new_figure(width, height)
    fig.set_layout_engine(None)
    grid = fig.add_gridspec(len(rows), len(labels), left=LEFT_IN / width, right=1 - GAP_IN / width,
                            top=1 - TOP_IN / height, bottom=(BOTTOM_IN + LABEL_H_IN) / height,
                            hspace=LABEL_H_IN / CELL_IN, wspace=GAP_IN / CELL_IN)
    for i, row in enumerate(rows):
        for j, label in enumerate(labels):
            ax = fig.add_subplot(grid[i, j])
            x = row["crops"][label]
            ax.imshow(x, cmap="gray" if x.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"PSNR {row['psnr'][label]:.2f} dB" if label in row["psnr"] else "reference",
                          fontsize=9, labelpad=3)
            if i == 0:
                ax.set_title(label, fontsize=10)
            if j == 0:
                r, c = row["at"]
                ax.set_ylabel(f"{row['name']}\n{x.shape[0]}x{x.shape[1]} crop at\nrow {r}, col {c}", fontsize=9,
                              rotation=0, ha="right", va="center", labelpad=8)
    fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=12)
    fig.text(0.5, 0.1 / height, footer, ha="center", va="bottom", fontsize=7, color="#444444", wrap=True)
    save_figure(fig, path)


def _images(args) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 image) pairs: the scikit-image samples named in --images, or the files of --folder."""
    wanted = args.images.split(",") if args.images else None
    if args.folder:
        files = [p for p in list_images(args.folder) if wanted is None or p.stem in wanted]
        found = [(p.stem, read_image(p)) for p in files]
    else:
        from skimage import data

        unknown = [n for n in wanted or SAMPLES if not callable(getattr(data, n, None))]
        if unknown:
            raise SystemExit(f"--images: {', '.join(unknown)} not among scikit-image's sample images")
        found = [(n, getattr(data, n)()) for n in wanted or SAMPLES]
    if not found:
        raise SystemExit("no images to show")
    for name, img in found:
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise SystemExit(f"{name}: an 8-bit gray or RGB image is needed (got {img.dtype}, shape {img.shape})")
    return found


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="the PNG (default: docs/results/gallery.png, or ./gallery.png "
                                             "with --folder or --authors-weights)")
    ap.add_argument("--scale", type=int, default=3, choices=(2, 3, 4))
    ap.add_argument("--crop", type=int, default=96, help="side of the crops, in original pixels")
    ap.add_argument("--images", help=f"comma-separated names (default: {','.join(SAMPLES)}; with --folder, "
                                     "file stems, default all)")
    ap.add_argument("--folder", help="a folder of images instead of scikit-image's samples (local use)")
    ap.add_argument("--authors-weights", help="the SRCNN authors' x{scale}.mat, as an extra column (local use)")
    a = ap.parse_args(argv)
    local = a.folder or a.authors_weights
    out = a.out or (Path("gallery.png") if local else Path(__file__).resolve().parents[1] / "docs/results/gallery.png")
    if not out.parent.is_dir():
        raise SystemExit(f"{out.parent}: no such folder for the gallery")
    weights = shipped_weights("srcnn", a.scale)
    if weights is None:
        raise SystemExit(f"no SRCNN weights for x{a.scale} ship with this version of magmasr")
    models: dict[str, ImageSR | None] = {"bicubic": None, f"magmasr ({weights.name})": ImageSR.load(weights)}
    if a.authors_weights:
        models[f"SRCNN authors ({Path(a.authors_weights).name})"] = ImageSR.from_srcnn_mat(a.authors_weights, a.scale)
    rows = []
    for name, img in _images(a):
        try:
            rows.append(gallery_row(name, img, models, a.scale, a.crop))
        except ValueError as e:  # an image too small for the crop
            raise SystemExit(f"{name}: {e}") from None
    command = " ".join(["python benchmarks/gallery.py", *map(shlex.quote, argv)])
    source = f"the images of {a.folder}" if a.folder else "scikit-image's sample images (skimage.data)"
    footer = f"Made by `{command}` on {card('cpu')}, {datetime.date.today().isoformat()}, from {source}."
    draw_gallery(rows, f"x{a.scale} super-resolution: crops where the original has the most detail "
                       "(PSNR on the Y channel)", footer, out)
    print(f"{len(rows)} images -> {out}")


if __name__ == "__main__":
    main()
