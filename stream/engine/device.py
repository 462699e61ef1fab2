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
        return f"CuPy is not installed or does not load ({type(e).__name__}: {_first_line(e)}); install curastream[gpu]"
    try:
        import cupy

        if not cupy.cuda.is_available():
            return "no CUDA device is visible (cupy.cuda.is_available() is False; is the NVIDIA driver loaded?)"
    except Exception as e:
        return f"the CUDA runtime failed to start ({type(e).__name__}: {_first_line(e)})"
    return None


def _first_line(e: BaseException) -> str:
    # PyNvVideoCodec appends a multi-line troubleshooting essay to its import error; the run
    # reports one line.
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _module_problem(modules: tuple[str, ...]) -> str | None:
    """Why one of ``modules`` (what a medium's GPU path imports) does not load, or None."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # PyNvVideoCodec raises RuntimeError without a driver
            return f"{name} is not installed or does not load ({type(e).__name__}: {_first_line(e)}); install curastream[gpu]"
    return None


def resolve_device(requested: str = "auto", needs: tuple[str, ...] = ()) -> Device:
    """The run's device. ``needs``: modules the GPU path of the caller imports besides CuPy
    (videos: PyNvVideoCodec); ``gpu`` without any of them is a DeviceError naming it, ``auto``
    falls back to the CPU and says why in the log."""
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return Device("cpu", None)
    problem = _cuda_problem() or _module_problem(tuple(needs))
    if problem is None:
        return Device("gpu", 0)
    if requested == "gpu":
        raise DeviceError(f"--device gpu was asked for, but {problem}")
    log.info("device auto: running on CPU (no usable GPU: %s)", problem)
    return Device("cpu", None)


def array_module(device: Device | str = "cpu") -> types.ModuleType:
    kind = device.kind if isinstance(device, Device) else device
    if kind == "gpu":
        import cupy

        return cupy
    import numpy

    return numpy
