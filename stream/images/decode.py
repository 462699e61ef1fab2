"""Image probing, decoding and re-encoding for the curation pipeline.

Three jobs, kept cheap because every image passes through here:

* ``probe_image`` reads headers only (Pillow's ``open`` is lazy, plus our own JPEG marker walk) so
  decompression bombs and junk are rejected before a single pixel is allocated.
* ``decode_for_analysis`` produces the small, fixed-size RGB view the score kernels and pHash
  work on. For JPEG it uses libjpeg-turbo's DCT-domain scaling (simplejpeg), which skips most of
  the IDCT and colour-conversion work of a full decode.
* ``decode_full_rgb`` / ``encode_jpeg`` / ``needs_reencode`` serve the writer, which passes
  clean JPEGs through byte-for-byte and re-encodes everything else (SPEC section 1).

Every failure surfaces as ``ImageDecodeError`` with a short machine-readable ``reason``.
Truncated data must raise, never decode into grey padding: simplejpeg runs with ``strict=True``,
Pillow runs with its default ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` (we never change that
process-wide switch), and JPEG scan structure is checked by ``_check_jpeg_complete`` because
libjpeg happily decodes a progressive file whose later scans were cut off and replaced by EOI.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import (
    BmpImagePlugin,  # noqa: F401  (imported to register the plugin with Image.OPEN)
    GifImagePlugin,  # noqa: F401
    Image,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
)

try:  # AVIF support depends on how Pillow was built
    from PIL import AvifImagePlugin  # noqa: F401
except ImportError:  # pragma: no cover - depends on the wheel
    pass

try:
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is installed with the project
    cv2 = None

from curastream.kernels.area_resize import area_resize

__all__ = [
    "ANALYSIS_SIZE",
    "DEFAULT_MAX_PIXELS",
    "DECODERS",
    "ImageDecodeError",
    "ImageProbe",
    "JpegStructure",
    "check_jpeg",
    "decode_for_analysis",
    "decode_full_rgb",
    "encode_jpeg",
    "needs_reencode",
    "probe_image",
    "sniff_format",
]

# Score kernels and pHash need one fixed shape so they can be batched; a square squash (no crop,
# no letterbox) keeps every pixel of the picture in view, and aspect ratio is recorded separately
# from the probe's width/height.
ANALYSIS_SIZE = 256

# Same number as Pillow's hard error threshold (2 * Image.MAX_IMAGE_PIXELS), but applied by us so
# it is per-call configurable and does not depend on a process-wide global.
DEFAULT_MAX_PIXELS = 178_956_970

# "auto" is simplejpeg for JPEG: measured fastest of the CPU paths (scripts/bench_decoders.py).
DECODERS = ("auto", "turbo", "pillow", "dali")

# Pillow plugins we are willing to run. Pillow can open ~40 formats (EPS shells out to
# Ghostscript, several are rarely fuzzed); curation input does not need them.
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF")

_EXIF_ORIENTATION_TAG = 0x0112


class ImageDecodeError(ValueError):
    """Undecodable or rejected image. ``reason`` is one of: ``empty``, ``unsupported_format``,
    ``truncated``, ``corrupt``, ``too_many_pixels``."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message

    def __reduce__(self):
        # Default exception pickling replays self.args into __init__, which has a different
        # signature; results cross process boundaries in the engine, so spell it out.
        return (type(self), (self.reason, self.detail))


@dataclass
class ImageProbe:
    format: str  # "JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF"
    width: int  # upright (after EXIF orientation)
    height: int
    mode: str  # Pillow mode of the stored image ("RGB", "L", "CMYK", "RGBA", "P", "I;16", ...)
    exif_orientation: int  # 1..8; 1 when absent or invalid
    is_progressive: bool
    n_frames: int


# --------------------------------------------------------------------------- format sniffing


