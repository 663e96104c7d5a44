"""Argument checks shared by the public indicator functions: 1-D float64 arrays, integer lengths."""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ParameterError


def _as_float_array(x: object, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if arr.ndim != 1:
        raise ParameterError(f"{name} must be a 1-D array, got {arr.ndim} dimensions")
    return arr


def _as_length(value: object, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        ivalue = int(value)
    else:
        fvalue = float(value)
        if not fvalue.is_integer():
            raise ParameterError(f"{name} must be an integer, got {value!r}")
        ivalue = int(fvalue)
    if ivalue < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {ivalue}")
    return ivalue


def _same_length(n: int, **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ParameterError(f"{name} has {arr.shape[0]} values but close has {n}")
