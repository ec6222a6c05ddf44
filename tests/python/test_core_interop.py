"""Zero-copy exchange with NumPy (buffer protocol, from_numpy), DLPack (NumPy, PyTorch, CuPy), lifetimes,
the GIL released around compute, and the CUDA entry points of a machine without a GPU."""

from __future__ import annotations

import gc
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import magmasr
from magmasr import nn, ops


def A(t) -> np.ndarray:
    return np.asarray(t)


# ---------------------------------------------------------------------------------------------------
# Tensor <-> NumPy through the buffer protocol
# ---------------------------------------------------------------------------------------------------

def test_np_asarray_views_the_tensor_without_copy():
    t = magmasr.zeros((2, 3, 4))
    a, b = A(t), A(t)
    assert a.dtype == np.float32 and a.shape == (2, 3, 4) and a.flags.c_contiguous
    assert np.shares_memory(a, b)
    a[1, 2, 3] = 5.0
    assert A(t)[1, 2, 3] == 5.0  # written through the view
    assert np.shares_memory(t.numpy(), a)  # .numpy() of a CPU tensor is the same view
    t.fill_(2.0)
    assert np.all(a == 2.0)  # and the other way round
    m = memoryview(t)
    assert (m.format, m.shape, m.itemsize, m.contiguous) == ("f", (2, 3, 4), 4, True)


def test_numpy_view_keeps_the_tensor_alive():
    a = A(magmasr.full((64, 64), 3.5))  # the Tensor object is a temporary
    gc.collect()
    _ = [np.ones((64, 64), np.float32) for _ in range(20)]  # reuse freed memory, if it had been freed
    assert np.all(a == 3.5)


def test_tensor_properties():
    t = magmasr.full((2, 3, 4), 1.5)
    assert (t.shape, t.ndim, t.size, t.nbytes, len(t)) == ((2, 3, 4), 3, 24, 96, 2)
    assert t.dtype == np.float32
    assert t.device == magmasr.Device("cpu") and t.device == "cpu" and str(t.device) == "cpu"
    assert "shape=[2, 3, 4]" in repr(t) and "cpu" in repr(t)
    assert not hasattr(t, "__cuda_array_interface__")  # a CPU tensor does not pretend to be on a GPU


def test_clone_copies_while_to_reshape_and_as_tensor_share():
    t = magmasr.full((2, 6), 1.0)
    c = t.clone()
    assert not np.shares_memory(A(c), A(t))
    np.testing.assert_array_equal(A(c), A(t))
    assert np.shares_memory(A(t.to("cpu")), A(t))  # already there: the same storage
    assert np.shares_memory(A(t.cpu()), A(t))
    r = t.reshape(3, 4)
    assert r.shape == (3, 4) and np.shares_memory(A(r), A(t))
    assert t.reshape((4, 3)).shape == (4, 3)
    assert np.shares_memory(A(magmasr.as_tensor(t)), A(t))


def test_magmasr_tensor_copies_its_data():
    data = np.arange(6, dtype=np.float32)
    t = magmasr.tensor(data)
    assert not np.shares_memory(A(t), data)
    np.testing.assert_array_equal(A(t), data)
    np.testing.assert_array_equal(A(magmasr.tensor([[1, 2], [3, 4]])), [[1, 2], [3, 4]])  # ints converted
    assert magmasr.tensor(2.5).shape == (1,)


# ---------------------------------------------------------------------------------------------------
# NumPy -> Tensor: from_numpy and every op's array arguments
# ---------------------------------------------------------------------------------------------------

def test_from_numpy_is_zero_copy_both_ways():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = magmasr.from_numpy(x)
    assert t.shape == (2, 3, 4)
    assert np.shares_memory(A(t), x)
    x[0, 0, 0] = -7.0
    assert A(t)[0, 0, 0] == -7.0
    t.fill_(1.0)
    assert np.all(x == 1.0)


def test_from_numpy_keeps_the_array_alive_and_releases_it():
    x = np.arange(4096, dtype=np.float32)
    expected = x.copy()
    base = sys.getrefcount(x)
    t = magmasr.from_numpy(x)
    assert sys.getrefcount(x) == base + 1  # the tensor holds one reference
    del x
    gc.collect()
    _ = [np.zeros(4096, np.float32) + 9 for _ in range(20)]
    np.testing.assert_array_equal(A(t), expected)  # still the original data

    y = np.ones(8, np.float32)
    base = sys.getrefcount(y)
    t2 = magmasr.from_numpy(y)
    views = [A(t2) for _ in range(3)]
    del t2, views
    gc.collect()
    assert sys.getrefcount(y) == base  # no leaked reference once the tensor and its views are gone


