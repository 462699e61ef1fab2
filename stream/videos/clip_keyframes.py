"""Keyframes of a source, for the stream-copy cut: listing them from packet flags, rebuilding
timestamps for streams that carry none, and snapping a span onto them."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av

from curastream.videos.clip_facts import origin, stream_fps, video_packets

Snap = Literal["cover", "tile"]


def keyframe_times(path: str | Path, stream_index: int = 0) -> list[float]:
    """Presentation times (s) of the keyframes of one video stream, from packet flags (no decode).

    Streams without timestamps (raw Annex-B) get ``decode index / fps``; that is exact for IDR
    keyframes, which are never reordered.
    """
    with av.open(str(path)) as container:
        vs = container.streams.video[stream_index]
        return _scan_keyframes(container, vs)


def _scan_keyframes(container, vs) -> list[float]:
    tb, t0, fps = float(vs.time_base), origin(vs), stream_fps(vs)
    times = []
    for i, packet in enumerate(video_packets(container, vs)):
        if not packet.is_keyframe:
            continue
        if packet.pts is None:
            times.append(i / float(fps))
        else:
            times.append((packet.pts - t0) * tb)
    return sorted(times)


def snap_span(
    s: float, e: float, keyframes: list[float], tol: float, snap: Snap, video_end: float
) -> tuple[float, float]:
    """Keyframe-aligned [start, end) for span [s, e); end is inf when it runs to the end of stream.

    cover: start on the keyframe at/before s, stop at the first keyframe at/after e (clip covers
    the span; neighbours overlap when a boundary is not on a keyframe).
    tile: both boundaries go to the keyframe at/before them, so tiling spans give tiling clips;
    a span with no keyframe boundary inside falls back to cover rather than vanish.
    """
    i = bisect.bisect_right(keyframes, s + tol) - 1
    start = keyframes[max(i, 0)]
    j = bisect.bisect_left(keyframes, e - tol)
    cover_end = keyframes[j] if j < len(keyframes) else math.inf
    if snap == "cover" or e >= video_end - tol:
        return start, cover_end
    k = bisect.bisect_right(keyframes, e + tol) - 1
    tile_end = keyframes[k]
    return (start, tile_end) if tile_end > start + tol else (start, cover_end)


def video_end_s(container, vs) -> float:
    """Stream duration in our time convention, inf when the container does not say."""
    if vs.duration:
        return float(vs.duration * vs.time_base)
    if container.duration:
        return container.duration / av.time_base - float(origin(vs) * vs.time_base)
    return math.inf


@dataclass(frozen=True)
class Timestamps:
    """Rebuilt timestamps, per decode index, for a stream that carries none."""

    pts: list[int]
    dts: list[int]
    keyframes: list[float]  # seconds


def rebuild_timestamps(path: str, stream_index: int) -> tuple[Timestamps, float]:
    """(timestamps, stream end in s) for a stream without any (raw Annex-B H.264/HEVC).

    The display order of B-frames is only known to the decoder, so this decodes once, tagging each
    packet with its decode index, and reads the order in which frames come out.
    """
    with av.open(path) as container:
        vs = container.streams.video[stream_index]
        vs.thread_type = "AUTO"
        fps = stream_fps(vs)
        tick = max(1, round(1 / (fps * vs.time_base)))
        shown: list[int] = []
        key: list[bool] = []
        for packet in video_packets(container, vs):
            packet.pts = packet.dts = len(key)
            key.append(packet.is_keyframe)
            shown.extend(f.pts for f in vs.decode(packet))
        shown.extend(f.pts for f in vs.decode(None))
    count = len(key)
    if sorted(shown) != list(range(count)):
        raise ValueError(f"decoder returned {len(shown)} frames for {count} packets; cannot rebuild timestamps")
    display = [0] * count
    for j, i in enumerate(shown):
        display[i] = j
    delay = max(0, max((i - j for i, j in enumerate(display)), default=0))
    pts = [j * tick for j in display]
    dts = [(i - delay) * tick for i in range(count)]
    keyframes = sorted(display[i] / float(fps) for i in range(count) if key[i])
    return Timestamps(pts, dts, keyframes), count / float(fps)
