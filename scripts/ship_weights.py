"""Measures a trained weight file and writes it, with those figures and where / when / how long it was trained in
its metadata, as the package's shipped weights for its model and scale.

SRCNN: Set5 and Set14 under the SRCNN protocol; the floor of issue 5 is the original authors' 91-image models on
Set5. The file is named after the model: srcnn_x{scale} for SRCNN 9-5-5, srcnn_915_x{scale} for 9-1-5 (see
ImageSR.kind). 3DSRnet (published, or the poster's: shipped as 3dsrnet_poster_x{scale}): Vid4 calendar and city under the
3DSRnet authors' test.m protocol, next to single-frame SRCNN (the SRCNN that ships for the same scale, and the
authors' 9-5-5 with --srcnn-mat); the floor is beating every one of them on both sequences.

    python scripts/ship_weights.py TRAINED.safetensors --data ../shared/data --trained-on "2 CPU cores ..." \
        --train-time "about 80 minutes" [--log log.csv] [--status "interim model: ..."] [--dest DIR] \
        [--srcnn-mat ../shared/weights/srcnn_official/9-5-5_imagenet/x4.mat]

A file below its floor must say so with --status "interim model: ..." (the floor tests check it both ways).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path

import numpy as np

from magmasr import weights
from magmasr.sr import ImageSR, evaluate_image_sr
from magmasr.video import VideoSR, evaluate_video

FLOOR = {2: 36.34, 3: 32.39, 4: 30.08}
VID4 = ("calendar", "city")
SHIPPED = Path(__file__).resolve().parents[1] / "python" / "magmasr" / "weights_data"


def mean_psnr(model: ImageSR, folder: Path) -> float:
    return float(np.mean([r.psnr for r in evaluate_image_sr(model, folder, model.scale)]))


def measure_image(model: ImageSR, args, p) -> tuple[dict, bool]:
    for sub in ("Set5", "Set14"):
        if not (args.data / sub).is_dir():
            p.error(f"--data {args.data}: no {sub}/ folder in it")
    set5, set14 = mean_psnr(model, args.data / "Set5"), mean_psnr(model, args.data / "Set14")
    floor = FLOOR[model.scale]
    print(f"x{model.scale}: Set5 {set5:.2f} dB (floor {floor}), Set14 {set14:.2f} dB")
    return {"set5_psnr": f"{set5:.4f}", "set14_psnr": f"{set14:.4f}"}, set5 >= floor


def measure_video(model: VideoSR, args, p) -> tuple[dict, bool]:
    """Vid4 calendar and city, whole sequences: the model, bicubic and every single-frame SRCNN baseline."""
    seqs = [args.data / "Vid4_Y" / s for s in VID4]
    for s in seqs:
        if not s.is_dir():
            p.error(f"--data {args.data}: no {s.relative_to(args.data)}/ folder in it")
    baselines = {}
    ours_srcnn = SHIPPED / f"srcnn_x{model.scale}.safetensors"
    if ours_srcnn.exists():
        baselines["srcnn_ours"] = ImageSR.load(ours_srcnn)
    if args.srcnn_mat:
        baselines["srcnn_mat"] = ImageSR.from_srcnn_mat(args.srcnn_mat, model.scale)
    if not baselines:
        p.error(f"no single-frame SRCNN x{model.scale} to compare with: none ships, and no --srcnn-mat")
    meta, reached = {}, True
    for s in seqs:
        r = evaluate_video(model, s, baselines=baselines)
        meta[f"vid4_{s.name}_psnr"] = f"{r.psnr:.4f}"
        meta[f"vid4_{s.name}_bicubic_psnr"] = f"{r.psnr_bicubic:.4f}"
        for name, v in r.psnr_baselines.items():
            meta[f"vid4_{s.name}_{name}_psnr"] = f"{v:.4f}"
            reached &= r.psnr > v
        print(f"x{model.scale} {s.name}: {r.psnr:.2f} dB, bicubic {r.psnr_bicubic:.2f}, "
              + ", ".join(f"{k} {v:.2f}" for k, v in r.psnr_baselines.items()) + f" ({r.frames} frames)")
    if args.srcnn_mat:
        meta["srcnn_mat"] = args.srcnn_mat.name if args.srcnn_mat.parent.name == "" else \
            f"{args.srcnn_mat.parent.name}/{args.srcnn_mat.name}"
    return meta, reached


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--data", type=Path, required=True, help="folder holding Set5/ and Set14/")
    p.add_argument("--trained-on", required=True, help="the machine, e.g. '1 CPU core (Intel Xeon, AVX-512)'")
    p.add_argument("--train-time", required=True)
    p.add_argument("--log", type=Path, help="the training log (.csv): its last validation PSNR is recorded")
    p.add_argument("--status", default="", help="'interim model: ...' for a model below the floor")
    p.add_argument("--data-description", help="what the training data was (replaces the folder path recorded)")
    p.add_argument("--note", help="anything else a user should know about how the file was trained")
    p.add_argument("--srcnn-mat", type=Path, help="3DSRnet: also compare with this original SRCNN model (.mat)")
    p.add_argument("--dest", type=Path, default=SHIPPED)
    args = p.parse_args(argv)
    if not args.dest.is_dir():  # before the measurements, which take minutes
        p.error(f"--dest {args.dest}: no such folder")
    video = weights.load(args.weights)[1].get("architecture") in VideoSR.ARCHITECTURES
    model = VideoSR.load(args.weights) if video else ImageSR.load(args.weights)
    if video:
        meta, reached = measure_video(model, args, p)
        kind = model.kind
    else:
        try:
            kind = model.kind  # only the SRCNN presets have a shipped name
        except ValueError as e:
            p.error(f"{args.weights}: {e}")
        meta, reached = measure_image(model, args, p)
    if not reached and not args.status.startswith("interim"):
        p.error("below the floor: ship it only with --status 'interim model: ...'")
    if reached and args.status.startswith("interim"):
        p.error("it reaches the floor: it is not an interim model")
    meta.update({"trained_on": args.trained_on, "train_time": args.train_time,
                 "date": datetime.date.today().isoformat(), "status": args.status})
    if args.data_description:
        meta["data"] = args.data_description
    if args.note:
        meta["note"] = args.note
    if args.log:
        with open(args.log, newline="") as f:
            vals = [row["val_psnr"] for row in csv.DictReader(f) if row.get("val_psnr")]
        if vals:
            meta["val_psnr"] = f"{float(vals[-1]):.4f}"
    if not args.status:
        model.metadata.pop("status", None)
        del meta["status"]
    dest = args.dest / f"{kind}_x{model.scale}.safetensors"
    model.save(dest, **meta)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
