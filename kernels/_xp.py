"""NumPy/CuPy dispatch: the array module of an array and a host (NumPy) copy of it, without
importing CuPy on CPU machines.
"""

from __future__ import annotations

import sys
import types

import numpy as np


def get_xp(arr) -> types.ModuleType:
    # Only consult CuPy when it is already imported: a NumPy caller never pays its import.
    cp = sys.modules.get("cupy")
    if cp is not None and isinstance(arr, cp.ndarray):
        return cp
    return np


def to_host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
