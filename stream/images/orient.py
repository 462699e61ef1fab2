"""Upright JPEGs from EXIF-rotated ones without a decode: libjpeg-turbo's lossless DCT-domain
transform (what ``jpegtran -perfect`` does), then the EXIF Orientation tag set to 1 so that no
reader rotates the pixels a second time.

The transform comes from the ``turbojpeg`` wheel (pybind11 over the TurboJPEG 3 API, with
libturbojpeg bundled: PyTurboJPEG needs a system libturbojpeg 3.x and has no rotate call). When
it is missing, or the transform would not be perfect for the image (a partial MCU at an edge
that the rotation moves), :func:`lossless_upright` answers None and the caller re-encodes.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

try:  # optional at run time: the re-encode fallback gives the same upright pixels
    import turbojpeg as _tj
except ImportError:  # pragma: no cover - depends on the install
    _tj = None
# PyTurboJPEG installs a module of the same name, with another API.
if _tj is not None and not (hasattr(_tj, "transform") and hasattr(_tj, "OP")):  # pragma: no cover
    _tj = None

__all__ = ["lossless_available", "lossless_upright", "set_exif_orientation"]

_ORIENTATION_TAG = 0x0112

# EXIF Orientation -> the TurboJPEG operation that turns the stored pixels upright (the same
# operations Pillow's ImageOps.exif_transpose applies to decoded pixels).
_OPS = {2: "HFLIP", 3: "ROT180", 4: "VFLIP", 5: "TRANSPOSE", 6: "ROT90", 7: "TRANSVERSE", 8: "ROT270"}


def lossless_available() -> bool:
    return _tj is not None


def lossless_upright(data: bytes, orientation: int, progressive: bool = False) -> bytes | None:
    """``data`` turned upright in the DCT domain, with Orientation 1; None where that cannot be
    done exactly (library absent, imperfect transform, no EXIF tag to reset, a refusal)."""
    op = _OPS.get(orientation)
    if _tj is None or op is None:
        return None
    try:
        out = _turner().submit(_transform, bytes(data), op, progressive).result()
    except BrokenProcessPool:  # the helper process died (killed, out of memory): this image re-encodes
        _reset_turner()
        return None
    if out is None:
        return None
    # The transform copies APP markers as they were, Orientation included.
    return set_exif_orientation(out, 1)


def _transform(data: bytes, op: str, progressive: bool) -> bytes | None:
    try:
        # perfect: refuse rather than drop the partial edge blocks (trim would shrink the image
        # below the width/height the Parquet records). progressive: keep the source's coding.
        return _tj.transform(data, op=getattr(_tj.OP, op), perfect=True, progressive=progressive)
    except (RuntimeError, ValueError, MemoryError):
        return None


# The turbojpeg binding holds the GIL for the whole transform (~70 ms for 7 MP): run in this
# process it stalls every decode and score thread, which cost a third of the image throughput
# with 1 photo in 12 rotated. In helper processes it runs beside them.
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _turner() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = max(1, min(4, (os.cpu_count() or 2) // 2))
            # spawn: forking a process that runs threads can copy a held lock into the child
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def _reset_turner() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def set_exif_orientation(data: bytes, value: int) -> bytes | None:
    """``data`` with IFD0's Orientation in its EXIF APP1 segment overwritten in place (same
    length: no offset inside the EXIF block moves). None when the first EXIF segment has no
    readable Orientation entry: the orientation then came from elsewhere (XMP) or the EXIF is
    damaged, and a re-encode, which writes no metadata, is the safe answer."""
    pos = _exif_orientation_offset(data)
    if pos is None:
        return None
    tiff_le = pos[1]
    buf = bytearray(data)
    struct.pack_into("<H" if tiff_le else ">H", buf, pos[0], value)
    return bytes(buf)


def _exif_orientation_offset(data: bytes) -> tuple[int, bool] | None:
    """(offset of the Orientation SHORT value, little-endian) in the first ``Exif`` APP1
    segment before the first scan; the segment readers (Pillow included) take the first."""
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xDA, 0xD9):
            return None
        seglen = (data[pos + 2] << 8) | data[pos + 3]
        end = pos + 2 + seglen
        if seglen < 2 or end > n:
            return None
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            return _ifd0_orientation(data, pos + 10, end)
        pos = end
    return None


def _ifd0_orientation(data: bytes, tiff: int, end: int) -> tuple[int, bool] | None:
    head = data[tiff : tiff + 4]
    if head == b"II*\x00":
        le = True
    elif head == b"MM\x00*":
        le = False
    else:
        return None
    u16, u32 = ("<H", "<I") if le else (">H", ">I")
    if tiff + 8 > end:
        return None
    ifd = tiff + struct.unpack_from(u32, data, tiff + 4)[0]
    if ifd + 2 > end:
        return None
    count = struct.unpack_from(u16, data, ifd)[0]
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if entry + 12 > end:
            return None
        tag, typ, num = struct.unpack_from(u16 + u16[1] + u32[1], data, entry)
        if tag == _ORIENTATION_TAG:
            # SHORT x1 is the only well-formed shape: its value sits in the entry itself.
            return (entry + 8, le) if typ == 3 and num == 1 else None
    return None
