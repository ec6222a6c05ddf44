"""The poster's transfer-learning table: with little data from a new domain, does starting from pretrained
SRCNN weights beat training from scratch?

Two target domains, each split into disjoint training and test parts:
- video: 10 frames of Vid4_Y/calendar for training, every 3rd frame of Vid4_Y/city for testing;
- astronomy: scikit-image's Hubble deep field (Y channel), left 60 % of the columns for training, the right
  40 % for testing (cut into four test images).
Rows: bicubic; the pretrained SRCNN 9-1-5 as it is; self-trained SRCNN (scratch); SRCNN with fine-tuned
parameters (finetune_all); transfer 1+2 (pretrained conv1, conv2 frozen, new conv3); self-trained with an
added non-linear layer (scratch_nonlinear); transfer 1+3 (pretrained layers frozen/kept plus the added layer).
Every trained row gets the same budget (steps, batch, Adam, learning rate, seed). Scale x3; the pretrained
weights are the SRCNN authors' 9-1-5 (91 images) x3 model, used here for research only.

Usage: python benchmarks/transfer_table.py [--steps 800] [--shared ../shared] [--out docs/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np

import magmasr
from magmasr import image as im
from magmasr import metrics, train
from magmasr.sr import ImageSR, ground_truth_y
from magmasr.video import read_frames

SCALE = 3
ROWS = ["bicubic", "pretrained", "scratch", "finetune_all", "transfer_12", "scratch_nonlinear", "transfer_13"]


def domains(shared: Path) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    from skimage import data

    cal = read_frames(shared / "data/Vid4_Y/calendar")
    city = read_frames(shared / "data/Vid4_Y/city")
    hubble = im.rgb2ycbcr(data.hubble_deep_field())[:, :, 0]
    cut = int(hubble.shape[1] * 0.6)
    test = hubble[:, cut:]
    h2, w2 = test.shape[0] // 2, test.shape[1] // 2
    return {
        "video (train calendar, test city)": (cal[0:40:4], city[0::3]),
        "astronomy (Hubble deep field)": ([hubble[:, :cut]],
                                          [test[:h2, :w2], test[:h2, w2:], test[h2:, :w2], test[h2:, w2:]]),
    }


def evaluate(model: ImageSR | None, images: list[np.ndarray]) -> dict[str, float]:
    out = {"psnr": [], "ssim": [], "mae": [], "mse": []}
    for img in images:
        gt = im.to_float(ground_truth_y(img, SCALE))
        bic = im.imresize(im.imresize(gt, 1 / SCALE), SCALE)
        sr = bic if model is None else model.refine(bic).astype(np.float64)
        for k, fn in (("psnr", metrics.psnr), ("ssim", metrics.ssim), ("mae", metrics.mae), ("mse", metrics.mse)):
            out[k].append(fn(sr, gt, crop_border=SCALE))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "results"))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=("gaussian", "default"), default="gaussian",
                    help="how the layers trained from scratch start: the SRCNN paper's N(0, 0.001^2), or the "
                         "layers' default initialisation (much faster to learn)")
    a = ap.parse_args()
    shared, out = Path(a.shared), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pretrained_model = ImageSR.from_srcnn_mat(shared / "weights/srcnn_official/9-1-5_91images/x3.mat", SCALE)
    pre = pretrained_model.net.state_dict()
    results = {}
    for dom, (train_imgs, test_imgs) in domains(shared).items():
        data = train.PatchDataset.from_images(train_imgs, SCALE, label=21)
        res = {"bicubic": evaluate(None, test_imgs), "pretrained": evaluate(pretrained_model, test_imgs)}
        for name in ROWS[2:]:
            t0 = time.perf_counter()
            rec = train.make_recipe(name, None if name.startswith("scratch") else pre, f1=9, f2=1, f3=5,
                                    seed=a.seed, init=a.init)
            train.fit(rec.model, data, steps=a.steps, batch_size=a.batch, lr=a.lr, lr_schedule="cosine",
                      trainable=rec.trainable, lr_mult=rec.lr_mult, seed=a.seed, device="cpu", progress=False)
            res[name] = evaluate(train.image_model(rec.model, SCALE), test_imgs)
            res[name]["train_seconds"] = time.perf_counter() - t0
            print(dom, name, res[name], flush=True)
        results[dom] = {"train_subimages": len(data), "test_images": len(test_imgs), "rows": res}
    stamp = {"date": datetime.date.today().isoformat(), "magmasr": magmasr.__version__,
             "card": f"CPU ({magmasr.get_num_threads()} threads)",
             "command": f"python benchmarks/transfer_table.py --steps {a.steps} --batch {a.batch} --lr {a.lr} "
                        f"--init {a.init}"}
    (out / "transfer.json").write_text(json.dumps({**stamp, "results": results}, indent=1))
    lines = [f"Made by `{stamp['command']}` on {stamp['card']}, {stamp['date']}, magmasr {stamp['magmasr']}. "
             f"Scale x3, Y channel, uint8-rounded, 3 pixels shaved; MAE/MSE on [0, 1] images. Each trained row: "
             f"{a.steps} Adam steps of {a.batch} sub-images, lr {a.lr} with a cosine decay, the same seed; "
             f"layers not taken from the pretrained model start from the {a.init} initialisation.", ""]
    for dom, r in results.items():
        lines += [f"### {dom}: {r['train_subimages']} training sub-images, {r['test_images']} test images", "",
                  "| method | PSNR (dB) | SSIM | MAE | MSE |", "|---|---|---|---|---|"]
        for name in ROWS:
            v = r["rows"][name]
            lines.append(f"| {name} | {v['psnr']:.2f} | {v['ssim']:.4f} | {v['mae']:.4f} | {v['mse']:.6f} |")
        lines.append("")
    (out / "transfer.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
