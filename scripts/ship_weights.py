"""Measures a trained SRCNN weight file on Set5 and Set14 (SRCNN protocol) and writes it, with those figures and
where / when / how long it was trained in its metadata, as the package's shipped weights for its scale.

    python scripts/ship_weights.py TRAINED.safetensors --data ../shared/data --trained-on "2 CPU cores ..." \
        --train-time "about 80 minutes" [--log log.csv] [--status "interim model: ..."] [--dest DIR]

The floor of issue 5 (the original authors' 91-image models on Set5) is printed next to the result; a file
below it must say so with --status "interim model: ..." (the floor test checks it both ways).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path

import numpy as np

from magmasr.sr import ImageSR, evaluate_image_sr

FLOOR = {2: 36.34, 3: 32.39, 4: 30.08}
SHIPPED = Path(__file__).resolve().parents[1] / "python" / "magmasr" / "weights_data"


def mean_psnr(model: ImageSR, folder: Path) -> float:
    return float(np.mean([r.psnr for r in evaluate_image_sr(model, folder, model.scale)]))


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
    p.add_argument("--dest", type=Path, default=SHIPPED)
    args = p.parse_args(argv)
    for sub in ("Set5", "Set14"):
        if not (args.data / sub).is_dir():
            p.error(f"--data {args.data}: no {sub}/ folder in it")
    model = ImageSR.load(args.weights)
    set5, set14 = mean_psnr(model, args.data / "Set5"), mean_psnr(model, args.data / "Set14")
    floor = FLOOR[model.scale]
    print(f"x{model.scale}: Set5 {set5:.2f} dB (floor {floor}), Set14 {set14:.2f} dB")
    if set5 < floor and not args.status.startswith("interim"):
        p.error(f"Set5 {set5:.2f} dB is below the floor {floor}: ship it only with --status 'interim model: ...'")
    if set5 >= floor and args.status.startswith("interim"):
        p.error(f"Set5 {set5:.2f} dB reaches the floor {floor}: it is not an interim model")
    meta = {"set5_psnr": f"{set5:.4f}", "set14_psnr": f"{set14:.4f}", "trained_on": args.trained_on,
            "train_time": args.train_time, "date": datetime.date.today().isoformat(), "status": args.status}
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
    dest = args.dest / f"srcnn_x{model.scale}.safetensors"
    model.save(dest, **meta)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
