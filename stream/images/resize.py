"""Training-size geometry, with img2dataset's meanings for ``--resize-mode`` (so a dataset made
here is interchangeable with one made there):

- ``no``: the picture as it is.
- ``keep_ratio``: scaled so its *shorter* side is N, aspect kept.
- ``center_crop``: as keep_ratio, then the centre N x N cut out.
- ``border``: scaled so its *longer* side is N, then padded with white to N x N, centred.

Scaled sizes round like albumentations' smallest/longest_max_size (Python ``round`` of
side * N / reference side), crops and pads put the odd pixel at the end, as its center_crop and
pad do. Small pictures are scaled up too (img2dataset's default, resize_only_if_bigger off).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is installed with the project
    cv2 = None

__all__ = ["RESIZE_MODES", "Geometry", "geometry", "resize_rgb"]

RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border")
BORDER_VALUE = 255  # img2dataset pads with white


class Geometry(NamedTuple):
    scaled_width: int  # the whole picture after scaling
    scaled_height: int
    width: int  # what is stored
    height: int

    @property
    def unchanged(self) -> bool:
        return (self.scaled_width, self.scaled_height) == (self.width, self.height)


def _scale_to(width: int, height: int, size: int, side: int) -> tuple[int, int]:
    if side == size:
        return width, height
    s = size / side
    return max(1, round(width * s)), max(1, round(height * s))


def geometry(width: int, height: int, size: int | None, mode: str) -> Geometry:
    """Where an upright ``width x height`` picture ends up under ``--resize size --resize-mode mode``."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, not {mode!r}")
    if not size or mode == "no":
        return Geometry(width, height, width, height)
    if mode in ("keep_ratio", "center_crop"):
        sw, sh = _scale_to(width, height, size, min(width, height))
        if mode == "keep_ratio":
            return Geometry(sw, sh, sw, sh)
        return Geometry(sw, sh, size, size)
    sw, sh = _scale_to(width, height, size, max(width, height))
    return Geometry(sw, sh, size, size)


def _scale(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if (w, h) == (width, height):
        return arr
    # img2dataset's interpolations: area to shrink (a true average, no aliasing), Lanczos to grow
    shrink = width <= w and height <= h
    if cv2 is not None:
        return cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    from PIL import Image

    how = Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(arr).resize((width, height), how))


def resize_rgb(arr: np.ndarray, geo: Geometry) -> np.ndarray:
    """Upright (H, W, 3) uint8 pixels -> exactly ``geo.width x geo.height``. ``arr`` may be any
    size (a DCT-scaled decode is a little larger than the scaled size): only ``geo`` decides."""
    scaled = _scale(arr, geo.scaled_width, geo.scaled_height)
    sw, sh, w, h = geo
    if (sw, sh) == (w, h):
        return np.ascontiguousarray(scaled)
    if sw >= w and sh >= h:  # centre crop
        top, left = (sh - h) // 2, (sw - w) // 2
        return np.ascontiguousarray(scaled[top:top + h, left:left + w])
    out = np.full((h, w, 3), BORDER_VALUE, dtype=np.uint8)
    top, left = (h - sh) // 2, (w - sw) // 2
    out[top:top + sh, left:left + sw] = scaled
    return out
