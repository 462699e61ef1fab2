"""Display rotation: the one convention the video slice works in, and the conversions to the
convention of FFmpeg/PyAV where a library hands one over or wants one back.

Convention: ``cw`` is the clockwise angle, 0/90/180/270, by which the *stored* picture must be
turned to be shown upright (``VideoInfo.rotation``). An iPhone portrait clip, whose stored
picture lies on its side with the top to the left, has ``cw == 90``.

FFmpeg's display matrix (``av.VideoFrame.rotation``, ``ffprobe``'s ``rotation=``, an MP4 tkhd
matrix, ``set_display_rotation``) is the *counter-clockwise* angle, in (-180, 180]: the same
iPhone clip reports -90. Values in that convention are called ``ccw`` here; they are converted
with :func:`cw_from_ccw` on the way in and :func:`ccw_from_cw` on the way out, nowhere else.
"""

from __future__ import annotations

import numpy as np


def cw_from_ccw(ccw_degrees: float | None) -> int:
    """FFmpeg's counter-clockwise display-matrix angle -> our clockwise 0/90/180/270.

    Any angle snaps to the nearest quarter turn; None or a non-number (no matrix) is 0.
    """
    if ccw_degrees is None:
        return 0
    try:
        cw = (-float(ccw_degrees)) % 360.0
    except (TypeError, ValueError):
        return 0
    return int(round(cw / 90.0)) % 4 * 90


def ccw_from_cw(cw: int) -> int:
    """Our clockwise angle -> FFmpeg's counter-clockwise one, in (-180, 180] (-90, 0, 90, 180)."""
    ccw = (-int(cw)) % 360
    return ccw - 360 if ccw > 180 else ccw


def swaps_sides(cw: int) -> bool:
    """True for a quarter turn: the upright picture's width is the stored height."""
    return cw % 180 == 90


def upright_size(width: int, height: int, cw: int) -> tuple[int, int]:
    """(w, h) of a stored ``width`` x ``height`` picture once turned upright."""
    return (height, width) if swaps_sides(cw) else (width, height)


def upright_view(img: np.ndarray, cw: int) -> np.ndarray:
    """View (no copy) of a stored-orientation (h, w, ...) image turned clockwise by ``cw``."""
    if cw == 90:
        return np.rot90(img, k=-1)
    if cw == 180:
        return img[::-1, ::-1]
    if cw == 270:
        return np.rot90(img, k=1)
    return img


def ffmpeg_upright_filters(cw: int) -> list[tuple[str, str | None]]:
    """FFmpeg filters, as (name, args), that turn a stored picture upright."""
    if cw == 90:
        return [("transpose", "clock")]
    if cw == 270:
        return [("transpose", "cclock")]
    if cw == 180:
        return [("hflip", None), ("vflip", None)]
    return []
