"""End-to-end training: forward, backward and optimizer steps together must learn a known problem.

The problem: undo a known Gaussian blur (sigma 1) on random smooth images (white noise low-passed with
sigma 1.5, scaled to ~[0, 1]), all generated with fixed seeds. The network is SRCNN-shaped,
Conv2d(1, 16, 9) - ReLU - Conv2d(16, 8, 1) - ReLU - Conv2d(8, 1, 5) with valid padding, so its output is
the 6-pixel-cropped centre of the input patch.

What the numbers mean (measured on the held-out batch, identical on every run):
- the untrained network's loss is ~0.39;
- the best *constant* prediction (which training only the biases, or a backward that gets the weights wrong,
  could at most reach) has a loss of ~0.05, a factor ~8 below the start;
- copying the blurred input has a loss of ~0.0028.
A correct implementation reaches ~0.001 (SGD) and ~0.0004 (Adam). The tests ask for a reduction by at least
50x *and* a loss below half the copy-the-input loss: the network must have learned to sharpen.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import magmasr
from magmasr import nn, ops, optim

BORDER = (9 - 1) // 2 + (1 - 1) // 2 + (5 - 1) // 2  # valid padding crops 6 pixels on each side
REDUCTION = 50.0


def smooth_images(rng, n, size):
    noise = rng.standard_normal((n, size, size))
    sharp = np.stack([gaussian_filter(im, 1.5, mode="reflect") for im in noise])
    sharp = (sharp - sharp.mean()) / sharp.std() * 0.25 + 0.5
    blurred = np.stack([gaussian_filter(im, 1.0, mode="reflect") for im in sharp])
    return blurred[:, None].astype(np.float32), sharp[:, None].astype(np.float32)


def crop(a):
    return np.ascontiguousarray(a[:, :, BORDER:-BORDER, BORDER:-BORDER])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x_train, y_train = smooth_images(rng, 64, 32)
    x_test, y_test = smooth_images(rng, 16, 32)
    return x_train, crop(y_train), x_test, crop(y_test)


def tiny_srcnn():
    return nn.Sequential(
        ("conv1", nn.Conv2d(1, 16, 9, padding="valid", seed=1)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 8, 1, padding="valid", seed=2)),
        ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(8, 1, 5, padding="valid", seed=3)),
    )


def train(model, opt, data, steps, batch=16, seed=1):
    x_train, y_train, x_test, y_test = data
    rng = np.random.default_rng(seed)
    initial = ops.mse_loss(model(x_test), y_test)
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch, replace=False)
        x, y = np.ascontiguousarray(x_train[idx]), np.ascontiguousarray(y_train[idx])
        pred = model.forward(x, training=True)
        model.backward(ops.mse_loss_backward(pred, y))
        opt.step()
    return initial, ops.mse_loss(model(x_test), y_test)


def test_the_problem_is_what_the_docstring_says(data):
    _, _, x_test, y_test = data
    const = float(y_test.var())
    identity = float(np.mean((crop(x_test).astype(np.float64) - y_test) ** 2))
    initial = ops.mse_loss(tiny_srcnn()(x_test), y_test)
    # a bias-only learner cannot pass the REDUCTION bar; copying the input is far above the bar for sharpening
    assert initial / const < REDUCTION / 4
    assert identity < const / 10


@pytest.mark.slow
def test_sgd_training_reduces_the_loss_at_least_50x_and_learns_to_sharpen(data):
    model = tiny_srcnn()
    opt = optim.SGD(model, lr=0.05, momentum=0.9)
    initial, final = train(model, opt, data, steps=300)
    identity = float(np.mean((crop(data[2]).astype(np.float64) - data[3]) ** 2))
    assert opt.steps == 300
    assert initial / final >= REDUCTION, f"loss {initial:.4g} -> {final:.4g}: only {initial / final:.1f}x"
    assert final < 0.5 * identity, f"final loss {final:.4g} does not beat copying the input ({identity:.4g})"


@pytest.mark.slow
def test_adam_training_reduces_the_loss_at_least_50x_and_learns_to_sharpen(data):
    model = tiny_srcnn()
    opt = optim.Adam(model, lr=3e-3)
    initial, final = train(model, opt, data, steps=200)
    identity = float(np.mean((crop(data[2]).astype(np.float64) - data[3]) ** 2))
    assert initial / final >= REDUCTION, f"loss {initial:.4g} -> {final:.4g}: only {initial / final:.1f}x"
    assert final < 0.5 * identity, f"final loss {final:.4g} does not beat copying the input ({identity:.4g})"


def test_training_with_only_the_biases_cannot_pass_the_bar(data):
    # The control that gives the 50x bar its meaning: with every weight frozen at its random value (only
    # the biases learn, through lr_mult = 0 on the weights) the loss stalls near the constant predictor.
    model = tiny_srcnn()
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            p.lr_mult = 0.0
    initial, final = train(model, optim.SGD(model, lr=0.05, momentum=0.9), data, steps=60)
    assert initial / final < REDUCTION


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_gives_the_same_loss_curve_on_the_gpu_as_on_the_cpu(gpu, data, optimizer):
    """The same network, initialisation and batches, 40 steps on the CPU and on the GPU (every convolution,
    the loss, its gradient and the optimizer update run on the device). Both add the same fp32 products in
    different orders, so each step's loss may differ by a few float32 roundings, and the difference may grow
    with the steps but not explode: every step's loss agrees to 1e-4 relative (a wrong gradient or update,
    even on one layer, moves the curve by far more within a few steps) and so do the final weights."""
    x_train, y_train, _, _ = data
    curves, weights = {}, {}
    for device in ("cpu", gpu):
        model = tiny_srcnn()  # seeded layers: the same initialisation on both devices
        model.to(device)
        opt = optim.SGD(model, lr=0.05, momentum=0.9) if optimizer == "sgd" else optim.Adam(model, lr=3e-3)
        rng = np.random.default_rng(5)
        losses = []
        for _ in range(40):
            idx = rng.choice(len(x_train), 16, replace=False)
            x = magmasr.from_numpy(np.ascontiguousarray(x_train[idx])).to(device)
            y = magmasr.from_numpy(np.ascontiguousarray(y_train[idx])).to(device)
            pred = model.forward(x, training=True)
            assert str(pred.device) == str(device)
            losses.append(ops.mse_loss(pred, y))
            model.backward(ops.mse_loss_backward(pred, y))
            opt.step()
        curves[str(device)] = np.array(losses)
        weights[str(device)] = {name: p.value.numpy() for name, p in model.named_parameters()}
    cpu, dev = curves["cpu"], curves[str(gpu)]
    assert cpu[-1] < cpu[0] / 5  # the run learns: the curves compared are not flat
    np.testing.assert_allclose(dev, cpu, rtol=1e-4, atol=0)
    for name, w in weights["cpu"].items():
        err = np.linalg.norm(weights[str(gpu)][name] - w) / np.linalg.norm(w)
        assert err < 1e-4, f"{name}: relative difference {err:.3g} after 40 steps"


# ---------------------------------------------------------------------------------------------------
# The optimizer classes against the documented formulas (optim_params.hpp), through a layer
# ---------------------------------------------------------------------------------------------------

def _layer_with_grads(rng):
    conv = nn.Conv2d(2, 3, 3, seed=7)
    x = rng.uniform(-1, 1, (2, 2, 5, 5)).astype(np.float32)
    return conv, x


@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.0, 0.0, False), (0.9, 0.01, False), (0.9, 0.01, True)])
def test_sgd_optimizer_follows_the_formula_with_lr_mult(momentum, weight_decay, nesterov):
    rng = np.random.default_rng(3)
    conv, x = _layer_with_grads(rng)
    conv.bias_param.lr_mult = 0.25
    opt = optim.SGD(conv, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    assert opt.momentum == pytest.approx(momentum) and opt.weight_decay == pytest.approx(weight_decay)
    params = conv.parameters()
    ref = [np.asarray(p.value).astype(np.float64) for p in params]
    vel = [np.zeros_like(r) for r in ref]
    for _ in range(4):
        y = conv.forward(x, training=True)
        conv.backward(rng.uniform(-1, 1, y.shape).astype(np.float32))
        grads = [np.asarray(p.grad).astype(np.float64) for p in params]
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            lr = 0.1 * p.lr_mult
            g = g + weight_decay * ref[i]
            if momentum:
                vel[i] = momentum * vel[i] + g
                g = g + momentum * vel[i] if nesterov else vel[i]
            ref[i] = ref[i] - lr * g
            np.testing.assert_allclose(np.asarray(p.value), ref[i], rtol=1e-5, atol=1e-6, err_msg=p.name)
    if momentum:
        np.testing.assert_allclose(np.asarray(opt.state()[0]), vel[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.01, False), (0.1, True)])
def test_adam_optimizer_follows_the_formula(weight_decay, decoupled):
    rng = np.random.default_rng(4)
    conv, x = _layer_with_grads(rng)
    opt = optim.Adam(conv, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay, decoupled=decoupled)
    params = conv.parameters()
    ref = [np.asarray(p.value).astype(np.float64) for p in params]
    m = [np.zeros_like(r) for r in ref]
    v = [np.zeros_like(r) for r in ref]
    b1, b2 = float(np.float32(0.8)), float(np.float32(0.99))
    lr, wd, eps = float(np.float32(0.01)), float(np.float32(weight_decay)), float(np.float32(1e-6))
    for t in range(1, 6):
        y = conv.forward(x, training=True)
        conv.backward(rng.uniform(-1, 1, y.shape).astype(np.float32))
        grads = [np.asarray(p.grad).astype(np.float64) for p in params]
        opt.step()
        assert opt.steps == t
        for i, (p, g) in enumerate(zip(params, grads)):
            if decoupled:
                ref[i] = ref[i] - lr * wd * ref[i]
            else:
                g = g + wd * ref[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            ref[i] = ref[i] - lr * (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps)
            np.testing.assert_allclose(np.asarray(p.value), ref[i], rtol=1e-5, atol=1e-5 * lr * t, err_msg=p.name)
    state = opt.state()
    assert len(state) == 2 * len(params)
    np.testing.assert_allclose(np.asarray(state[0]), m[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(state[1]), v[0], rtol=1e-5, atol=1e-9)


def test_adam_counts_steps_per_parameter_as_pytorch_does():
    # Two layers; the first frozen for 6 steps, then trained: its first update must use the bias correction
    # of a first step (torch.optim.Adam keeps a step count per parameter), i.e. move each weight by about lr.
    rng = np.random.default_rng(8)
    net = nn.Sequential(("a", nn.Conv2d(1, 2, 3, padding=1, seed=1)), ("b", nn.Conv2d(2, 1, 3, padding=1, seed=2)))
    opt = optim.Adam(net.parameters(), lr=0.01)
    x = rng.uniform(-1, 1, (2, 1, 6, 6)).astype(np.float32)

    def step():
        y = net.forward(x, training=True)
        net.backward(rng.uniform(-1, 1, np.asarray(y).shape).astype(np.float32))
        opt.step()

    net["a"].trainable = False
    for _ in range(6):
        step()
    assert opt.steps == 6 and opt.param_steps == [0, 0, 6, 6]
    net["a"].trainable = True
    w0 = np.asarray(net["a"].weight).astype(np.float64).copy()
    y = net.forward(x, training=True)
    net.backward(rng.uniform(-1, 1, np.asarray(y).shape).astype(np.float32))
    g = np.asarray(net["a"].weight_param.grad).astype(np.float64)
    opt.step()
    # Step 1 of the formula: m = 0.1 g, v = 0.001 g^2, update = lr * (m / 0.1) / (sqrt(v / 0.001) + eps).
    expect = w0 - 0.01 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(np.asarray(net["a"].weight), expect, rtol=1e-5, atol=1e-7)
    assert opt.param_steps == [1, 1, 7, 7]
    # lr_mult 0 freezes like trainable=False: neither the parameter nor its count moves.
    net["b"].bias_param.lr_mult = 0.0
    step()
    assert opt.param_steps == [2, 2, 8, 7]
    with pytest.raises(ValueError, match=r"one count per parameter \(4\), got 3"):
        opt.param_steps = [1, 2, 3]


def test_optimizer_and_parameter_setters_check_their_values():
    conv = nn.Conv2d(1, 1, 3)
    for opt in (optim.SGD(conv, lr=0.1), optim.Adam(conv)):
        for bad in (-5.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=r"lr must be >= 0 and finite"):
                opt.lr = bad
        with pytest.raises(ValueError, match=r"steps must be >= 0, got -1"):
            opt.steps = -1
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=r"lr_mult must be >= 0 and finite"):
            conv.weight_param.lr_mult = bad
    # Arrays of numbers only: NumPy would make None a NaN and '1.5' a 1.5.
    with pytest.raises(TypeError, match=r"expected an array of numbers, got dtype object"):
        conv.weight = np.full((1, 1, 3, 3), None, dtype=object)
    with pytest.raises(TypeError, match=r"expected an array of numbers, got dtype <U3"):
        conv.weight = np.full((1, 1, 3, 3), "1.5")
    conv.weight = np.full((1, 1, 3, 3), 2, dtype=np.int64)  # integers are numbers
    assert np.all(np.asarray(conv.weight) == 2)


def test_optimizer_lr_setter_steps_and_zero_grad():
    rng = np.random.default_rng(5)
    conv, x = _layer_with_grads(rng)
    opt = optim.SGD(conv, lr=0.1)
    opt.lr = 0.5
    assert opt.lr == pytest.approx(0.5)
    y = conv.forward(x, training=True)
    conv.backward(np.ones(y.shape, np.float32))
    w0 = np.asarray(conv.weight).copy()
    g = np.asarray(conv.weight_param.grad).copy()
    opt.step()
    np.testing.assert_allclose(np.asarray(conv.weight), w0 - 0.5 * g, rtol=1e-6, atol=1e-7)
    opt.zero_grad()
    assert np.all(np.asarray(conv.weight_param.grad) == 0)
    w1 = np.asarray(conv.weight).copy()
    opt.step()  # a zero gradient (no momentum, no decay) does not move anything
    np.testing.assert_array_equal(np.asarray(conv.weight), w1)
    opt.steps = 10
    assert opt.steps == 10
    assert len(opt.params()) == 2