def test_from_numpy_of_a_contiguous_slice_views_the_parent():
    parent = np.zeros((4, 5), np.float32)
    t = magmasr.from_numpy(parent[1:3])  # rows 1..2: C-contiguous
    t.fill_(3.0)
    assert np.all(parent[1:3] == 3.0) and np.all(parent[0] == 0) and np.all(parent[3] == 0)


def test_ops_take_arrays_without_copying_them():
    # sgd_update writes its result into the parameter array handed in: the op saw the array itself
    p = np.ones(5, np.float32)
    ops.sgd_update(p, np.full(5, 2.0, np.float32), lr=0.25)
    np.testing.assert_array_equal(p, 0.5)
    # a FoldDepth layer's output views its input array
    x = np.ones((1, 2, 3, 4, 5), np.float32)
    assert np.shares_memory(A(nn.FoldDepth()(x)), x)


def test_op_outputs_outlive_their_inputs():
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = np.maximum(x, 0)
    y = ops.relu(x)
    del x
    gc.collect()
    np.testing.assert_array_equal(A(y), expected)


# ---------------------------------------------------------------------------------------------------
# DLPack with NumPy
# ---------------------------------------------------------------------------------------------------

def test_dlpack_tensor_to_numpy_is_zero_copy():
    t = magmasr.full((3, 4), 2.0)
    assert t.__dlpack_device__() == (1, 0)  # kDLCPU, device 0
    a = np.from_dlpack(t)
    assert a.shape == (3, 4) and a.dtype == np.float32
    assert np.shares_memory(a, A(t))
    a[0, 0] = 9.0
    assert A(t)[0, 0] == 9.0


def test_dlpack_numpy_to_tensor_is_zero_copy_and_keeps_the_array_alive():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = magmasr.from_dlpack(x)
    assert t.shape == (3, 4)
    assert np.shares_memory(A(t), x)
    t.fill_(5.0)
    assert np.all(x == 5.0)
    del x
    gc.collect()
    _ = [np.zeros((3, 4), np.float32) for _ in range(20)]
    assert np.all(A(t) == 5.0)


def test_dlpack_of_slices_points_at_the_right_elements():
    parent = np.arange(20, dtype=np.float32).reshape(4, 5)
    for view in (parent[1:3], parent[2], parent[:, 2:3][1:2], parent[3:, 4:]):
        t = magmasr.from_dlpack(view)
        np.testing.assert_array_equal(A(t), view)
        assert np.shares_memory(A(t), view)


def test_dlpack_round_trips():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    back = np.from_dlpack(magmasr.from_dlpack(x))
    assert np.shares_memory(back, x)
    np.testing.assert_array_equal(back, x)
    t = magmasr.full((2, 2), 1.0)
    t2 = magmasr.from_dlpack(t)  # magmasr -> magmasr
    assert np.shares_memory(A(t2), A(t))
    t3 = magmasr.from_dlpack(np.from_dlpack(t))
    assert np.shares_memory(A(t3), A(t))


def test_dlpack_capsules_legacy_and_versioned():
    t = magmasr.zeros((2, 3))
    assert "dltensor" in repr(t.__dlpack__())
    assert "dltensor_versioned" in repr(t.__dlpack__(max_version=(1, 0)))
    # an exported capsule keeps the tensor alive after the tensor object is gone
    cap = magmasr.full((4,), 7.0).__dlpack__()
    gc.collect()

    class Holder:  # a minimal DLPack producer around an existing capsule
        def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
            return cap

        def __dlpack_device__(self):
            return (1, 0)

    np.testing.assert_array_equal(np.from_dlpack(Holder()), 7.0)


def test_ops_accept_dlpack_producers():
    x = magmasr.from_numpy(np.full((2, 3), -1.0, np.float32))

    class Producer:  # anything with __dlpack__ works, here a wrapper around a NumPy array
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kw):
            return self.a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(A(ops.add(Producer(a), x)), a - 1)


