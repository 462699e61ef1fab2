"""What the writer does with an image's bytes: decide whether the original JPEG may go to the
dataset byte-for-byte (:func:`needs_reencode`) and, when not, make the JPEG that goes instead
(:func:`shard_jpeg`): an EXIF-rotated one turned upright losslessly where libjpeg-turbo can,
anything else decoded and encoded as the baseline 4:2:0 RGB JPEG the SPEC asks for
(:func:`encode_jpeg`). With a training size or another format (:class:`EncodeSpec`),
:func:`shard_image` decodes at the smallest DCT scale that still covers the target, resizes
(``images.resize``) and encodes jpg/webp/png.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import simplejpeg

from curastream.images.cpu_decode import decode_at_least, decode_full_rgb, gray_to_rgb
from curastream.images.jpeg import JpegStructure, check_jpeg
from curastream.images.orient import lossless_upright
from curastream.images.probe import ImageDecodeError, ImageProbe
from curastream.images.resize import RESIZE_MODES, geometry, resize_rgb

__all__ = ["ENCODE_FORMATS", "EXIF_ROTATED", "EncodeSpec", "ShardImage", "ShardJpeg", "encode_image", "encode_jpeg",
           "needs_reencode", "shard_image", "shard_jpeg"]

ENCODE_FORMATS = ("jpg", "webp", "png")

# needs_reencode's answer for a JPEG whose only fault is its EXIF rotation: the one case a
# lossless DCT-domain transform can fix.
EXIF_ROTATED = "exif_orientation"


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
    progressive Huffman JPEG, single frame, nothing before SOI or after EOI, upright); otherwise
    why not. :data:`EXIF_ROTATED` comes last, so it means "nothing else is wrong". ``jpeg``:
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
    # SPEC section 1: webdataset's default decoder and plain PIL ignore EXIF, so the stored
    # pixels must be upright and match the recorded width/height.
    if probe.exif_orientation != 1:
        return EXIF_ROTATED
    return None


class ShardJpeg(NamedTuple):
    data: bytes | memoryview
    passthrough: bool  # the original bytes, unchanged
    orientation_fix: str | None  # "lossless" / "reencode" for an EXIF-rotated input, else None


def shard_jpeg(data: bytes | memoryview, probe: ImageProbe, why: str | None, quality: int = 92) -> ShardJpeg:
    """The JPEG to store for one image, given ``why = needs_reencode(...)``. Whatever comes out
    is upright with no Orientation other than 1, its size the probe's upright size."""
    if why is None:
        return ShardJpeg(data, True, None)
    raw = bytes(data)
    rotated = probe.exif_orientation != 1
    if why == EXIF_ROTATED:
        out = lossless_upright(raw, probe.exif_orientation, progressive=probe.is_progressive)
        if out is not None:
            return ShardJpeg(out, False, "lossless")
    # decode_full_rgb applies the orientation to the pixels; encode_jpeg writes no EXIF.
    out = encode_jpeg(decode_full_rgb(raw, probe), quality=quality)
    return ShardJpeg(out, False, "reencode" if rotated else None)


def _rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        arr = gray_to_rgb(arr.reshape(arr.shape[0], arr.shape[1]))
    return np.ascontiguousarray(arr)


def encode_image(rgb: np.ndarray, fmt: str = "jpg", quality: int = 92) -> bytes:
    """``rgb`` as jpg (:func:`encode_jpeg`), webp (lossy, ``quality``) or png (lossless:
    ``quality`` does not apply). No EXIF goes out: the pixels are already upright."""
    if fmt == "jpg":
        return encode_jpeg(rgb, quality)
    if fmt not in ENCODE_FORMATS:
        raise ValueError(f"encode format must be one of {ENCODE_FORMATS}, not {fmt!r}")
    import cv2

    bgr = np.ascontiguousarray(_rgb(rgb)[..., ::-1])
    # PNG level 3: most of level 9's size at a fraction of its time on photos
    params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)] if fmt == "webp" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{fmt}", bgr, params)
    if not ok:
        raise ValueError(f"{fmt} encode failed for a {rgb.shape} image")
    return buf.tobytes()


class EncodeSpec(NamedTuple):
    """What the shard stores: the original (the default), or a training size and/or format."""

    resize: int | None = None
    resize_mode: str = "no"
    format: str = "jpg"
    quality: int = 92

    def check(self) -> "EncodeSpec":
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, not {self.resize_mode!r}")
        if self.format not in ENCODE_FORMATS:
            raise ValueError(f"encode format must be one of {ENCODE_FORMATS}, not {self.format!r}")
        return self


class ShardImage(NamedTuple):
    data: bytes | memoryview
    passthrough: bool
    orientation_fix: str | None
    width: int  # what is stored
    height: int


def shard_image(data: bytes | memoryview, probe: ImageProbe, why: str | None, spec: EncodeSpec) -> ShardImage:
    """The image to store under ``spec``. When the stored geometry equals the original and the
    format is jpg this is :func:`shard_jpeg` (pass-through where allowed); otherwise the
    picture is decoded (DCT-scaled for JPEG), resized to exactly the target and encoded."""
    geo = geometry(probe.width, probe.height, spec.resize, spec.resize_mode)
    if spec.format == "jpg" and geo.unchanged and (geo.width, geo.height) == (probe.width, probe.height):
        j = shard_jpeg(data, probe, why, spec.quality)
        return ShardImage(j.data, j.passthrough, j.orientation_fix, probe.width, probe.height)
    raw = bytes(data)
    pixels = decode_at_least(raw, probe, geo.scaled_width, geo.scaled_height)
    out = resize_rgb(pixels, geo)
    fix = "reencode" if probe.exif_orientation != 1 else None
    return ShardImage(encode_image(out, spec.format, spec.quality), False, fix, out.shape[1], out.shape[0])
