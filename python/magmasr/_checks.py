"""Argument checks shared by the Python modules."""
from __future__ import annotations

import numbers
import operator


def as_int(value, name: str, fn: str, minimum: int | None = None) -> int:
    """``value`` as a Python int: an int, a NumPy integer or a float with an integral value (``3.0``).

    Raises:
        TypeError: for anything else that is not a number (a string, None, an array).
        ValueError: for a fractional or non-finite float (``2.5`` is not silently truncated to 2), or a value
            below ``minimum``.
    """
    if isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be an integer, got {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        if not isinstance(value, numbers.Real):
            raise TypeError(f"{fn}: {name} must be an integer, got {value!r} ({type(value).__name__})") from None
        f = float(value)
        if not f.is_integer():
            raise ValueError(f"{fn}: {name} must be an integer, got {value!r}") from None
        result = int(f)
    if minimum is not None and result < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {result}")
    return result
