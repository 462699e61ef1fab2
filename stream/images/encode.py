"""What the writer does with an image's bytes: decide whether the original JPEG may go to the
dataset byte-for-byte (:func:`needs_reencode`) and, when not, encode the decoded pixels as the
baseline 4:2:0 RGB JPEG the SPEC asks for (:func:`encode_jpeg`).
"""

from __future__ import annotations

import numpy as np
import simplejpeg

from curastream.images.cpu_decode import gray_to_rgb
from curastream.images.jpeg import JpegStructure, check_jpeg
from curastream.images.probe import ImageDecodeError, ImageProbe

__all__ = ["encode_jpeg", "needs_reencode"]


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """Baseline JPEG, 4:2:0 (what Curator's Pillow writer produces; simplejpeg's own default
    is 4:4:4, about 1.5x larger at the same quality). Gray input is written as RGB because the
    SPEC requires RGB output."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_jpeg needs uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        arr = gray_to_rgb(arr.reshape(arr.shape[0], arr.shape[1]))
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"encode_jpeg needs (H, W, 3) RGB, got shape {arr.shape}")
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(arr), quality=quality, colorspace="RGB", colorsubsampling="420"
    )


def needs_reencode(probe: ImageProbe, data: bytes, jpeg: JpegStructure | None = None) -> str | None:
    """None when ``data`` may be written unchanged (an 8-bit 3-component YCbCr baseline or
    progressive Huffman JPEG, single frame, nothing before SOI or after EOI); otherwise why not.
    EXIF orientation is no reason: SPEC section 1 allows passing it through. ``jpeg``:
    ``check_jpeg(data)`` when the caller already has it."""
    if probe.format == "MPO" or (probe.format == "JPEG" and probe.n_frames > 1):
        return "mpo"
    if probe.format != "JPEG":
        return "not_jpeg"
    if not data.startswith(b"\xff\xd8"):
        return "junk_before_soi"
    try:
        jpeg = jpeg or check_jpeg(data)
    except ImageDecodeError as e:
        return e.reason  # "corrupt"/"truncated": callers should not have got this far
    hdr, eoi_end = jpeg.header, jpeg.end
    if hdr.precision != 8:
        return f"{hdr.precision}bit"
    ncomp = len(hdr.component_ids)
    if ncomp == 1:
        return "grayscale"
    if ncomp == 4:
        return "cmyk"
    if ncomp != 3 or not hdr.is_ycbcr:
        return "not_ycbcr"
    if hdr.sof not in (0xC0, 0xC1, 0xC2):
        # arithmetic, lossless or hierarchical coding: many readers cannot decode these
        return "unusual_coding"
    # Bytes after EOI (appended archives, vendor trailers) would ride along into the dataset.
    if data[eoi_end:].strip(b"\x00\xff\r\n"):
        return "trailing_data"
    return None
