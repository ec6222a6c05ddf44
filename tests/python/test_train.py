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


def _tiny(small_data, n=48):
    return train.PatchDataset(small_data.x[:n].copy(), small_data.y[:n].copy(), 3)


def _net(seed=1):
    return train.make_recipe("scratch", f1=9, f2=1, f3=5, seed=seed, init="default").model


def test_a_checkpoint_resumes_only_its_own_run(small_data, tmp_path):
    """A checkpoint records what defines its run; a resume that differs in any of it is refused, naming each
    difference, and so is a checkpoint already past `steps` (no silent reuse of a finished model)."""
    data = _tiny(small_data)
    ck = tmp_path / "ck.safetensors"
    kw = dict(steps=4, batch_size=8, optimizer="sgd", lr=1e-2, momentum=0.9, seed=2, device="cpu", progress=False,
              checkpoint=ck, lr_schedule="cosine")
    train.fit(_net(), data, **kw)
    other = train.PatchDataset(small_data.x[48:96].copy(), small_data.y[48:96].copy(), 3)
    for change, message in [(dict(batch_size=16), "batch_size: 8 in the checkpoint, 16 now"),
                            (dict(seed=3), "seed: 2 in the checkpoint, 3 now"),
                            (dict(lr=1e-3), "lr: 0.01 in the checkpoint, 0.001 now"),
                            (dict(momentum=0.5), "momentum: 0.9 in the checkpoint, 0.5 now"),
                            (dict(optimizer="adam"), "the optimizer: \"sgd\" in the checkpoint, \"adam\" now"),
                            (dict(lr_schedule="constant"), "lr_schedule"),
                            (dict(trainable=["conv3"]), "the trainable layers"),
                            (dict(lr_mult={"conv3": 0.1}), "the per-parameter rate multipliers"),
                            (dict(steps=8), "steps: 4 in the checkpoint, 8 now (the cosine schedule")]:
        with pytest.raises(ValueError, match="not a checkpoint of this run") as e:
            train.fit(_net(), data, **{**kw, **change})
        assert message in str(e.value), (change, str(e.value))
    with pytest.raises(ValueError, match="the training data") as e:
        train.fit(_net(), other, **kw)
    two = train.PatchDataset(data.x[:40], data.y[:40], 3)
    with pytest.raises(ValueError, match="the number of training samples: 48 in the checkpoint, 40 now"):
        train.fit(_net(), two, **{**kw, "seed": 9})
    assert "seed: 2 in the checkpoint, 9 now" in str(pytest.raises(ValueError, train.fit, _net(), two,
                                                                    **{**kw, "seed": 9}).value)
    with pytest.raises(ValueError, match="the architecture"):
        train.fit(train.make_recipe("scratch", f1=9, f2=3, f3=3, init="default").model, data, **kw)
    # The same run again: finished, nothing more to do, the model is the checkpoint's.
    a = _net(5)
    res = train.fit(a, data, **kw)
    assert res.steps == 4
    # A constant rate does not depend on the total: the run can be extended, exactly.
    ck2 = tmp_path / "ck2.safetensors"
    const = {**kw, "lr_schedule": "constant", "checkpoint": ck2}
    train.fit(_net(), data, **const)
    with pytest.raises(ValueError, match="at step 4, past this run's 2 steps"):
        train.fit(_net(), data, **{**const, "steps": 2})
    ext = _net(7)
    assert train.fit(ext, data, **{**const, "steps": 7}).steps == 7
    ref = _net()
    train.fit(ref, data, **{**const, "steps": 7, "checkpoint": None})
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(ext.state_dict()[k], v, err_msg=k)


