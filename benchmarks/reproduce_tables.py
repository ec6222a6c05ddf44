"""Reproduces the published result tables with magmasr's own kernels and writes them under docs/results/.

Table 1 (SRCNN paper): Set5 and Set14 at x2/x3/x4 for bicubic, the original authors' SRCNN weights
(imported: 9-1-5 trained on 91 images, 9-5-5 on ImageNet), and the SRCNN 9-1-5 and 9-5-5 that magmasr ships
(where they do), under the SRCNN protocol.
Table 2 (3DSRnet paper): Vid4 calendar and city at x2/x3/x4 for bicubic, single-frame SRCNN 9-5-5 (the
authors' weights) and ours, the imported 3DSRnet and ours (where they ship), under the 3DSRnet authors' test.m
protocol.

Usage: python benchmarks/reproduce_tables.py [--shared ../shared] [--out docs/results] [--device cpu|cuda]
                                             [--only srcnn|vid4]
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np

import magmasr
from magmasr._files import write_text_atomic
from magmasr.sr import SHIPPED, ImageSR, evaluate_image_sr, shipped_weights
from magmasr.video import VideoSR, evaluate_video

PUBLISHED_SRCNN = {  # SRCNN paper, Table 2 / the data README: (bicubic, 9-5-5 ImageNet)
    ("Set5", 2): (33.66, 36.66), ("Set5", 3): (30.39, 32.75), ("Set5", 4): (28.42, 30.49),
    ("Set14", 2): (30.24, 32.42), ("Set14", 3): (27.55, 29.30), ("Set14", 4): (26.00, 27.50),
}
PUBLISHED_VID4_AVG = {2: 32.30, 3: 27.71, 4: 25.72}  # 3DSRnet paper, average over the four Vid4 sequences


def card(device: str) -> str:
    if device.startswith("cuda"):
        return magmasr.cuda.device_name(0)
    n = magmasr.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {n} thread{'s' if n > 1 else ''})"


def srcnn_table(shared: Path, device: str) -> tuple[list[dict], str]:
    rows = []
    for dataset in ("Set5", "Set14"):
        for scale in (2, 3, 4):
            t0 = time.perf_counter()
            official = ImageSR.from_srcnn_mat(shared / "weights/srcnn_official/9-5-5_imagenet" / f"x{scale}.mat",
                                              scale).to(device)
            res = evaluate_image_sr(official, shared / "data" / dataset, scale)
            row = {"dataset": dataset, "scale": scale,
                   "bicubic": float(np.mean([r.psnr_bicubic for r in res])),
                   "srcnn_955_imported": float(np.mean([r.psnr for r in res])),
                   "srcnn_955_imported_ssim": float(np.mean([r.ssim for r in res])),
                   "published_bicubic": PUBLISHED_SRCNN[(dataset, scale)][0],
                   "published_955": PUBLISHED_SRCNN[(dataset, scale)][1]}
            mat915 = shared / "weights/srcnn_official/9-1-5_91images" / f"x{scale}.mat"
            if mat915.exists():
                m = ImageSR.from_srcnn_mat(mat915, scale).to(device)
                row["srcnn_915_91img_imported"] = float(np.mean([r.psnr for r in evaluate_image_sr(
                    m, shared / "data" / dataset, scale)]))
            for col, preset in (("ours_915", "9-1-5"), ("ours", "9-5-5")):  # "ours": the default, 9-5-5
                ours = shipped_weights(ImageSR.shipped_kind(preset), scale)
                if ours is not None:
                    m = ImageSR.load(ours).to(device)
                    row[col] = float(np.mean([r.psnr for r in evaluate_image_sr(m, shared / "data" / dataset,
                                                                                  scale)]))
                    row[f"{col}_file"] = ours.name
                    if preset == "9-5-5":  # and with the self-ensemble (8 runs per picture, averaged)
                        m.ensemble = True
                        row["ours_ensemble"] = float(np.mean([r.psnr for r in evaluate_image_sr(
                            m, shared / "data" / dataset, scale)]))
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(row, flush=True)
    lines = ["| set | scale | bicubic | SRCNN 9-1-5, authors (91 images) | SRCNN 9-1-5, ours | SRCNN 9-5-5, authors "
             "(ImageNet) | SRCNN 9-5-5, ours | SRCNN 9-5-5, ours + self-ensemble (8x the work) | published bicubic / "
             "9-5-5 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda k: f"{r[k]:.2f}" if k in r else "—"  # noqa: E731
        lines.append(f"| {r['dataset']} | x{r['scale']} | {f('bicubic')} | {f('srcnn_915_91img_imported')} | "
                     f"{f('ours_915')} | {f('srcnn_955_imported')} | {f('ours')} | {f('ours_ensemble')} | "
                     f"{r['published_bicubic']:.2f} / "
                     f"{r['published_955']:.2f} |")
    return rows, "\n".join(lines)


def vid4_table(shared: Path, device: str) -> tuple[list[dict], str]:
    rows = []
    for scale in (4, 3, 2):
        mat = shared / "weights/3dsrnet_official" / f"x{scale}.mat"
        if not mat.exists():
            continue
        model = VideoSR.from_3dsrnet_mat(mat, scale).to(device)
        srcnn = ImageSR.from_srcnn_mat(shared / "weights/srcnn_official/9-5-5_imagenet" / f"x{scale}.mat",
                                       scale).to(device)
        ours_srcnn = shipped_weights("srcnn", scale)
        baselines = {"srcnn_ours": ImageSR.load(ours_srcnn).to(device)} if ours_srcnn else {}
        # our 3DSRnets that ship for the scale: the published architecture's and the poster's
        ours = {col: (VideoSR.load(path).to(device), path) for col, path in
                (("tdsrnet_ours", shipped_weights("3dsrnet", scale)),
                 ("tdsrnet_poster_ours", shipped_weights("3dsrnet_poster", scale))) if path}
        for seq in ("calendar", "city"):
            t0 = time.perf_counter()
            r = evaluate_video(model, shared / "data/Vid4_Y" / seq, srcnn=srcnn, baselines=baselines)
            row = {"scale": scale, "sequence": seq, "bicubic": r.psnr_bicubic, "srcnn_955": r.psnr_srcnn,
                   **r.psnr_baselines, "tdsrnet_imported": r.psnr, "frames": r.frames}
            for col, (m, path) in ours.items():
                row[col] = evaluate_video(m, shared / "data/Vid4_Y" / seq).psnr
                row[col + "_file"] = path.name
                if col == "tdsrnet_ours" and scale == 4:  # with the self-ensemble (8 runs per window), at x4
                    m.ensemble = True
                    row["tdsrnet_ours_ensemble"] = evaluate_video(m, shared / "data/Vid4_Y" / seq).psnr
                    m.ensemble = False
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(row, flush=True)
    cols = {"bicubic": "bicubic", "srcnn_955": "SRCNN 9-5-5 imported (single frame)",
            "srcnn_ours": "SRCNN ours (single frame)", "tdsrnet_imported": "3DSRnet imported",
            "tdsrnet_ours": "3DSRnet ours", "tdsrnet_ours_ensemble": "3DSRnet ours + self-ensemble (8x the work)",
            "tdsrnet_poster_ours": "3DSRnet poster's, ours"}
    lines = ["| scale | sequence | " + " | ".join(cols.values()) + " | frames |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for scale in sorted({r["scale"] for r in rows}):
        sub = [r for r in rows if r["scale"] == scale]
        for r in sub:
            lines.append(f"| x{scale} | {r['sequence']} | " + " | ".join(f(r.get(k)) for k in cols)
                         + f" | {r['frames']} |")
        mean = {k: float(np.mean([r[k] for r in sub])) if all(k in r for r in sub) else None for k in cols}
        lines.append(f"| x{scale} | **mean of the two** | " + " | ".join(f(mean[k]) for k in cols)
                     + f" | (paper, all four Vid4: {PUBLISHED_VID4_AVG[scale]:.2f}) |")
    return rows, "\n".join(lines)


def stale_weights(checkout: Path, installed: Path) -> list[str]:
    """The weight files that differ between a checkout's `python/magmasr/weights_data` and the folder the
    imported magmasr reads its shipped weights from (missing on one side, or other bytes). The tables are
    written into the checkout, so they must be made with its weights, not with an older installed copy."""
    if not checkout.is_dir() or checkout.resolve() == installed.resolve():
        return []

    def digests(folder: Path) -> dict[str, str]:
        if not folder.is_dir():
            return {}
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.glob("*.safetensors")}

    a, b = digests(checkout), digests(installed)
    return sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "results"))
    ap.add_argument("--device", default="cuda" if magmasr.cuda_available() else "cpu")
    ap.add_argument("--only", choices=("srcnn", "vid4"))
    a = ap.parse_args()
    stale = stale_weights(Path(__file__).resolve().parents[1] / "python" / "magmasr" / "weights_data", SHIPPED)
    if stale:
        raise SystemExit(f"reproduce_tables.py: the installed magmasr ({SHIPPED}) ships other weights than this "
                         f"checkout ({', '.join(stale)}): reinstall it from the checkout (pip install .) so that the "
                         "tables written here measure the checkout's weights")
    shared, out = Path(a.shared), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(), "card": card(a.device), "magmasr": magmasr.__version__,
             "command": "python benchmarks/reproduce_tables.py" + (f" --only {a.only}" if a.only else "")}
    for name, fn in (("srcnn", srcnn_table), ("vid4", vid4_table)):
        if a.only and a.only != name:
            continue
        rows, md = fn(shared, a.device)
        write_text_atomic(out / f"{name}.json", json.dumps({**stamp, "rows": rows}, indent=1))
        head = f"Made by `{stamp['command']}` on {stamp['card']}, {stamp['date']}, magmasr {stamp['magmasr']}.\n\n"
        write_text_atomic(out / f"{name}.md", head + md + "\n")
        print(md)


if __name__ == "__main__":
    main()
