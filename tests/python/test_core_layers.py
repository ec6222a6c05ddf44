"""Layers (``magmasr.nn``): forward / backward against the functional ops (themselves tested against
independent references in test_core_ops.py) and against finite differences; parameters, freezing,
summary(), padding keywords, state dicts, fused inference, lr_mult, devices."""

from __future__ import annotations

import re

import numpy as np
import pytest

import magmasr
from magmasr import nn, ops, optim


def A(t) -> np.ndarray:
    return np.asarray(t)


def rand(rng, *shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def srcnn(k1=9, k2=5, k3=5, c1=64, c2=32, padding="valid", seed=0):
    return nn.Sequential(
        ("conv1", nn.Conv2d(1, c1, k1, padding=padding, seed=seed)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(c1, c2, k2, padding=padding, seed=seed + 1)),
        ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(c2, 1, k3, padding=padding, seed=seed + 2)),
    )


def small_net(seed=0, padding_mode="zeros"):
    return nn.Sequential(
        ("conv1", nn.Conv2d(2, 4, 3, padding=1, padding_mode=padding_mode, seed=seed)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(4, 3, (3, 1), padding=(1, 0), padding_mode=padding_mode, seed=seed + 1)),
        ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(3, 2, 1, seed=seed + 2)),
    )


def functional_small_net(model, x, mode="zeros"):
    """The forward pass of small_net written with the functional ops, keeping the intermediates."""
    c1, c2, c3 = model["conv1"], model["conv2"], model["conv3"]
    h1 = A(ops.conv2d(x, c1.weight, c1.bias, padding=1, padding_mode=mode))
    a1 = A(ops.relu(h1))
    h2 = A(ops.conv2d(a1, c2.weight, c2.bias, padding=(1, 0), padding_mode=mode))
    a2 = A(ops.relu(h2))
    y = A(ops.conv2d(a2, c3.weight, c3.bias))
    return h1, a1, h2, a2, y


def functional_small_net_backward(model, x, dy, mode="zeros"):
    c1, c2, c3 = model["conv1"], model["conv2"], model["conv3"]
    h1, a1, h2, a2, _ = functional_small_net(model, x, mode)
    g = {}
    g["conv3.weight"], g["conv3.bias"] = ops.conv2d_backward_weight(a2, dy, c3.weight.shape)
    da2 = ops.conv2d_backward_data(dy, c3.weight, a2.shape)
    dh2 = ops.relu_backward(a2, da2)
    g["conv2.weight"], g["conv2.bias"] = ops.conv2d_backward_weight(a1, dh2, c2.weight.shape, padding=(1, 0),
                                                                    padding_mode=mode)
    da1 = ops.conv2d_backward_data(dh2, c2.weight, a1.shape, padding=(1, 0), padding_mode=mode)
    dh1 = ops.relu_backward(a1, da1)
    g["conv1.weight"], g["conv1.bias"] = ops.conv2d_backward_weight(x, dh1, c1.weight.shape, padding=1,
                                                                    padding_mode=mode)
    dx = ops.conv2d_backward_data(dh1, c1.weight, x.shape, padding=1, padding_mode=mode)
    return {k: A(v) for k, v in g.items()}, A(dx)