def test_a_bad_checkpoint_file_is_a_value_error_naming_it(small_data, tmp_path):
    from magmasr import optim, weights

    data = _tiny(small_data)
    kw = dict(steps=2, batch_size=8, device="cpu", progress=False)
    model_file = tmp_path / "model.safetensors"
    weights.save(model_file, _net().state_dict(), {})
    with pytest.raises(ValueError, match=f"{model_file.name}: not a checkpoint of this run .*a model file"):
        train.fit(_net(), data, checkpoint=model_file, **kw)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="junk.safetensors: not a checkpoint"):
        train.fit(_net(), data, checkpoint=junk, **kw)
    # Another architecture's checkpoint, and SGD state for an Adam run, loaded without a run record.
    ck = tmp_path / "ck.safetensors"
    train.fit(_net(), data, checkpoint=ck, optimizer="sgd", lr=1e-2, **kw)
    net = _net()
    with pytest.raises(ValueError, match="not a checkpoint of this run .its optimizer state has 6 tensors, this Adam optimizer 12"):
        train.load_checkpoint(ck, net, optim.Adam(net.parameters(), lr=1e-3))
    big = train.make_recipe("scratch", f1=9, f2=5, f3=5).model
    with pytest.raises(ValueError, match="not a checkpoint of this run .its model does not fit"):
        train.load_checkpoint(ck, big, optim.SGD(big.parameters(), lr=1e-2, momentum=0.9))
    # A checkpoint from before the run record: resumed, with a warning.
    tensors, meta = weights.load(ck)
    del meta["run"]
    weights.save(ck, tensors, meta)
    with pytest.warns(UserWarning, match="before magmasr recorded what defines a run"):
        train.fit(_net(), data, checkpoint=ck, optimizer="sgd", lr=1e-2, **{**kw, "steps": 3})


def test_interrupted_and_resumed_log_equals_the_uninterrupted_one(small_data, tmp_path):
    """The running sums of the log row in progress are in the checkpoint: the log of a run stopped between two
    rows and resumed is, row for row, the log of the run that did not stop (the speed apart). Its columns:
    step first, then epoch, train_loss, train_psnr, val_psnr, patches_per_s."""
    data = _tiny(small_data)
    tr, va = data.split(0.25, seed=0)
    kw = dict(steps=11, batch_size=8, val=va, val_every=5, seed=4, device="cpu", progress=False,
              lr_schedule="cosine")
    ref_log, log = tmp_path / "a.csv", tmp_path / "b.csv"
    ref = train.fit(_net(), tr, log=ref_log, **kw)

    class Stop(Exception):
        pass

    def stop(row):
        if row["step"] == 5:
            raise Stop

    ck = tmp_path / "ck.safetensors"
    with pytest.raises(Stop):  # the checkpoint of step 4 is in the middle of the row of steps 1..5
        train.fit(_net(), tr, log=log, checkpoint=ck, checkpoint_every=4, callback=stop, **kw)
    res = train.fit(_net(9), tr, log=log, checkpoint=ck, checkpoint_every=4, **kw)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "patches_per_s"} for r in rows]  # noqa: E731
    assert drop(res.history) == drop(ref.history) and len(ref.history) == 3
    a, b = list(csv.DictReader(open(ref_log))), list(csv.DictReader(open(log)))
    assert list(a[0]) == ["step", "epoch", "train_loss", "train_psnr", "val_psnr", "patches_per_s"]
    assert drop(a) == drop(b)


def test_recipes_refuse_pretrained_weights_that_do_not_fit_and_bad_frozen_rates():
    pre = train.make_recipe("scratch", f1=9, f2=1, f3=5, seed=3).model.state_dict()
    for bad in ({}, {"foo.weight": np.zeros(3, np.float32)}, {k: v for k, v in pre.items() if k.startswith("conv1")}):
        with pytest.raises(ValueError, match="conv2.weight missing"):
            train.make_recipe("finetune_all", bad, f1=9, f2=1, f3=5)
    with pytest.raises(ValueError, match=r"conv2.weight is \[32, 64, 1, 1\], this network's is \[32, 64, 5, 5\]"):
        train.make_recipe("transfer_12", pre)  # 9-1-5 weights into the default 9-5-5
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="make_recipe: frozen_lr must be a finite number >= 0"):
            train.make_recipe("transfer_12", pre, f1=9, f2=1, f3=5, frozen_lr=bad)
    with pytest.raises(ValueError, match="frozen_lr is the rate of the layers a transfer recipe keeps"):
        train.make_recipe("finetune_all", pre, f1=9, f2=1, f3=5, frozen_lr=0.1)


