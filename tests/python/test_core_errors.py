"""Bad input at every public entry point: the right exception type, with a message that names what was
expected and what was given, and never a crash.

Convention (cpp/include/magmasr/error.hpp): TypeError for a wrong kind of argument (dtype, non-contiguous
memory, wrong object), ValueError for wrong shapes / ranks / sizes / options, RuntimeError for devices.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import magmasr
from magmasr import nn, ops, optim

F32 = np.float32


def ones(*shape, dtype=F32):
    return np.ones(shape, dtype=dtype)


X = ones(1, 2, 5, 5)
W = ones(3, 2, 3, 3)
X3 = ones(1, 2, 4, 5, 5)
W3 = ones(3, 2, 3, 3, 3)


def _read_only(a):
    a.flags.writeable = False
    return a


def _trained_conv():
    conv = nn.Conv2d(2, 3, 3)
    conv.forward(X, training=True)
    return conv


def _trained_relu():
    relu = nn.ReLU()
    relu.forward(ones(2, 3), training=True)
    return relu


def _srcnn_mismatch():
    return nn.Sequential(("conv1", nn.Conv2d(1, 4, 3)), ("relu", nn.ReLU()), ("conv2", nn.Conv2d(3, 1, 3)))


# (id, call, exception type, regex the message must match)
CASES = [
    # --- dtype (TypeError; the expected float32 and the given dtype) ---
    ("conv2d x float64", lambda: ops.conv2d(X.astype(np.float64), W), TypeError, r"float32.*got dtype float64"),
    ("conv2d w int32", lambda: ops.conv2d(X, W.astype(np.int32)), TypeError, r"float32.*got dtype int32"),
    ("conv2d bias int64", lambda: ops.conv2d(X, W, ones(3, dtype=np.int64)), TypeError, r"float32.*int64"),
    ("conv3d x float16", lambda: ops.conv3d(X3.astype(np.float16), W3), TypeError, r"float32.*float16"),
    ("relu bool", lambda: ops.relu(ones(2, 3, dtype=bool)), TypeError, r"float32.*bool"),
    ("relu complex", lambda: ops.relu(ones(2, 3, dtype=np.complex64)), TypeError, r"float32.*complex64"),
    ("relu_backward dy float64", lambda: ops.relu_backward(ones(2, 3), ones(2, 3, dtype=np.float64)), TypeError,
     r"float32.*float64"),
    ("mse target int", lambda: ops.mse_loss(ones(2, 3), ones(2, 3, dtype=np.int32)), TypeError, r"float32.*int32"),
    ("mse_backward float64", lambda: ops.mse_loss_backward(ones(2, 3, dtype=np.float64), ones(2, 3)), TypeError,
     r"float32.*float64"),
    ("pixel_shuffle float64", lambda: ops.pixel_shuffle(ones(1, 4, 2, 2, dtype=np.float64), 2), TypeError,
     r"float32.*float64"),
    ("add int", lambda: ops.add(ones(2), ones(2, dtype=np.int64)), TypeError, r"float32.*int64"),
    ("scale float64", lambda: ops.scale(ones(2, dtype=np.float64), 2.0), TypeError, r"float32.*float64"),
    ("sgd grad float64", lambda: ops.sgd_update(ones(3), ones(3, dtype=np.float64), lr=0.1), TypeError,
     r"float32.*float64"),
    ("adam m int", lambda: ops.adam_update(ones(3), ones(3), ones(3, dtype=np.int32), ones(3), 1), TypeError,
     r"float32.*int32"),
    ("from_numpy float64", lambda: magmasr.from_numpy(ones(2, dtype=np.float64)), TypeError, r"float32.*float64"),
    ("from_dlpack float64", lambda: magmasr.from_dlpack(ones(2, dtype=np.float64)), TypeError,
     r"float32.*64 bits"),
    ("from_dlpack int32", lambda: magmasr.from_dlpack(ones(2, dtype=np.int32)), TypeError, r"float32.*32 bits"),
    ("layer forward float64", lambda: nn.Conv2d(2, 3, 3)(X.astype(np.float64)), TypeError, r"float32.*float64"),
    ("layer backward float64", lambda: _trained_conv().backward(ones(1, 3, 3, 3, dtype=np.float64)), TypeError,
     r"float32.*float64"),
    # --- non-contiguous / read-only memory (TypeError) ---
    ("conv2d x strided", lambda: ops.conv2d(X[:, :, ::2], W), TypeError, r"C-contiguous.*ascontiguousarray"),
    ("conv2d x fortran", lambda: ops.conv2d(np.asfortranarray(X), W), TypeError, r"C-contiguous"),
    ("conv2d w transposed", lambda: ops.conv2d(X, np.ones((3, 3, 2, 3), F32).transpose(3, 2, 0, 1)), TypeError,
     r"C-contiguous"),
    ("relu transposed", lambda: ops.relu(ones(3, 4).T), TypeError, r"C-contiguous"),
    ("from_numpy strided", lambda: magmasr.from_numpy(ones(4, 6)[:, ::2]), TypeError, r"C-contiguous"),
    ("from_numpy read-only", lambda: magmasr.from_numpy(_read_only(ones(2, 3))), TypeError, r"writeable.*copy\(\)"),
    ("op read-only", lambda: ops.relu(_read_only(ones(2, 3))), TypeError, r"writeable"),
    ("from_dlpack read-only", lambda: magmasr.from_dlpack(_read_only(ones(2, 3))), TypeError, r"read-only"),
    ("from_numpy broadcast", lambda: magmasr.from_numpy(np.broadcast_to(ones(3), (2, 3))), TypeError,
     r"C-contiguous"),
    ("from_dlpack strided", lambda: magmasr.from_dlpack(ones(4, 6)[:, ::2]), TypeError, r"contiguous"),
    ("from_dlpack column", lambda: magmasr.from_dlpack(ones(4, 6)[:, :1]), TypeError, r"contiguous"),
    ("layer forward strided", lambda: nn.ReLU()(ones(4, 6)[::2]), TypeError, r"C-contiguous"),
    # --- wrong kind of object (TypeError naming the type given) ---
    ("conv2d list", lambda: ops.conv2d(X.tolist(), W), TypeError,
     r"input: expected a magmasr.Tensor, a float32 numpy.ndarray or a DLPack tensor, got list"),
    ("conv2d weight None", lambda: ops.conv2d(X, None), TypeError, r"weight: expected .* got NoneType"),
    ("relu float", lambda: ops.relu(3.0), TypeError, r"expected a magmasr.Tensor.*got float"),
    ("relu_backward str", lambda: ops.relu_backward(ones(2), "x"), TypeError, r"grad_output: expected .*got str"),
    ("from_numpy list", lambda: magmasr.from_numpy([1.0, 2.0]), TypeError, r"expected a numpy.ndarray, got list"),
    ("from_dlpack list", lambda: magmasr.from_dlpack([1.0]), TypeError, r"list does not implement __dlpack__"),
    ("conv2d padding str", lambda: ops.conv2d(X, W, padding="same"), TypeError,
     r"functional ops take integers; 'same'/'valid' are for layers"),
    ("optimizer item int", lambda: optim.SGD([1, 2], lr=0.1), TypeError,
     r"expected a layer or an iterable of magmasr.nn.Parameter, got an item of type int"),
    ("Sequential int", lambda: nn.Sequential(3), TypeError, r"expected layers or \(name, layer\) pairs, got int"),
    ("device int", lambda: magmasr.zeros((2,), device=3), TypeError,
     r"expected 'cpu', 'cuda', 'cuda:N' or a magmasr.Device, got int"),
    ("layer.to None", lambda: nn.ReLU().to(None), TypeError, r"magmasr.Device, got NoneType"),
    # --- wrong rank (ValueError naming the expected layout and the given shape) ---
    ("conv2d rank 3", lambda: ops.conv2d(X[0], W), ValueError,
     r"conv2d: expected input of rank 4 \(\[N, C, H, W\]\), got shape \[2, 5, 5\]"),
    ("conv2d rank 5", lambda: ops.conv2d(X3, W), ValueError, r"rank 4 .*got shape \[1, 2, 4, 5, 5\]"),
    ("conv3d rank 4", lambda: ops.conv3d(X, W3), ValueError,
     r"conv3d: expected input of rank 5 \(\[N, C, D, H, W\]\), got shape \[1, 2, 5, 5\]"),
    ("conv2d weight rank 3", lambda: ops.conv2d(X, ones(3, 2, 3)), ValueError,
     r"weight must have rank 4 \(\[Cout, Cin, kH, kW\]\).*got shape \[3, 2, 3\]"),
    ("conv3d weight rank 4", lambda: ops.conv3d(X3, W), ValueError,
     r"weight must have rank 5 \(\[Cout, Cin, kD, kH, kW\]\).*got shape \[3, 2, 3, 3\]"),
    ("conv2d_backward_weight rank", lambda: ops.conv2d_backward_weight(X[0], ones(1, 3, 3, 3), (3, 2, 3, 3)),
     ValueError, r"rank 4.*got shape \[2, 5, 5\]"),
    ("conv2d_backward_data input_shape", lambda: ops.conv2d_backward_data(ones(1, 3, 3, 3), W, (1, 2, 5)),
     ValueError, r"input_shape must have 4 entries, got \[1, 2, 5\]"),
    ("conv3d_backward_data input_shape", lambda: ops.conv3d_backward_data(ones(1, 3, 2, 3, 3), W3, (1, 2, 5, 5)),
     ValueError, r"input_shape must have 5 entries, got \[1, 2, 5, 5\]"),
    ("pixel_shuffle rank 3", lambda: ops.pixel_shuffle(ones(4, 2, 2), 2), ValueError,
     r"\[N, C\*r\*r, H, W\], got shape \[4, 2, 2\]"),
    ("layer Conv2d rank 5", lambda: nn.Conv2d(2, 3, 3)(X3), ValueError,
     r"Conv2d expects input of rank 4 \(\[N, C, H, W\]\), got \[1, 2, 4, 5, 5\]"),
    ("layer Conv3d rank 4", lambda: nn.Conv3d(2, 3, 3)(X), ValueError,
     r"Conv3d expects input of rank 5 \(\[N, C, D, H, W\]\), got \[1, 2, 5, 5\]"),
    ("FoldDepth rank 4", lambda: nn.FoldDepth()(X),
     ValueError, r"FoldDepth expects \[N, C, D, H, W\], got \[1, 2, 5, 5\]"),
    ("rank 0 array", lambda: ops.relu(np.ones((), F32)), ValueError, r"rank 1 to 5, got rank 0"),
    ("rank 6 array", lambda: ops.relu(ones(1, 1, 1, 1, 1, 2)), ValueError, r"rank 1 to 5, got rank 6"),
    ("from_dlpack rank 6", lambda: magmasr.from_dlpack(ones(1, 1, 1, 1, 1, 2)), ValueError, r"rank 1 to 5, got rank 6"),
    ("empty rank 0", lambda: magmasr.empty(()), ValueError, r"rank 1 to 5, got rank 0"),
    ("zeros rank 6", lambda: magmasr.zeros((1,) * 6), ValueError, r"rank 1 to 5, got rank 6"),
    # --- empty arrays / shapes (ValueError) ---
    ("relu empty", lambda: ops.relu(np.zeros((2, 0), F32)), ValueError, r"non-empty array, got shape \[2, 0\]"),
    ("conv2d empty batch", lambda: ops.conv2d(np.zeros((0, 2, 5, 5), F32), W), ValueError,
     r"non-empty.*\[0, 2, 5, 5\]"),
    ("from_numpy empty", lambda: magmasr.from_numpy(np.zeros(0, F32)), ValueError, r"non-empty array, got shape \[0\]"),
    ("empty zero dim", lambda: magmasr.empty((2, 0)), ValueError, r">= 1, got shape \[2, 0\]"),
    ("full negative dim", lambda: magmasr.full((2, -3), 1.0), ValueError, r">= 1, got shape \[2, -3\]"),
    ("backward_data zero dim", lambda: ops.conv2d_backward_data(ones(1, 3, 3, 3), W, (1, 2, 0, 5)), ValueError,
     r">= 1, got shape \[1, 2, 0, 5\]"),
    ("reshape -1", lambda: magmasr.zeros((2, 3)).reshape(-1), ValueError, r">= 1, got shape \[-1\]"),
    ("reshape numel", lambda: magmasr.zeros((2, 3)).reshape(4, 2), ValueError,
     r"cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\]"),
    # --- channel counts and shapes (ValueError naming both) ---
    ("conv2d channels", lambda: ops.conv2d(X, ones(3, 4, 3, 3)), ValueError,
     r"input has 2 channels but the weight expects 4 \(input \[1, 2, 5, 5\], weight \[3, 4, 3, 3\]\)"),
    ("conv3d channels", lambda: ops.conv3d(X3, ones(3, 1, 3, 3, 3)), ValueError,
     r"input has 2 channels but the weight expects 1"),
    ("conv2d bias shape", lambda: ops.conv2d(X, W, ones(4)), ValueError, r"bias must have shape \[3\], got \[4\]"),
    ("conv2d bias rank", lambda: ops.conv2d(X, W, ones(3, 1)), ValueError, r"bias must have shape \[3\], got \[3, 1\]"),
    ("conv2d kernel too big", lambda: ops.conv2d(X, ones(3, 2, 7, 7)), ValueError,
     r"kernel \(1x7x7\) is larger than the padded input \(1x5x5\)"),
    ("backward_data dy shape", lambda: ops.conv2d_backward_data(ones(1, 3, 4, 3), W, (1, 2, 5, 5)), ValueError,
     r"output gradient must have shape \[1, 3, 3, 3\], got \[1, 3, 4, 3\]"),
    ("backward_data channels", lambda: ops.conv2d_backward_data(ones(1, 3, 3, 3), W, (1, 5, 5, 5)), ValueError,
     r"input has 5 channels but the weight expects 2"),
    ("backward_weight dy shape", lambda: ops.conv2d_backward_weight(X, ones(1, 4, 3, 3), (3, 2, 3, 3)), ValueError,
     r"output gradient must have shape \[1, 3, 3, 3\], got \[1, 4, 3, 3\]"),
    ("backward_weight w shape", lambda: ops.conv2d_backward_weight(X, ones(1, 3, 3, 3), (3, 2, 3)), ValueError,
     r"rank 4 .*got shape \[3, 2, 3\]"),
    ("relu_backward shapes", lambda: ops.relu_backward(ones(2, 3), ones(3, 2)), ValueError,
     r"relu_backward: shapes must match, got \[2, 3\] and \[3, 2\]"),
    ("mse shapes", lambda: ops.mse_loss(ones(2, 3), ones(6)),
     ValueError, r"mse_loss: shapes must match, got \[2, 3\] and \[6\]"),
    ("mse_backward shapes", lambda: ops.mse_loss_backward(ones(2, 3), ones(3, 2)), ValueError, r"shapes must match"),
    ("pixel_shuffle channels", lambda: ops.pixel_shuffle(ones(1, 3, 2, 2), 2), ValueError,
     r"3 channels are not divisible by r\*r = 4"),
    ("pixel_shuffle_backward size", lambda: ops.pixel_shuffle_backward(ones(1, 1, 3, 4), 2), ValueError,
     r"\[N, C, H\*r, W\*r\] with r = 2, got shape \[1, 1, 3, 4\]"),
    ("add shapes", lambda: ops.add(ones(2, 3), ones(3, 2)),
     ValueError, r"add: shapes must match, got \[2, 3\] and \[3, 2\]"),
    ("sgd shapes", lambda: ops.sgd_update(ones(3), ones(4), lr=0.1),
     ValueError, r"shapes must match, got \[3\] and \[4\]"),
    ("sgd velocity shape", lambda: ops.sgd_update(ones(3), ones(3), ones(4), lr=0.1, momentum=0.9), ValueError,
     r"shapes must match, got \[3\] and \[4\]"),
    ("adam v shape", lambda: ops.adam_update(ones(3), ones(3), ones(3), ones(2, 2), 1), ValueError,
     r"shapes must match, got \[3\] and \[2, 2\]"),
    ("layer channels", lambda: nn.Conv2d(3, 4, 3)(X), ValueError, r"input has 2 channels but the weight expects 3"),
    ("layer backward dy shape", lambda: _trained_conv().backward(ones(1, 3, 4, 3)), ValueError,
     r"must have shape \[1, 3, 3, 3\], got \[1, 3, 4, 3\]"),
    ("relu layer backward shape", lambda: _trained_relu().backward(ones(3, 2), True), ValueError,
     r"shapes must match, got \[2, 3\] and \[3, 2\]"),
    ("PixelShuffle layer channels", lambda: nn.PixelShuffle(2)(ones(1, 3, 2, 2)), ValueError,
     r"3 channels are not divisible by r\*r = 4"),
    ("Sequential mismatch forward", lambda: _srcnn_mismatch()(ones(1, 1, 8, 8)), ValueError,
     r"input has 4 channels but the weight expects 3"),
    ("Sequential mismatch summary", lambda: _srcnn_mismatch().summary((1, 1, 8, 8), print_fn=None), ValueError,
     r"input has 4 channels but the weight expects 3"),
    ("parameter shape", lambda: setattr(nn.Conv2d(2, 3, 3), "weight", ones(3, 2, 3)), ValueError,
     r"expected shape \[3, 2, 3, 3\], got \[3, 2, 3\]"),
    # --- options (ValueError) ---
    ("padding count", lambda: ops.conv2d(X, W, padding=(1, 1, 1)), ValueError,
     r"padding needs 1 or 2 values for a 2-D convolution, got 3"),
    ("padding count 3d", lambda: ops.conv3d(X3, W3, padding=(1, 1)), ValueError, r"padding needs 1 or 3 values.*got 2"),
    ("padding negative", lambda: ops.conv2d(X, W, padding=-1), ValueError, r"padding must be >= 0.*pad=0,-1,-1"),
    ("padding_mode", lambda: ops.conv2d(X, W, padding_mode="reflect"), ValueError,
     r"padding_mode must be 'zeros' or 'replicate', got 'reflect'"),
    ("algo", lambda: ops.conv2d(X, W, algo="fast"), ValueError, r"'auto', 'direct', 'direct_async', 'implicit_gemm', 'gemm', 'auto_direct' or 'winograd', got 'fast'"),
    ("pixel_shuffle r=0", lambda: ops.pixel_shuffle(ones(1, 4, 2, 2), 0),
     ValueError, r"upscale factor must be in \[1, 46340\], got 0"),
    # r*r wraps to 0 in 64 bits: the check must come before any arithmetic with r (it was a SIGFPE).
    ("pixel_shuffle r=2^32", lambda: ops.pixel_shuffle(ones(1, 4, 2, 2), 2**32),
     ValueError, r"upscale factor must be in \[1, 46340\], got 4294967296"),
    ("pixel_shuffle_backward r=0", lambda: ops.pixel_shuffle_backward(ones(1, 4, 2, 2), 0), ValueError,
     r"in \[1, 46340\], got 0"),
    ("pixel_shuffle_backward r=2^32", lambda: ops.pixel_shuffle_backward(ones(1, 4, 2, 2), 2**32), ValueError,
     r"in \[1, 46340\], got 4294967296"),
    ("sgd momentum without velocity", lambda: ops.sgd_update(ones(3), ones(3), None, lr=0.1, momentum=0.9),
     ValueError, r"velocity"),
    ("adam step 0", lambda: ops.adam_update(ones(3), ones(3), ones(3), ones(3), 0), ValueError,
     r"step must be >= 1, got 0"),
    ("Conv2d channels 0", lambda: nn.Conv2d(0, 4, 3), ValueError, r"channel counts must be >= 1, got 0 -> 4"),
    ("Conv2d kernel rank", lambda: nn.Conv2d(3, 4, (3, 3, 3)), ValueError, r"Conv2d: kernel needs 1 or 2 sizes, got 3"),
    ("Conv3d kernel rank", lambda: nn.Conv3d(3, 4, (3, 3)), ValueError, r"Conv3d: kernel needs 1 or 3 sizes, got 2"),
    ("Conv2d padding count", lambda: nn.Conv2d(3, 4, 3, padding=(1, 1, 1)),
     ValueError, r"padding needs 1 or 2 values, got 3"),
    ("Conv2d padding_mode", lambda: nn.Conv2d(3, 4, 3, padding_mode="circular"), ValueError, r"got 'circular'"),
    ("Conv2d same even", lambda: nn.Conv2d(3, 4, 2, padding="same"), ValueError, r"odd kernel sizes, got \[2, 2\]"),
    ("Conv2d padding word", lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError, r"got 'full'"),
    ("Conv algo", lambda: setattr(nn.Conv2d(1, 1, 1), "algo", "fft"), ValueError, r"got 'fft'"),
    ("no bias", lambda: setattr(nn.Conv2d(1, 1, 1, bias=False), "bias", ones(1)), ValueError, r"no bias"),
    ("PixelShuffle 0", lambda: nn.PixelShuffle(0), ValueError, r"upscale factor must be in \[1, 46340\], got 0"),
    ("PixelShuffle 3*2^32", lambda: nn.PixelShuffle(3 * 2**32), ValueError, r"in \[1, 46340\], got 12884901888"),
    ("Sequential empty", lambda: nn.Sequential()(X), ValueError, r"the model has no layers"),
    ("Sequential pair types", lambda: nn.Sequential(("a", 3)), TypeError,
     r"a \(name, layer\) pair needs a str and a layer, got \(str, int\)"),
    ("Sequential layer twice", lambda: (lambda r: nn.Sequential(("a", r), ("b", r)))(nn.ReLU()), ValueError,
     r"the layer is in the network already; each layer can be used once"),
    ("Sequential in itself", lambda: (lambda s: s.add(s, "me"))(nn.Sequential(("a", nn.ReLU()))), ValueError,
     r"a network cannot contain itself"),
    ("Sequential float index", lambda: _srcnn_mismatch()[1.5], TypeError, r"layer names or integers, got float"),
    ("save_safetensors metadata", lambda: magmasr._core.save_safetensors("unused.safetensors", {"a": ones(2)},
                                                                         {"k": 3}),
     TypeError, r"metadata must map str -> str, got str -> int"),
    ("Conv2d kernel bool", lambda: nn.Conv2d(1, 1, True), TypeError, r"kernel_size: expected a sequence of integers"),
    ("Sequential name", lambda: nn.Sequential().add(nn.ReLU(), "a b"),
     ValueError, r"letters, digits and '_', got 'a b'"),
    ("Sequential unknown", lambda: _srcnn_mismatch()["conv9"],
     ValueError, r"no layer named 'conv9' \(layers: conv1, relu, conv2\)"),
    ("backward before forward", lambda: nn.Conv2d(2, 3, 3).backward(ones(1, 3, 3, 3)), ValueError,
     r"Conv2d.backward\(\) needs a forward\(x, training=True\) first"),
    ("backward after inference forward", lambda: (lambda c: (c(X), c.backward(ones(1, 3, 3, 3))))(nn.Conv2d(2, 3, 3)),
     ValueError, r"needs a forward\(x, training=True\) first"),
    ("ReLU backward before forward", lambda: nn.ReLU().backward(ones(3)), ValueError, r"needs a forward"),
    ("FoldDepth backward before forward", lambda: nn.FoldDepth().backward(ones(1, 2, 2, 2), True), ValueError,
     r"needs a forward"),
    ("SGD lr", lambda: optim.SGD(nn.Conv2d(1, 1, 1), lr=-1), ValueError, r"lr must be >= 0 and finite, got -1"),
    ("SGD momentum", lambda: optim.SGD(nn.Conv2d(1, 1, 1), lr=0.1, momentum=1.0), ValueError,
     r"momentum must be in \[0, 1\), got 1"),
    ("SGD weight_decay", lambda: optim.SGD(nn.Conv2d(1, 1, 1), lr=0.1, weight_decay=-0.5), ValueError,
     r"weight_decay must be >= 0, got -0.5"),
    ("SGD nesterov", lambda: optim.SGD(nn.Conv2d(1, 1, 1), lr=0.1, nesterov=True),
     ValueError, r"nesterov needs a momentum > 0"),
    ("SGD no params", lambda: optim.SGD([], lr=0.1), ValueError, r"no parameters"),
    ("SGD relu", lambda: optim.SGD(nn.ReLU(), lr=0.1), ValueError, r"no parameters"),
    ("Adam betas", lambda: optim.Adam(nn.Conv2d(1, 1, 1), betas=(1.0, 0.9)),
     ValueError, r"betas must be in \[0, 1\), got 1, 0.9"),
    ("Adam eps", lambda: optim.Adam(nn.Conv2d(1, 1, 1), eps=0.0), ValueError, r"eps must be > 0, got 0"),
    ("Adam lr", lambda: optim.Adam(nn.Conv2d(1, 1, 1), lr=-1e-3), ValueError, r"lr must be >= 0 and finite, got -0.001"),
    ("set_lr base", lambda: optim.set_lr(nn.Conv2d(1, 1, 1), 0.1, base_lr=0),
     ValueError, r"base_lr must be > 0, got 0"),
    ("load_state_dict shape", lambda: nn.load_state_dict(nn.Sequential(("c", nn.Conv2d(1, 2, 3))),
                                                         {"c.weight": ones(2, 1, 3), "c.bias": ones(2)}),
     ValueError, r"mis-shaped keys: c.weight \(expected \[2, 1, 3, 3\], got \[2, 1, 3\]\)"),
    ("load_state_dict missing", lambda: nn.load_state_dict(nn.Sequential(("c", nn.Conv2d(1, 2, 3))),
                                                           {"c.bias": ones(2)}),
     KeyError, r"missing keys: c.weight$"),
    # --- devices: 'gpu' is no device (ValueError), CUDA without a GPU is a RuntimeError mentioning CUDA ---
    ("Device gpu", lambda: magmasr.Device("gpu"), ValueError, r"'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ("Device cuda:x", lambda: magmasr.Device("cuda:x"), ValueError, r"got 'cuda:x'"),
    ("Device cuda:-1", lambda: magmasr.Device("cuda:-1"), ValueError, r"got 'cuda:-1'"),
    ("zeros gpu", lambda: magmasr.zeros((2,), device="gpu"), ValueError, r"got 'gpu'"),
    ("tensor.to gpu", lambda: magmasr.zeros((2,)).to("gpu"), ValueError, r"got 'gpu'"),
    ("layer.to gpu", lambda: nn.Conv2d(1, 1, 1).to("gpu"), ValueError, r"got 'gpu'"),
]

NO_GPU_CASES = [
    ("zeros cuda", lambda: magmasr.zeros((2,), device="cuda")),
    ("empty cuda:1", lambda: magmasr.empty((2,), device="cuda:1")),
    ("full cuda", lambda: magmasr.full((2,), 1.0, device=magmasr.Device("cuda"))),
    ("tensor cuda", lambda: magmasr.tensor([1.0, 2.0], device="cuda")),
    ("tensor.to cuda", lambda: magmasr.zeros((2,)).to("cuda")),
    ("tensor.cuda()", lambda: magmasr.zeros((2,)).cuda()),
    ("layer.to cuda", lambda: nn.Conv2d(1, 1, 1).to("cuda")),
    ("sequential.to cuda", lambda: nn.Sequential(nn.Conv2d(1, 1, 1)).to("cuda:0")),
    ("cuda.memory_stats", lambda: magmasr.cuda.memory_stats()),
    ("cuda.device_name", lambda: magmasr.cuda.device_name()),
    ("cuda.empty_cache", lambda: magmasr.cuda.empty_cache()),
    ("cuda.synchronize", lambda: magmasr.cuda.synchronize()),
]


def test_numpy_integers_are_integers():
    conv = nn.Conv2d(1, 1, np.int64(3), padding=np.int32(1))
    assert conv.weight.shape == (1, 1, 3, 3)
    assert nn.Conv3d(1, 1, (np.int64(3), 1, np.uint8(3))).weight.shape == (1, 1, 3, 1, 3)
    dy, w = ones(1, 1, 8, 8), ones(1, 1, 3, 3)
    dx = ops.conv2d_backward_data(dy, w, np.array([1, 1, 8, 8]), padding=np.int64(1))
    assert tuple(dx.shape) == (1, 1, 8, 8)
    assert tuple(magmasr.from_numpy(ones(2, 3)).reshape(np.int64(6)).shape) == (6,)
    assert tuple(magmasr.from_numpy(ones(2, 3)).reshape(np.int64(3), 2).shape) == (3, 2)
    model = _srcnn_mismatch()
    assert model[np.int64(0)] is model[0] and model[np.int64(-1)] is model[len(model) - 1]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_exception(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("call", [c[1] for c in NO_GPU_CASES], ids=[c[0] for c in NO_GPU_CASES])
def test_cuda_without_a_gpu_is_a_runtime_error_mentioning_cuda(call):
    if magmasr.cuda_available():
        pytest.skip("a GPU is available here")
    with pytest.raises(RuntimeError, match=r"(?i)cuda"):
        call()


def test_no_gpu_state_is_reported_without_raising():
    if magmasr.cuda_available():
        pytest.skip("a GPU is available here")
    assert magmasr.cuda_available() is False
    assert magmasr.cuda.is_available() is False
    assert magmasr.cuda_device_count() == 0 == magmasr.cuda.device_count()
    assert isinstance(magmasr.cuda_compiled(), bool)
    info = magmasr.build_info()
    assert info["cuda_available"] is False and info["cuda_device_count"] == 0
    # A Device object for CUDA can be named (it exists in every build); only using it raises.
    d = magmasr.Device("cuda:1")
    assert (d.type, d.index, str(d)) == ("cuda", 1, "cuda:1")


def test_errors_leave_inputs_and_layers_usable():
    # A failed call must not corrupt anything: the same objects work right after.
    conv = nn.Conv2d(2, 3, 3)
    with pytest.raises(ValueError):
        conv(ones(1, 3, 5, 5))
    y = np.asarray(conv(X))
    assert y.shape == (1, 3, 3, 3) and np.all(np.isfinite(y))
    opt = optim.SGD(conv, lr=0.1)
    conv.forward(X, training=True)
    with pytest.raises(ValueError):
        conv.backward(ones(1, 3, 2, 2))
    conv.backward(ones(1, 3, 3, 3))
    opt.step()


# ---------------------------------------------------------------------------------------------------
# Never a crash: random arrays of random dtypes, layouts and shapes into the ops
# ---------------------------------------------------------------------------------------------------

_dtypes = st.sampled_from([np.float32, np.float32, np.float32, np.float64, np.int32, np.uint8, np.float16])
_arrays = st.builds(
    lambda dtype, shape, fortran: (np.asfortranarray if fortran else np.ascontiguousarray)(np.ones(shape, dtype)),
    _dtypes, hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=4), st.booleans())


@given(x=_arrays, w=_arrays, padding=st.one_of(st.integers(-2, 3), st.lists(st.integers(-1, 3), max_size=4)),
       mode=st.sampled_from(["zeros", "replicate", "bad"]))
def test_fuzzed_convolution_arguments_never_crash(x, w, padding, mode):
    for fn in (ops.conv2d, ops.conv3d):
        try:
            y = np.asarray(fn(x, w, padding=padding, padding_mode=mode))
        except (TypeError, ValueError):
            continue
        assert np.all(np.isfinite(y))  # ones in, finite numbers out
    for fn, sd in ((ops.conv2d_backward_data, 2), (ops.conv3d_backward_data, 3)):
        try:
            fn(x, w, x.shape if x.ndim == sd + 2 else (1,) * (sd + 2), padding=padding, padding_mode=mode)
        except (TypeError, ValueError):
            pass
    for fn in (ops.conv2d_backward_weight, ops.conv3d_backward_weight):
        try:
            fn(x, x, w.shape, padding=padding, padding_mode=mode)
        except (TypeError, ValueError):
            pass


@given(a=_arrays, b=_arrays, r=st.integers(-1, 3))
def test_fuzzed_elementwise_arguments_never_crash(a, b, r):
    calls = [
        lambda: ops.relu(a), lambda: ops.relu_backward(a, b), lambda: ops.mse_loss(a, b),
        lambda: ops.mse_loss_backward(a, b), lambda: ops.pixel_shuffle(a, r), lambda: ops.pixel_shuffle_backward(a, r),
        lambda: ops.add(a, b), lambda: ops.scale(a, 2.0), lambda: ops.sgd_update(a, b, lr=0.1),
        lambda: ops.adam_update(a, b, np.zeros_like(a), np.zeros_like(a), r),
        lambda: magmasr.from_numpy(a), lambda: magmasr.from_dlpack(a),
    ]
    for call in calls:
        try:
            call()
        except (TypeError, ValueError, BufferError):
            pass


# ---------------------------------------------------------------------------------------------------
# Library bugs found by these tests (xfail strict: they turn into failures once fixed, then drop the mark)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 4)])
def test_from_dlpack_of_an_empty_array_is_a_value_error(shape):
    with pytest.raises(ValueError, match=r"non-empty"):
        magmasr.from_dlpack(np.zeros(shape, F32))


@pytest.mark.parametrize("make", [
    lambda: __import__("pickle").loads(__import__("pickle").dumps(np.ones((1, 1, 4, 4), F32))),
    lambda: np.ones((1, 1, 4, 4), dtype=np.dtype("f4", metadata={"unit": "px"})),
], ids=["unpickled", "metadata"])
def test_every_native_float32_array_is_accepted(make):
    a = make()
    assert a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    np.testing.assert_array_equal(np.asarray(ops.relu(a)), np.maximum(a, 0))
    assert np.shares_memory(np.asarray(magmasr.from_numpy(a)), a)


@pytest.mark.parametrize("make", [
    lambda: magmasr.empty((2**32, 2**32)),
    lambda: magmasr.zeros((1, 4, 2**31, 2**31)),
    # a padding that makes the output 2**32 x 2**32
    lambda: ops.conv2d(ones(1, 1, 4, 4), ones(1, 1, 3, 3), padding=2**31 - 1),
], ids=["empty", "zeros", "conv2d-padding"])
def test_shapes_whose_element_count_overflows_are_refused(make):
    with pytest.raises((ValueError, MemoryError)):
        make()


def test_pixel_shuffle_of_an_overflowing_shape_does_not_crash_the_interpreter():
    code = textwrap.dedent("""
        import magmasr
        try:
            t = magmasr.empty((1, 4, 2**31, 2**31))
            magmasr.ops.pixel_shuffle(t, 2)
        except (ValueError, MemoryError):
            pass
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, f"the interpreter died (return code {proc.returncode}): {proc.stderr[-500:]!r}"


