"""Stream-copy cut: each span becomes an MP4 of the source's own packets, cut on keyframes,
in one demux pass over the source. No decode, no quality loss, ~ms per clip; the clip's real span
is keyframe-aligned, so it is usually longer than the span asked for."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from curastream.videos.clip_encode import cut_reencode
from curastream.videos.clip_facts import (
    COPYABLE_AUDIO_CODECS,
    COPYABLE_VIDEO_CODECS,
    MP4_TAGS,
    UNREADABLE,
    ClipMedia,
    SpanError,
    check_spans,
    codec_name,
    fmt_sar,
    mp4_rotation,
    open_video,
    origin,
    stream_fps,
    tolerance,
)
from curastream.videos.clip_keyframes import Snap, keyframe_times, rebuild_timestamps, snap_span, video_end_s
from curastream.videos.mp4box import faststart


@dataclass
class _CopyClip:
    """One span on the copy path: its keyframe-aligned target and its open muxer."""

    start: float  # keyframe time the clip starts on
    end: float  # keyframe time it stops before (inf: end of stream)
    out: Any = None
    buf: io.BytesIO | None = None
    ovs: Any = None
    oas: Any = None
    base_pts: int | None = None
    audio_base: int | None = None
    first_t: float | None = None
    last_end: float = -math.inf
    frames: int = 0
    audio_seen: bool = False
    error: Exception | None = None
    result: ClipMedia | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None



def _plan_clip(s: float, e: float, keyframes, tol: float, snap: Snap, video_end: float) -> _CopyClip:
    if s >= video_end - tol:
        error = SpanError(f"span ({s}, {e}) starts after the end of the video ({video_end:.3f} s)")
        return _CopyClip(math.inf, math.inf, error=error)
    return _CopyClip(*snap_span(s, e, keyframes, tol, snap, video_end))



class _CopyCutter:
    """Routes the packets of one demux pass to the clips whose keyframe range holds them."""

    def __init__(self, container, vs, clips: list[_CopyClip], audio, table):
        self.container, self.vs, self.clips, self.audio, self.table = container, vs, clips, audio, table
        self.tb, self.origin = vs.time_base, origin(vs)
        self.fps = stream_fps(vs)
        self.tol = tolerance(self.fps)
        self.active: list[_CopyClip] = []
        self.gop_t: float | None = None
        self.audio_t = -math.inf
        self.index = 0
        self.finished = False

    def run(self) -> None:
        streams = [self.vs] + ([self.audio] if self.audio is not None else [])
        for packet in self.container.demux(streams):
            if not packet.size:
                continue
            if packet.stream is self.vs:
                self._video(packet)
            else:
                self._audio(packet)
            if self.finished:
                return
        for clip in self.clips:
            if not clip.done:
                self._finish(clip)

    # -- routing

    def _video(self, packet) -> None:
        if self.table is not None:
            packet.pts, packet.dts = self.table.pts[self.index], self.table.dts[self.index]
        self.index += 1
        if packet.pts is None:
            packet.pts = packet.dts
        if packet.pts is None:
            return
        t = float((packet.pts - self.origin) * self.tb)
        if packet.is_corrupt:
            # A damaged packet (typically the last one of a cut-short file): the clips in progress
            # end before it, so no clip carries data a player cannot decode.
            for clip in self.active:
                self._finish(clip)
            return
        if packet.is_keyframe:
            self.gop_t = t
            self._regroup()
        if self.gop_t is None:
            return  # undecodable lead-in before the first keyframe
        for clip in self.active:
            if t < clip.start - self.tol:
                continue  # leading picture of an open GOP: its references lie before the clip
            self._guard(clip, self._mux_video, packet, t)

    def _audio(self, packet) -> None:
        if packet.pts is None:
            return
        t = float(packet.pts * packet.time_base) - float(self.origin * self.tb)
        self.audio_t = max(self.audio_t, t)
        for clip in self.clips:
            if not clip.done and clip.start - self.tol <= t < clip.end - self.tol:
                self._guard(clip, self._mux_audio, packet, t)

    def _regroup(self) -> None:
        """At a keyframe: close clips that end here, then list the clips this GOP belongs to."""
        g, tol = self.gop_t, self.tol
        for clip in self.clips:
            if not clip.done and clip.end - tol <= g and (self.audio is None or clip.end - tol <= self.audio_t):
                self._finish(clip)
        self.active = [c for c in self.clips if not c.done and c.start - tol <= g < c.end - tol]
        self.finished = all(c.done for c in self.clips)

    def _guard(self, clip: _CopyClip, fn, *args) -> None:
        """One span's failure is recorded in its slot and does not stop the others."""
        if clip.done:
            return
        try:
            fn(clip, *args)
        except Exception as e:  # noqa: BLE001  (reported per span)
            clip.error = e
            self._close_quietly(clip)

    # -- muxing

    def _open(self, clip: _CopyClip) -> None:
        clip.buf = io.BytesIO()
        clip.out = av.open(clip.buf, "w", format="mp4")
        # opaque: take the codec from the decoder; PyAV otherwise looks for an encoder of the
        # decoder's name, which fails for libdav1d (AV1)
        clip.ovs = clip.out.add_stream_from_template(self.vs, opaque=True)
        tag = MP4_TAGS.get(codec_name(self.vs))
        if tag:
            clip.ovs.codec_context.codec_tag = tag
        if self.audio is not None:
            clip.oas = clip.out.add_stream_from_template(self.audio, opaque=True)

    def _mux_video(self, clip: _CopyClip, packet, t: float) -> None:
        if clip.out is None:
            self._open(clip)
        if clip.base_pts is None:
            clip.base_pts, clip.first_t = packet.pts, t
        dur = packet.duration or max(1, round(1 / (self.fps * self.tb)))
        out = _clone(packet, clip.ovs, packet.pts - clip.base_pts, _sub(packet.dts, clip.base_pts), dur, self.tb)
        clip.out.mux(out)
        clip.frames += 1
        clip.last_end = max(clip.last_end, t + float(dur * self.tb))

    def _mux_audio(self, clip: _CopyClip, packet, t: float) -> None:
        if clip.out is None:
            self._open(clip)
        atb = packet.time_base
        if clip.audio_base is None:
            clip.audio_base = round((clip.start + float(self.origin * self.tb)) / atb)
        pts, dts = packet.pts - clip.audio_base, _sub(packet.dts, clip.audio_base)
        out = _clone(packet, clip.oas, pts, dts, packet.duration, atb)
        clip.out.mux(out)
        clip.audio_seen = True

    def _finish(self, clip: _CopyClip) -> None:
        if clip.done:
            return
        if clip.frames == 0:
            clip.error = SpanError(f"no video packets fall in keyframe range [{clip.start}, {clip.end})")
            self._close_quietly(clip)
            return
        try:
            clip.out.close()
            data = faststart(clip.buf.getvalue())
            cc = self.vs.codec_context
            clip.result = ClipMedia(
                data=data,
                start_s=clip.first_t,
                end_s=clip.last_end,
                width=cc.width,
                height=cc.height,
                framerate=float(self.fps),
                num_frames=clip.frames,
                video_codec=codec_name(self.vs),
                num_bytes=len(data),
                method="copy",
                rotation=mp4_rotation(data),
                sample_aspect_ratio=fmt_sar(self.vs.sample_aspect_ratio),
                has_audio=clip.audio_seen,
            )
        except Exception as e:  # noqa: BLE001
            clip.error = e
        finally:
            clip.out = clip.buf = None

    @staticmethod
    def _close_quietly(clip: _CopyClip) -> None:
        if clip.out is not None:
            try:
                clip.out.close()
            except Exception:  # noqa: BLE001  (already failing; the first error is the one to report)
                pass
        clip.out = clip.buf = None


