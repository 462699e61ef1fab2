"""Clip media: cut a source video into MP4 clips, make animated WebP previews, probe the result.

Two ways to make a clip:

- ``cut_copy``: stream copy on keyframes. No decode, no quality loss, ~ms per clip; the clip's real
  span is keyframe-aligned, so it is usually longer than the span asked for.
- ``cut_reencode`` / ``ClipEncoder``: frame-exact re-encode (libx264 by default). The video
  pipeline decodes a source once and pushes every frame to the open ``ClipEncoder`` of each span.

Time convention (every function here, and videos/decode.py's): seconds from the first presentation
timestamp of the chosen video stream, ``(pts - stream.start_time) * time_base``, so the first frame
is at 0.0 and frame k of a constant-rate stream at k / fps.

Span boundaries round to the nearest frame: a frame at time t is in [start_s, end_s) when
``start_s - h <= t < end_s - h`` with h half a frame. Spans written as ``frame / fps`` therefore
land on the frame they name even when ``fps`` is a float approximation (29.97 for 30000/1001).

``stream_index`` counts video streams only (``container.streams.video[stream_index]``).
"""

from __future__ import annotations

import bisect
import io
import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.filter
import numpy as np

__all__ = [
    "ClipMedia",
    "ClipEncoder",
    "SpanError",
    "COPYABLE_VIDEO_CODECS",
    "keyframe_times",
    "cut_copy",
    "cut_reencode",
    "encode_clips",
    "make_preview",
    "probe_media",
]

# Codecs FFmpeg's MP4 muxer carries by stream copy and common decoders read back from MP4.
# Left out on purpose: mjpeg (huge clips, poor MP4 support outside FFmpeg), vp8/theora/cinepak/
# msmpeg4*/wmv* (no MP4 mapping), mpeg4 part 2 (AVI sources carry DivX tags, packed B-frames
# and in-band headers; re-encoding is the safe path).
COPYABLE_VIDEO_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg2video", "mpeg1video"})
COPYABLE_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})

# MP4 needs a tag only where FFmpeg's default is not what players want: Apple decodes hvc1, not hev1.
_MP4_TAGS = {"hevc": "hvc1"}

# Re-encoded clips keep source timing (VFR survives); 90 kHz represents every common frame rate.
_ENC_TIME_BASE = Fraction(1, 90000)

Snap = Literal["cover", "tile"]


class SpanError(ValueError):
    """The span holds no frames of the video (empty, or outside it); other spans are unaffected."""


@dataclass(frozen=True)
class ClipMedia:
    """One encoded clip and the facts the clip JSON needs."""

    data: bytes = field(repr=False)  # a complete MP4, moov before mdat
    start_s: float  # real span of the output in source time (keyframe-aligned for copy)
    end_s: float
    width: int  # coded size of the MP4 track (copy keeps the source's; see ``rotation``)
    height: int
    framerate: float
    num_frames: int
    video_codec: str  # FFmpeg codec name: "h264", "hevc", ...
    num_bytes: int
    method: str = "copy"  # "copy" or "reencode"
    rotation: int = 0  # display rotation (CCW degrees, like av.VideoFrame.rotation) kept in the MP4
    sample_aspect_ratio: str | None = None  # "16:15" when pixels are not square
    has_audio: bool = False

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a player shows it, after the display rotation."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height


# ---------------------------------------------------------------------------------------------
# stream facts


def _stream_fps(vs: av.video.stream.VideoStream) -> Fraction:
    for rate in (vs.average_rate, vs.guessed_rate, vs.base_rate):
        if rate:
            return Fraction(rate)
    raise ValueError(f"stream {vs.index} declares no frame rate")


def _codec_name(stream) -> str:
    """Format-level codec name ("av1"), not the decoder's ("libdav1d")."""
    return stream.codec_context.codec.canonical_name


def _origin(vs) -> int:
    return vs.start_time or 0


def _tolerance(fps: Fraction) -> float:
    """Half a frame: span boundaries given as ``frame / fps`` floats snap onto the frame they name."""
    return 0.5 / float(fps)


