"""The poster's transfer-learning table: with little data from a new domain, does starting from pretrained
SRCNN weights beat training from scratch?

Two target domains, each split into disjoint training and test parts:
- video: 10 frames of Vid4_Y/calendar for training, every 3rd frame of Vid4_Y/city for testing;
- astronomy: scikit-image's Hubble deep field (Y channel), left 60 % of the columns for training, the right
  40 % for testing (cut into four test images).
Rows: bicubic; the pretrained SRCNN 9-1-5 as it is; self-trained SRCNN (scratch); SRCNN with fine-tuned
parameters (finetune_all); transfer 1+2 (pretrained conv1, conv2 frozen, new conv3); self-trained with an
added non-linear layer (scratch_nonlinear); transfer 1+3 (pretrained layers frozen/kept plus the added layer).
Every trained row gets the same budget (steps, batch, Adam, learning rate) and the same seeds; with several
seeds (--seeds 0,1,2) each trained row is run once per seed (initialisation of the new layers and the order of
the sub-images) and reported as the mean and the sample standard deviation over seeds, and each recipe's gain
over training from scratch is paired by seed. Scale x3; the pretrained weights are the SRCNN authors' 9-1-5
(91 images) x3 model, used here for research only.

Usage: python benchmarks/transfer_table.py [--steps 800] [--seeds 0,1,2] [--shared ../shared] [--out docs/results]
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


METRICS = ("psnr", "ssim", "mae", "mse")


def summarize(runs: list[dict]) -> dict:
    """The mean of each metric over the seeds' runs, its sample standard deviation (absent with one seed), and
    the runs themselves."""
    out: dict = {k: float(np.mean([r[k] for r in runs])) for k in METRICS}
    if len(runs) > 1:
        out.update({f"{k}_std": float(np.std([r[k] for r in runs], ddof=1)) for k in METRICS})
    out["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
    out["runs"] = runs
    return out


def gains(rows: dict) -> dict:
    """PSNR gain of each recipe over the network of the same shape trained from scratch, paired by seed: the
    pretrained-start recipes against `scratch` (9-1-5), transfer 1+3 against `scratch_nonlinear`."""
    out = {}
    for name, base in (("finetune_all", "scratch"), ("transfer_12", "scratch"), ("transfer_13", "scratch_nonlinear")):
        a = {r["seed"]: r["psnr"] for r in rows[name]["runs"]}
        b = {r["seed"]: r["psnr"] for r in rows[base]["runs"]}
        d = [a[k] - b[k] for k in a]
        out[name] = {"over": base, "mean": float(np.mean(d)), "per_seed": d,
                     "wins": int(sum(v > 0 for v in d)), "seeds": len(d)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "results"))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; every trained row runs once per seed")
    ap.add_argument("--init", choices=("gaussian", "default"), default="gaussian",
                    help="how the layers trained from scratch start: the SRCNN paper's N(0, 0.001^2), or the "
                         "layers' default initialisation (much faster to learn)")
    a = ap.parse_args()
    try:
        seeds = [int(v) for v in a.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers such as 0,1,2, got {a.seeds!r}")
    if len(set(seeds)) != len(seeds):
        ap.error(f"--seeds: each seed once, got {a.seeds!r}")
    shared, out = Path(a.shared), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pretrained_model = ImageSR.from_srcnn_mat(shared / "weights/srcnn_official/9-1-5_91images/x3.mat", SCALE)
    pre = pretrained_model.net.state_dict()
    results = {}
    for dom, (train_imgs, test_imgs) in domains(shared).items():
        data = train.PatchDataset.from_images(train_imgs, SCALE, label=21)
        res = {"bicubic": evaluate(None, test_imgs), "pretrained": evaluate(pretrained_model, test_imgs)}
        for name in ROWS[2:]:
            runs = []
            for seed in seeds:
                t0 = time.perf_counter()
                rec = train.make_recipe(name, None if name.startswith("scratch") else pre, f1=9, f2=1, f3=5,
                                        seed=seed, init=a.init)
                train.fit(rec.model, data, steps=a.steps, batch_size=a.batch, lr=a.lr, lr_schedule="cosine",
                          trainable=rec.trainable, lr_mult=rec.lr_mult, seed=seed, device="cpu", progress=False)
                runs.append({"seed": seed, **evaluate(train.image_model(rec.model, SCALE), test_imgs),
                             "train_seconds": time.perf_counter() - t0})
                print(dom, name, runs[-1], flush=True)
            res[name] = summarize(runs)
        results[dom] = {"train_subimages": len(data), "test_images": len(test_imgs), "rows": res,
                        "gain_over_scratch": gains(res)}
    stamp = {"date": datetime.date.today().isoformat(), "magmasr": magmasr.__version__,
             "card": f"CPU ({magmasr.get_num_threads()} thread{'s' if magmasr.get_num_threads() > 1 else ''})",
             "seeds": seeds,
             "command": f"python benchmarks/transfer_table.py --steps {a.steps} --batch {a.batch} --lr {a.lr} "
                        f"--init {a.init} --seeds {','.join(map(str, seeds))}"}
    (out / "transfer.json").write_text(json.dumps({**stamp, "results": results}, indent=1))
    lines = [f"Made by `{stamp['command']}` on {stamp['card']}, {stamp['date']}, magmasr {stamp['magmasr']}. "
             f"Scale x3, Y channel, uint8-rounded, 3 pixels shaved; MAE/MSE on [0, 1] images. Each trained row: "
             f"{a.steps} Adam steps of {a.batch} sub-images, lr {a.lr} with a cosine decay; layers not taken "
             f"from the pretrained model start from the {a.init} initialisation. "
             + (f"Trained rows: mean ± sample standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))}: "
                "the new layers' initialisation and the order of the sub-images)." if len(seeds) > 1 else
                f"One seed ({seeds[0]})."), ""]
    pm = lambda v, k, f: f"{v[k]:{f}}" + (f" ± {v[k + '_std']:{f}}" if k + "_std" in v else "")  # noqa: E731
    for dom, r in results.items():
        lines += [f"### {dom}: {r['train_subimages']} training sub-images, {r['test_images']} test images", "",
                  "| method | PSNR (dB) | SSIM | MAE | MSE |", "|---|---|---|---|---|"]
        for name in ROWS:
            v = r["rows"][name]
            lines.append(f"| {name} | {pm(v, 'psnr', '.2f')} | {pm(v, 'ssim', '.4f')} | {pm(v, 'mae', '.4f')} | "
                         f"{pm(v, 'mse', '.6f')} |")
        lines += ["", "PSNR gain over the same network trained from scratch, paired by seed:", ""]
        for name, g in r["gain_over_scratch"].items():
            lines.append(f"- {name} over {g['over']}: {g['mean']:+.2f} dB (per seed: "
                         f"{', '.join(f'{d:+.2f}' for d in g['per_seed'])}; ahead in {g['wins']} of {g['seeds']})")
        lines.append("")
    (out / "transfer.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
