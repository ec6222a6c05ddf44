"""The functional ops of magmasr (``magmasr.ops``) against independent references.

References, none of which calls magmasr:
- convolution: a float64 shift-and-add over a padded input (``np.pad`` 'constant' for zeros, 'edge' for
  replicate), cross-checked against ``scipy.signal.correlate``; its adjoint (backward-data) through the
  adjoint of the padding (checked against the transposed padding matrix); the weight gradient as an einsum
  of the padded input with dy;
- gradients: central finite differences of a random linear functional ``sum(y * r)`` (accumulated in
  float64, divided by the step actually taken in float32), and the adjoint identity
  ``<conv(x), dy> == <x, conv_backward_data(dy)>``;
- ReLU, MSE, pixel shuffle, add, scale: NumPy expressions; SGD and Adam: NumPy float64 transcriptions of
  the formulas documented in ``cpp/include/magmasr/optim_params.hpp``, iterated over several steps.

Tolerances. The library computes in float32 (unit roundoff u = 2**-24 ~ 6e-8) and sums K = Cin * kvol
products per output with FMA accumulation (its own tiled matrix products). The error of such a sum grows like
sqrt(K) * u * sum|terms| (statistically; K * u is the worst case), so each element is compared with
``|y - ref| <= C * sqrt(K) * u * ref_abs`` where ref_abs is the same convolution of |x| and |w| (the size of
the terms, immune to cancellation). C = 4 covers the worst case (K * u) up to K = 16, where the
statistical argument is weakest, and leaves a margin of 3x (small K) to 1000x (K = 41472) over the largest
errors measured (200 hypothesis examples x 4 seeds pass with C = 4; C = 1 fails by ~1 ulp at K = 1..2).
The gradients get the same treatment with their own K (Cout * kvol for backward-data, N * output size for
backward-weight).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, note
from hypothesis import strategies as st

from magmasr import nn, ops

U32 = 2.0**-24  # float32 unit roundoff
C_TOL = 4.0  # safety factor over the statistical sqrt(K) * u error of a float32 dot product


# ---------------------------------------------------------------------------------------------------
# Independent references (float64, NumPy / SciPy only)
# ---------------------------------------------------------------------------------------------------

def np_mode(mode: str) -> str:
    return {"zeros": "constant", "replicate": "edge"}[mode]


def pad_ref(x: np.ndarray, pads: tuple[int, ...], mode: str) -> np.ndarray:
    """Pads the trailing len(pads) axes of x on both sides, as NumPy does it."""
    widths = [(0, 0)] * (x.ndim - len(pads)) + [(p, p) for p in pads]
    return np.pad(x, widths, mode=np_mode(mode))


def pad_matrix(n: int, p: int, mode: str) -> np.ndarray:
    """M [n + 2p, n] with x_padded = M @ x along one axis; its transpose is the adjoint of the padding."""
    m = np.zeros((n + 2 * p, n))
    for i in range(n + 2 * p):
        j = i - p
        if mode == "replicate":
            m[i, min(max(j, 0), n - 1)] = 1.0
        elif 0 <= j < n:
            m[i, j] = 1.0
    return m


def _band(a: np.ndarray, axis: int, lo, hi) -> np.ndarray:
    return a[(slice(None),) * axis + (slice(lo, hi),)]


def unpad_adjoint(g: np.ndarray, pads: tuple[int, ...], mode: str) -> np.ndarray:
    """The adjoint of pad_ref: crops the padding of a gradient over the padded input and, for 'replicate',
    adds each padded band onto the border sample it copied (checked against pad_matrix below)."""
    sd = len(pads)
    out = g
    for a, p in enumerate(pads):
        if p == 0:
            continue
        axis = g.ndim - sd + a
        n = out.shape[axis] - 2 * p
        inner = _band(out, axis, p, p + n).copy()
        if mode == "replicate":
            _band(inner, axis, 0, 1)[...] += _band(out, axis, 0, p).sum(axis=axis, keepdims=True)
            _band(inner, axis, n - 1, n)[...] += _band(out, axis, p + n, None).sum(axis=axis, keepdims=True)
        out = inner
    return out


def _offsets(kshape):
    return np.ndindex(*kshape)


def _cl_window(xp_cl: np.ndarray, off: tuple[int, ...], oshape: tuple[int, ...]) -> np.ndarray:
    """The [N * prod(oshape), C] matrix of the channel-last padded input seen through kernel offset `off`."""
    sl = (slice(None),) + tuple(slice(o, o + s) for o, s in zip(off, oshape)) + (slice(None),)
    return xp_cl[sl].reshape(-1, xp_cl.shape[-1])


def _channels_last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(np.asarray(a, np.float64), 1, -1))


def _channels_first(a_cl: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a_cl, -1, 1))


def conv_ref(x, w, b=None, pads=None, mode="zeros"):
    """y[n, o, p] = sum_{c, k} xpad[n, c, p + k] * w[o, c, k] + b[o] in float64 (correlation, no flip):
    a shift-and-add over the kernel offsets, each one a [positions, Cin] x [Cin, Cout] product. The products
    are einsums (NumPy's own loops, not BLAS): independent of any BLAS, and immune to the multi-threaded BLAS
    slowing down 100x when another process competes for the cores."""
    w = np.asarray(w, np.float64)
    sd = np.ndim(x) - 2
    pads = tuple(pads) if pads is not None else (0,) * sd
    xp_cl = _channels_last(pad_ref(np.asarray(x, np.float64), pads, mode))
    ks = w.shape[2:]
    oshape = tuple(xp_cl.shape[1 + i] - ks[i] + 1 for i in range(sd))
    y = np.zeros((xp_cl.shape[0] * int(np.prod(oshape)), w.shape[0]))
    for off in _offsets(ks):
        y += np.einsum("pc,oc->po", _cl_window(xp_cl, off, oshape), w[(slice(None), slice(None)) + off])
    if b is not None:
        y += np.asarray(b, np.float64)
    return _channels_first(y.reshape((xp_cl.shape[0],) + oshape + (w.shape[0],)))


def conv_backward_data_ref(dy, w, x_shape, pads, mode):
    """The transpose of conv_ref: scatter dy through every kernel offset, then unpad_adjoint."""
    w = np.asarray(w, np.float64)
    sd = len(x_shape) - 2
    ks = w.shape[2:]
    oshape = tuple(np.shape(dy)[2:])
    dy_cl = _channels_last(dy).reshape(-1, w.shape[0])
    pshape = tuple(x_shape[2 + i] + 2 * pads[i] for i in range(sd))
    gp = np.zeros((x_shape[0],) + pshape + (x_shape[1],))
    for off in _offsets(ks):
        sl = (slice(None),) + tuple(slice(o, o + s) for o, s in zip(off, oshape)) + (slice(None),)
        gp[sl] += np.einsum("po,oc->pc", dy_cl, w[(slice(None), slice(None)) + off]).reshape(
            (x_shape[0],) + oshape + (x_shape[1],))
    return unpad_adjoint(_channels_first(gp), tuple(pads), mode)


def conv_backward_weight_ref(x, dy, w_shape, pads, mode):
    """dW[o, c, k] = sum_{n, p} dy[n, o, p] * xpad[n, c, p + k]; db[o] = sum_{n, p} dy[n, o, p]."""
    xp_cl = _channels_last(pad_ref(np.asarray(x, np.float64), pads, mode))
    ks = w_shape[2:]
    oshape = tuple(np.shape(dy)[2:])
    dy_cl = _channels_last(dy).reshape(-1, w_shape[0])
    dw = np.zeros(w_shape)
    for off in _offsets(ks):
        dw[(slice(None), slice(None)) + off] = np.einsum("po,pc->oc", dy_cl, _cl_window(xp_cl, off, oshape))
    return dw, dy_cl.sum(axis=0)


def conv_scipy(x, w, b, pads, mode):
    """A second, unrelated forward reference: scipy.signal.correlate over (channel, space), 'valid'."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp = pad_ref(x, pads, mode)
    out = []
    for n in range(x.shape[0]):
        # correlating [C, *space] with [C, *k] in 'valid' mode sums over the channels as well.
        out.append([scipy.signal.correlate(xp[n], w[o], mode="valid", method="direct")[0] for o in range(w.shape[0])])
    y = np.asarray(out)
    if b is not None:
        y += np.asarray(b, np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))
    return y


