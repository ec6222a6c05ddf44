"""Layers. Each layer runs ``forward(x, training=False)`` (also as ``layer(x)``) and, after a forward
with ``training=True``, ``backward(grad_output, need_input_grad=False)``, which fills its parameters'
``grad``. A layer with ``trainable = False`` is frozen: it computes no weight gradient, and a Sequential
computes no data gradient below its first trainable layer.

Layers: Conv2d, Conv3d (stride 1; ``padding`` int, tuple, 'same' or 'valid'; ``padding_mode`` 'zeros' or
'replicate'), ReLU, PixelShuffle, FoldDepth ([N, C, D, H, W] -> [N, C*D, H, W]), Sequential.
"""
from __future__ import annotations

from typing import Sequence

from ._core.nn import (  # noqa: F401
    Conv,
    Conv2d,
    Conv3d,
    FoldDepth,
    Layer,
    Parameter,
    PixelShuffle,
    ReLU,
    Sequential,
)

#: The convolution strategies a layer's ``algo`` takes (see ``magmasr._core.ops.conv2d``).
CONV_ALGOS = ("auto", "direct", "direct_async", "implicit_gemm", "gemm", "auto_direct", "winograd")


def summary(model: Sequential, input_shape: Sequence[int], print_fn=print) -> str:
    """Prints (and returns) a Keras-style table of the model's layers, output shapes and parameter counts."""
    text = model.summary_str(tuple(input_shape))
    if print_fn is not None:
        print_fn(text)
    return text


def state_dict(model: Layer) -> dict:
    """{qualified name: NumPy copy} of the model's parameters."""
    import numpy as np

    named = model.named_parameters() if hasattr(model, "named_parameters") else [
        (p.name, p) for p in model.parameters()
    ]
    return {name: np.array(p.value.numpy(), copy=True) for name, p in named}


def load_state_dict(model: Layer, state: dict, strict: bool = True) -> None:
    """Copies arrays into the model's parameters, after :func:`magmasr.weights.check_state`: with strict,
    missing and unexpected keys raise a ``KeyError`` (``weights.StateDictError``) whose message names every
    missing, unexpected and mis-shaped key at once; mis-shaped keys alone raise a ``ValueError``; with
    ``strict=False`` the matching keys are loaded and the rest left as they are."""
    from .weights import check_state

    named = dict(model.named_parameters()) if hasattr(model, "named_parameters") else {
        p.name: p for p in model.parameters()
    }
    check_state({k: tuple(p.shape) for k, p in named.items()}, state, strict=strict)
    for k, p in named.items():
        if k in state:
            p.value = state[k]


Sequential.summary = summary  # model.summary(input_shape)
Sequential.state_dict = state_dict
Sequential.load_state_dict = load_state_dict
