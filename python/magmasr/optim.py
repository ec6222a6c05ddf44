"""Optimizers: SGD (momentum, Nesterov, weight decay) and Adam / AdamW.

Each parameter's learning rate is the optimizer's ``lr`` times the parameter's ``lr_mult``; frozen
parameters (their layer's ``trainable`` is False) and parameters without a gradient are skipped.
``param_groups`` sets ``lr_mult`` PyTorch-style::

    opt = magmasr.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    magmasr.optim.set_lr(model["conv3"], 1e-5, base_lr=1e-4)     # the SRCNN paper's last-layer rate
"""
from __future__ import annotations

from ._core.optim import SGD, Adam, Optimizer  # noqa: F401


def set_lr(layer_or_params, lr: float, *, base_lr: float) -> None:
    """Gives the parameters of a layer (or an iterable of parameters) the rate `lr` under an optimizer
    whose rate is `base_lr`, by setting their ``lr_mult = lr / base_lr``."""
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    params = layer_or_params.parameters() if hasattr(layer_or_params, "parameters") else layer_or_params
    for p in params:
        p.lr_mult = lr / base_lr