def _sub(value: int | None, base: int) -> int | None:
    return None if value is None else value - base


def _clone(packet, stream, pts, dts, duration, time_base) -> av.Packet:
    """A fresh packet for one output: muxing consumes a packet, and spans may share packets."""
    out = av.Packet(bytes(packet))
    out.pts, out.dts, out.duration = pts, dts, duration
    out.time_base = time_base
    out.is_keyframe = packet.is_keyframe
    out.stream = stream
    return out


def cut_copy(
    path: str | Path,
    spans: Sequence[tuple[float, float]],
    stream_index: int = 0,
    keyframes: Sequence[float] | None = None,
    *,
    include_audio: bool = False,
    snap: Snap = "cover",
    fallback: bool = True,
    **reencode: Any,
) -> list[ClipMedia | Exception]:
    """Stream-copy each span into its own MP4, in one demux pass over the source.

    Results are in the order of ``spans``; a span that fails holds its Exception. ``keyframes``
    (times from ``keyframe_times`` or from the pipeline's own decode) saves a demux pass.
    When the codec cannot be copied into MP4 (see COPYABLE_VIDEO_CODECS), or every span fails on
    the copy path for a reason other than SpanError, and ``fallback`` is set, the video is
    re-encoded instead (``method="reencode"``; ``reencode`` kwargs go to ``cut_reencode``).
    """
    check_spans(spans)
    if not spans:
        return []
    path = str(path)
    try:
        container, vs = open_video(path, stream_index)
    except UNREADABLE as e:
        return [e] * len(spans)
    with container:
        codec = codec_name(vs)
        copyable = codec in COPYABLE_VIDEO_CODECS
        if copyable:
            results = _copy_all(path, container, vs, spans, keyframes, include_audio, snap)
    if not copyable and not fallback:
        raise ValueError(f"codec {codec!r} cannot be stream-copied into MP4")
    if fallback and (not copyable or _copy_broke(results)):
        return cut_reencode(path, spans, stream_index, **reencode)
    return results


# A source FFmpeg cannot open, or one without that video stream, fails every span of it.
def _copy_broke(results) -> bool:
    """Every span failed, and not just because the spans miss the video: worth re-encoding."""
    return all(isinstance(r, Exception) for r in results) and not all(isinstance(r, SpanError) for r in results)


def _copy_all(path, container, vs, spans, keyframes, include_audio, snap) -> list[ClipMedia | Exception]:
    try:
        index = list(container.streams.video).index(vs)
        table = None
        video_end = video_end_s(container, vs)
        if vs.start_time is None:  # no timestamps at all: raw elementary stream
            table, video_end = rebuild_timestamps(path, index)
        if keyframes is None:
            keyframes = table.keyframes if table is not None else keyframe_times(path, index)
        keyframes = sorted(keyframes)
        if not keyframes:
            raise ValueError("stream has no keyframes")
        tol = tolerance(stream_fps(vs))
        clips = [_plan_clip(s, e, keyframes, tol, snap, video_end) for s, e in spans]
        audio = _copyable_audio(container) if include_audio else None
        _CopyCutter(container, vs, clips, audio, table).run()
    except Exception as e:  # noqa: BLE001  (a broken source fails every span, not the caller)
        return [e] * len(spans)
    return [c.result if c.result is not None else c.error for c in clips]


def _copyable_audio(container):
    for stream in container.streams.audio:
        if codec_name(stream) in COPYABLE_AUDIO_CODECS:
            return stream
    return None