def _fmt_sar(sar) -> str | None:
    if not sar or sar == 1:
        return None
    sar = Fraction(sar)
    return f"{sar.numerator}:{sar.denominator}"


def _check_spans(spans: Sequence[tuple[float, float]]) -> None:
    for s, e in spans:
        if not (math.isfinite(s) and e > s):
            raise ValueError(f"bad span ({s}, {e}): need finite start < end")


# ---------------------------------------------------------------------------------------------
# keyframes


def keyframe_times(path: str | Path, stream_index: int = 0) -> list[float]:
    """Presentation times (s) of the keyframes of one video stream, from packet flags (no decode).

    Streams without timestamps (raw Annex-B) get ``decode index / fps``; that is exact for IDR
    keyframes, which are never reordered.
    """
    with av.open(str(path)) as container:
        vs = container.streams.video[stream_index]
        return _scan_keyframes(container, vs)


def _scan_keyframes(container, vs) -> list[float]:
    tb, origin, fps = float(vs.time_base), _origin(vs), _stream_fps(vs)
    times = []
    for i, packet in enumerate(_video_packets(container, vs)):
        if not packet.is_keyframe:
            continue
        if packet.pts is None:
            times.append(i / float(fps))
        else:
            times.append((packet.pts - origin) * tb)
    return sorted(times)


def _video_packets(container, vs) -> Iterator[av.Packet]:
    for packet in container.demux(vs):
        if packet.size:  # demux ends with an empty flush packet
            yield packet


# ---------------------------------------------------------------------------------------------
# MP4 post-processing: faststart and the display matrix, in memory


def _boxes(buf, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, header length, box end) of the ISO-BMFF boxes in buf[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", buf, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"corrupt MP4 box {kind!r} at {pos}")
        yield kind, pos, header, pos + size
        pos += size


_MOOV_PATH = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _shift_chunk_offsets(moov: bytearray, shift: int, start: int = 0, end: int | None = None) -> None:
    for kind, pos, header, stop in _boxes(moov, start, len(moov) if end is None else end):
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


def _faststart(data: bytes) -> bytes:
    """Move moov in front of mdat, as ``movflags=+faststart`` does.

    FFmpeg's faststart re-opens the output by file name, which fails for in-memory output, so the
    relocation is done here: insert moov before the first mdat and shift every chunk offset.
    On anything unexpected the input is returned unchanged (still a valid MP4, moov at the end).
    """
    try:
        top = list(_boxes(data, 0, len(data)))
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


def _find_box(buf, kinds: Sequence[bytes], start: int = 0, end: int | None = None):
    """First box along a path of box types, as (body start, box end), or None."""
    end = len(buf) if end is None else end
    for kind, pos, header, stop in _boxes(buf, start, end):
        if kind == kinds[0]:
            if len(kinds) == 1:
                return pos + header, stop
            found = _find_box(buf, kinds[1:], pos + header, stop)
            if found:
                return found
    return None


def _mp4_rotation(data: bytes) -> int:
    """Display rotation of the first video track, CCW degrees, as FFmpeg's av_display_rotation_get."""
    try:
        moov = _find_box(data, [b"moov"])
        if moov is None:
            return 0
        for kind, pos, header, stop in _boxes(data, *moov):
            if kind != b"trak":
                continue
            hdlr = _find_box(data, [b"mdia", b"hdlr"], pos + header, stop)
            if hdlr is None or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
                continue
            tkhd = _find_box(data, [b"tkhd"], pos + header, stop)
            if tkhd is None:
                return 0
            version = data[tkhd[0]]
            a, b, _, c, d, *_ = struct.unpack_from(">9i", data, tkhd[0] + (52 if version == 1 else 40))
            if not (math.hypot(a, c) and math.hypot(b, d)):
                return 0
            degrees = -math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))
            return _norm_rotation(degrees)
    except (ValueError, struct.error):
        pass
    return 0


def _norm_rotation(degrees: float) -> int:
    """Nearest multiple of 90 in (-180, 180]."""
    r = int(round(degrees / 90.0)) * 90 % 360
    return r - 360 if r > 180 else r