def sniff_format(data: bytes) -> str | None:
    """Container format from magic bytes (extensions lie). MPO sniffs as "JPEG": telling them
    apart needs the APP2 MPF segment, which ``probe_image`` reads."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    # "BM" alone matches plenty of text; require a known DIB header size as well.
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in (
        12, 16, 40, 52, 56, 64, 108, 124,
    ):
        return "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
        return None
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:4] == b"qoif":
        return "QOI"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(head) >= 6 and head[4:6] != b"\x00\x00":
        return "ICO"
    return None


# --------------------------------------------------------------------------- JPEG structure


@dataclass
class _JpegHeader:
    sof: int  # SOF marker byte: 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    precision: int
    width: int
    height: int
    component_ids: tuple[int, ...]
    adobe_transform: int | None  # APP14 "Adobe" colour transform flag, None when absent
    has_jfif: bool
    first_sos: int  # offset of the first SOS marker

    @property
    def progressive(self) -> bool:
        return self.sof in (0xC2, 0xC6, 0xCA, 0xCE)

    @property
    def is_ycbcr(self) -> bool:
        # libjpeg's jdapimin.c default_decompress_parms rule for 3-component images.
        if len(self.component_ids) != 3:
            return False
        if self.adobe_transform is not None:
            return self.adobe_transform != 0
        if self.has_jfif:
            return True
        return tuple(self.component_ids) != (82, 71, 66)  # 'R','G','B' ids mean RGB


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _parse_jpeg_header(data: bytes) -> _JpegHeader:
    """Walk marker segments from SOI to the first SOS. Stricter than libjpeg, which only warns
    about stray bytes between segments: strict simplejpeg refuses such files, so every decoder
    path must refuse them too or "auto" and "pillow" would disagree about validity."""
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        raise ImageDecodeError("corrupt", "JPEG does not start with SOI (junk before SOI)")
    pos = 2
    sof = None
    adobe_transform = None
    has_jfif = False
    while True:
        if pos + 4 > n:
            raise ImageDecodeError("truncated", "JPEG header ends before the first scan")
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            skipped = (nxt if nxt >= 0 else n) - pos
            raise ImageDecodeError(
                "corrupt", f"{skipped} junk bytes between JPEG marker segments at offset {pos}"
            )
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker is legal
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD8, 0xD9):
            raise ImageDecodeError("corrupt", f"unexpected marker 0xFF{marker:02X} before first scan")
        seglen = (data[pos + 2] << 8) | data[pos + 3]
        end = pos + 2 + seglen
        if seglen < 2:
            raise ImageDecodeError("corrupt", f"invalid JPEG segment length {seglen} at offset {pos}")
        if end > n:
            raise ImageDecodeError("truncated", "JPEG header segment runs past end of data")
        if marker in _SOF_MARKERS:
            if sof is not None:
                raise ImageDecodeError("corrupt", "JPEG has more than one SOF segment")
            if seglen < 8:
                raise ImageDecodeError("corrupt", "JPEG SOF segment too short")
            precision = data[pos + 4]
            height, width = struct.unpack_from(">HH", data, pos + 5)
            ncomp = data[pos + 9]
            if seglen < 8 + 3 * ncomp or ncomp == 0:
                raise ImageDecodeError("corrupt", "JPEG SOF segment inconsistent with component count")
            comp_ids = tuple(data[pos + 10 + 3 * i] for i in range(ncomp))
            sof = (marker, precision, width, height, comp_ids)
        elif marker == 0xEE and data[pos + 4 : pos + 9] == b"Adobe" and seglen >= 14:
            adobe_transform = data[pos + 15]
        elif marker == 0xE0 and data[pos + 4 : pos + 9] == b"JFIF\x00":
            has_jfif = True
        elif marker == 0xDA:
            if sof is None:
                raise ImageDecodeError("corrupt", "JPEG scan starts before any SOF segment")
            m, precision, width, height, comp_ids = sof
            return _JpegHeader(m, precision, width, height, comp_ids, adobe_transform, has_jfif, pos)
        pos = end


# A marker inside entropy-coded data: 0xFF not followed by stuffing (00), RSTn or another fill FF.
_MARKER_RE = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")
_EOI_RE = re.compile(rb"\xff\xd9")


def _find_marker_re(data: bytes, start: int, kind: int) -> int:
    m = (_EOI_RE if kind == 0 else _MARKER_RE).search(data, start)
    return m.start() if m else -1


try:  # the C version in jpeg_markers.c (memchr for 0xFF), built with the package
    from curastream.images._jpeg_markers import find_marker as _find_marker
except ImportError:  # pragma: no cover - the extension is optional at install time
    _find_marker = _find_marker_re


def _next_marker(data: bytes, start: int) -> int:
    """Offset of the first marker at or after ``start`` in entropy-coded data, or -1."""
    return _find_marker(data, start, 1)


def _first_eoi(data: bytes, start: int) -> int:
    """Offset of the first FF D9 at or after ``start``, or -1. Every byte is read: 0.04 ms per
    photo in C, 0.20 with the regular expression, 0.36 with NumPy, 0.53 with bytes.find."""
    return _find_marker(data, start, 0)


def _check_jpeg_complete(data: bytes, hdr: _JpegHeader, exact_eoi: bool = False) -> int:
    """Raise ``truncated`` unless the first image's scans are all present; return the offset just
    past its EOI (with ``exact_eoi=False`` a sequential file may report a later EOI, e.g. of
    appended data). libjpeg (and so Pillow and DALI) decode a progressive file whose last scans
    were cut off without complaint as long as an EOI follows; such files are damaged for us."""
    n = len(data)
    # Sequential files: one interleaved scan is the common case, and an intact EOI is all we can
    # check cheaply; strict simplejpeg catches data cut short inside the scan itself.
    if not hdr.progressive and _first_scan_components(data, hdr.first_sos) == len(hdr.component_ids):
        # EOI normally sits at the very end, where rfind finds it at once; the first EOI (what
        # decides "trailing data") needs a forward search.
        eoi = _first_eoi(data, hdr.first_sos) if exact_eoi else data.rfind(b"\xff\xd9", hdr.first_sos)
        if eoi < 0:
            raise ImageDecodeError("truncated", "JPEG has no EOI marker (file cut short)")
        return eoi + 2

    ncomp = len(hdr.component_ids)
    # For each component and coefficient, the lowest successive-approximation bit delivered so
    # far; 255 = never seen. A complete progressive image ends with every entry at 0.
    al = {cid: [255] * 64 for cid in hdr.component_ids}
    seen: set[int] = set()
    pos = hdr.first_sos
    while True:
        if pos + 2 > n:
            raise ImageDecodeError("truncated", "JPEG has no EOI marker (file cut short)")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            eoi_end = pos + 2
            break
        if pos + 4 > n:
            raise ImageDecodeError("truncated", "JPEG ends inside a marker segment")
        seglen = (data[pos + 2] << 8) | data[pos + 3]
        if seglen < 2 or pos + 2 + seglen > n:
            raise ImageDecodeError("truncated", "JPEG ends inside a marker segment")
        if marker == 0xDA:
            ns = data[pos + 4]
            if seglen < 6 + 2 * ns:
                raise ImageDecodeError("corrupt", "JPEG SOS segment too short")
            comps = [data[pos + 5 + 2 * i] for i in range(ns)]
            ss, se, ahal = data[pos + 5 + 2 * ns : pos + 8 + 2 * ns]
            ah, a_l = ahal >> 4, ahal & 0x0F
            seen.update(comps)
            if hdr.progressive:
                if se > 63 or ss > se:
                    raise ImageDecodeError("corrupt", "JPEG progressive scan has invalid spectral range")
                for cid in comps:
                    table = al.get(cid)
                    if table is None:
                        raise ImageDecodeError("corrupt", f"JPEG scan references unknown component {cid}")
                    for k in range(ss, se + 1):
                        if ah == 0:  # first pass over this coefficient
                            table[k] = min(table[k], a_l)
                        elif table[k] == ah:  # refinement continues where the last pass stopped
                            table[k] = a_l
            pos += 2 + seglen
            pos = _next_marker(data, pos)
            if pos < 0:
                raise ImageDecodeError("truncated", "JPEG has no EOI marker (file cut short)")
            continue
        if marker == 0xD8:
            raise ImageDecodeError("corrupt", "unexpected SOI inside JPEG")
        pos += 2 + seglen
        if pos < n and data[pos] != 0xFF:
            pos = _next_marker(data, pos)
            if pos < 0:
                raise ImageDecodeError("truncated", "JPEG has no EOI marker (file cut short)")
    if len(seen) < ncomp:
        raise ImageDecodeError("truncated", "JPEG is missing the scans of some colour components")
    if hdr.progressive and any(v != 0 for table in al.values() for v in table):
        raise ImageDecodeError("truncated", "progressive JPEG is missing refinement scans (cut short)")
    return eoi_end


def _first_scan_components(data: bytes, sos: int) -> int:
    return data[sos + 4] if sos + 4 < len(data) else 0


@dataclass(frozen=True)
class JpegStructure:
    """What one walk over a JPEG's markers found: its header, and where its first image ends."""

    header: _JpegHeader
    end: int  # offset just past the first EOI


