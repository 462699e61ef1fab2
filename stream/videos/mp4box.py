"""ISO-BMFF (MP4) box walking: the one parser for box headers, used on clip bytes in memory
(faststart, display matrix, moov placement) and on source files (why FFmpeg refused one).

Only headers are parsed; box payloads are read where one field is needed (tkhd's matrix,
stco/co64 chunk offsets). Nothing here imports PyAV.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator, Sequence
from typing import IO, Any

import numpy as np

# Boxes on the way from moov down to the chunk offset tables.
_MOOV_PATH = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _header(buf, pos: int, avail: int) -> tuple[bytes, int, int]:
    """(type, size, header length) of the box at ``pos``; size 0 means "to the end".

    A 64-bit size (size field 1) is read only when ``avail`` bytes hold it; otherwise size
    stays 1, which every caller rejects as smaller than the header.
    """
    size, kind = struct.unpack_from(">I4s", buf, pos)
    header = 8
    if size == 1 and avail >= 16:
        size, header = struct.unpack_from(">Q", buf, pos + 8)[0], 16
    return kind, size, header


def boxes(buf, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, header length, box end) of the boxes in buf[start:end]; ValueError
    (or struct.error) on a box that does not fit."""
    pos = start
    while pos + 8 <= end:
        kind, size, header = _header(buf, pos, end - pos)
        if size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"corrupt MP4 box {kind!r} at {pos}")
        yield kind, pos, header, pos + size
        pos += size


def file_boxes(f: IO[bytes], size_total: int | None) -> Iterator[tuple[bytes, int, int]]:
    """(type, box start, size) of the top-level boxes of an open file, read by seeking.

    Lenient, for diagnosis: the walk ends at a short read, at a box that runs to the end
    (size 0, yielded first) or cannot be right (size < 8, yielded first), or at ``size_total``.
    """
    pos = 0
    while True:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return
        kind, size, _ = _header(head, 0, len(head))
        yield kind, pos, size
        if size < 8:  # 0 (runs to the end) or garbage: nothing after it can be found
            return
        pos += size
        if size_total is not None and pos >= size_total:
            return


def find_box(buf, kinds: Sequence[bytes], start: int = 0, end: int | None = None):
    """First box along a path of box types, as (body start, box end), or None."""
    end = len(buf) if end is None else end
    for kind, pos, header, stop in boxes(buf, start, end):
        if kind == kinds[0]:
            if len(kinds) == 1:
                return pos + header, stop
            found = find_box(buf, kinds[1:], pos + header, stop)
            if found:
                return found
    return None


def _shift_chunk_offsets(moov: bytearray, shift: int, start: int = 0, end: int | None = None) -> None:
    for kind, pos, header, stop in boxes(moov, start, len(moov) if end is None else end):
        body = pos + header
        if kind in _MOOV_PATH:
            _shift_chunk_offsets(moov, shift, body, stop)
        elif kind in (b"stco", b"co64"):
            count = struct.unpack_from(">I", moov, body + 4)[0]
            dtype = np.dtype(">u4" if kind == b"stco" else ">u8")
            offsets = np.frombuffer(moov, dtype, count, body + 8).astype(np.uint64) + np.uint64(shift)
            if kind == b"stco" and count and int(offsets.max()) >= 2**32:
                raise OverflowError("32-bit chunk offsets would overflow")
            moov[body + 8 : body + 8 + count * dtype.itemsize] = offsets.astype(dtype).tobytes()


def faststart(data: bytes) -> bytes:
    """Move moov in front of mdat, as ``movflags=+faststart`` does.

    FFmpeg's faststart re-opens the output by file name, which fails for in-memory output, so the
    relocation is done here: insert moov before the first mdat and shift every chunk offset.
    On anything unexpected the input is returned unchanged (still a valid MP4, moov at the end).
    """
    try:
        top = list(boxes(data, 0, len(data)))
        kinds = [b[0] for b in top]
        if b"moov" not in kinds or b"mdat" not in kinds:
            return data
        moov_i, mdat_i = kinds.index(b"moov"), kinds.index(b"mdat")
        if moov_i < mdat_i:
            return data
        _, m_start, _, m_end = top[moov_i]
        moov = bytearray(data[m_start:m_end])
        _shift_chunk_offsets(moov, len(moov))
        cut = top[mdat_i][1]
        return b"".join((data[:cut], moov, data[cut:m_start], data[m_end:]))
    except (ValueError, OverflowError, struct.error):
        return data


def moov_first(data: bytes) -> bool:
    """True when moov comes before mdat at the top level (a player can start streaming)."""
    try:
        kinds = [b[0] for b in boxes(data, 0, len(data))]
    except (ValueError, struct.error):
        return False
    return b"moov" in kinds and b"mdat" in kinds and kinds.index(b"moov") < kinds.index(b"mdat")


def display_matrix_degrees(data: bytes) -> float | None:
    """Rotation angle of the first video track's tkhd matrix, counter-clockwise degrees as
    FFmpeg's av_display_rotation_get reports it; None when there is no readable matrix."""
    try:
        moov = find_box(data, [b"moov"])
        if moov is None:
            return None
        for kind, pos, header, stop in boxes(data, *moov):
            if kind != b"trak":
                continue
            hdlr = find_box(data, [b"mdia", b"hdlr"], pos + header, stop)
            if hdlr is None or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
                continue
            tkhd = find_box(data, [b"tkhd"], pos + header, stop)
            if tkhd is None:
                return None
            version = data[tkhd[0]]
            a, b, _, c, d, *_ = struct.unpack_from(">9i", data, tkhd[0] + (52 if version == 1 else 40))
            if not (math.hypot(a, c) and math.hypot(b, d)):
                return None
            return -math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))
    except (ValueError, struct.error):
        pass
    return None


def missing_moov(path_or_file: Any) -> bool:
    """True for an ISO-BMFF file (ftyp first) whose top-level boxes hold no moov.

    FFmpeg's exception only says "Invalid data"; this names the usual cause (a recording that
    was never finalised, or a download cut before the index at the end).
    """
    try:
        if isinstance(path_or_file, (str, os.PathLike)):
            f: IO[bytes] = open(path_or_file, "rb")
            close = True
        else:
            f, close = path_or_file, False
            f.seek(0)
        try:
            size_total = os.fstat(f.fileno()).st_size if close else None
            first = True
            for kind, _, _ in file_boxes(f, size_total):
                if first and kind != b"ftyp":
                    return False
                first = False
                if kind == b"moov":
                    return False
            return not first
        finally:
            if close:
                f.close()
            else:
                f.seek(0)
    except (OSError, ValueError, struct.error):
        return False