def test_finetune_all_keeps_the_architecture_of_a_nonlinear_srcnn():
    from magmasr import models

    arch = models.Architecture("srcnn_nonlinear", dict(f1=9, f2=1, f3=5, fb=3, n1=16, n2=8))
    pre = models.srcnn_nonlinear(9, 1, 5, 16, 8, fb=3, padding="valid", seed=4).state_dict()
    for kw in (dict(arch=arch), dict(f1=9, f2=1, f3=5, n1=16, n2=8)):  # from arch, or from the weights
        rec = train.make_recipe("finetune_all", pre, **kw)
        assert "conv2b" in rec.model.names() and rec.trainable == ["conv1", "conv2", "conv2b", "conv3"]
        for k, v in rec.model.state_dict().items():
            np.testing.assert_array_equal(v, pre[k], err_msg=k)
    t12 = train.make_recipe("transfer_12", pre, arch=arch)  # conv1, conv2 kept: a plain SRCNN with a new conv3
    assert t12.model.names() == ["conv1", "relu1", "conv2", "relu2", "conv3"]
    with pytest.raises(ValueError, match="already has a trained conv2b"):
        train.make_recipe("transfer_13", pre, arch=arch)
    with pytest.raises(ValueError, match="conv2b that this network lacks"):
        train.make_recipe("finetune_all", {**pre, "conv2b.weight": pre["conv2b.weight"][:, :, :1, :1]}, f1=9, f2=1,
                          f3=5, n1=16, n2=8, arch=models.Architecture("srcnn", dict(f1=9, f2=1, f3=5, n1=16, n2=8)))


def test_fit_restores_the_flags_and_rates_it_changes(small_data):
    data = _tiny(small_data)
    net = _net()
    train.fit(net, data, steps=1, batch_size=8, trainable=["conv3"], lr_mult={"conv3": 0.1}, device="cpu",
              progress=False)
    assert all(net[n].trainable for n in net.names())
    assert all(p.lr_mult == 1.0 for p in net.parameters())
    # The docs' recipe by hand: conv1 frozen, conv2 and conv3 learn with SGD, conv3 at a tenth of the rate.
    from magmasr import optim

    net["conv1"].trainable = False
    optim.set_lr(net["conv3"], 1e-5, base_lr=1e-4)
    before = net.state_dict()
    train.fit(net, data, steps=2, batch_size=8, optimizer="sgd", lr=1e-1, momentum=0.9, device="cpu", progress=False)
    after = net.state_dict()
    np.testing.assert_array_equal(after["conv1.weight"], before["conv1.weight"])
    assert not np.array_equal(after["conv2.weight"], before["conv2.weight"])
    assert not np.array_equal(after["conv3.weight"], before["conv3.weight"])
    assert net["conv1"].trainable is False and net["conv3"].parameters()[0].lr_mult == pytest.approx(0.1)
    # A recipe sets its flags and rates on its model, so fit(recipe.model, data) trains it as the recipe says.
    rec = train.make_recipe("transfer_13", net.state_dict(), f1=9, f2=1, f3=5, frozen_lr=0.5)
    assert [rec.model[n].trainable for n in ("conv1", "conv2", "conv2b", "conv3")] == [True] * 4
    assert rec.model["conv1"].parameters()[0].lr_mult == 0.5 and rec.model["conv3"].parameters()[0].lr_mult == 1.0
    frozen = train.make_recipe("transfer_12", net.state_dict(), f1=9, f2=1, f3=5)
    assert [frozen.model[n].trainable for n in ("conv1", "conv2", "conv3")] == [False, False, True]