def check_jpeg(data: bytes) -> JpegStructure:
    """Header and scan structure of a JPEG, checked: raises ``ImageDecodeError`` ("truncated",
    "corrupt") when scans are missing. Hand the result to ``decode_for_analysis`` and
    ``needs_reencode`` so that neither walks the file again."""
    hdr = _parse_jpeg_header(data)
    return JpegStructure(hdr, _check_jpeg_complete(data, hdr, exact_eoi=True))


# --------------------------------------------------------------------------- probing


def _open_pillow(data: bytes, fmt: str) -> Image.Image:
    """Open with one named Pillow plugin, bypassing ``Image.open``: that would consult every
    registered plugin and apply Pillow's global bomb limit, where ours is per call."""
    if fmt == "MPO":
        fmt = "JPEG"  # jpeg_factory returns an MpoImageFile when an MPF segment is present
    entry = Image.OPEN.get(fmt)
    if entry is None:
        raise ImageDecodeError("unsupported_format", f"this Pillow build cannot read {fmt}")
    factory, _accept = entry
    try:
        return factory(io.BytesIO(data), "")
    except ImageDecodeError:
        raise
    except (EOFError, struct.error, IndexError) as e:
        raise ImageDecodeError("truncated", f"{fmt} header cut short ({e})") from e
    except (SyntaxError, OSError, ValueError, TypeError, KeyError, ZeroDivisionError) as e:
        raise _map_pillow_error(e, fmt) from e


