"""Decoding on the CPU to upright uint8 RGB: simplejpeg (libjpeg-turbo's DCT-domain scaling,
which skips most of the IDCT and colour-conversion work) for JPEG, Pillow for everything else
and as the baseline, then EXIF orientation, alpha over white, 16-bit and palette modes, and the
area squash to the fixed-size analysis view.

Truncated data must raise, never decode into grey padding: simplejpeg runs with ``strict=True``,
Pillow runs with its default ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` (we never change that
process-wide switch), and JPEG scans are checked first (``images.jpeg``), because libjpeg
happily decodes a progressive file whose later scans were cut off and replaced by EOI.
"""

from __future__ import annotations

import struct

import numpy as np
import simplejpeg
from PIL import Image

try:
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is installed with the project
    cv2 = None

from curastream.images.jpeg import JpegStructure, check_jpeg_complete
from curastream.images.probe import (
    ImageDecodeError,
    ImageProbe,
    map_pillow_error,
    open_pillow,
    parse_jpeg_header,
)
from curastream.kernels.area_resize import area_resize

__all__ = ["ANALYSIS_SIZE", "decode_at_least", "decode_cpu", "decode_full_rgb"]

# Score kernels and pHash need one fixed shape so they can be batched; a square squash (no crop,
# no letterbox) keeps every pixel of the picture in view, and aspect ratio is recorded separately
# from the probe's width/height.
ANALYSIS_SIZE = 256


