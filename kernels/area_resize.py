"""Exact area-average downscale of uint8 images: every output pixel is the mean of the source
area it covers, rounded half up.

``area_resize`` runs the C kernel in ``area_resize.c`` (built with the package; it releases the
GIL) and falls back to ``area_resize_reference``, the same integer arithmetic in NumPy, when
the extension is missing: both give identical pixels, so results do not depend on the build.
OpenCV's INTER_AREA computes the same means in float and rounds some ties the other way.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    from curastream.kernels import _area_resize
except ImportError:  # pragma: no cover - the extension is optional at install time
    _area_resize = None

__all__ = ["HAVE_C_KERNEL", "area_resize", "area_resize_reference"]

HAVE_C_KERNEL = _area_resize is not None


@functools.lru_cache(maxsize=64)
def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) integer overlap of output cell i, [i*n_in, (i+1)*n_in), with source cell x,
    [x*n_out, (x+1)*n_out) (coordinates scaled by n_in * n_out). Each row sums to n_in."""
    i = np.arange(n_out, dtype=np.int64)[:, None]
    x = np.arange(n_in, dtype=np.int64)[None, :]
    lo = np.maximum(i * n_in, x * n_out)
    hi = np.minimum((i + 1) * n_in, (x + 1) * n_out)
    return np.maximum(hi - lo, 0)


def area_resize_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """NumPy version of the C kernel. Integer sums are exact in float64 below 2**53, far above
    255 * H * W for any image we accept."""
    h, w, _ = _check(img, out_h, out_w)
    ay = area_weights(h, out_h).astype(np.float64)
    ax = area_weights(w, out_w).astype(np.float64)
    planes = img.astype(np.float64).transpose(2, 0, 1)  # (c, h, w)
    sums = ay @ planes @ ax.T  # (c, out_h, out_w), exact integers
    area = float(h) * float(w)
    out = np.floor((2.0 * sums + area) / (2.0 * area))
    return np.ascontiguousarray(out.transpose(1, 2, 0)).astype(np.uint8)


def area_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 -> (out_h, out_w[, C]) uint8, with out_h <= H and out_w <= W."""
    squeeze = img.ndim == 2
    h, w, c = _check(img[..., None] if squeeze else img, out_h, out_w)
    # The kernel's rounding is exact up to 2**30 pixels (see area_resize.c), far above any
    # image the pipeline accepts; beyond that the reference gives the same pixels.
    if _area_resize is None or h * w > 1 << 30:
        out = area_resize_reference(img[..., None] if squeeze else img, out_h, out_w)
    else:
        out = np.empty((out_h, out_w, c), np.uint8)
        _area_resize.area_resize(np.ascontiguousarray(img), h, w, c, out, out_h, out_w)
    return out[..., 0] if squeeze else out


def _check(img: np.ndarray, out_h: int, out_w: int) -> tuple[int, int, int]:
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected (H, W, C) uint8 pixels, got {img.dtype} {img.shape}")
    h, w, c = img.shape
    if not (1 <= out_h <= h and 1 <= out_w <= w):
        raise ValueError(f"area_resize only shrinks: {w}x{h} -> {out_w}x{out_h}")
    return h, w, c
