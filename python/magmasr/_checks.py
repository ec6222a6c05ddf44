"""Argument checks shared by the Python modules."""
from __future__ import annotations

import math
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


def as_float(value, name: str, fn: str, minimum: float | None = None, exclusive: bool = False) -> float:
    """``value`` as a finite Python float: an int, a float or a NumPy number (not a string or a bool).

    Raises:
        TypeError: for anything that is not a real number.
        ValueError: for NaN or an infinity, or a value below ``minimum`` (or equal to it with ``exclusive``);
            the message reads "{fn}: {name} must be a finite number > minimum" (or ">=").
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum:g}"
    if not math.isfinite(v) or (minimum is not None and (v < minimum or (exclusive and v == minimum))):
        raise ValueError(f"{fn}: {name} must be a finite number{bound}, got {v:g}")
    return v
