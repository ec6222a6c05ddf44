"""Training: SRCNN sub-images, fit (learning, frozen layers, exact resume, logs) and the transfer recipes."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from skimage import data as skdata

from magmasr import image as im
from magmasr import train


@pytest.fixture(scope="module")
def small_data():
    # Two of scikit-image's bundled pictures, 160x160 crops: real image statistics, no download.
    imgs = [skdata.camera()[100:260, 150:310], skdata.astronaut()[50:210, 150:310]]
    return train.PatchDataset.from_images(imgs, 3, label=21)


def test_patches_follow_the_srcnn_protocol():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (61, 75, 3), dtype=np.uint8)
    ds = train.PatchDataset.from_images([img], 3, patch=33, stride=14, label=21)
    # modcrop to 60x75: rows 0, 14 and cols 0, 14, 28, 42 -> 2 * 4 sub-images.
    assert ds.x.shape == (8, 1, 33, 33) and ds.y.shape == (8, 1, 21, 21)
    gt = im.to_float(im.rgb2ycbcr(im.modcrop(img, 3))[:, :, 0])
    bic = im.imresize(im.imresize(gt, 1 / 3), 3)
    np.testing.assert_allclose(ds.x[5, 0], bic[14:47, 14:47], atol=1e-6)  # row 14, col 14
    np.testing.assert_allclose(ds.y[5, 0], gt[20:41, 20:41], atol=1e-6)   # its valid centre
    with pytest.raises(ValueError, match="label"):
        train.PatchDataset.from_images([img], 3, label=20)


def test_downscales_add_the_sub_images_of_each_shrunk_picture():
    """Scale augmentation: the sub-images of an image at factors (1, f) are those of the image followed by
    those of its Y channel shrunk by f (MATLAB imresize in uint8 mode: an 8-bit picture like any other), each
    with its own bicubic input."""
    rng = np.random.default_rng()
    img = rng.integers(0, 256, (int(rng.integers(70, 90)), int(rng.integers(70, 90)), 3), dtype=np.uint8)
    f = float(rng.choice([0.9, 0.8, 0.7]))
    both = train.PatchDataset.from_images([img], 3, label=21, downscales=(1.0, f))
    alone = train.PatchDataset.from_images([img], 3, label=21)
    y = im.rgb2ycbcr(img)[:, :, 0]
    shrunk = im.imresize(y, f)
    assert shrunk.dtype == np.uint8 and shrunk.shape == tuple(int(np.ceil(f * n)) for n in y.shape)
    small = train.PatchDataset.from_images([shrunk], 3, label=21)
    assert len(both) == len(alone) + len(small)
    np.testing.assert_array_equal(both.x, np.concatenate([alone.x, small.x]))
    np.testing.assert_array_equal(both.y, np.concatenate([alone.y, small.y]))
    # The shrunk labels are the modcropped shrunk picture / 255 (first sub-image: its top-left corner).
    np.testing.assert_allclose(small.y[0, 0], im.modcrop(shrunk, 3)[6:27, 6:27] / 255.0, atol=1e-7)
    # A factor too small for one sub-image adds nothing; factors outside (0, 1] or repeated are refused.
    assert len(train.PatchDataset.from_images([img], 3, label=21, downscales=(1.0, 0.3))) == len(alone)
    for bad in ((), (1.0, 1.0), (0.0,), (1.5,), (-0.5, 1.0)):
        with pytest.raises(ValueError, match="downscale factors"):
            train.PatchDataset.from_images([img], 3, label=21, downscales=bad)


def test_augment_applies_one_symmetry_to_inputs_and_labels():
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 1, 5, 5)
    y = x[:, :, 1:4, 1:4].copy()
    for seed in range(8):
        xa, ya = train.augment(x, y, np.random.default_rng(seed))
        np.testing.assert_array_equal(xa[:, :, 1:4, 1:4], ya)  # the centre stays the centre
        assert sorted(xa.ravel()) == sorted(x.ravel())


def test_fit_learns_and_logs(small_data, tmp_path):
    tr, va = small_data.split(0.2, seed=0)
    rec = train.make_recipe("scratch", f1=9, f2=1, f3=5)
    before = train.evaluate_patches(rec.model, va, "cpu")
    log = tmp_path / "log.csv"
    res = train.fit(rec.model, tr, steps=150, batch_size=32, optimizer="adam", lr=1e-3, val=va, val_every=50,
                    trainable=rec.trainable, device="cpu", log=log, progress=False)
    # From the N(0, 1e-3) initialisation (output ~0: about 6 dB) the network must reach well beyond 20 dB on
    # held-out sub-images; bicubic itself is about 24 dB on these crops.
    assert before < 10
    assert res.val_psnr > 20, res.history
    rows = list(csv.DictReader(open(log)))
    assert [int(r["step"]) for r in rows] == [50, 100, 150]


def test_frozen_layers_do_not_move(small_data):
    rec = train.make_recipe("scratch", f1=9, f2=1, f3=5)
    w1 = np.array(rec.model["conv1"].weight, copy=True)
    w3 = np.array(rec.model["conv3"].weight, copy=True)
    train.fit(rec.model, small_data, steps=5, batch_size=16, trainable=["conv2", "conv3"], device="cpu",
              progress=False)
    np.testing.assert_array_equal(np.asarray(rec.model["conv1"].weight), w1)
    assert not np.array_equal(np.asarray(rec.model["conv3"].weight), w3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_is_exact(small_data, tmp_path, optimizer):
    kw = dict(batch_size=16, optimizer=optimizer, lr=1e-3 if optimizer == "adam" else 1e-2, device="cpu",
              progress=False, seed=3)
    a = train.make_recipe("scratch", f1=9, f2=1, f3=5, seed=1).model
    train.fit(a, small_data, steps=12, **kw)
    b = train.make_recipe("scratch", f1=9, f2=1, f3=5, seed=1).model
    ck = tmp_path / "ck.safetensors"
    train.fit(b, small_data, steps=7, checkpoint=ck, checkpoint_every=7, **kw)  # "interrupted" after 7
    c = train.make_recipe("scratch", f1=9, f2=1, f3=5, seed=99).model           # a fresh process
    train.fit(c, small_data, steps=12, checkpoint=ck, checkpoint_every=100, **kw)
    for (n, p), (_, q) in zip(a.named_parameters(), c.named_parameters()):
        np.testing.assert_array_equal(np.asarray(p.value), np.asarray(q.value), err_msg=n)


def test_checkpoints_keep_each_parameters_update_count(tmp_path):
    from magmasr import nn, optim, weights

    net = nn.Sequential(("a", nn.Conv2d(1, 2, 3)), ("b", nn.Conv2d(2, 1, 3)))
    opt = optim.Adam(net.parameters(), lr=1e-3)
    opt.steps, opt.param_steps = 5, [3, 3, 5, 5]  # layer a was frozen for two steps
    ck = tmp_path / "ck.safetensors"
    train.save_checkpoint(ck, net, opt, 5, {})
    back = optim.Adam(net.parameters(), lr=1e-3)
    assert train.load_checkpoint(ck, net, back)[0] == 5
    assert back.steps == 5 and back.param_steps == [3, 3, 5, 5]
    # A checkpoint from before the per-parameter counts: every parameter had the step count.
    tensors, meta = weights.load(ck)
    del meta["optimizer_param_steps"]
    weights.save(ck, tensors, meta)
    old = optim.Adam(net.parameters(), lr=1e-3)
    train.load_checkpoint(ck, net, old)
    assert old.param_steps == [5, 5, 5, 5]


@pytest.mark.parametrize("recipe", ["finetune_all", "transfer_12", "transfer_13"])
def test_transfer_recipes_run_end_to_end(small_data, recipe):
    # "Pretrained" weights: a short scratch run; the recipe must keep what it says it keeps.
    base = train.make_recipe("scratch", f2=1, seed=5)
    train.fit(base.model, small_data, steps=20, batch_size=16, device="cpu", progress=False)
    pre = base.model.state_dict()
    rec = train.make_recipe(recipe, pre, f2=1, seed=6)
    for name in ("conv1", "conv2"):
        np.testing.assert_array_equal(np.asarray(rec.model[name].weight), pre[f"{name}.weight"])
    tr, va = small_data.split(0.25, seed=1)
    before = train.evaluate_patches(rec.model, va, "cpu")
    res = train.fit(rec.model, tr, steps=40, batch_size=16, lr=1e-3, trainable=rec.trainable,
                    lr_mult=rec.lr_mult, val=va, device="cpu", progress=False)
    if recipe != "finetune_all":  # the kept feature layers are frozen
        np.testing.assert_array_equal(np.asarray(rec.model["conv1"].weight), pre["conv1.weight"])
        np.testing.assert_array_equal(np.asarray(rec.model["conv2"].weight), pre["conv2.weight"])
    assert res.val_psnr > before


def test_fit_rejects_mismatched_labels_and_unknown_layers(small_data):
    model = train.make_recipe("scratch", f1=9, f2=5, f3=5).model  # 9-5-5 maps 33 to 17, the labels are 21
    with pytest.raises(ValueError, match="labels"):
        train.fit(model, small_data, steps=1, device="cpu", progress=False)
    ok = train.make_recipe("scratch", f2=1).model
    with pytest.raises(ValueError, match="unknown layers"):
        train.fit(ok, small_data, steps=1, trainable=["conv9"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="pretrained"):
        train.make_recipe("transfer_12")


def test_transplant_grows_srcnn_915_into_955_computing_the_same_function():
    """A 9-1-5 embedded in a 9-5-5 (its 1x1 conv2 the centre tap of a 5x5, zeros around): on patches ('valid')
    the 9-5-5 output is the centre of the 9-1-5 output, 2 pixels a side smaller (the 5x5 sees no border there)."""
    from magmasr import models
    from magmasr._core import from_numpy

    rng = np.random.default_rng()
    small = models.srcnn(9, 1, 5, padding="valid", padding_mode="zeros", seed=int(rng.integers(1000)))
    big = models.srcnn(9, 5, 5, padding="valid", padding_mode="zeros", seed=int(rng.integers(1000)))
    done = train.transplant(big, small.state_dict())
    assert done == {"conv1": "copied", "conv2": "embedded 1x1 in 5x5", "conv3": "copied"}
    w = big.state_dict()["conv2.weight"]
    np.testing.assert_array_equal(w[:, :, 2, 2], small.state_dict()["conv2.weight"][:, :, 0, 0])
    assert np.count_nonzero(w) == np.count_nonzero(small.state_dict()["conv2.weight"])
    x = rng.random((2, 1, 33, 33), dtype=np.float32)
    out_small, out_big = (m(from_numpy(x)).numpy() for m in (small, big))
    assert out_small.shape[-1] == 21 and out_big.shape[-1] == 17
    np.testing.assert_allclose(out_big, out_small[..., 2:-2, 2:-2], rtol=1e-5, atol=1e-6)
    # A layer whose channels differ is left alone; a kernel that would shrink, or grow by an odd amount, too.
    other = models.srcnn(9, 5, 5, n1=32, padding="valid", padding_mode="zeros")
    before = other.state_dict()
    assert train.transplant(other, small.state_dict()) == {"conv3": "copied"}
    np.testing.assert_array_equal(other.state_dict()["conv1.weight"], before["conv1.weight"])
    assert train.transplant(small, big.state_dict()) == {"conv1": "copied", "conv3": "copied"}
    even = models.srcnn(9, 2, 5, padding="valid", padding_mode="zeros")
    assert "conv2" not in train.transplant(even, models.srcnn(9, 1, 5, padding="valid").state_dict())


def test_training_pictures_of_every_pixel_type_map_onto_0_1_as_upscale_does(tmp_path):
    """A float TIFF outside [0, 1] (or 16-bit) trains as the 8-bit picture it is an exact image of, not on its
    raw values (which gave labels in the hundreds)."""
    import imageio.v3 as iio

    rng = np.random.default_rng(11)
    u8 = rng.integers(0, 256, (40, 42, 3), dtype=np.uint8)
    u8[0, 0], u8[-1, -1] = 0, 255
    ref = train.PatchDataset.from_images([u8.astype(np.float64) / 255.0], 3, label=21)
    for name, pixels in [("sky.tif", u8 * 12.5 - 300.0), ("deep.tif", u8.astype(np.uint16) * 257)]:
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        iio.imwrite(folder / name, pixels)
        ds = train.PatchDataset.from_folder(folder, 3, label=21)
        assert 0.0 <= ds.y.min() and ds.y.max() <= 1.0
        np.testing.assert_allclose(ds.y, ref.y, atol=1e-6)
        np.testing.assert_allclose(ds.x, ref.x, atol=1e-6)


def test_fit_stops_when_the_loss_is_no_longer_finite():
    rng = np.random.default_rng(12)
    ds = train.PatchDataset.from_images([rng.integers(0, 256, (40, 40), dtype=np.uint8)], 3, label=21)
    recipe = train.make_recipe("scratch", f1=9, f2=1, f3=5, init="default")
    with pytest.raises(train.TrainingDiverged, match="training diverged: the loss of step"):
        train.fit(recipe.model, ds, steps=40, batch_size=4, optimizer="sgd", lr=1e6, device="cpu", progress=False)