# ---------------------------------------------------------------------------------------------------
# Single layers against the functional ops
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_conv2d_layer_matches_functional_ops(mode, rng):
    conv = nn.Conv2d(3, 5, (5, 3), padding=(2, 3), padding_mode=mode, seed=3)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding, conv.padding_mode) == (
        3, 5, (5, 3), (2, 3), mode)
    assert conv.weight.shape == (5, 3, 5, 3) and conv.bias.shape == (5,)
    x = rand(rng, 2, 3, 7, 6)
    y = A(conv(x))
    np.testing.assert_array_equal(y, A(ops.conv2d(x, conv.weight, conv.bias, padding=(2, 3), padding_mode=mode)))
    assert conv.output_shape(x.shape) == y.shape == (2, 5, 7, 10)

    y2 = A(conv.forward(x, training=True))
    np.testing.assert_array_equal(y2, y)
    dy = rand(rng, *y.shape)
    dx = conv.backward(dy, need_input_grad=True)
    np.testing.assert_array_equal(A(dx), A(ops.conv2d_backward_data(dy, conv.weight, x.shape, padding=(2, 3),
                                                                     padding_mode=mode)))
    dw, db = ops.conv2d_backward_weight(x, dy, conv.weight.shape, padding=(2, 3), padding_mode=mode)
    np.testing.assert_array_equal(A(conv.weight_param.grad), A(dw))
    np.testing.assert_array_equal(A(conv.bias_param.grad), A(db))
    # need_input_grad defaults to False: no input gradient, the weight gradient still computed
    assert conv.backward(dy) is None


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_conv3d_layer_matches_functional_ops(mode, rng):
    conv = nn.Conv3d(2, 3, 3, padding=(1, 0, 2), padding_mode=mode, seed=5)
    assert conv.kernel_size == (3, 3, 3) and conv.padding == (1, 0, 2)
    x = rand(rng, 2, 2, 4, 5, 3)
    y = A(conv(x, training=True))
    np.testing.assert_array_equal(y, A(ops.conv3d(x, conv.weight, conv.bias, padding=(1, 0, 2), padding_mode=mode)))
    dy = rand(rng, *y.shape)
    dx = A(conv.backward(dy, need_input_grad=True))
    np.testing.assert_array_equal(dx, A(ops.conv3d_backward_data(dy, conv.weight, x.shape, padding=(1, 0, 2),
                                                                 padding_mode=mode)))
    dw, db = ops.conv3d_backward_weight(x, dy, conv.weight.shape, padding=(1, 0, 2), padding_mode=mode)
    np.testing.assert_array_equal(A(conv.weight_param.grad), A(dw))
    np.testing.assert_array_equal(A(conv.bias_param.grad), A(db))


def test_conv_without_bias(rng):
    conv = nn.Conv2d(2, 3, 3, bias=False)
    assert conv.bias is None and conv.bias_param is None
    assert [p.name for p in conv.parameters()] == ["weight"]
    assert conv.num_parameters == 3 * 2 * 9
    x = rand(rng, 1, 2, 5, 5)
    y = A(conv(x, training=True))
    np.testing.assert_array_equal(y, A(ops.conv2d(x, conv.weight)))
    conv.backward(rand(rng, *y.shape))
    assert conv.weight_param.grad is not None
    with pytest.raises(ValueError, match="no bias"):
        conv.bias = np.zeros(3, np.float32)


def test_conv_initialisation_is_pytorchs_uniform_and_seeded():
    conv = nn.Conv2d(16, 8, 3, seed=11)
    bound = 1 / np.sqrt(16 * 9)
    w, b = A(conv.weight), A(conv.bias)
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(b) <= bound)
    # a uniform distribution on [-bound, bound]: spread over the interval, mean ~0 (1152 samples)
    assert w.max() > 0.9 * bound and w.min() < -0.9 * bound
    assert abs(w.mean()) < 0.1 * bound
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)
    np.testing.assert_array_equal(A(nn.Conv2d(16, 8, 3, seed=11).weight), w)
    assert not np.array_equal(A(nn.Conv2d(16, 8, 3, seed=12).weight), w)


def test_relu_layer(rng):
    relu = nn.ReLU()
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = A(relu(x, training=True))
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = rand(rng, *x.shape)
    np.testing.assert_array_equal(A(relu.backward(dy, need_input_grad=True)), np.where(x > 0, dy, 0))
    assert relu.parameters() == [] and relu.num_parameters == 0
    assert relu.output_shape((2, 3, 4, 5)) == (2, 3, 4, 5)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_pixel_shuffle_layer(r, rng):
    ps = nn.PixelShuffle(r)
    assert ps.upscale == r
    x = rand(rng, 2, 3 * r * r, 4, 5)
    y = A(ps(x, training=True))
    np.testing.assert_array_equal(y, A(ops.pixel_shuffle(x, r)))
    assert y.shape == ps.output_shape(x.shape) == (2, 3, 4 * r, 5 * r)
    dy = rand(rng, *y.shape)
    np.testing.assert_array_equal(A(ps.backward(dy, need_input_grad=True)), A(ops.pixel_shuffle_backward(dy, r)))


