"""Image probing: identify an image and its upright size from headers only (magic bytes, the
JPEG marker segments up to the first scan, Pillow's lazy ``open``), so that junk, unsupported
formats and decompression bombs are rejected before a single pixel is allocated. Also home of
:class:`ImageDecodeError`, the one exception every image check raises.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

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

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "ImageProbe",
    "probe_image",
    "sniff_format",
]

# Same number as Pillow's hard error threshold (2 * Image.MAX_IMAGE_PIXELS), but applied by us so
# it is per-call configurable and does not depend on a process-wide global.
DEFAULT_MAX_PIXELS = 178_956_970

# Pillow plugins we are willing to run. Pillow can open ~40 formats (EPS shells out to
# Ghostscript, several are rarely fuzzed); curation input does not need them.
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF")

_EXIF_ORIENTATION_TAG = 0x0112

# A decode holds the full frame (up to 4 bytes a pixel, and Pillow's copy beside it). Frames
# under this size are never checked against free memory (reading /proc costs more than they do).
MEMORY_CHECK_BYTES = 256 << 20


def _available_memory() -> int | None:
    """MemAvailable in bytes, or None where the system does not say."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_decode_memory(width: int, height: int) -> None:
    """Refuse an image whose decode could not fit in memory: with ``max_pixels`` raised, a
    header's word is all that stands between a 100000x100000 claim and a MemoryError (or the
    OOM killer taking the whole run)."""
    need = 2 * 4 * width * height
    if need < MEMORY_CHECK_BYTES:
        return
    avail = _available_memory()
    if avail is not None and need > avail:
        raise ImageDecodeError(
            "too_many_pixels",
            f"{width}x{height} needs about {need / 2**30:.1f} GiB to decode, "
            f"{avail / 2**30:.1f} GiB of memory is available",
        )


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


# --------------------------------------------------------------------------- JPEG header


@dataclass
class JpegHeader:
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


def parse_jpeg_header(data: bytes) -> JpegHeader:
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
            return JpegHeader(m, precision, width, height, comp_ids, adobe_transform, has_jfif, pos)
        pos = end


# --------------------------------------------------------------------------- probing


def open_pillow(data: bytes, fmt: str) -> Image.Image:
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
        raise map_pillow_error(e, fmt) from e


def map_pillow_error(e: BaseException, fmt: str) -> ImageDecodeError:
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
        jpeg_hdr = parse_jpeg_header(data)
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

    im = open_pillow(data, fmt)
    try:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError("corrupt", f"{fmt} header has empty dimensions {width}x{height}")
        if width * height > max_pixels:
            raise ImageDecodeError(
                "too_many_pixels", f"{width}x{height} exceeds the {max_pixels}-pixel limit"
            )
        check_decode_memory(width, height)
        real_fmt = im.format or fmt
        try:
            n_frames = int(getattr(im, "n_frames", 1))
        except Exception as e:  # walking frame headers can hit the damage first
            raise map_pillow_error(e, real_fmt) from e
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