def test_dlpack_copy_true_gives_a_copy():
    t = magmasr.full((2, 2), 1.0)
    a = np.from_dlpack(t, copy=True)
    assert not np.shares_memory(a, A(t))
    np.testing.assert_array_equal(a, 1.0)


# ---------------------------------------------------------------------------------------------------
# PyTorch and CuPy (skipped when they are not installed)
# ---------------------------------------------------------------------------------------------------

def test_torch_interop_is_zero_copy():
    torch = pytest.importorskip("torch")
    tt = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    t = magmasr.from_dlpack(tt)
    assert t.shape == (3, 4)
    t.fill_(2.0)
    assert bool((tt == 2).all())  # the same memory
    back = torch.from_dlpack(magmasr.full((2, 5), 3.0))
    assert back.shape == (2, 5) and bool((back == 3).all())
    np.testing.assert_array_equal(A(ops.relu(torch.tensor([-1.0, 2.0]))), [0.0, 2.0])  # ops take tensors directly
    with pytest.raises(TypeError, match="contiguous"):
        magmasr.from_dlpack(torch.zeros(4, 6).t())
    with pytest.raises(TypeError, match="float32"):
        magmasr.from_dlpack(torch.zeros(3, dtype=torch.float64))
    # a conv on torch tensors equals torch's own (correlation, same padding convention)
    x = torch.randn(1, 2, 7, 6)
    w = torch.randn(3, 2, 3, 3)
    np.testing.assert_allclose(A(ops.conv2d(x, w, padding=1)),
                               torch.nn.functional.conv2d(x, w, padding=1).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_torch_cuda_interop(gpu):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    tt = torch.ones(2, 3, device="cuda")
    t = magmasr.from_dlpack(tt)
    assert t.device == gpu
    back = torch.from_dlpack(ops.scale(t, 2.0))
    assert back.device.type == "cuda" and bool((back == 2).all())


@pytest.mark.gpu
def test_cupy_interop_is_zero_copy(gpu):
    cp = pytest.importorskip("cupy")
    c = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    t = magmasr.from_dlpack(c)
    assert t.device == gpu
    t.fill_(4.0)
    magmasr.cuda.synchronize()  # magmasr's stream is not CuPy's: wait for the fill before CuPy reads
    assert bool((c == 4).all())
    back = cp.from_dlpack(magmasr.full((3,), 1.5, device=gpu))
    assert bool((back == 1.5).all())
    d = magmasr.full((2, 2), 1.0, device=gpu).__cuda_array_interface__
    assert d["shape"] == (2, 2) and d["typestr"] == "<f4" and d["version"] == 3


@pytest.mark.gpu
def test_gpu_tensor_numpy_copies_and_buffer_protocol_refuses(gpu):
    t = magmasr.full((2, 3), 1.25, device=gpu)
    np.testing.assert_array_equal(t.numpy(), 1.25)
    with pytest.raises(BufferError) as info:
        memoryview(t)
    # pybind11 >= 2.11 raises its own BufferError from ours; the message that says what to do is in the chain
    messages = [str(info.value), str(info.value.__cause__ or "")]
    assert any("on cuda:0" in m and ".numpy()" in m for m in messages), messages


# ---------------------------------------------------------------------------------------------------
# The GIL is released around compute
# ---------------------------------------------------------------------------------------------------

def _conv_problem(seed, side=64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 32, side, side)).astype(np.float32)
    w = rng.standard_normal((16, 32, 5, 5)).astype(np.float32)
    return x, w


def _conv_work(x, w):
    y = A(ops.conv2d(x, w, padding=2, padding_mode="replicate"))
    dx = A(ops.conv2d_backward_data(y, w, x.shape, padding=2, padding_mode="replicate"))
    dw, _ = ops.conv2d_backward_weight(x, y, w.shape, padding=2, padding_mode="replicate")
    return y, dx, A(dw)