def test_fold_depth_layer_is_a_reshape_without_copy(rng):
    fold = nn.FoldDepth()
    x = rand(rng, 2, 3, 4, 5, 6)
    y = fold(x, training=True)
    assert y.shape == fold.output_shape(x.shape) == (2, 12, 5, 6)
    np.testing.assert_array_equal(A(y), x.reshape(2, 12, 5, 6))  # channel c*D + d
    assert np.shares_memory(A(y), x)
    dy = rand(rng, 2, 12, 5, 6)
    dx = fold.backward(dy, need_input_grad=True)
    np.testing.assert_array_equal(A(dx), dy.reshape(x.shape))


# ---------------------------------------------------------------------------------------------------
# Sequential: forward / backward against the functional chain and finite differences
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_sequential_forward_backward_match_the_functional_chain(mode, rng):
    model = small_net(padding_mode=mode)
    x = rand(rng, 2, 2, 6, 5)
    y_ref = functional_small_net(model, x, mode)[-1]
    np.testing.assert_allclose(A(model(x)), y_ref, rtol=1e-6, atol=1e-6)  # inference (fused conv+ReLU)
    y = A(model.forward(x, training=True))
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    dy = rand(rng, *y.shape)
    dx = model.backward(dy, need_input_grad=True)
    g_ref, dx_ref = functional_small_net_backward(model, x, dy, mode)
    np.testing.assert_allclose(A(dx), dx_ref, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(A(p.grad), g_ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_sequential_gradients_match_finite_differences(rng):
    # A network with no ReLU (Conv3d -> FoldDepth -> Conv2d -> PixelShuffle -> Conv2d) is linear in each
    # parameter and in the input, so central differences are exact up to float32 rounding of the output.
    model = nn.Sequential(
        ("conv3d", nn.Conv3d(1, 2, 3, padding=(0, 1, 1), padding_mode="replicate", seed=1)),
        ("fold", nn.FoldDepth()),
        ("conv", nn.Conv2d(4, 8, 3, padding=1, seed=2)),
        ("shuffle", nn.PixelShuffle(2)),
        ("out", nn.Conv2d(2, 1, 3, padding="same", padding_mode="replicate", seed=3)),
    )
    x = rand(rng, 1, 1, 4, 3, 4)
    y = A(model.forward(x, training=True))
    assert y.shape == (1, 1, 6, 8)
    r = rand(rng, *y.shape)
    dx = A(model.backward(r, need_input_grad=True))
    grads = {n: A(p.grad).copy() for n, p in model.named_parameters()}

    def loss():
        return float(np.sum(A(model(x)).astype(np.float64) * r))

    def fd(arr, set_back, idx):
        old = arr.flat[idx]
        arr.flat[idx] = old + 0.25
        set_back(arr)
        fp = loss()
        arr.flat[idx] = old - 0.25
        set_back(arr)
        fm = loss()
        arr.flat[idx] = old
        set_back(arr)
        return (fp - fm) / 0.5

    for name, p in model.named_parameters():
        arr = A(p.value).copy()
        for idx in rng.choice(arr.size, size=min(arr.size, 12), replace=False):

            def set_back(a, p=p):
                p.value = a

            assert fd(arr, set_back, idx) == pytest.approx(grads[name].flat[idx], rel=1e-4, abs=1e-4), (name, idx)
    for idx in rng.choice(x.size, size=12, replace=False):
        assert fd(x, lambda a: None, idx) == pytest.approx(dx.flat[idx], rel=1e-4, abs=1e-4), ("x", idx)


def test_sequential_with_relu_gradient_matches_finite_differences(rng):
    # Non-linear: a small step (2**-10) and a looser tolerance; kinks are unlikely at random points.
    model = small_net(seed=4)
    x = rand(rng, 1, 2, 5, 4)
    y = A(model.forward(x, training=True))
    r = rand(rng, *y.shape)
    model.backward(r)
    w = model["conv1"].weight_param
    g = A(w.grad).copy()
    arr = A(w.value).copy()
    h = 2.0**-10
    for idx in rng.choice(arr.size, size=10, replace=False):
        vals = []
        for s in (h, -h):
            a = arr.copy()
            a.flat[idx] += s
            w.value = a
            vals.append(float(np.sum(A(model(x)).astype(np.float64) * r)))
        w.value = arr
        # rounding of the float32 outputs ~ 1e-7 * |L| / h ~ 1e-4 relative: rtol 2e-3
        assert (vals[0] - vals[1]) / (2 * h) == pytest.approx(g.flat[idx], rel=2e-3, abs=2e-4), idx


def test_fused_conv_relu_inference_equals_conv_then_relu(rng):
    model = srcnn(padding="same", c1=16, c2=8)
    x = rand(rng, 2, 1, 20, 17)
    h = x
    for name in ("conv1", "relu1", "conv2", "relu2", "conv3"):
        h = A(model[name](h))  # each layer alone: no fusion
    np.testing.assert_array_equal(A(model(x)), h)
    np.testing.assert_array_equal(A(model.forward(x, training=True)), h)
    conv = model["conv1"]
    np.testing.assert_array_equal(A(nn.Sequential(conv, nn.ReLU())(x)), np.maximum(A(conv(x)), 0))


# ---------------------------------------------------------------------------------------------------
# Names and parameters
# ---------------------------------------------------------------------------------------------------

def test_named_parameters_and_indexing():
    model = srcnn()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"]
    assert model.names() == ["conv1", "relu1", "conv2", "relu2", "conv3"]
    assert len(model) == 5
    assert model["conv2"].type_name == "Conv2d" and model[1].type_name == "ReLU"
    assert model[-1].out_channels == 1
    assert [tuple(p.shape) for _, p in model.named_parameters()] == [
        (64, 1, 9, 9), (64,), (32, 64, 5, 5), (32,), (1, 32, 5, 5), (1,)]
    assert len(model.parameters()) == 6
    with pytest.raises(IndexError):
        model[5]
    with pytest.raises(ValueError, match="no layer named 'conv4'.*conv1"):
        model["conv4"]
    # default names are the indices; nested Sequentials prefix their own name
    default = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 1))
    assert [n for n, _ in default.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    nested = nn.Sequential(("body", default), ("tail", nn.Conv2d(1, 1, 1)))
    assert [n for n, _ in nested.named_parameters()] == [
        "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "tail.weight", "tail.bias"]


def test_sequential_rejects_bad_and_duplicate_names():
    model = nn.Sequential(("conv", nn.Conv2d(1, 1, 1)))
    with pytest.raises(ValueError, match="'conv' exists already"):
        model.add(nn.ReLU(), "conv")
    with pytest.raises(ValueError, match="letters, digits and '_'.*'a.b'"):
        model.add(nn.ReLU(), "a.b")
    model.add(nn.ReLU(), "relu_1")
    assert model.names() == ["conv", "relu_1"]
    with pytest.raises(TypeError, match="expected layers or \\(name, layer\\) pairs, got int"):
        nn.Sequential(3)


def test_parameter_names_are_local_and_qualified_by_named_parameters():
    # layers.hpp: Parameter.name is the layer-local name; named_parameters() qualifies it with the layer's.
    model = srcnn()
    assert [p.name for p in model.parameters()] == ["weight", "bias"] * 3
    assert [n for n, _ in model.named_parameters()] == [
        f"{layer}.{p}" for layer in ("conv1", "conv2", "conv3") for p in ("weight", "bias")]


def test_parameter_value_assignment_copies_and_checks_the_shape(rng):
    conv = nn.Conv2d(2, 3, 3)
    w = rand(rng, 3, 2, 3, 3)
    conv.weight = w
    np.testing.assert_array_equal(A(conv.weight), w)
    w[0, 0, 0, 0] = 42.0
    assert A(conv.weight)[0, 0, 0, 0] != 42.0  # a copy, not a view of the caller's array
    conv.weight_param.value = np.ones((3, 2, 3, 3))  # float64: converted on assignment
    np.testing.assert_array_equal(A(conv.weight), 1.0)
    with pytest.raises(ValueError, match=r"expected shape \[3, 2, 3, 3\], got \[3, 2, 3\]"):
        conv.weight = np.zeros((3, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected shape \[3\], got \[4\]"):
        conv.bias = np.zeros(4, np.float32)
    # np.asarray(conv.weight) views the parameter itself (zero-copy): writing through it changes the layer
    view = A(conv.weight)
    view[...] = 0.0
    assert np.all(A(conv(np.ones((1, 2, 3, 3), np.float32))) == np.broadcast_to(A(conv.bias)[None, :, None, None],
                                                                               (1, 3, 1, 1)))


# ---------------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------------

def test_frozen_first_layer_gets_no_gradient_and_is_not_back_propagated_through(rng):
    model = small_net()
    model["conv1"].trainable = False
    assert not model["conv1"].trainable
    assert [p.trainable for p in model["conv1"].parameters()] == [False, False]
    x = rand(rng, 2, 2, 6, 5)
    y = A(model.forward(x, training=True))
    dy = rand(rng, *y.shape)
    # Nothing below the first trainable layer (conv2) is visited: conv1 and relu1 run no backward at all.
    # Evidence by behaviour: with their saved activations dropped, a visit would raise ValueError.
    model["conv1"].clear_cache()
    model["relu1"].clear_cache()
    assert model.backward(dy) is None
    assert model["conv1"].weight_param.grad is None and model["conv1"].bias_param.grad is None
    g_ref, dx_ref = functional_small_net_backward(model, x, dy)
    for name in ("conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"):
        np.testing.assert_allclose(A(dict(model.named_parameters())[name].grad), g_ref[name], rtol=1e-5, atol=1e-6)
    # ... unless the caller asks for the input gradient: then it goes through the frozen layer too,
    # still without a weight gradient.
    model.forward(x, training=True)
    dx = model.backward(dy, need_input_grad=True)
    np.testing.assert_allclose(A(dx), dx_ref, rtol=1e-5, atol=1e-6)
    assert model["conv1"].weight_param.grad is None


def test_frozen_middle_layer_passes_the_gradient_on_but_computes_none(rng):
    x = rand(rng, 1, 2, 6, 5)
    ref = small_net()
    y = A(ref.forward(x, training=True))
    dy = rand(rng, *y.shape)
    ref.backward(dy)
    model = small_net()
    model["conv2"].trainable = False
    model.forward(x, training=True)
    model.backward(dy)
    assert model["conv2"].weight_param.grad is None
    for name in ("conv1.weight", "conv1.bias", "conv3.weight"):
        np.testing.assert_array_equal(A(dict(model.named_parameters())[name].grad),
                                      A(dict(ref.named_parameters())[name].grad), err_msg=name)


def test_freezing_after_training_leaves_the_old_gradient_unchanged(rng):
    conv = nn.Conv2d(2, 2, 3)
    x = rand(rng, 1, 2, 5, 5)
    conv.forward(x, training=True)
    conv.backward(rand(rng, 1, 2, 3, 3))
    g0 = A(conv.weight_param.grad).copy()
    conv.trainable = False
    conv.forward(2 * x, training=True)
    dx = conv.backward(rand(rng, 1, 2, 3, 3), need_input_grad=True)
    assert dx is not None
    np.testing.assert_array_equal(A(conv.weight_param.grad), g0)


def test_trainable_toggling_on_a_sequential(rng):
    model = srcnn(c1=8, c2=4)
    model.trainable = False
    assert not model.trainable
    assert all(not model[i].trainable for i in range(len(model)))
    assert all(not p.trainable for p in model.parameters())
    x = rand(rng, 1, 1, 20, 20)
    y = A(model.forward(x, training=True))
    assert model.backward(rand(rng, *y.shape)) is None
    assert all(p.grad is None for p in model.parameters())
    text = model.summary(x.shape, print_fn=None)
    total = 8 * 81 + 8 + 4 * 8 * 25 + 4 + 4 * 25 + 1
    assert re.search(r"Trainable params:\s*0\b", text) and re.search(rf"Non-trainable params:\s*{total}\b", text)
    model.trainable = True
    assert all(p.trainable for p in model.parameters())
    model.forward(x, training=True)
    model.backward(rand(rng, *y.shape))
    assert all(p.grad is not None for p in model.parameters())


def _nested_model():
    features = nn.Sequential(("conv1", nn.Conv2d(1, 2, 3, padding=1)), ("relu", nn.ReLU()),
                             ("conv2", nn.Conv2d(2, 2, 3, padding=1)))
    return nn.Sequential(("features", features), ("head", nn.Conv2d(2, 1, 1)))


def test_nested_sequential_freezing(rng):
    model = _nested_model()
    model["features"].trainable = False
    x = rand(rng, 1, 1, 6, 6)
    y = A(model.forward(x, training=True))
    model.backward(rand(rng, *y.shape))
    grads = {n: p.grad is not None for n, p in model.named_parameters()}
    assert grads == {"features.conv1.weight": False, "features.conv1.bias": False, "features.conv2.weight": False,
                     "features.conv2.bias": False, "head.weight": True, "head.bias": True}
    # freezing inside the nested model: only conv1 is frozen, conv2 and head learn
    model = _nested_model()
    model["features"]["conv1"].trainable = False
    model.forward(x, training=True)
    model.backward(rand(rng, *y.shape))
    assert [n for n, p in model.named_parameters() if p.grad is not None] == [
        "features.conv2.weight", "features.conv2.bias", "head.weight", "head.bias"]


def test_unfreezing_a_layer_inside_a_frozen_nested_sequential_gives_it_gradients(rng):
    model = _nested_model()
    model["features"].trainable = False
    model["features"]["conv2"].trainable = True  # fine-tune the last feature layer and the head
    assert [p.trainable for p in model.parameters()] == [False, False, True, True, True, True]
    x = rand(rng, 1, 1, 6, 6)
    y = A(model.forward(x, training=True))
    model.backward(rand(rng, *y.shape))
    assert model["features"]["conv2"].weight_param.grad is not None


def test_summary_counts_trainable_parameters_inside_nested_sequentials():
    model = _nested_model()
    model["features"].trainable = False
    model["features"]["conv2"].trainable = True
    text = model.summary((1, 1, 6, 6), print_fn=None)
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable)
    assert trainable == 2 * 2 * 9 + 2 + 2 + 1
    assert re.search(rf"Trainable params:\s*{trainable}\b", text), text


def test_optimizers_skip_frozen_parameters(rng):
    model = small_net()
    x = rand(rng, 1, 2, 6, 5)
    y = A(model.forward(x, training=True))
    model.backward(rand(rng, *y.shape))  # every parameter has a gradient now
    model["conv3"].trainable = False
    before = {n: A(p.value).copy() for n, p in model.named_parameters()}
    for opt in (optim.SGD(model.parameters(), lr=0.1, momentum=0.9), optim.Adam(model, lr=0.1)):
        opt.step()
    after = {n: A(p.value) for n, p in model.named_parameters()}
    for n in before:
        if n.startswith("conv3"):
            np.testing.assert_array_equal(after[n], before[n], err_msg=n)
        else:
            assert not np.array_equal(after[n], before[n]), n


# ---------------------------------------------------------------------------------------------------
# lr_mult
# ---------------------------------------------------------------------------------------------------

def test_lr_mult_scales_each_parameters_step(rng):
    model = small_net()
    x = rand(rng, 1, 2, 6, 5)
    y = A(model.forward(x, training=True))
    model.backward(rand(rng, *y.shape))
    optim.set_lr(model["conv3"], 0.01, base_lr=0.1)  # the SRCNN paper's smaller last-layer rate
    assert model["conv3"].weight_param.lr_mult == pytest.approx(0.1)
    model["conv2"].bias_param.lr_mult = 0.0  # lr_mult 0: not updated at all
    params = dict(model.named_parameters())
    before = {n: A(p.value).astype(np.float64) for n, p in params.items()}
    grads = {n: A(p.grad).astype(np.float64) for n, p in params.items()}
    optim.SGD(model, lr=0.1).step()
    for n, p in params.items():
        rate = {"conv3.weight": 0.01, "conv3.bias": 0.01, "conv2.bias": 0.0}.get(n, 0.1)
        np.testing.assert_allclose(A(p.value), before[n] - rate * grads[n], rtol=1e-6, atol=1e-7, err_msg=n)
    with pytest.raises(ValueError, match="base_lr must be > 0"):
        optim.set_lr(model, 0.1, base_lr=0.0)


# ---------------------------------------------------------------------------------------------------
# summary()
# ---------------------------------------------------------------------------------------------------

def _summary_rows(text: str) -> dict[str, tuple[str, int]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?: \((\w+)\))?\s+(\[[\d, ]+\])\s+([\d,]+)", line)
        if m:
            rows[m.group(1)] = (m.group(3), int(m.group(4).replace(",", "")))
    return rows


@pytest.mark.parametrize(
    "k2,expected",
    [
        # SRCNN 9-5-5, 1 -> 64 -> 32 -> 1, valid padding, on a 33x33 patch (the paper's training setting):
        # conv1 64*1*9*9 + 64 = 5248, conv2 32*64*5*5 + 32 = 51232, conv3 1*32*5*5 + 1 = 801; 57281 in all.
        (5, {"conv1": ("[1, 64, 25, 25]", 5248), "relu1": ("[1, 64, 25, 25]", 0), "conv2": ("[1, 32, 21, 21]", 51232),
             "relu2": ("[1, 32, 21, 21]", 0), "conv3": ("[1, 1, 17, 17]", 801)}),
        # SRCNN 9-1-5: conv2 32*64*1*1 + 32 = 2080; 8129 in all.
        (1, {"conv1": ("[1, 64, 25, 25]", 5248), "relu1": ("[1, 64, 25, 25]", 0), "conv2": ("[1, 32, 25, 25]", 2080),
             "relu2": ("[1, 32, 25, 25]", 0), "conv3": ("[1, 1, 21, 21]", 801)}),
    ],
)
def test_summary_lists_output_shapes_and_parameter_counts(k2, expected, capsys):
    model = srcnn(k2=k2)
    text = model.summary((1, 1, 33, 33))  # prints by default
    assert capsys.readouterr().out.strip() == text.strip()
    rows = _summary_rows(text)
    assert rows.get("input") == ("[1, 1, 33, 33]", 0)
    for name, row in expected.items():
        assert rows.get(name) == row, f"{name}: got {rows.get(name)}, expected {row}\n{text}"
    total = sum(n for _, n in expected.values())
    assert model.num_parameters == total
    assert re.search(rf"Total params:\s*{total:,}|Total params:\s*{total}\b", text), text
    assert re.search(rf"Trainable params:\s*({total:,}|{total})\b", text), text
    assert re.search(r"Non-trainable params:\s*0\b", text), text
    assert "Conv2d" in text and "ReLU" in text
    # frozen layers count as non-trainable
    model["conv1"].trainable = False
    text = nn.summary(model, (1, 1, 33, 33), print_fn=None)
    assert re.search(rf"Trainable params:\s*({total - 5248:,}|{total - 5248})\b", text), text
    assert re.search(r"Non-trainable params:\s*(5,248|5248)\b", text), text
    assert capsys.readouterr().out == ""


def test_summary_of_a_3d_to_2d_model():
    model = nn.Sequential(
        ("conv3d", nn.Conv3d(1, 4, 3, padding="same")),
        ("fold", nn.FoldDepth()),
        ("conv", nn.Conv2d(20, 8, 3, padding=1)),
        ("shuffle", nn.PixelShuffle(2)),
    )
    rows = _summary_rows(model.summary((2, 1, 5, 16, 12), print_fn=None))
    assert rows["conv3d"] == ("[2, 4, 5, 16, 12]", 4 * 27 + 4)
    assert rows["fold"] == ("[2, 20, 16, 12]", 0)
    assert rows["conv"] == ("[2, 8, 16, 12]", 8 * 20 * 9 + 8)
    assert rows["shuffle"] == ("[2, 2, 32, 24]", 0)
    assert model.output_shape((2, 1, 5, 16, 12)) == (2, 2, 32, 24)


# ---------------------------------------------------------------------------------------------------
# Padding keywords
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_same_and_valid_padding(mode, rng):
    x = rand(rng, 1, 2, 9, 8)
    same = nn.Conv2d(2, 3, (5, 3), padding="same", padding_mode=mode, seed=1)
    assert same.padding == (2, 1)
    y = A(same(x))
    assert y.shape == (1, 3, 9, 8)
    np.testing.assert_array_equal(y, A(ops.conv2d(x, same.weight, same.bias, padding=(2, 1), padding_mode=mode)))
    valid = nn.Conv2d(2, 3, (5, 3), padding="valid", padding_mode=mode, seed=1)
    assert valid.padding == (0, 0)
    assert A(valid(x)).shape == (1, 3, 5, 6)
    same3 = nn.Conv3d(2, 1, (3, 1, 5), padding="same", padding_mode=mode)
    assert same3.padding == (1, 0, 2)
    assert A(same3(rand(rng, 1, 2, 4, 5, 6))).shape == (1, 1, 4, 5, 6)
    with pytest.raises(ValueError, match=r"'same' needs odd kernel sizes, got \[4, 3\]"):
        nn.Conv2d(2, 3, (4, 3), padding="same")
    with pytest.raises(ValueError, match="'same', 'valid', an int or a tuple, got 'full'"):
        nn.Conv2d(2, 3, 3, padding="full")


# ---------------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ---------------------------------------------------------------------------------------------------

def test_state_dict_round_trip(rng):
    a, b = small_net(seed=1), small_net(seed=100)
    x = rand(rng, 1, 2, 6, 5)
    assert not np.array_equal(A(a(x)), A(b(x)))
    state = a.state_dict()
    assert list(state) == [n for n, _ in a.named_parameters()]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    b.load_state_dict(state)
    np.testing.assert_array_equal(A(b(x)), A(a(x)))
    # the state holds copies: changing it afterwards changes neither model
    state["conv1.weight"][...] = 0
    assert not np.all(A(a["conv1"].weight) == 0) and not np.all(A(b["conv1"].weight) == 0)
    # nn.state_dict works on a single layer too (its own parameter names)
    assert list(nn.state_dict(a["conv1"])) == ["weight", "bias"]


def test_load_state_dict_strict_errors_name_the_keys(rng):
    model = small_net()
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "conv2.bias"}
    with pytest.raises(KeyError, match=r"missing keys: conv2.bias$"):
        model.load_state_dict(missing)
    extra = dict(state, **{"conv9.weight": np.zeros(3, np.float32)})
    with pytest.raises(KeyError, match=r"unexpected keys: conv9.weight$"):
        model.load_state_dict(extra)
    bad = dict(state, **{"conv1.weight": np.zeros((4, 2, 3, 2), np.float32)})
    with pytest.raises(ValueError, match=r"mis-shaped keys: conv1.weight \(expected \[4, 2, 3, 3\], got \[4, 2, 3, 2\]\)"):
        model.load_state_dict(bad)
    # Everything wrong at once is reported at once (not only the first kind found), readably (no repr quotes).
    both = dict(bad, **{"conv9.weight": np.zeros(3, np.float32)})
    del both["conv2.bias"]
    with pytest.raises(KeyError) as info:
        model.load_state_dict(both)
    assert str(info.value) == ("state does not match the model: missing keys: conv2.bias; unexpected keys: "
                               "conv9.weight; mis-shaped keys: conv1.weight (expected [4, 2, 3, 3], got [4, 2, 3, 2])")
    # strict=False loads what matches and leaves the rest
    w0 = A(model["conv2"].bias).copy()
    new = {k: np.full_like(v, 0.5) for k, v in missing.items()}
    new["unknown"] = np.zeros(1, np.float32)
    model.load_state_dict(new, strict=False)
    assert np.all(A(model["conv1"].weight) == 0.5)
    np.testing.assert_array_equal(A(model["conv2"].bias), w0)


# ---------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------

def test_layer_to_cpu_keeps_the_parameters(rng):
    model = small_net()
    x = rand(rng, 1, 2, 6, 5)
    y = A(model(x)).copy()
    model.to("cpu")
    model["conv1"].to(magmasr.Device("cpu"))
    np.testing.assert_array_equal(A(model(x)), y)
    assert all(p.value.device == "cpu" for p in model.parameters())


@pytest.mark.gpu
def test_layer_on_gpu_matches_cpu(gpu, rng):
    model = small_net()
    x = rand(rng, 1, 2, 6, 5)
    y = A(model(x)).copy()
    model.to(gpu)
    yg = model(magmasr.from_numpy(x).to(gpu))
    assert yg.device == gpu
    np.testing.assert_allclose(yg.numpy(), y, rtol=1e-5, atol=1e-6)
