"""Upright JPEGs from EXIF-rotated ones without a decode: libjpeg-turbo's lossless DCT-domain
transform (what ``jpegtran -perfect`` does), then the EXIF Orientation tag set to 1 so that no
reader rotates the pixels a second time.

The transform is TurboJPEG's ``tj3Transform``, called through ctypes on the libturbojpeg that the
``turbojpeg`` wheel bundles (or a system one). ctypes releases the GIL for the call, so a turn
(~70 ms for 7 MP) runs beside the decode and score threads. The wheel's own pybind11 binding
holds the GIL for the whole transform: run in this process it stalled every other stage (a third
of the image throughput with 1 photo in 12 rotated), and the process pool that worked around it
cost a spawn and two copies per photo. The binding stays as the fallback when no library file
can be loaded. When neither is there, or the transform would not be perfect for the image (a
partial MCU at an edge that the rotation moves), :func:`lossless_upright` answers None and the
caller re-encodes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import struct

try:  # optional at run time: the re-encode fallback gives the same upright pixels
    import turbojpeg as _tj
except ImportError:  # pragma: no cover - depends on the install
    _tj = None
# PyTurboJPEG installs a module of the same name, with another API.
if _tj is not None and not (hasattr(_tj, "transform") and hasattr(_tj, "OP")):  # pragma: no cover
    _tj = None

__all__ = ["lossless_available", "lossless_upright", "set_exif_orientation"]

_ORIENTATION_TAG = 0x0112

# EXIF Orientation -> the TurboJPEG operation (TJXOP) that turns the stored pixels upright (the
# same operations Pillow's ImageOps.exif_transpose applies to decoded pixels).
_OPS = {2: "HFLIP", 3: "ROT180", 4: "VFLIP", 5: "TRANSPOSE", 6: "ROT90", 7: "TRANSVERSE", 8: "ROT270"}
_TJXOP = {"HFLIP": 1, "VFLIP": 2, "TRANSPOSE": 3, "TRANSVERSE": 4, "ROT90": 5, "ROT180": 6, "ROT270": 7}
_TJXOPT_PERFECT, _TJXOPT_PROGRESSIVE = 1, 32
_TJINIT_TRANSFORM = 2


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _Transform(ctypes.Structure):  # tjtransform
    _fields_ = [("r", _Region), ("op", ctypes.c_int), ("options", ctypes.c_int), ("data", ctypes.c_void_p),
                ("customFilter", ctypes.c_void_p)]


def _load_library():
    """libturbojpeg's TurboJPEG 3 API (``tj3Transform``, what the wheel's binding calls). Its
    TurboJPEG 2 entry point is not used: in the bundled 3.0 beta it drops the APP markers,
    EXIF included, which the output must keep."""
    candidates = []
    if _tj is not None:
        here = os.path.dirname(_tj.__file__)
        candidates += sorted(glob.glob(os.path.join(here, "turbojpeg.libs", "libturbojpeg*.so*")))
    found = ctypes.util.find_library("turbojpeg")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            lib.tj3Init.restype = ctypes.c_void_p
            lib.tj3Init.argtypes = [ctypes.c_int]
            lib.tj3Transform.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
                                         ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                                         ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(_Transform)]
            lib.tj3Free.argtypes = [ctypes.c_void_p]
            lib.tj3Destroy.argtypes = [ctypes.c_void_p]
        except (OSError, AttributeError):  # not there, or a 2.x library without the TurboJPEG 3 API
            continue
        return lib
    return None


_lib = _load_library()


def lossless_available() -> bool:
    return _lib is not None or _tj is not None


def lossless_upright(data: bytes, orientation: int, progressive: bool = False) -> bytes | None:
    """``data`` turned upright in the DCT domain, with Orientation 1; None where that cannot be
    done exactly (library absent, imperfect transform, no EXIF tag to reset, a refusal)."""
    op = _OPS.get(orientation)
    if op is None or not lossless_available():
        return None
    out = _transform(bytes(data), op, progressive)
    if out is None:
        return None
    # The transform copies APP markers as they were, Orientation included.
    return set_exif_orientation(out, 1)


def _transform(data: bytes, op: str, progressive: bool) -> bytes | None:
    # perfect: refuse rather than drop the partial edge blocks (trim would shrink the image
    # below the width/height the Parquet records). progressive: keep the source's coding.
    if _lib is None:
        try:
            return _tj.transform(data, op=getattr(_tj.OP, op), perfect=True, progressive=progressive)
        except (RuntimeError, ValueError, MemoryError):
            return None
    # A handle per call: TurboJPEG 3 handles keep what a transform option set (progressive
    # coding stays on for the next image) and are not thread-safe; one costs microseconds.
    handle = _lib.tj3Init(_TJINIT_TRANSFORM)
    if not handle:
        return None
    spec = _Transform(op=_TJXOP[op], options=_TJXOPT_PERFECT | (_TJXOPT_PROGRESSIVE if progressive else 0))
    dst, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_size_t(0)
    try:
        rc = _lib.tj3Transform(handle, data, len(data), 1, ctypes.byref(dst), ctypes.byref(size), ctypes.byref(spec))
        return ctypes.string_at(dst, size.value) if rc == 0 and dst else None
    finally:
        if dst:
            _lib.tj3Free(dst)
        _lib.tj3Destroy(handle)


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