@pytest.mark.parametrize("call,exc,match", [
    (lambda: nn.Conv2d(1, 1, 3, padding=-2), ValueError, r"-2"),
    (lambda: nn.Conv2d(1, 1, (3, 0)), ValueError, r"\b0\b"),
    (lambda: ops.sgd_update(ones(3), ones(3), None, lr=0.1, momentum=0.9), ValueError, r"momentum"),
    (lambda: ops.conv2d(X, W, padding=1.5), TypeError, r"padding"),
    (lambda: nn.Conv2d(1, 1, 3.0), TypeError, r"kernel"),
    (lambda: magmasr.empty(5), TypeError, r"shape"),
], ids=["Conv padding -2", "Conv kernel 0", "sgd velocity None", "ops padding float", "Conv kernel float",
        "empty int shape"])
def test_messages_name_the_given_value_and_the_expectation(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------------
# Device mismatches (need a GPU)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_mixed_devices_are_a_runtime_error(gpu):
    xg = magmasr.from_numpy(X.copy()).to(gpu)
    with pytest.raises(RuntimeError, match=r"one device.*cuda:0.*cpu|one device.*cpu.*cuda:0"):
        ops.conv2d(xg, W)
    with pytest.raises(RuntimeError, match=r"one device"):
        ops.add(xg, magmasr.from_numpy(X.copy()))
    with pytest.raises(RuntimeError, match=r"one device"):
        nn.Conv2d(2, 3, 3)(xg)