# ---------------------------------------------------------------------------------------------
# stream copy


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


def _snap_span(
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


def _plan_clip(s: float, e: float, keyframes, tol: float, snap: Snap, video_end: float) -> _CopyClip:
    if s >= video_end - tol:
        error = SpanError(f"span ({s}, {e}) starts after the end of the video ({video_end:.3f} s)")
        return _CopyClip(math.inf, math.inf, error=error)
    return _CopyClip(*_snap_span(s, e, keyframes, tol, snap, video_end))


def _video_end_s(container, vs) -> float:
    """Stream duration in our time convention, inf when the container does not say."""
    if vs.duration:
        return float(vs.duration * vs.time_base)
    if container.duration:
        return container.duration / av.time_base - float(_origin(vs) * vs.time_base)
    return math.inf


@dataclass(frozen=True)
class _Timestamps:
    """Rebuilt timestamps, per decode index, for a stream that carries none."""

    pts: list[int]
    dts: list[int]
    keyframes: list[float]  # seconds


def _rebuild_timestamps(path: str, stream_index: int) -> tuple[_Timestamps, float]:
    """(timestamps, stream end in s) for a stream without any (raw Annex-B H.264/HEVC).

    The display order of B-frames is only known to the decoder, so this decodes once, tagging each
    packet with its decode index, and reads the order in which frames come out.
    """
    with av.open(path) as container:
        vs = container.streams.video[stream_index]
        vs.thread_type = "AUTO"
        fps = _stream_fps(vs)
        tick = max(1, round(1 / (fps * vs.time_base)))
        shown: list[int] = []
        key: list[bool] = []
        for packet in _video_packets(container, vs):
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
    return _Timestamps(pts, dts, keyframes), count / float(fps)


class _CopyCutter:
    """Routes the packets of one demux pass to the clips whose keyframe range holds them."""

    def __init__(self, container, vs, clips: list[_CopyClip], audio, table):
        self.container, self.vs, self.clips, self.audio, self.table = container, vs, clips, audio, table
        self.tb, self.origin = vs.time_base, _origin(vs)
        self.fps = _stream_fps(vs)
        self.tol = _tolerance(self.fps)
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
        tag = _MP4_TAGS.get(_codec_name(self.vs))
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
            data = _faststart(clip.buf.getvalue())
            cc = self.vs.codec_context
            clip.result = ClipMedia(
                data=data,
                start_s=clip.first_t,
                end_s=clip.last_end,
                width=cc.width,
                height=cc.height,
                framerate=float(self.fps),
                num_frames=clip.frames,
                video_codec=_codec_name(self.vs),
                num_bytes=len(data),
                method="copy",
                rotation=_mp4_rotation(data),
                sample_aspect_ratio=_fmt_sar(self.vs.sample_aspect_ratio),
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
    _check_spans(spans)
    if not spans:
        return []
    path = str(path)
    try:
        container, vs = _open_video(path, stream_index)
    except _UNREADABLE as e:
        return [e] * len(spans)
    with container:
        codec = _codec_name(vs)
        copyable = codec in COPYABLE_VIDEO_CODECS
        if copyable:
            results = _copy_all(path, container, vs, spans, keyframes, include_audio, snap)
    if not copyable and not fallback:
        raise ValueError(f"codec {codec!r} cannot be stream-copied into MP4")
    if fallback and (not copyable or _copy_broke(results)):
        return cut_reencode(path, spans, stream_index, **reencode)
    return results


# A source FFmpeg cannot open, or one without that video stream, fails every span of it.
_UNREADABLE = (av.FFmpegError, IndexError)


def _open_video(path: str | Path, stream_index: int):
    container = av.open(str(path))
    try:
        return container, container.streams.video[stream_index]
    except IndexError:
        container.close()
        raise IndexError(f"{path} has no video stream {stream_index}") from None


def _copy_broke(results) -> bool:
    """Every span failed, and not just because the spans miss the video: worth re-encoding."""
    return all(isinstance(r, Exception) for r in results) and not all(isinstance(r, SpanError) for r in results)


def _copy_all(path, container, vs, spans, keyframes, include_audio, snap) -> list[ClipMedia | Exception]:
    try:
        index = list(container.streams.video).index(vs)
        table = None
        video_end = _video_end_s(container, vs)
        if vs.start_time is None:  # no timestamps at all: raw elementary stream
            table, video_end = _rebuild_timestamps(path, index)
        if keyframes is None:
            keyframes = table.keyframes if table is not None else keyframe_times(path, index)
        keyframes = sorted(keyframes)
        if not keyframes:
            raise ValueError("stream has no keyframes")
        tol = _tolerance(_stream_fps(vs))
        clips = [_plan_clip(s, e, keyframes, tol, snap, video_end) for s, e in spans]
        audio = _copyable_audio(container) if include_audio else None
        _CopyCutter(container, vs, clips, audio, table).run()
    except Exception as e:  # noqa: BLE001  (a broken source fails every span, not the caller)
        return [e] * len(spans)
    return [c.result if c.result is not None else c.error for c in clips]


def _copyable_audio(container):
    for stream in container.streams.audio:
        if _codec_name(stream) in COPYABLE_AUDIO_CODECS:
            return stream
    return None


# ---------------------------------------------------------------------------------------------
# re-encode


def _encoder_options(encoder: str, preset: str, crf: int) -> dict[str, str]:
    if encoder in ("libx264", "libx265"):
        opts = {"preset": preset, "crf": str(crf)}
        if encoder == "libx265":
            opts["x265-params"] = "log-level=error"
        return opts
    if encoder == "libsvtav1":
        svt = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8, "medium": 6, "slow": 4}
        return {"preset": str(svt.get(preset, 8)), "crf": str(crf)}
    if encoder == "libvpx-vp9":
        return {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
    return {}


def _output_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """Upright size rounded down to even: 4:2:0 chroma needs even sides (one edge row/col is cropped)."""
    if rotation % 180:
        width, height = height, width
    return width - width % 2, height - height % 2


class _Upright:
    """FFmpeg filter chain that bakes the display rotation into the pixels and crops to even size.

    Works in the frame's own pixel format, so there is no colour round trip through RGB.
    """

    def __init__(self, frame: av.VideoFrame, rotation: int, out_w: int, out_h: int):
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format.name, time_base=_ENC_TIME_BASE
        )
        nodes = [src]
        rotation = _norm_rotation(rotation)
        if rotation == -90:  # display turns the picture clockwise
            nodes.append(self.graph.add("transpose", "clock"))
        elif rotation == 90:
            nodes.append(self.graph.add("transpose", "cclock"))
        elif rotation == 180:
            nodes += [self.graph.add("hflip"), self.graph.add("vflip")]
        nodes.append(self.graph.add("crop", f"{out_w}:{out_h}:0:0"))
        nodes.append(self.graph.add("buffersink"))
        self.graph.link_nodes(*nodes).configure()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        self.graph.vpush(frame)
        return self.graph.vpull()


class ClipEncoder:
    """One clip being re-encoded; frames in [start_s, end_s) are kept, others ignored.

    Built to be fed by a single decode of the source: push every decoded frame (with its source
    time) to each open encoder. Nothing is allocated until the first accepted frame.
    ``width``/``height`` are the size of the frames pushed (as decoded); the output is upright
    (``rotation`` applied to the pixels, no display matrix) and even-sized (see _output_size).
    ``sar`` keeps non-square pixels as they are (coded size + SAR, as the source), swapped on a
    90-degree turn. Output is 8-bit ``pix_fmt`` (10-bit input is converted) with source timing.
    """

    def __init__(
        self,
        start_s: float,
        end_s: float,
        fps: float | Fraction,
        width: int,
        height: int,
        encoder: str = "libx264",
        preset: str = "veryfast",
        crf: int = 23,
        threads: int = 0,
        rotation: int = 0,
        *,
        pix_fmt: str = "yuv420p",
        sar: Fraction | None = None,
    ):
        if not end_s > start_s:
            raise ValueError(f"empty span ({start_s}, {end_s})")
        self.start_s, self.end_s = float(start_s), float(end_s)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.width, self.height = int(width), int(height)
        self.encoder, self.preset, self.crf, self.threads = encoder, preset, int(crf), int(threads)
        self.rotation = _norm_rotation(rotation)
        self.pix_fmt = pix_fmt
        self.sar = Fraction(sar) if sar else None
        self.out_size = _output_size(self.width, self.height, self.rotation)
        self.tol = _tolerance(self.fps)
        self._out = self._buf = self._stream = self._upright = None
        self._frames = 0
        self._first_t: float | None = None
        self._last_t = -math.inf
        self._last_pts = -1
        self._finished = False

    def accepts(self, t: float) -> bool:
        return self.start_s - self.tol <= t < self.end_s - self.tol

    def push(self, frame: av.VideoFrame | np.ndarray, t: float | None = None) -> bool:
        """Encode ``frame`` (source time ``t`` in s) if it falls in the span; True when it did.

        Without ``t`` the frame is taken as the next one at the nominal rate. RGB uint8 arrays are
        accepted as well as av.VideoFrame.
        """
        if self._finished:
            raise RuntimeError("push after finish")
        if t is None:
            t = self.start_s + self._frames / float(self.fps)
        elif not self.accepts(t):
            return False
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if self._out is None:
            self._open(frame)
        self._encode(frame, t)
        return True

    def finish(self) -> ClipMedia:
        """Flush, close and return the clip; raises ValueError when no frame fell in the span."""
        if self._finished:
            raise RuntimeError("finish called twice")
        self._finished = True
        if self._out is None:
            raise SpanError(f"span [{self.start_s:.3f}, {self.end_s:.3f}) holds no frames")
        try:
            for packet in self._stream.encode(None):
                self._mux(packet)
            self._out.close()
            data = _faststart(self._buf.getvalue())
        finally:
            self._out = self._buf = self._upright = None
        w, h = self.out_size
        return ClipMedia(
            data=data,
            start_s=self._first_t,
            end_s=self._last_t + 1 / float(self.fps),
            width=w,
            height=h,
            framerate=float(self.fps),
            num_frames=self._frames,
            video_codec=av.codec.Codec(self.encoder, "w").canonical_name,
            num_bytes=len(data),
            method="reencode",
            rotation=0,
            sample_aspect_ratio=_fmt_sar(self._out_sar()),
        )

    def abort(self) -> None:
        """Drop the clip (e.g. the source failed mid-way)."""
        self._finished = True
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # noqa: BLE001
                pass
        self._out = self._buf = self._upright = None

    # -- internals

    def _out_sar(self) -> Fraction | None:
        if not self.sar or self.sar == 1:
            return None
        return 1 / self.sar if self.rotation % 180 else self.sar

    def _open(self, frame: av.VideoFrame) -> None:
        w, h = self.out_size
        if (frame.width, frame.height) != (self.width, self.height):
            got, want = f"{frame.width}x{frame.height}", f"{self.width}x{self.height}"
            raise ValueError(f"frame is {got}, encoder was set up for {want}")
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format="mp4")
        stream = self._out.add_stream(self.encoder, rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, self.pix_fmt
        stream.time_base = stream.codec_context.time_base = _ENC_TIME_BASE
        stream.codec_context.thread_count = self.threads
        stream.codec_context.options = _encoder_options(self.encoder, self.preset, self.crf)
        if self._out_sar():
            stream.codec_context.sample_aspect_ratio = self._out_sar()
        tag = _MP4_TAGS.get(av.codec.Codec(self.encoder, "w").canonical_name)
        if tag:
            stream.codec_context.codec_tag = tag
        self._stream = stream
        if self.rotation or (w, h) != (frame.width, frame.height):
            self._upright = _Upright(frame, self.rotation, w, h)

    def _encode(self, frame: av.VideoFrame, t: float) -> None:
        if self._first_t is None:
            self._first_t = t
        pts = max(round((t - self._first_t) / _ENC_TIME_BASE), self._last_pts + 1)
        saved = frame.pts, frame.time_base
        frame.pts, frame.time_base = pts, _ENC_TIME_BASE
        try:
            src = self._upright(frame) if self._upright is not None else frame
            for packet in self._stream.encode(src):
                self._mux(packet)
        finally:
            # the caller's frame may feed other encoders or later stages
            frame.pts = saved[0]
            if saved[1] is not None:
                frame.time_base = saved[1]
        self._last_pts = pts
        self._last_t = max(self._last_t, t)
        self._frames += 1

    def _mux(self, packet) -> None:
        if not packet.duration:
            # x264 leaves durations at 0; the MP4 muxer would then guess the last frame's length
            packet.duration = max(1, round(1 / (self.fps * _ENC_TIME_BASE)))
        self._out.mux(packet)


def encode_clips(
    frames: Iterable[tuple[float, av.VideoFrame | np.ndarray]],
    spans: Sequence[tuple[float, float]],
    *,
    fps: float | Fraction,
    width: int,
    height: int,
    rotation: int | None = None,
    sar: Fraction | None = None,
    encoder: str = "libx264",
    preset: str = "veryfast",
    crf: int = 23,
    pix_fmt: str = "yuv420p",
    threads: int = 0,
) -> list[ClipMedia | Exception]:
    """Encode several spans from one pass over ``(time_s, frame)`` pairs (the single decode).

    ``rotation=None`` reads the display rotation from the first av.VideoFrame. Each encoder is
    finished as soon as the frames pass its end, so memory holds only the clips in progress.
    Results follow the order of ``spans``; a failed span holds its Exception.
    """
    _check_spans(spans)
    results: list[ClipMedia | Exception | None] = [None] * len(spans)
    pending: list[tuple[int, ClipEncoder]] | None = None
    codec = (encoder, preset, crf, threads)
    tol = _tolerance(Fraction(fps).limit_denominator(1_000_000))
    try:
        for t, frame in frames:
            if pending is None:
                rot = getattr(frame, "rotation", 0) if rotation is None else rotation
                pending = [
                    (i, ClipEncoder(s, e, fps, width, height, *codec, rotation=rot, pix_fmt=pix_fmt, sar=sar))
                    for i, (s, e) in enumerate(spans)
                ]
            still = []
            for i, enc in pending:
                if t >= enc.end_s - tol:
                    results[i] = _finish(enc)
                    continue
                try:
                    enc.push(frame, t)
                    still.append((i, enc))
                except Exception as e:  # noqa: BLE001  (reported per span)
                    enc.abort()
                    results[i] = e
            pending = still
            if not pending:
                break
    except Exception as e:  # noqa: BLE001  (the source broke: spans not finished share the error)
        for _, enc in pending or []:
            enc.abort()
        results = [e if r is None else r for r in results]
        pending = []
    for i, enc in pending or []:
        results[i] = _finish(enc)
    return [r if r is not None else SpanError("the source yielded no frames") for r in results]


def _finish(enc: ClipEncoder) -> ClipMedia | Exception:
    try:
        return enc.finish()
    except Exception as e:  # noqa: BLE001
        return e


def cut_reencode(
    path: str | Path,
    spans: Sequence[tuple[float, float]],
    stream_index: int = 0,
    *,
    encoder: str = "libx264",
    preset: str = "veryfast",
    crf: int = 23,
    pix_fmt: str = "yuv420p",
    threads: int = 0,
    apply_rotation: bool = True,
) -> list[ClipMedia | Exception]:
    """Frame-exact clips: decode the source once and feed a ClipEncoder per span.

    Decoding starts at the keyframe before the earliest span (seek), not at the file start.
    """
    _check_spans(spans)
    if not spans:
        return []
    try:
        container, vs = _open_video(path, stream_index)
    except _UNREADABLE as e:
        return [e] * len(spans)
    with container:
        vs.thread_type = "AUTO"
        cc = vs.codec_context
        frames = _timed_frames(container, vs, min(s for s, _ in spans))
        return encode_clips(
            frames,
            spans,
            fps=_stream_fps(vs),
            width=cc.width,
            height=cc.height,
            rotation=None if apply_rotation else 0,
            sar=vs.sample_aspect_ratio,
            encoder=encoder,
            preset=preset,
            crf=crf,
            pix_fmt=pix_fmt,
            threads=threads,
        )


def _timed_frames(container, vs, first_s: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """(time, frame) from the keyframe at/before ``first_s`` (seek), else from the top."""
    if first_s > 1.0 and vs.start_time is not None:
        container.seek(vs.start_time + int(first_s / vs.time_base), stream=vs, backward=True)
        frames = _frame_times(container, vs)
        head = next(frames, None)
        if head is not None and head[0] <= first_s + _tolerance(_stream_fps(vs)):
            yield head
            yield from frames
            return
        container.seek(vs.start_time, stream=vs, backward=True)  # overshot: index lacks that keyframe
    yield from _frame_times(container, vs)


def _frame_times(container, vs) -> Iterator[tuple[float, av.VideoFrame]]:
    tb, origin, fps = vs.time_base, _origin(vs), _stream_fps(vs)
    for i, frame in enumerate(container.decode(vs)):
        # frames without pts (raw streams) come in display order at the nominal rate
        t = i / float(fps) if frame.pts is None else float((frame.pts - origin) * tb)
        yield t, frame


# ---------------------------------------------------------------------------------------------
# previews and probing


def make_preview(
    frames: Sequence[np.ndarray] | np.ndarray,
    fps_in: float,
    target_fps: float = 1.0,
    height: int = 240,
    quality: int = 50,
) -> bytes:
    """Animated WebP as Curator writes it: ``target_fps`` frames a second, ``height`` px high.

    ``frames`` are RGB uint8 (N, h, w, 3), the clip's frames at ``fps_in``; frame k of the preview
    is the source frame at time k / target_fps. Every preview frame lasts 1000 / target_fps ms.
    """
    from PIL import Image

    count = len(frames)
    if count == 0:
        raise ValueError("no frames for a preview")
    step = float(fps_in) / float(target_fps)
    picks = sorted({min(count - 1, int(k * step)) for k in range(max(1, math.ceil(count / step)))})
    h0, w0 = np.asarray(frames[0]).shape[:2]
    size = (max(1, round(w0 * height / h0)), int(height))
    images = [Image.fromarray(np.ascontiguousarray(frames[i][..., :3])).resize(size, Image.BILINEAR) for i in picks]
    out = io.BytesIO()
    images[0].save(
        out,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / float(target_fps)),
        loop=0,
        quality=int(quality),
    )
    return out.getvalue()


def probe_media(data: bytes, *, count_frames: bool = False) -> dict[str, Any]:
    """Facts about an encoded clip, read back with FFmpeg.

    ``num_frames`` is the container's sample count (or a packet count); ``count_frames=True``
    decodes and counts frames instead. ``rotation`` is the display matrix of an MP4, CCW degrees.
    """
    with av.open(io.BytesIO(data)) as container:
        vs = container.streams.video[0]
        if count_frames:
            num = sum(1 for _ in container.decode(vs))
        else:
            num = vs.frames or sum(1 for _ in _video_packets(container, vs))
        if vs.duration:
            duration = float(vs.duration * vs.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        cc = vs.codec_context
        info = {
            "width": cc.width,
            "height": cc.height,
            "framerate": float(_stream_fps(vs)),
            "num_frames": num,
            "video_codec": _codec_name(vs),
            "duration": duration,
            "pix_fmt": cc.pix_fmt,
            "sample_aspect_ratio": _fmt_sar(vs.sample_aspect_ratio),
            "codec_tag": cc.codec_tag,
            "rotation": _mp4_rotation(data),
            "has_audio": bool(container.streams.audio),
            "moov_first": _moov_first(data),
        }
    return info


def _moov_first(data: bytes) -> bool:
    try:
        kinds = [b[0] for b in _boxes(data, 0, len(data))]
    except (ValueError, struct.error):
        return False
    return b"moov" in kinds and b"mdat" in kinds and kinds.index(b"moov") < kinds.index(b"mdat")