def test_fit_runs_winograd_on_the_cpu_and_restores_the_layers(small_data):
    """On the CPU fit pins 'winograd' on every convolution for the call (SRCNN 9-5-5's 5x5 mapping layer forward
    and backward-data by Winograd) and gives the layers their own strategy back; its losses and weights are the
    direct sums' to float rounding (a few 1e-6 relative per pass, grown over a few Adam steps), and
    algo='auto' keeps the direct sums."""
    from magmasr import models

    data = train.PatchDataset(small_data.x[:64].copy(), small_data.y[:64, :, 2:-2, 2:-2].copy(), 3)  # 9-5-5: 17x17
    seen = []
    runs = {}
    for algo in (None, "auto"):
        net = models.srcnn(9, 5, 5, n1=16, n2=8, padding="valid", seed=3)
        net["conv2"].algo = "direct"

        def note(row, net=net):
            seen.append({net[n].algo for n in net.names() if hasattr(net[n], "algo")})

        res = train.fit(net, data, steps=4, batch_size=16, lr=1e-3, val_every=1, device="cpu", progress=False,
                        callback=note, algo=algo)
        assert [net[n].algo for n in ("conv1", "conv2", "conv3")] == ["auto", "direct", "auto"]
        runs[algo] = ([row["train_loss"] for row in res.history], net.state_dict())
    assert seen == [{"winograd"}] * 4 + [{"auto"}] * 4
    (wino, w_state), (direct, d_state) = runs[None], runs["auto"]
    assert wino != direct  # Winograd did run
    np.testing.assert_allclose(wino, direct, rtol=1e-4)
    for k in d_state:
        scale = np.abs(d_state[k]).max()
        np.testing.assert_allclose(w_state[k], d_state[k], rtol=0, atol=1e-4 * scale, err_msg=k)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(epochs=0), ValueError, "epochs must be a finite number > 0"),
    (dict(epochs=-1), ValueError, "epochs must be a finite number > 0"),
    (dict(steps=-3), ValueError, "steps must be >= 1, got -3"),
    (dict(steps=0), ValueError, "steps must be >= 1, got 0"),
    (dict(steps=2.5), ValueError, "steps must be an integer, got 2.5"),
    (dict(steps=2, epochs=1), ValueError, "give steps or epochs, not both"),
    (dict(steps=1, batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    (dict(steps=1, checkpoint_every=0), ValueError, "checkpoint_every must be >= 1, got 0"),
    (dict(steps=1, val_every=0), ValueError, "val_every must be >= 1, got 0"),
    (dict(steps=1, lr=-1), ValueError, "lr must be a finite number > 0"),
    (dict(steps=1, lr_mult={"conv1": -1}), ValueError, "lr_mult\\['conv1'\\] must be a finite number >= 0"),
    (dict(steps=1, optimizer="rmsprop"), ValueError, "optimizer must be 'sgd' or 'adam'"),
    (dict(steps=1, algo="fastest"), ValueError, "fit: algo must be one of auto, direct, .*, winograd, got 'fastest'"),
    (dict(steps=1, val="empty"), ValueError, "the validation set is empty"),
])
def test_fit_refuses_bad_arguments_saying_what_is_expected(small_data, tmp_path, kwargs, error, message):
    data = _tiny(small_data, 8)
    if kwargs.get("val") == "empty":
        kwargs = {**kwargs, "val": train.PatchDataset(data.x[:0], data.y[:0], 3)}
    with pytest.raises(error, match=message):
        train.fit(_net(), data, device="cpu", progress=False, checkpoint=tmp_path / "ck.safetensors", **kwargs)
    assert not (tmp_path / "ck.safetensors").exists()


def test_patch_dataset_refuses_a_zero_stride():
    img = np.zeros((40, 40), np.uint8)
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        train.PatchDataset.from_images([img], 3, stride=0)
    with pytest.raises(ValueError, match="scale must be >= 1, got 0"):
        train.PatchDataset.from_images([img], 0)