# ---------------------------------------------------------------------------------------------------
# Comparison helpers
# ---------------------------------------------------------------------------------------------------

def assert_within(actual, expected, bound, what=""):
    """|actual - expected| <= bound elementwise, with a message naming the worst element."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    err = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, np.float64), err.shape)
    bad = err > bound
    if bad.any():
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        pytest.fail(
            f"{what}: {int(bad.sum())} of {err.size} elements out of tolerance; worst at {i}: "
            f"got {actual[i]!r}, expected {expected[i]!r}, |diff| {err[i]:.3g} > bound {bound[i]:.3g}"
        )


def conv_tol(x, w, b, pads, mode):
    """The per-element bound for a float32 convolution (see the module docstring)."""
    k = w.shape[1] * int(np.prod(w.shape[2:]))
    scale = conv_ref(np.abs(x), np.abs(w), None if b is None else np.abs(b), pads, mode)
    return C_TOL * math.sqrt(k + 1) * U32 * scale + 1e-30


def rand(rng, *shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def A(t) -> np.ndarray:
    return np.asarray(t)


def conv_fn(sd):
    return (ops.conv2d, ops.conv2d_backward_data, ops.conv2d_backward_weight) if sd == 2 else (
        ops.conv3d, ops.conv3d_backward_data, ops.conv3d_backward_weight)


def fd_grad_linear(f, x: np.ndarray, step: float = 0.25) -> np.ndarray:
    """Central differences of a scalar f(x) (x float32), divided by the step actually taken in float32."""
    g = np.zeros(x.shape)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = np.float32(old + step)
        hi, fp = float(flat[i]), f(x)
        flat[i] = np.float32(old - step)
        lo, fm = float(flat[i]), f(x)
        flat[i] = old
        g.reshape(-1)[i] = (fp - fm) / (hi - lo)
    return g


# ---------------------------------------------------------------------------------------------------
# The references themselves (they are the ground truth, so they get a sanity check of their own)
# ---------------------------------------------------------------------------------------------------

def test_padding_references_are_consistent(rng):
    # pad_matrix reproduces np.pad, and unpad_adjoint is its transpose, along one axis and along several.
    x = rng.standard_normal(7)
    for mode in ("zeros", "replicate"):
        for p in (0, 1, 3, 9):
            m = pad_matrix(7, p, mode)
            np.testing.assert_array_equal(m @ x, pad_ref(x, (p,), mode))
            g = rng.standard_normal(7 + 2 * p)
            np.testing.assert_allclose(unpad_adjoint(g, (p,), mode), m.T @ g, rtol=1e-14, atol=1e-14)
        g = rng.standard_normal((2, 3, 5 + 4, 4 + 2, 6 + 6))
        m3 = [pad_matrix(5, 2, mode), pad_matrix(4, 1, mode), pad_matrix(6, 3, mode)]
        np.testing.assert_allclose(unpad_adjoint(g, (2, 1, 3), mode),
                                   np.einsum("nzdhw,da,hb,wc->nzabc", g, *m3), rtol=1e-12, atol=1e-12)


def test_conv_ref_agrees_with_scipy_and_a_hand_example(rng):
    # A hand-computed example: 1x1x3x3 input, 2x2 kernel, no padding: correlation, no flip.
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(conv_ref(x, w)[0, 0],
                                  [[0 + 2 + 9 + 16, 1 + 4 + 12 + 20], [3 + 8 + 18 + 28, 4 + 10 + 21 + 32]])
    for mode in ("zeros", "replicate"):
        x = rng.standard_normal((2, 3, 6, 7))
        w = rng.standard_normal((4, 3, 3, 5))
        b = rng.standard_normal(4)
        np.testing.assert_allclose(conv_ref(x, w, b, (2, 1), mode), conv_scipy(x, w, b, (2, 1), mode),
                                   rtol=1e-12, atol=1e-12)
        x3 = rng.standard_normal((1, 2, 4, 5, 3))
        w3 = rng.standard_normal((3, 2, 3, 1, 3))
        np.testing.assert_allclose(conv_ref(x3, w3, None, (1, 0, 2), mode), conv_scipy(x3, w3, None, (1, 0, 2), mode),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_backward_references_are_adjoints_of_the_forward_reference(mode, rng):
    # In float64, <conv(x, w), dy> = <x, dX(dy)> = <w, dW(x, dy)> and db = sum of dy, to rounding.
    for xs, ws, pads in [((2, 3, 6, 7), (4, 3, 3, 5), (2, 1)), ((1, 2, 4, 5, 3), (3, 2, 3, 1, 3), (1, 0, 2))]:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        y = conv_ref(x, w, None, pads, mode)
        dy = rng.standard_normal(y.shape)
        dx = conv_backward_data_ref(dy, w, xs, pads, mode)
        dw, db = conv_backward_weight_ref(x, dy, ws, pads, mode)
        lhs = np.sum(y * dy)
        assert np.sum(x * dx) == pytest.approx(lhs, rel=1e-12, abs=1e-12)
        assert np.sum(w * dw) == pytest.approx(lhs, rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(db, dy.sum(axis=tuple(i for i in range(dy.ndim) if i != 1)), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Convolution forward
# ---------------------------------------------------------------------------------------------------

@st.composite
def conv_problems(draw, sd: int):
    """Random convolution geometries, including 1x1, 3x3, 5x5, 9x9 and 3x3x3 kernels, 1 and 64 channels,
    batch 1 and several, odd sizes, per-dimension padding (also larger than the kernel's reach)."""
    if sd == 2:
        k = draw(st.sampled_from([(1, 1), (3, 3), (5, 5), (9, 9), (1, 3), (3, 1), (5, 3), (2, 4)]))
    else:
        k = draw(st.sampled_from([(3, 3, 3), (1, 1, 1), (1, 3, 3), (3, 1, 1), (2, 3, 5), (5, 5, 5)]))
    n = draw(st.sampled_from([1, 1, 2, 3]))
    cin = draw(st.sampled_from([1, 2, 3, 64]))
    cout = draw(st.sampled_from([1, 2, 5, 64]))
    pads = tuple(draw(st.integers(0, kk // 2 + 1)) for kk in k)
    limit = 17 if sd == 2 else 7
    space = tuple(draw(st.integers(max(1, kk - 2 * p), max(1, kk - 2 * p) + limit)) for kk, p in zip(k, pads))
    mode = draw(st.sampled_from(["zeros", "replicate"]))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return (n, cin) + space, (cout, cin) + k, pads, mode, bias, seed


def _check_forward(x_shape, w_shape, pads, mode, bias, seed, scipy_too=False):
    sd = len(x_shape) - 2
    rng = np.random.default_rng(seed)
    x, w = rand(rng, *x_shape), rand(rng, *w_shape)
    b = rand(rng, w_shape[0]) if bias else None
    fwd = conv_fn(sd)[0]
    y = A(fwd(x, w, b, padding=pads, padding_mode=mode))
    ref = conv_ref(x, w, b, pads, mode)
    assert_within(y, ref, conv_tol(x, w, b, pads, mode), f"conv{sd}d forward {x_shape} * {w_shape} pad {pads} {mode}")
    if scipy_too:
        assert_within(y, conv_scipy(x, w, b, pads, mode), conv_tol(x, w, b, pads, mode), "vs scipy.signal.correlate")
    # The fused ReLU is max(conv, 0) of the same values.
    yr = A(fwd(x, w, b, padding=pads, padding_mode=mode, relu=True))
    np.testing.assert_array_equal(yr, np.maximum(y, 0))


@given(conv_problems(2))
def test_conv2d_forward_matches_reference(problem):
    note(repr(problem))
    _check_forward(*problem)


@given(conv_problems(3))
def test_conv3d_forward_matches_reference(problem):
    note(repr(problem))
    _check_forward(*problem)


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
@pytest.mark.parametrize(
    "x_shape,w_shape,pads",
    [
        ((1, 1, 9, 9), (1, 1, 9, 9), (0, 0)),  # the kernel covers the whole input: one output
        ((2, 3, 7, 5), (4, 3, 1, 1), (0, 0)),  # 1x1: a plain channel mix
        ((1, 1, 1, 1), (2, 1, 3, 3), (1, 1)),  # a single pixel, all neighbours padding
        ((1, 2, 4, 6), (3, 2, 3, 3), (4, 5)),  # padding wider than the kernel's reach
        ((3, 1, 11, 13), (2, 1, 5, 3), (2, 1)),
        ((1, 3, 3, 4, 5), (2, 3, 3, 3, 3), (1, 1, 1)),
        ((2, 1, 1, 6, 5), (1, 1, 1, 3, 3), (0, 1, 1)),  # 3-D with depth 1 == 2-D
        ((1, 2, 5, 3, 4), (3, 2, 3, 1, 5), (2, 0, 3)),
    ],
)
def test_conv_forward_fixed_cases_also_against_scipy(x_shape, w_shape, pads, mode):
    _check_forward(x_shape, w_shape, pads, mode, True, 7, scipy_too=True)


def test_conv_replicate_equals_zero_padding_of_an_edge_padded_input(rng):
    # Property independent of any reference: replicate padding == valid convolution of np.pad(..., 'edge').
    x, w = rand(rng, 2, 3, 8, 9), rand(rng, 4, 3, 5, 3)
    y = A(ops.conv2d(x, w, padding=(3, 2), padding_mode="replicate"))
    xe = np.ascontiguousarray(pad_ref(x, (3, 2), "replicate"))
    np.testing.assert_allclose(y, A(ops.conv2d(xe, w)), rtol=1e-6, atol=1e-6)


def test_conv_padding_scalar_means_all_dims(rng):
    x, w = rand(rng, 1, 2, 6, 7, 8), rand(rng, 2, 2, 3, 3, 3)
    np.testing.assert_array_equal(A(ops.conv3d(x, w, padding=1)), A(ops.conv3d(x, w, padding=(1, 1, 1))))


# ---------------------------------------------------------------------------------------------------
# Convolution backward: finite differences on small shapes
# ---------------------------------------------------------------------------------------------------

FD_CASES = [
    ((2, 2, 5, 6), (3, 2, 3, 3), (1, 2)),
    ((1, 3, 4, 4), (2, 3, 1, 1), (0, 0)),
    ((1, 1, 3, 5), (2, 1, 5, 3), (3, 1)),
    ((1, 2, 3, 4, 3), (2, 2, 3, 3, 3), (1, 0, 2)),
    ((2, 1, 2, 3, 3), (1, 1, 3, 1, 3), (1, 2, 1)),
]


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
@pytest.mark.parametrize("x_shape,w_shape,pads", FD_CASES)
def test_conv_gradients_match_finite_differences(x_shape, w_shape, pads, mode, rng):
    sd = len(x_shape) - 2
    fwd, bwd_data, bwd_weight = conv_fn(sd)
    x, w, b = rand(rng, *x_shape), rand(rng, *w_shape), rand(rng, w_shape[0])
    y_shape = A(fwd(x, w, b, padding=pads, padding_mode=mode)).shape
    r = rand(rng, *y_shape)  # the random linear functional L(y) = sum(y * r); dL/dy = r

    def loss(xx=x, ww=w, bb=b):
        return float(np.sum(A(fwd(xx, ww, bb, padding=pads, padding_mode=mode)).astype(np.float64) * r))

    # The convolution is linear in x, w and b, so central differences are exact up to rounding: the
    # only error is the float32 rounding of the outputs, ~sqrt(numel(y)) * u * |y| * |r| / step.
    gx_fd = fd_grad_linear(lambda xx: loss(xx=xx), x)
    gw_fd = fd_grad_linear(lambda ww: loss(ww=ww), w)
    gb_fd = fd_grad_linear(lambda bb: loss(bb=bb), b)

    gx = A(bwd_data(r, w, x_shape, padding=pads, padding_mode=mode))
    gw, gb = bwd_weight(x, r, w_shape, padding=pads, padding_mode=mode)
    tol = dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, gx_fd, **tol, err_msg="backward-data vs finite differences")
    np.testing.assert_allclose(A(gw), gw_fd, **tol, err_msg="backward-weight vs finite differences")
    np.testing.assert_allclose(A(gb), gb_fd, **tol, err_msg="bias gradient vs finite differences")
    # No bias requested: no bias gradient, same weight gradient.
    gw2, gb2 = bwd_weight(x, r, w_shape, bias=False, padding=pads, padding_mode=mode)
    assert gb2 is None
    np.testing.assert_array_equal(A(gw2), A(gw))


# ---------------------------------------------------------------------------------------------------
# Convolution backward: references and the adjoint identity on random (bigger) shapes
# ---------------------------------------------------------------------------------------------------

def _check_backward(x_shape, w_shape, pads, mode, bias, seed):
    sd = len(x_shape) - 2
    fwd, bwd_data, bwd_weight = conv_fn(sd)
    rng = np.random.default_rng(seed)
    x, w = rand(rng, *x_shape), rand(rng, *w_shape)
    y = A(fwd(x, w, padding=pads, padding_mode=mode))
    dy = rand(rng, *y.shape)
    dx = A(bwd_data(dy, w, x_shape, padding=pads, padding_mode=mode))
    dw, db = bwd_weight(x, dy, w_shape, bias=bias, padding=pads, padding_mode=mode)
    dw = A(dw)

    # Adjoint identity <conv(x), dy> == <x, conv^T(dy)>, both sides in float64 from float32 results.
    lhs = float(np.sum(y.astype(np.float64) * dy))
    rhs = float(np.sum(x.astype(np.float64) * dx))
    scale = float(np.sum(conv_ref(np.abs(x), np.abs(w), None, pads, mode) * np.abs(dy)))
    k = w_shape[1] * int(np.prod(w_shape[2:]))
    assert abs(lhs - rhs) <= 2 * C_TOL * math.sqrt(k) * U32 * scale + 1e-30, f"adjoint identity: {lhs} vs {rhs}"

    # Element-wise against the references. backward-data sums Cout * kvol products per input element
    # (more near a replicated border, which gathers the whole padded band).
    dx_ref = conv_backward_data_ref(dy, w, x_shape, pads, mode)
    dx_abs = conv_backward_data_ref(np.abs(dy), np.abs(w), x_shape, pads, mode)
    kd = w_shape[0] * int(np.prod(w_shape[2:])) * (1 + max(pads))
    assert_within(dx, dx_ref, C_TOL * math.sqrt(kd) * U32 * dx_abs + 1e-30, "backward-data")
    # backward-weight sums N * prod(out) products per weight.
    dw_ref, db_ref = conv_backward_weight_ref(x, dy, w_shape, pads, mode)
    dw_abs, db_abs = conv_backward_weight_ref(np.abs(x), np.abs(dy), w_shape, pads, mode)
    kw = int(np.prod(y.shape)) // y.shape[1]
    assert_within(dw, dw_ref, C_TOL * math.sqrt(kw) * U32 * dw_abs + 1e-30, "backward-weight")
    if bias:
        assert_within(A(db), db_ref, C_TOL * math.sqrt(kw) * U32 * db_abs + 1e-30, "bias gradient")
    else:
        assert db is None


@given(conv_problems(2))
def test_conv2d_backward_matches_references_and_adjoint(problem):
    note(repr(problem))
    _check_backward(*problem)


@given(conv_problems(3))
def test_conv3d_backward_matches_references_and_adjoint(problem):
    note(repr(problem))
    _check_backward(*problem)


# ---------------------------------------------------------------------------------------------------
# Larger problems: the CPU kernel cuts the flat output range (n, position) into chunks whose column
# matrix fits 32 MiB (8 Mi floats), i.e. floor(8Mi / (Cin * kvol)) columns per chunk.
# ---------------------------------------------------------------------------------------------------

COL_BUDGET_FLOATS = 8 << 20


@pytest.mark.parametrize(
    "x_shape,w_shape,pads,mode",
    [
        # K = 64*81 = 5184 -> 1618 columns per chunk; 2 * 37 * 41 = 3034 outputs: the first boundary
        # falls inside image 1 (P = 1517), in the middle of a row.
        ((2, 64, 37, 41), (3, 64, 9, 9), (4, 4), "zeros"),
        ((2, 64, 37, 41), (3, 64, 9, 9), (4, 4), "replicate"),
        # 5x5 'same' on 2x64x37x41 (one chunk: 3034 < 5242 columns)
        ((2, 64, 37, 41), (4, 64, 5, 5), (2, 2), "replicate"),
        # K = 1600 -> 5242 columns per chunk; 160 * 160 = 25600 outputs: 5 chunks, the column matrix of the
        # whole image (164 MB) far exceeds the budget; boundaries fall mid-row (5242 = 32 * 160 + 122).
        ((1, 64, 160, 160), (4, 64, 5, 5), (2, 2), "zeros"),
        ((1, 64, 160, 160), (4, 64, 5, 5), (2, 2), "replicate"),
        # 3-D: K = 64 * 27 = 1728 -> 4854 columns; 9 * 33 * 35 = 10395 outputs: 3 chunks.
        ((1, 64, 9, 33, 35), (2, 64, 3, 3, 3), (1, 1, 1), "zeros"),
        ((1, 64, 9, 33, 35), (2, 64, 3, 3, 3), (1, 1, 1), "replicate"),
        # K = 512 * 81 = 41472 -> 202 columns per chunk, shorter than one output row (250): every chunk
        # starts and ends inside a row, some span two rows.
        ((1, 512, 3, 250), (2, 512, 9, 9), (4, 4), "replicate"),
    ],
)
def test_conv_large_problems_cross_chunk_boundaries(x_shape, w_shape, pads, mode):
    sd = len(x_shape) - 2
    fwd, bwd_data, bwd_weight = conv_fn(sd)
    k = w_shape[1] * int(np.prod(w_shape[2:]))
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x, w, b = rand(rng, *x_shape), rand(rng, *w_shape), rand(rng, w_shape[0])
    y = A(fwd(x, w, b, padding=pads, padding_mode=mode))
    assert_within(y, conv_ref(x, w, b, pads, mode), conv_tol(x, w, b, pads, mode), "large forward")
    if int(np.prod(y.shape)) // y.shape[1] <= COL_BUDGET_FLOATS // k:
        return  # a single chunk: the forward check is enough; backward is covered elsewhere
    dy = rand(rng, *y.shape)
    dx = A(bwd_data(dy, w, x_shape, padding=pads, padding_mode=mode))
    kd = w_shape[0] * int(np.prod(w_shape[2:])) * (1 + max(pads))
    assert_within(dx, conv_backward_data_ref(dy, w, x_shape, pads, mode),
                  C_TOL * math.sqrt(kd) * U32 * conv_backward_data_ref(np.abs(dy), np.abs(w), x_shape, pads, mode),
                  "large backward-data")
    dw, db = bwd_weight(x, dy, w_shape, padding=pads, padding_mode=mode)
    dw_ref, db_ref = conv_backward_weight_ref(x, dy, w_shape, pads, mode)
    dw_abs, db_abs = conv_backward_weight_ref(np.abs(x), np.abs(dy), w_shape, pads, mode)
    kw = int(np.prod(y.shape)) // y.shape[1]
    assert_within(A(dw), dw_ref, C_TOL * math.sqrt(kw) * U32 * dw_abs, "large backward-weight")
    assert_within(A(db), db_ref, C_TOL * math.sqrt(kw) * U32 * db_abs, "large bias gradient")


def test_conv_results_do_not_depend_on_the_batch_split(rng):
    # Chunks span image boundaries; each image's output must equal that image convolved alone.
    x, w = rand(rng, 3, 64, 23, 29), rand(rng, 2, 64, 9, 9)  # 3 * 23 * 29 = 2001 > 1618 columns per chunk
    y = A(ops.conv2d(x, w, padding=4, padding_mode="replicate"))
    for n in range(3):
        yn = A(ops.conv2d(np.ascontiguousarray(x[n:n + 1]), w, padding=4, padding_mode="replicate"))
        np.testing.assert_allclose(y[n:n + 1], yn, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------------------------------

@given(st.integers(1, 5).flatmap(lambda r: st.tuples(*[st.integers(1, 6)] * r)), st.integers(0, 2**32 - 1))
def test_relu_forward_and_backward_match_numpy(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[0] = 0.0  # the kink: relu(0) = 0 and no gradient through it
    y = A(ops.relu(x))
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(A(ops.relu_backward(y, dy)), np.where(x > 0, dy, 0))
    # the header says the input works as well as the output (the same sign)
    np.testing.assert_array_equal(A(ops.relu_backward(x, dy)), np.where(x > 0, dy, 0))


def test_relu_gradient_matches_finite_differences(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    x[np.abs(x) < 0.1] = 0.5  # keep every point at least one step away from the kink
    r = rand(rng, *x.shape)
    fd = fd_grad_linear(lambda xx: float(np.sum(A(ops.relu(xx)).astype(np.float64) * r)), x, step=0.0625)
    np.testing.assert_allclose(A(ops.relu_backward(A(ops.relu(x)), r)), fd, rtol=1e-5, atol=1e-6)


def test_relu_propagates_nan_as_pytorch_does(rng):
    # torch.relu: NaN stays NaN (a broken input must not come out as a plausible 0), -0 becomes +0, and
    # threshold_backward passes the gradient wherever the output is not <= 0 (NaN included).
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 2.5, -2.5], np.float32)
    y = A(ops.relu(x))
    np.testing.assert_array_equal(y, np.maximum(x, 0))  # NumPy's maximum propagates NaN
    assert not np.signbit(y[3])
    g = A(ops.relu_backward(y, np.ones_like(x)))
    np.testing.assert_array_equal(g, [1, 1, 0, 0, 0, 1, 0, 1, 0])
    # The fused conv + ReLU: NaN exactly where the window holds the NaN input.
    img = rand(rng, 1, 1, 9, 10)
    img[0, 0, 4, 6] = np.nan
    w = rand(rng, 3, 1, 3, 3)
    out = A(ops.conv2d(img, w, padding=1, relu=True))
    expect = np.zeros((9, 10), bool)
    expect[3:6, 5:8] = True
    for c in range(3):
        np.testing.assert_array_equal(np.isnan(out[0, c]), expect)
    np.testing.assert_array_equal(np.isnan(A(nn.ReLU()(img))), np.isnan(img))


def test_relu_does_not_modify_its_input(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    x0 = x.copy()
    ops.relu(x)
    np.testing.assert_array_equal(x, x0)


# ---------------------------------------------------------------------------------------------------
# MSE loss
# ---------------------------------------------------------------------------------------------------

@given(st.integers(1, 5).flatmap(lambda r: st.tuples(*[st.integers(1, 7)] * r)), st.integers(0, 2**32 - 1),
       st.sampled_from([1.0, 0.5, 3.0]))
def test_mse_loss_and_gradient_match_numpy(shape, seed, scale):
    rng = np.random.default_rng(seed)
    p, t = rand(rng, *shape), rand(rng, *shape)
    d = p.astype(np.float64) - t.astype(np.float64)
    # accumulated in double: only the double rounding of the sum remains
    assert ops.mse_loss(p, t) == pytest.approx(float(np.mean(d * d)), rel=1e-12, abs=1e-15)
    # 2 * scale * (p - t) / n, computed in float32 (a few roundings): rtol 1e-6
    np.testing.assert_allclose(A(ops.mse_loss_backward(p, t, scale)), 2 * scale * d / d.size, rtol=1e-6, atol=1e-9)


def test_mse_loss_gradient_matches_finite_differences(rng):
    p, t = rand(rng, 2, 3, 5), rand(rng, 2, 3, 5)
    # the loss is quadratic in p: central differences are exact up to the (double) rounding of the loss
    fd = fd_grad_linear(lambda pp: ops.mse_loss(pp, t), p, step=0.0625)
    np.testing.assert_allclose(A(ops.mse_loss_backward(p, t)), fd, rtol=1e-5, atol=1e-8)
    fd3 = fd_grad_linear(lambda pp: 3.0 * ops.mse_loss(pp, t), p, step=0.0625)
    np.testing.assert_allclose(A(ops.mse_loss_backward(p, t, scale=3.0)), fd3, rtol=1e-5, atol=1e-8)


def test_mse_loss_of_equal_inputs_is_zero_and_large_values_are_exact(rng):
    p = rand(rng, 3, 4)
    assert ops.mse_loss(p, p) == 0.0
    big = np.full((1000,), 3e4, np.float32)
    # (3e4 + 1 - 3e4)^2: exact in double; a float32 accumulation would lose it
    assert ops.mse_loss(big + 1, big) == 1.0


# ---------------------------------------------------------------------------------------------------
# Pixel shuffle
# ---------------------------------------------------------------------------------------------------

def pixel_shuffle_ref(x: np.ndarray, r: int) -> np.ndarray:
    n, crr, h, w = x.shape
    c = crr // (r * r)
    return x.reshape(n, c, r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c, h * r, w * r)


def test_pixel_shuffle_reference_is_pytorchs_order():
    # PyTorch: out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w]
    x = np.arange(2 * 8 * 2 * 3, dtype=np.float32).reshape(2, 8, 2, 3)
    y = pixel_shuffle_ref(x, 2)
    for n, c, h, w, i, j in np.ndindex(2, 2, 2, 3, 2, 2):
        assert y[n, c, h * 2 + i, w * 2 + j] == x[n, c * 4 + i * 2 + j, h, w]


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.integers(1, 6),
       st.integers(0, 2**32 - 1))
def test_pixel_shuffle_forward_and_backward(n, c, r, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, n, c * r * r, h, w)
    y = A(ops.pixel_shuffle(x, r))
    np.testing.assert_array_equal(y, pixel_shuffle_ref(x, r))  # a permutation: exact
    dy = rand(rng, n, c, h * r, w * r)
    dx = A(ops.pixel_shuffle_backward(dy, r))
    assert dx.shape == x.shape
    # the backward pass is the adjoint: <shuffle(x), dy> == <x, shuffle^T(dy)> exactly (same products)
    np.testing.assert_array_equal(np.sort((y * dy).ravel()), np.sort((x * dx).ravel()))
    # and, the shuffle being a permutation, its inverse
    np.testing.assert_array_equal(A(ops.pixel_shuffle_backward(y, r)), x)


# ---------------------------------------------------------------------------------------------------
# add, scale
# ---------------------------------------------------------------------------------------------------

@given(st.integers(1, 5).flatmap(lambda r: st.tuples(*[st.integers(1, 6)] * r)), st.integers(0, 2**32 - 1),
       st.floats(-4, 4, width=32))
def test_add_and_scale_match_numpy(shape, seed, alpha):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, *shape), rand(rng, *shape)
    a0, b0 = a.copy(), b.copy()
    # one float32 operation per element: bit-exact
    np.testing.assert_array_equal(A(ops.add(a, b)), a + b)
    np.testing.assert_array_equal(A(ops.scale(a, alpha)), np.float32(alpha) * a)
    np.testing.assert_array_equal(a, a0)  # inputs untouched
    np.testing.assert_array_equal(b, b0)


# ---------------------------------------------------------------------------------------------------
# Optimizer updates: NumPy float64 transcriptions of optim_params.hpp
# ---------------------------------------------------------------------------------------------------

def sgd_ref(p, g, v, lr, momentum, weight_decay, nesterov):
    g2 = g + weight_decay * p
    if momentum != 0.0:
        v = momentum * v + g2
        step = g2 + momentum * v if nesterov else v
    else:
        step = g2
    return p - lr * step, v


def adam_ref(p, g, m, v, t, lr, b1, b2, eps, wd, decoupled):
    if decoupled:
        p = p - lr * wd * p
    else:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p, m, v


@pytest.mark.parametrize(
    "momentum,weight_decay,nesterov",
    [(0.0, 0.0, False), (0.0, 0.01, False), (0.9, 0.0, False), (0.9, 1e-3, False), (0.9, 1e-3, True), (0.5, 0.1, True)],
)
def test_sgd_update_matches_formula_over_steps(momentum, weight_decay, nesterov, rng):
    p = rand(rng, 3, 4, 5)
    v = np.zeros_like(p)
    p_ref, v_ref = p.astype(np.float64), v.astype(np.float64)
    lr = 0.05
    for _ in range(6):
        g = rand(rng, *p.shape)
        ops.sgd_update(p, g, v if momentum else None, lr=lr, momentum=momentum, weight_decay=weight_decay,
                       nesterov=nesterov)  # in place, through the NumPy arrays (zero-copy)
        p_ref, v_ref = sgd_ref(p_ref, g.astype(np.float64), v_ref, lr, momentum, weight_decay, nesterov)
        # a handful of float32 operations per step, errors ~u * |p| accumulate over 6 steps: 1e-6
        np.testing.assert_allclose(p, p_ref, rtol=1e-6, atol=1e-6)
        if momentum:
            np.testing.assert_allclose(v, v_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "weight_decay,decoupled,betas,eps",
    [(0.0, False, (0.9, 0.999), 1e-8), (0.01, False, (0.9, 0.999), 1e-8), (0.1, True, (0.9, 0.999), 1e-8),
     (0.05, True, (0.5, 0.9), 1e-3)],
)
def test_adam_update_matches_formula_over_steps(weight_decay, decoupled, betas, eps, rng):
    p = rand(rng, 4, 7)
    m, v = np.zeros_like(p), np.zeros_like(p)
    pr, mr, vr = p.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    lr = 0.01
    for t in range(1, 8):
        g = rand(rng, *p.shape)
        ops.adam_update(p, g, m, v, t, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
                        decoupled=decoupled)
        # float32 hyper-parameters (beta2 = 0.999 is not exact in float32): compare with the rounded ones
        b1, b2 = float(np.float32(betas[0])), float(np.float32(betas[1]))
        pr, mr, vr = adam_ref(pr, g.astype(np.float64), mr, vr, t, float(np.float32(lr)), b1, b2,
                              float(np.float32(eps)), float(np.float32(weight_decay)), decoupled)
        # the step is lr * m_hat / sqrt(v_hat): a ratio of float32 quantities, ~10 roundings: rtol 1e-5 of
        # the step size lr on top of the float32 representation of p
        np.testing.assert_allclose(m, mr, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(v, vr, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(p, pr, rtol=1e-6, atol=1e-5 * lr * t)


def test_adam_first_step_moves_each_weight_by_lr():
    # With zero moments, step 1 gives m_hat = g, v_hat = g^2: every weight moves by lr * sign(g) (eps aside).
    p = np.zeros(5, np.float32)
    g = np.array([1.0, -2.0, 0.5, -1e-3, 3.0], np.float32)
    ops.adam_update(p, g, np.zeros(5, np.float32), np.zeros(5, np.float32), 1, lr=0.1, eps=1e-12)
    np.testing.assert_allclose(p, -0.1 * np.sign(g), rtol=1e-5)


def test_the_host_block_cache_keeps_freed_large_blocks_and_empties():
    """A freed host tensor of 1 MiB or more is kept (held_bytes), handed out again for the same size (a hit), and
    cpu_empty_cache gives it back; a small one is never kept."""
    import magmasr

    magmasr.cpu_empty_cache()
    stats = magmasr.cpu_memory_stats()
    if stats["cap"] < 8 << 20:
        pytest.skip("the host block cache is off or small here (MAGMASR_CPU_CACHE_MB)")
    assert stats["held_bytes"] == 0 and stats["blocks"] == 0
    t = magmasr.empty((1, 64, 64, 64))  # 1 MiB of float32
    del t
    assert magmasr.cpu_memory_stats()["held_bytes"] == 1 << 20
    hits = magmasr.cpu_memory_stats()["hits"]
    u = magmasr.full((1, 64, 64, 64), 2.0)
    assert magmasr.cpu_memory_stats()["hits"] == hits + 1 and magmasr.cpu_memory_stats()["held_bytes"] == 0
    assert float(np.asarray(u.numpy()).max()) == 2.0
    del u
    small = magmasr.zeros((16, 16))
    del small
    assert magmasr.cpu_memory_stats()["blocks"] == 1
    magmasr.cpu_empty_cache()
    assert magmasr.cpu_memory_stats()["held_bytes"] == 0
