"""What a clip is: :class:`ClipMedia`, the stream facts every cut path reads the same way, and
:func:`probe_media`, which reads those facts back from a clip's bytes.

Time convention (every clip module, and videos/decode.py): seconds from the first presentation
timestamp of the chosen video stream, ``(pts - stream.start_time) * time_base``, so the first
frame is at 0.0 and frame k of a constant-rate stream at k / fps.

Span boundaries round to the nearest frame: a frame at time t is in [start_s, end_s) when
``start_s - h <= t < end_s - h`` with h half a frame (:func:`tolerance`). Spans written as
``frame / fps`` therefore land on the frame they name even when ``fps`` is a float
approximation (29.97 for 30000/1001).

``stream_index`` counts video streams only (``container.streams.video[stream_index]``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from curastream.videos.mp4box import display_matrix_degrees, moov_first
from curastream.videos.rotation import ccw_from_cw, cw_from_ccw, upright_size

# Codecs FFmpeg's MP4 muxer carries by stream copy and common decoders read back from MP4.
# Left out on purpose: mjpeg (huge clips, poor MP4 support outside FFmpeg), vp8/theora/cinepak/
# msmpeg4*/wmv* (no MP4 mapping), mpeg4 part 2 (AVI sources carry DivX tags, packed B-frames
# and in-band headers; re-encoding is the safe path).
COPYABLE_VIDEO_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg2video", "mpeg1video"})
COPYABLE_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})

# MP4 needs a tag only where FFmpeg's default is not what players want: Apple decodes hvc1, not hev1.
MP4_TAGS = {"hevc": "hvc1"}

# A source FFmpeg cannot open, or one without that video stream, fails every span of it.
UNREADABLE = (av.FFmpegError, IndexError)


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
    method: str = "copy"  # "copy" (keyframe-snapped), "exact" (smart cut) or "reencode" (full)
    # The MP4's display matrix as FFmpeg reports it (CCW degrees, like av.VideoFrame.rotation):
    # a clip leaves this package in the convention its readers use.
    rotation: int = 0
    sample_aspect_ratio: str | None = None  # "16:15" when pixels are not square
    has_audio: bool = False
    copied_frames: int = 0  # frames stream-copied from the source ("exact": the rest re-encoded)
    note: str | None = None  # why a clip did not take the requested path (e.g. full re-encode)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a player shows it, after the display rotation."""
        return upright_size(self.width, self.height, cw_from_ccw(self.rotation))


def stream_fps(vs: av.video.stream.VideoStream) -> Fraction:
    for rate in (vs.average_rate, vs.guessed_rate, vs.base_rate):
        if rate:
            return Fraction(rate)
    raise ValueError(f"stream {vs.index} declares no frame rate")


def codec_name(stream) -> str:
    """Format-level codec name ("av1"), not the decoder's ("libdav1d")."""
    return stream.codec_context.codec.canonical_name


def origin(vs) -> int:
    return vs.start_time or 0


def tolerance(fps: Fraction) -> float:
    """Half a frame: span boundaries given as ``frame / fps`` floats snap onto the frame they name."""
    return 0.5 / float(fps)


def fmt_sar(sar) -> str | None:
    if not sar or sar == 1:
        return None
    sar = Fraction(sar)
    return f"{sar.numerator}:{sar.denominator}"


def check_spans(spans: Sequence[tuple[float, float]]) -> None:
    for s, e in spans:
        if not (math.isfinite(s) and e > s):
            raise ValueError(f"bad span ({s}, {e}): need finite start < end")


def video_packets(container, vs) -> Iterator[av.Packet]:
    for packet in container.demux(vs):
        if packet.size:  # demux ends with an empty flush packet
            yield packet


def open_video(path: str | Path, stream_index: int):
    container = av.open(str(path))
    try:
        return container, container.streams.video[stream_index]
    except IndexError:
        container.close()
        raise IndexError(f"{path} has no video stream {stream_index}") from None


def mp4_rotation(data: bytes) -> int:
    """Display rotation of an MP4's first video track, FFmpeg's CCW degrees snapped to a
    quarter turn (what ``ClipMedia.rotation`` holds)."""
    degrees = display_matrix_degrees(data)
    return 0 if degrees is None else ccw_from_cw(cw_from_ccw(degrees))


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
            num = vs.frames or sum(1 for _ in video_packets(container, vs))
        if vs.duration:
            duration = float(vs.duration * vs.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        cc = vs.codec_context
        info = {
            "width": cc.width,
            "height": cc.height,
            "framerate": float(stream_fps(vs)),
            "num_frames": num,
            "video_codec": codec_name(vs),
            "duration": duration,
            "pix_fmt": cc.pix_fmt,
            "sample_aspect_ratio": fmt_sar(vs.sample_aspect_ratio),
            "codec_tag": cc.codec_tag,
            "rotation": mp4_rotation(data),
            "has_audio": bool(container.streams.audio),
            "moov_first": moov_first(data),
        }
    return info