def _map_pillow_error(e: BaseException, fmt: str) -> ImageDecodeError:
    msg = str(e) or type(e).__name__
    if isinstance(e, EOFError) or "truncated" in msg.lower() or "end of file" in msg.lower():
        return ImageDecodeError("truncated", f"{fmt}: {msg}")
    if isinstance(e, Image.DecompressionBombError):
        return ImageDecodeError("too_many_pixels", f"{fmt}: {msg}")
    return ImageDecodeError("corrupt", f"{fmt}: {msg}")


def _exif_orientation(im: Image.Image, fmt: str) -> int:
    try:
        if fmt == "PNG":
            # PngImageFile.getexif() forces a full pixel decode when no eXIf chunk precedes IDAT;
            # an eXIf chunk after the pixel data is therefore ignored (rare; browsers do too).
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = int(exif.get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not make a decodable image unusable
        return 1
    return value if 1 <= value <= 8 else 1


def probe_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageProbe:
    """Identify an image from its headers only. Raises ``ImageDecodeError``."""
    if data is None or len(data) == 0:
        raise ImageDecodeError("empty", "no bytes")
    data = bytes(data) if not isinstance(data, bytes) else data
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError("unsupported_format", f"unrecognised magic bytes {data[:8].hex()}")
    if fmt not in _PILLOW_FORMATS:
        raise ImageDecodeError("unsupported_format", f"{fmt} images are not supported")

    jpeg_hdr = None
    if fmt == "JPEG":
        jpeg_hdr = _parse_jpeg_header(data)
        # Checked before Pillow sees the file, from the SOF dimensions alone.
        if jpeg_hdr.width * jpeg_hdr.height > max_pixels:
            raise ImageDecodeError(
                "too_many_pixels",
                f"{jpeg_hdr.width}x{jpeg_hdr.height} exceeds the {max_pixels}-pixel limit",
            )
        if jpeg_hdr.width == 0 or jpeg_hdr.height == 0:
            raise ImageDecodeError("unsupported_format", "JPEG with height defined by DNL marker")
        if jpeg_hdr.precision != 8:
            raise ImageDecodeError("unsupported_format", f"{jpeg_hdr.precision}-bit JPEG")

    im = _open_pillow(data, fmt)
    try:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError("corrupt", f"{fmt} header has empty dimensions {width}x{height}")
        if width * height > max_pixels:
            raise ImageDecodeError(
                "too_many_pixels", f"{width}x{height} exceeds the {max_pixels}-pixel limit"
            )
        real_fmt = im.format or fmt
        try:
            n_frames = int(getattr(im, "n_frames", 1))
        except Exception as e:  # walking frame headers can hit the damage first
            raise _map_pillow_error(e, real_fmt) from e
        orientation = _exif_orientation(im, real_fmt)
        if jpeg_hdr is not None:
            progressive = jpeg_hdr.progressive
        else:
            progressive = bool(im.info.get("progressive") or im.info.get("interlace"))
        mode = im.mode
    finally:
        im.close()
    if orientation >= 5:
        width, height = height, width
    return ImageProbe(
        format=real_fmt,
        width=width,
        height=height,
        mode=mode,
        exif_orientation=orientation,
        is_progressive=progressive,
        n_frames=n_frames,
    )


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


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _pillow_to_rgb(im: Image.Image) -> np.ndarray:
    """Loaded Pillow image of any mode -> (H, W, 3) uint8 RGB."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode == "L":
        return _gray_to_rgb(np.asarray(im))
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _gray_to_rgb(_to_8bit(np.asarray(im), 65535))
    if mode == "I":
        # 32-bit int mode holds 16-bit samples for PNG/TIFF sources; treat it as 16-bit range.
        return _gray_to_rgb(_to_8bit(np.asarray(im), 65535))
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0)
        return _gray_to_rgb((np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
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
    im = _open_pillow(data, fmt)
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
            raise _map_pillow_error(e, fmt) from e
    finally:
        im.close()


_UNSUPPORTED_BY_TURBO = ("unsupported", "not supported", "bogus", "improper call")


def _turbo_decode(data: bytes, min_side: int = 0) -> np.ndarray | None:
    """simplejpeg decode to RGB; None when libjpeg-turbo cannot handle the colour/coding and
    Pillow should try instead."""
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=min_side, min_width=min_side, strict=True
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


# --------------------------------------------------------------------------- public decode API


def decode_for_analysis(
    data: bytes, probe: ImageProbe, size: int = ANALYSIS_SIZE, decoder: str = "auto",
    jpeg: JpegStructure | None = None,
) -> np.ndarray:
    """(size, size, 3) uint8 RGB, upright, squashed (aspect ratio not kept).

    decoder: "auto"/"turbo" = simplejpeg DCT-scaled decode for JPEG (Pillow for other formats),
    "pillow" = Pillow everywhere (draft() scaling for JPEG; the baseline), "dali" = DALI CPU
    pipeline (one image at a time here; use ``images.dali.dali_decode_batch`` for throughput).
    ``jpeg``: ``check_jpeg(data)`` when the caller already has it.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "dali":
        from curastream.images import dali as dali_decode

        return dali_decode.decode_one(data, size=size)
    if _is_jpeg(probe):
        if jpeg is None:
            _check_jpeg_complete(data, _parse_jpeg_header(data))
        arr = None
        if decoder != "pillow":
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
        _check_jpeg_complete(data, _parse_jpeg_header(data))
        arr = _turbo_decode(data)
        if arr is None:
            arr = _load_pillow(data, probe.format)
    else:
        arr = _load_pillow(data, probe.format)
    return np.ascontiguousarray(_orient(arr, probe.exif_orientation))


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """Baseline JPEG, 4:2:0 (what Curator's Pillow writer produces; simplejpeg's own default
    is 4:4:4, about 1.5x larger at the same quality). Gray input is written as RGB because the
    SPEC requires RGB output."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_jpeg needs uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        arr = _gray_to_rgb(arr.reshape(arr.shape[0], arr.shape[1]))
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
