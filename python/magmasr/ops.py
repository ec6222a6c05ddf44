"""Functional ops. Inputs may be magmasr Tensors, float32 C-contiguous NumPy arrays (wrapped without a
copy) or DLPack tensors (PyTorch, CuPy); outputs are Tensors (``np.asarray(out)`` views them on the CPU).

Conventions: convolutions are stride-1 correlations (no kernel flip), NCHW / NCDHW layouts, weights
[out, in, k...]; ``padding`` is the number of samples added on each side of each spatial dimension;
``padding_mode`` is ``'zeros'`` or ``'replicate'`` (the nearest border sample, MATLAB's 'replicate').
``resample_axis`` applies a 1-D resampling table along one axis (a pass of MATLAB's imresize; see
``magmasr.image.imresize_tensor``); a ``ResampleTable`` keeps such a table on a device.
"""
from ._core.ops import (  # noqa: F401
    adam_update,
    add,
    conv2d,
    conv2d_backward_data,
    conv2d_backward_weight,
    conv3d,
    conv3d_backward_data,
    conv3d_backward_weight,
    mse_loss,
    mse_loss_backward,
    pixel_shuffle,
    pixel_shuffle_backward,
    relu,
    relu_backward,
    resample_axis,
    ResampleTable,
    scale,
    sgd_update,
)
