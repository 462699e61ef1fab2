"""Device selection, resolved once per run, and the array module kernels compute with."""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu")


class DeviceError(RuntimeError):
    """The requested device cannot be used here; the message names what is missing."""


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "gpu"
    device_id: int | None  # CUDA ordinal, None on CPU (what DALI wants for CPU-only)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    @property
    def xp(self) -> types.ModuleType:
        return array_module(self)


def _cuda_problem() -> str | None:
    """Why CUDA is unusable here, or None when a device is available."""
    try:
        import cupy  # noqa: F401  (lazy: the GPU extra is optional)
    except Exception as e:  # ImportError, or a broken CUDA install
        return f"CuPy is not installed or does not load ({type(e).__name__}: {e}); install curastream[gpu]"
    try:
        import cupy

        if not cupy.cuda.is_available():
            return "no CUDA device is visible (cupy.cuda.is_available() is False; is the NVIDIA driver loaded?)"
    except Exception as e:
        return f"the CUDA runtime failed to start ({type(e).__name__}: {e})"
    return None


def resolve_device(requested: str = "auto") -> Device:
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return Device("cpu", None)
    problem = _cuda_problem()
    if problem is None:
        return Device("gpu", 0)
    if requested == "gpu":
        raise DeviceError(f"--device gpu was asked for, but {problem}")
    log.info("no usable GPU (%s); running on CPU", problem)
    return Device("cpu", None)


def array_module(device: Device | str = "cpu") -> types.ModuleType:
    kind = device.kind if isinstance(device, Device) else device
    if kind == "gpu":
        import cupy

        return cupy
    import numpy

    return numpy
