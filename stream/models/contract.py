"""What a model declares, and the one way the stages run it.

A model says what pixels it takes (:class:`ModelInput`: size, colour, frames per clip, batch
size), which devices it can use and which float columns it adds. The stages give it uint8
pixels already at its declared size and colour (:func:`prepare`), in batches of its declared
size (:func:`run_batched`); a batch that fails is retried one item at a time so that only the
item at fault is rejected, with the model's own message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from curastream.engine.device import Device

try:
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is a base dependency
    cv2 = None

COLOURS = ("rgb", "bgr")
CLIP_REDUCTIONS = ("max", "mean")
MODELS_EXTRA = "pip install 'curastream[models]'"


class ModelError(ValueError):
    """A model cannot be named, loaded or run as declared; the message says which and why."""


class MissingExtraError(ModelError):
    """A model needs packages of the ``[models]`` extra that are not installed."""

    def __init__(self, model: str, err: BaseException):
        super().__init__(f"model {model!r} needs the models extra ({err}): {MODELS_EXTRA}")


@dataclass(frozen=True)
class ModelInput:
    """The pixels a model takes. ``size`` is (height, width), None for any size (no resize)."""

    size: tuple[int, int] | None = (224, 224)
    colour: str = "rgb"
    # Clips: the most sampled frames (one a second) a clip hands the model; None = all of them.
    frames_per_clip: int | None = 8
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ModelError(f"colour must be one of {COLOURS}, got {self.colour!r}")
        if self.batch_size < 1:
            raise ModelError(f"batch_size must be >= 1, got {self.batch_size}")


@runtime_checkable
class Model(Protocol):
    """A scorer the stages can run. ``load`` is called once per stage, in the stage's thread,
    before the first ``predict``; ``predict`` takes uint8 [N, H, W, 3] at ``input.size`` and
    returns one length-N float array per name in ``outputs``."""

    name: str
    input: ModelInput
    outputs: tuple[str, ...]
    devices: tuple[str, ...]  # "cpu", "gpu": where it can run
    clip_reduce: str  # how a clip's per-frame scores become the clip's: "max" or "mean"

    def load(self, device: Device) -> None: ...

    def predict(self, pixels: np.ndarray) -> Mapping[str, np.ndarray]: ...


def require_modules(*names: str) -> None:
    """Raise ImportError (naming the module) when one is not installed, without importing it:
    a model asked for without the extra fails when it is named, not at the first item."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def check_model(model: Any, origin: str) -> Model:
    """``model`` as a Model, or a ModelError naming what it lacks and where it came from."""
    missing = [a for a in ("name", "input", "outputs", "load", "predict") if not hasattr(model, a)]
    if missing:
        raise ModelError(f"{origin} made {type(model).__name__}, which lacks {', '.join(missing)}")
    if not isinstance(model.input, ModelInput):
        raise ModelError(f"{origin}: input must be a ModelInput, got {type(model.input).__name__}")
    if not model.outputs or not all(isinstance(c, str) and c.isidentifier() for c in model.outputs):
        raise ModelError(f"{origin}: outputs must be column names, got {model.outputs!r}")
    if getattr(model, "clip_reduce", "mean") not in CLIP_REDUCTIONS:
        raise ModelError(f"{origin}: clip_reduce must be one of {CLIP_REDUCTIONS}")
    return model


def model_device(model: Model, device: Device) -> Device:
    """The run's device when the model can use it, else the CPU (a CPU-only model on a GPU run)."""
    devices = getattr(model, "devices", ("cpu",))
    if device.is_gpu and "gpu" in devices:
        return device
    if "cpu" not in devices:
        raise ModelError(f"model {model.name!r} runs only on {', '.join(devices)}; the run's device is {device.kind}")
    return Device("cpu", None)


def prepare(pixels: np.ndarray, spec: ModelInput) -> np.ndarray:
    """One uint8 HxWx3 RGB image as the model declares it: resized (area) and in its colour order."""
    img = np.asarray(pixels)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ModelError(f"pixels must be uint8 HxWx3, got {img.dtype} {img.shape}")
    if spec.size is not None and img.shape[:2] != tuple(spec.size):
        h, w = spec.size
        if cv2 is None:  # pragma: no cover
            raise ModelError("resizing for a model needs opencv-python-headless")
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    if spec.colour == "bgr":
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def _predict(model: Model, stack: np.ndarray) -> dict[str, np.ndarray]:
    out = model.predict(stack)
    res = {}
    for name in model.outputs:
        if name not in out:
            raise ModelError(f"model {model.name!r} returned no {name!r} (it declares {list(model.outputs)})")
        v = np.asarray(out[name], dtype=np.float64).reshape(-1)
        if len(v) != len(stack):
            raise ModelError(f"model {model.name!r} returned {len(v)} {name!r} values for {len(stack)} inputs")
        res[name] = v
    return res


def error_text(model: Model, err: BaseException) -> str:
    """A reject reason that keeps the model's own message."""
    return f"{model.name}: {type(err).__name__}: {err}"


def run_batched(model: Model, images: Sequence[np.ndarray | None]) -> tuple[dict[str, list], dict[int, str]]:
    """Scores for every image that is not None, in batches of the model's size.

    Returns ``(columns, errors)``: each output as a list aligned with ``images`` (None where
    there is no score) and, per failed index, the reason. A failing batch is run again one item
    at a time, so one bad item costs only itself.
    """
    cols: dict[str, list] = {name: [None] * len(images) for name in model.outputs}
    errors: dict[int, str] = {}
    todo = [i for i, x in enumerate(images) if x is not None]
    n = model.input.batch_size
    for lo in range(0, len(todo), n):
        idx = todo[lo:lo + n]
        try:
            _fill(cols, idx, _predict(model, np.stack([prepare(images[i], model.input) for i in idx])))
            continue
        except Exception as err:  # noqa: BLE001 - find the item at fault: one at a time
            if len(idx) == 1:
                errors[idx[0]] = error_text(model, err)
                continue
        for i in idx:
            try:
                _fill(cols, [i], _predict(model, prepare(images[i], model.input)[None]))
            except Exception as err:  # noqa: BLE001 - that item's reject, in the model's words
                errors[i] = error_text(model, err)
    return cols, errors


def _fill(cols: dict[str, list], idx: list[int], out: dict[str, np.ndarray]) -> None:
    for name, v in out.items():
        for j, i in enumerate(idx):
            cols[name][i] = float(v[j])


def clip_scores(model: Model, frames: Sequence[np.ndarray]) -> dict[str, float]:
    """A clip's scores: the model over up to ``frames_per_clip`` of its sampled frames (spread
    evenly), reduced by the model's ``clip_reduce``. Raises with the model's message."""
    k = model.input.frames_per_clip
    if k is not None and len(frames) > k:
        frames = [frames[int(j)] for j in np.linspace(0, len(frames) - 1, k).round()]
    cols, errors = run_batched(model, list(frames))
    if errors:
        raise ModelError(next(iter(errors.values())))
    reduce = np.max if getattr(model, "clip_reduce", "mean") == "max" else np.mean
    return {name: float(reduce(np.asarray(v, np.float64))) for name, v in cols.items()}