# --------------------------------------------------------------------------- pixel helpers


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels -> upright, per the EXIF Orientation tag (same result as Pillow's
    ``ImageOps.exif_transpose``). Returns a view; callers make it contiguous once."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)  # 90 degrees clockwise
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Squash to size x size. Shrinking is a true area average (kernels/area_resize: the exact
    mean of the covered source area, 2-3x faster than OpenCV's INTER_AREA, which computes the
    same means in float): no aliasing to inflate sharpness scores, unlike INTER_LINEAR, which
    samples only 2x2 taps. An axis that must grow (images under 256 px) is interpolated."""
    h, w = arr.shape[:2]
    if h == size and w == size:
        return arr
    if h >= size and w >= size:
        return area_resize(arr, size, size)
    if cv2 is not None:
        return cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BOX))


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite straight (non-premultiplied) alpha over white. White rather than black because
    transparent regions of logos/product shots are meant to sit on a light page, and black would
    read as a dark, high-contrast border to the exposure and sharpness kernels."""
    a = alpha.astype(np.uint16)[..., None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _to_8bit(arr: np.ndarray, full_scale: int) -> np.ndarray:
    """Rescale 0..full_scale to 0..255 with rounding; dropping the low byte by clipping would turn
    every 16-bit image white."""
    a = np.clip(arr.astype(np.int64), 0, full_scale)
    return ((a * 255 + full_scale // 2) // full_scale).astype(np.uint8)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _pillow_to_rgb(im: Image.Image) -> np.ndarray:
    """Loaded Pillow image of any mode -> (H, W, 3) uint8 RGB."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode == "L":
        return gray_to_rgb(np.asarray(im))
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return gray_to_rgb(_to_8bit(np.asarray(im), 65535))
    if mode == "I":
        # 32-bit int mode holds 16-bit samples for PNG/TIFF sources; treat it as 16-bit range.
        return gray_to_rgb(_to_8bit(np.asarray(im), 65535))
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0)
        return gray_to_rgb((np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        mode == "P" and ("transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA")
    ):
        rgba = np.asarray(im.convert("RGBA"))
        return _over_white(rgba[..., :3], rgba[..., 3])
    if mode == "RGBX":
        return np.ascontiguousarray(np.asarray(im)[..., :3])
    if mode in ("1", "P"):
        return np.asarray(im.convert("RGB"))
    # CMYK (naive, like libjpeg-turbo's), YCbCr, LAB, HSV, ...
    return np.asarray(im.convert("RGB"))


def _load_pillow(data: bytes, fmt: str, draft_size: int | None = None) -> np.ndarray:
    im = open_pillow(data, fmt)
    try:
        if draft_size is not None and im.format in ("JPEG", "MPO"):
            # DCT scaling by 1/2, 1/4 or 1/8, never below draft_size on either side.
            im.draft("RGB" if im.mode == "RGB" else None, (draft_size, draft_size))
        try:
            im.load()
            return _pillow_to_rgb(im)
        except ImageDecodeError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as e:
            raise map_pillow_error(e, fmt) from e
    finally:
        im.close()


_UNSUPPORTED_BY_TURBO = ("unsupported", "not supported", "bogus", "improper call")


def _turbo_decode(data: bytes, min_side: int = 0, min_width: int | None = None,
                  min_height: int | None = None) -> np.ndarray | None:
    """simplejpeg decode to RGB; None when libjpeg-turbo cannot handle the colour/coding and
    Pillow should try instead."""
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", strict=True,
            min_height=min_side if min_height is None else min_height,
            min_width=min_side if min_width is None else min_width,
        )
    except ValueError as e:
        msg = str(e)
        low = msg.lower()
        if "premature end" in low or "truncated" in low:
            raise ImageDecodeError("truncated", f"JPEG: {msg}") from e
        if any(s in low for s in _UNSUPPORTED_BY_TURBO):
            return None
        raise ImageDecodeError("corrupt", f"JPEG: {msg}") from e


def _turbo_min_side(probe: ImageProbe, size: int) -> int:
    """min_height/min_width for simplejpeg, which then picks the smallest M/8 scale (M=1..8)
    keeping both sides >= size. Measured per scale on real photos: 5/8, 6/8 and 7/8 decode
    SLOWER than 8/8 (only 1/8..4/8 and 8/8 have fast IDCT paths), but end-to-end (decode + area
    resize) 5/8 still wins and 6/8 ties because they leave fewer pixels to resize; 7/8 loses by
    ~20%, so that band decodes at full size instead."""
    h, w = (probe.height, probe.width) if probe.exif_orientation < 5 else (probe.width, probe.height)
    for m in range(1, 9):
        if -(-h * m // 8) >= size and -(-w * m // 8) >= size:
            return 0 if m == 7 else size
    return size


def _is_jpeg(probe: ImageProbe) -> bool:
    return probe.format in ("JPEG", "MPO")


# --------------------------------------------------------------------------- decoding


def decode_cpu(data: bytes, probe: ImageProbe, size: int = ANALYSIS_SIZE, pillow: bool = False,
               jpeg: JpegStructure | None = None) -> np.ndarray:
    """(size, size, 3) uint8 RGB, upright, squashed (aspect ratio not kept).

    JPEG goes through simplejpeg's DCT-scaled decode, or with ``pillow`` through Pillow's
    draft() scaling (the baseline); other formats always through Pillow. ``jpeg``:
    ``check_jpeg(data)`` when the caller already has it, so the scans are not walked again.
    """
    if _is_jpeg(probe):
        if jpeg is None:
            check_jpeg_complete(data, parse_jpeg_header(data))
        arr = None
        if not pillow:
            arr = _turbo_decode(data, min_side=_turbo_min_side(probe, size))
        if arr is None:
            arr = _load_pillow(data, probe.format, draft_size=size)
    else:
        arr = _load_pillow(data, probe.format)
    out = _orient(_resize(arr, size), probe.exif_orientation)
    return np.ascontiguousarray(out)


def decode_full_rgb(data: bytes, probe: ImageProbe) -> np.ndarray:
    """Full-resolution upright RGB uint8, for re-encoding (first frame of MPO/GIF/animated)."""
    if _is_jpeg(probe):
        check_jpeg_complete(data, parse_jpeg_header(data))
        arr = _turbo_decode(data)
        if arr is None:
            arr = _load_pillow(data, probe.format)
    else:
        arr = _load_pillow(data, probe.format)
    return np.ascontiguousarray(_orient(arr, probe.exif_orientation))


def decode_at_least(data: bytes, probe: ImageProbe, width: int, height: int) -> np.ndarray:
    """Upright RGB uint8 of at least ``width x height`` (upright), for a training-size resize:
    a JPEG decodes at the smallest DCT scale (M/8) that is still that large, so a 12-megapixel
    photo bound for 256 px costs a 1/8-scale decode instead of a full one. Other formats decode
    at full size."""
    if not _is_jpeg(probe):
        return decode_full_rgb(data, probe)
    check_jpeg_complete(data, parse_jpeg_header(data))
    # the file's pixels are stored before the EXIF turn: swap what we ask for on 90-degree turns
    w, h = (width, height) if probe.exif_orientation < 5 else (height, width)
    arr = _turbo_decode(data, min_width=min(w, _stored(probe)[0]), min_height=min(h, _stored(probe)[1]))
    if arr is None:
        arr = _load_pillow(data, probe.format, draft_size=max(w, h))
    return np.ascontiguousarray(_orient(arr, probe.exif_orientation))


def _stored(probe: ImageProbe) -> tuple[int, int]:
    """(width, height) as the file stores them (probe sizes are upright)."""
    return (probe.width, probe.height) if probe.exif_orientation < 5 else (probe.height, probe.width)
