"""magmasr: fast, exact image and video super-resolution.

A C++/CUDA tensor and layer library (SRCNN, 3DSRnet) with NumPy, PyTorch and CuPy interoperability::

    import numpy as np, magmasr
    x = np.random.rand(1, 1, 64, 64).astype(np.float32)
    conv = magmasr.nn.Conv2d(1, 64, 9, padding="same", padding_mode="replicate")
    y = np.asarray(conv(x))            # (1, 64, 64, 64), no copies on the CPU
    magmasr.cuda_available()           # False on a machine without a usable GPU
"""
from __future__ import annotations


def _quiet_idle_threads() -> None:
    # Idle OpenMP workers spin by default; on a machine whose cores are busy with anything else that made a
    # training step up to 17x slower (10 ms -> 170 ms measured on 2 cores). Passive waiting costs a few
    # microseconds per parallel region. Only a default: a value set by the user wins.
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_quiet_idle_threads()

from . import _core  # noqa: E402
from ._core import (  # noqa: E402,F401
    CudaError,
    Device,
    Tensor,
    as_tensor,
    cuda_available,
    cuda_compiled,
    cuda_device_count,
    empty,
    from_dlpack,
    from_numpy,
    full,
    get_num_threads,
    set_num_threads,
    zeros,
)
from . import cuda, nn, ops, optim  # noqa: E402,F401

__version__ = _core.__version__


def tensor(data, device: str | Device = "cpu") -> Tensor:
    """A new float32 tensor holding a copy of `data` (any array-like), on `device`."""
    import numpy as np

    arr = np.array(data, dtype=np.float32, order="C", copy=True)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    return from_numpy(arr).to(device)


def cpu_memory_stats() -> dict:
    """The host block cache: freed host blocks of 1 MiB or more are kept for reuse by the same size, up to `cap`
    bytes (512 MiB, or MAGMASR_CPU_CACHE_MB in the environment before the first tensor; 0 turns it off), so a
    network called again and again does not wait for the system's fresh pages. Keys: held_bytes, blocks, hits,
    misses, cap."""
    return dict(_core._cpu_cache_stats())


def cpu_empty_cache() -> None:
    """Gives the blocks the host block cache holds back to the system (tensors in use are not affected)."""
    _core._cpu_cache_clear()


def build_info() -> dict:
    """How this copy of magmasr was built: version, CUDA backend, devices seen now."""
    return {
        "version": __version__,
        "cuda_compiled": cuda_compiled(),
        "cuda_available": cuda_available(),
        "cuda_device_count": cuda_device_count(),
        "num_threads": get_num_threads(),
    }
