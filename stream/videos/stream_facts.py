"""Facts read from one open container and stream with PyAV, for the probe (videos/probe.py):
which stream, its rates and timing by Curator's rule, the first picture, a packet count. Each
helper does one read; the probe chains them.
"""

from __future__ import annotations

import os
from typing import Any

MIN_FPS = 0.1
MAX_FPS = 1000.0
# Decoding the first picture may need a few packets (B-frame delay, leading non-key packets).
_MAX_PACKETS_TO_FIRST_FRAME = 600


def _name_of(path_or_file: Any) -> str:
    if isinstance(path_or_file, (str, os.PathLike)):
        return os.fspath(path_or_file)
    return str(getattr(path_or_file, "name", "<file object>"))


def _pick_stream(container):
    videos = [s for s in container.streams.video if not _has_disposition(s, "attached_pic")]
    if not videos:
        return None
    defaults = [s for s in videos if _has_disposition(s, "default")]
    # The first default stream, else the first: a second angle/rendition is never preferred.
    return (defaults or videos)[0]


def _has_disposition(stream, name: str) -> bool:
    try:
        import av

        return bool(stream.disposition & getattr(av.stream.Disposition, name))
    except (AttributeError, TypeError):
        return False


def _rate(value) -> float | None:
    try:
        f = float(value) if value is not None else None
    except (TypeError, ZeroDivisionError, ValueError):
        return None
    return f if f and MIN_FPS <= f <= MAX_FPS else None


def _seconds(ts: int, num: int, den: int) -> float:
    """``ts`` ticks of ``num/den`` s as ffprobe prints them and Curator parses them back: the
    double product, then ``%f`` (6 decimals). 2.2016666 s is 2.201667 there, and the last
    clip's end, and so its id, follows from it."""
    return float(f"{ts * (num / den):f}")


def curator_timing(container, stream) -> tuple[float | None, float | None]:
    """(fps, duration) by Curator's metadata rule, None where the rule finds nothing."""
    avg = stream.average_rate
    fps = avg.numerator / avg.denominator if avg and avg.numerator > 0 and avg.denominator > 0 else None
    tb = stream.time_base
    if stream.duration is not None and tb:
        duration = _seconds(stream.duration, tb.numerator, tb.denominator)
    elif container.duration is not None:
        duration = _seconds(container.duration, 1, 1_000_000)
    else:
        duration = None
    return fps, duration


def _canonical(codec_context) -> str:
    codec = codec_context.codec
    # "libdav1d" is a decoder; "av1" the format.
    return getattr(codec, "canonical_name", None) or codec.name


def _bit_depth(pix_fmt: str) -> int:
    try:
        import av

        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except Exception:  # noqa: BLE001 - unknown/hardware formats: 8 is the common case
        return 8


def _first_frame(container, stream):
    """Decode pictures until the first one appears; None when the stream holds none."""
    packets = 0
    for packet in container.demux(stream):
        packets += 1
        try:
            frames = packet.decode()
        except Exception:  # noqa: BLE001 - a damaged packet: try the next one
            frames = []
        if frames:
            return frames[0]
        if packets >= _MAX_PACKETS_TO_FIRST_FRAME:
            break
    return None


def _count_packets(container, stream) -> tuple[int, float | None, float | None]:
    """(packets, first_pts_s, end_s) by demuxing only: the fallback for headers without duration."""
    tb = stream.time_base
    n = 0
    first = None
    end = None
    for p in container.demux(stream):
        if p.size == 0:  # demuxer flush packet
            continue
        n += 1
        if p.pts is not None and tb is not None:
            t0 = float(p.pts * tb)
            t1 = float((p.pts + (p.duration or 0)) * tb)
            first = t0 if first is None else min(first, t0)
            end = t1 if end is None else max(end, t1)
    return n, first, end