def test_convolutions_in_two_threads_give_the_serial_results():
    problems = [_conv_problem(s) for s in range(4)]
    serial = [_conv_work(*p) for p in problems]
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = list(pool.map(lambda p: _conv_work(*p), problems + problems))
    for got, want in zip(threaded, serial + serial):
        for g, e in zip(got, want):
            # the same arithmetic, possibly another BLAS thread split: equal to float32 rounding
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-4 * float(np.abs(e).max()))


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["auto", "gemm", "direct", "direct_async", "implicit_gemm", "auto_direct"])
def test_gpu_convolutions_in_two_threads_give_the_serial_results(gpu, algo):
    # The workspace, the cuBLAS handle and the Auto timing of a device are shared by its ops; with the GIL
    # released, ops of two threads take turns on them instead of overwriting each other's columns. 40 x 40
    # pictures (two 32 x 32 tiles a side, one of them partly idle) keep it to seconds on the CUDA emulator.
    def work(x, w):
        kw = dict(padding=2, padding_mode="replicate", algo=algo)
        y = ops.conv2d(x, w, **kw)
        dx = ops.conv2d_backward_data(y, w, (2, 32, 40, 40), **kw)
        dw, _ = ops.conv2d_backward_weight(x, y, (16, 32, 5, 5), **kw)
        return y.numpy(), dx.numpy(), dw.numpy()

    problems = [tuple(magmasr.from_numpy(a).to(gpu) for a in _conv_problem(s, side=40)) for s in range(4)]
    serial = [work(*p) for p in problems]
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = list(pool.map(lambda p: work(*p), problems * 2))
    for got, want in zip(threaded, serial * 2):
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * float(np.abs(e).max()))


def test_layers_in_two_threads_give_the_serial_results():
    models = [nn.Sequential(nn.Conv2d(1, 16, 9, padding=4, seed=s), nn.ReLU(), nn.Conv2d(16, 1, 5, padding=2, seed=s))
              for s in range(2)]
    x = np.random.default_rng(2).standard_normal((1, 1, 96, 96)).astype(np.float32)
    serial = [A(m(x)).copy() for m in models]
    barrier = threading.Barrier(2)

    def run(m):
        barrier.wait()
        return [A(m(x)).copy() for _ in range(3)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, models))
    for outs, want in zip(results, serial):
        for out in outs:
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_python_runs_while_a_convolution_computes():
    # With the GIL held for the whole call, the main thread could not execute a single Python statement in
    # the middle half of the call (only around its ends, at a switch interval). Measured by behaviour: the
    # main thread's loop timestamps that fall strictly inside the middle half of the worker's call.
    w = np.random.default_rng(4).standard_normal((64, 64, 9, 9)).astype(np.float32)
    one = np.random.default_rng(3).standard_normal((1, 64, 64, 64)).astype(np.float32)
    t = time.perf_counter()
    ops.conv2d(one, w, padding=4)
    # a batch large enough for a call of ~0.3 s on this machine, whatever its speed
    n = int(min(64, max(1, np.ceil(0.3 / max(time.perf_counter() - t, 1e-4)))))
    x = np.ascontiguousarray(np.broadcast_to(one, (n, 64, 64, 64)))
    span = {}
    started = threading.Event()

    def worker():
        started.set()
        span["t0"] = time.perf_counter()
        ops.conv2d(x, w, padding=4)
        span["t1"] = time.perf_counter()

    stamps = []
    th = threading.Thread(target=worker)
    th.start()
    started.wait()
    while th.is_alive():
        stamps.append(time.perf_counter())
    th.join()
    t0, t1 = span["t0"], span["t1"]
    assert t1 - t0 > 0.05, "the convolution was too quick to tell"
    lo, hi = t0 + 0.25 * (t1 - t0), t0 + 0.75 * (t1 - t0)
    inside = sum(lo < s < hi for s in stamps)
    assert inside > 0, f"the main thread did not run during the {1e3 * (t1 - t0):.0f} ms convolution"


# ---------------------------------------------------------------------------------------------------
# CUDA entry points on a machine without a GPU
# ---------------------------------------------------------------------------------------------------

def test_cuda_is_reported_unavailable_and_its_runtime_calls_raise():
    if magmasr.cuda_available():
        pytest.skip("a GPU is available here")
    assert magmasr.cuda_available() is False
    with pytest.raises(RuntimeError, match="CUDA"):
        magmasr.cuda.memory_stats()
    with pytest.raises(RuntimeError, match="CUDA"):
        magmasr.cuda.memory_stats(0)


@pytest.mark.gpu
def test_cuda_memory_stats_on_a_gpu(gpu):
    stats = magmasr.cuda.memory_stats()
    assert {"allocated_bytes", "reserved_bytes", "peak_allocated_bytes"} <= set(stats)
    t = magmasr.zeros((1024, 1024), device=gpu)
    assert magmasr.cuda.memory_stats()["allocated_bytes"] >= t.nbytes
