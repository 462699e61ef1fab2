"""Probe a video cheaply: container header, one decoded frame, and a packet count only when the
header has no duration. Nothing else is decoded.

Conventions (every other video module relies on them):

* ``width``/``height`` are the decoded picture size (e.g. 1920x1080, not the 1088 macroblock
  padding), in the orientation the pixels are stored.
* ``rotation`` is the clockwise angle, in degrees (0/90/180/270), by which the stored picture
  must be turned to be shown upright. FFmpeg reports the display matrix as a counter-clockwise
  angle (``ffprobe`` prints ``rotation=-90`` for an iPhone portrait clip): we store
  ``(-angle) % 360``, so that clip has ``rotation == 90`` and ``display_width < display_height``.
  ``np.rot90(img, k=-rotation // 90)`` makes a frame upright.
* ``display_width``/``display_height`` apply the sample aspect ratio (to the width) and then the
  rotation; they are the upright size a player shows.
* ``duration`` and ``num_frames`` come from the header when it has them; otherwise packets are
  demuxed (no decoding) and counted. Raw Annex-B streams (.h264/.h265) have no timing at all:
  their fps is the codec's (or 25) and their duration is ``num_frames / fps``.
* ``start_time`` is the stream's first timestamp in seconds (0 when unknown); the analysis
  decoder reports frame times relative to it.

What counts as bad: unreadable containers (no ``moov`` atom, random bytes), no video stream,
no decodable frame, zero frames or an absurd frame rate raise :class:`VideoProbeError`. A file
truncated mid-stream still probes (its header is intact); the decoder then yields the frames
that are there and counts the errors.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any

MIN_FPS = 0.1
MAX_FPS = 1000.0
# Raw elementary streams carry no rate; FFmpeg's own default for them is 25.
DEFAULT_RAW_FPS = 25.0
# Decoding the first picture may need a few packets (B-frame delay, leading non-key packets).
_MAX_PACKETS_TO_FIRST_FRAME = 600

# Codecs whose FFmpeg decoder honours flags2=+export_mvs (the H.264 decoder and the
# mpegvideo family). HEVC, VP8/9, AV1, Theora, MJPEG... export nothing.
MV_CODECS = frozenset({
    "h264", "mpeg1video", "mpeg2video", "mpeg4", "msmpeg4v1", "msmpeg4v2", "msmpeg4v3",
    "h263", "h263p", "flv1", "wmv1", "wmv2",
})


class VideoProbeError(ValueError):
    """A file that is not a usable video; ``reason`` is a one-line explanation."""

    def __init__(self, reason: str, path: str | None = None):
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str
    width: int
    height: int
    display_width: int
    display_height: int
    rotation: int
    sar: float
    fps: float
    num_frames: int
    duration: float
    video_codec: str
    pixel_format: str
    audio_codec: str | None
    bit_depth: int
    has_motion_vectors_codec: bool
    stream_index: int  # among the video streams: container.streams.video[stream_index]
    start_time: float = 0.0
    container_stream_index: int = 0  # among all streams (PyAV's stream.index)
    time_base: Fraction | None = None
    # True when duration/num_frames had to be counted from packets (header lacked them).
    counted: bool = False

    @property
    def upright_size(self) -> tuple[int, int]:
        """(w, h) of the stored picture after rotation, before the SAR is applied."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def _name_of(path_or_file: Any) -> str:
    if isinstance(path_or_file, (str, os.PathLike)):
        return os.fspath(path_or_file)
    return str(getattr(path_or_file, "name", "<file object>"))


def _mp4_missing_moov(path_or_file: Any) -> bool:
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
            pos, first = 0, True
            while True:
                f.seek(pos)
                head = f.read(16)
                if len(head) < 8:
                    return not first
                size, kind = struct.unpack(">I4s", head[:8])
                if first and kind != b"ftyp":
                    return False
                first = False
                if kind == b"moov":
                    return False
                if size == 1 and len(head) >= 16:
                    size = struct.unpack(">Q", head[8:16])[0]
                elif size == 0:
                    return True
                if size < 8:
                    return True
                pos += size
                if size_total is not None and pos >= size_total:
                    return True
        finally:
            if close:
                f.close()
            else:
                f.seek(0)
    except (OSError, ValueError, struct.error):
        return False


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


def normalise_rotation(ccw_degrees: float | None) -> int:
    """FFmpeg's counter-clockwise display-matrix angle -> our clockwise 0/90/180/270."""
    if ccw_degrees is None:
        return 0
    try:
        cw = (-float(ccw_degrees)) % 360.0
    except (TypeError, ValueError):
        return 0
    return int(round(cw / 90.0)) % 4 * 90


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


def probe(path_or_file) -> VideoInfo:
    """Describe the first/default video stream of a file; raise VideoProbeError if unusable."""
    import av

    name = _name_of(path_or_file)
    is_path = isinstance(path_or_file, (str, os.PathLike))
    if is_path and not os.path.exists(name):
        raise VideoProbeError("file not found", name)
    if is_path and os.path.getsize(name) == 0:
        raise VideoProbeError("empty file", name)

    def open_container():
        try:
            return av.open(path_or_file if not is_path else name, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            if _mp4_missing_moov(path_or_file):
                raise VideoProbeError("moov atom not found (unfinished or truncated MP4: no index)", name) from None
            raise VideoProbeError(f"not a readable media file ({_ffmpeg_msg(e)})", name) from None

    container = open_container()
    try:
        stream = _pick_stream(container)
        if stream is None:
            raise VideoProbeError("no video stream", name)
        video_rank = next(i for i, s in enumerate(container.streams.video) if s.index == stream.index)
        fmt = container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):
            raise VideoProbeError(f"a still image ({fmt}), not a video", name)
        cc = stream.codec_context
        if cc is None:  # PyAV gives no decoder context when the codec parameters never arrived
            raise VideoProbeError("the video stream has no codec parameters (file cut short?)", name)
        width, height = int(cc.width or 0), int(cc.height or 0)
        codec = _canonical(cc)
        tb = stream.time_base
        raw = container.format.name in ("h264", "hevc", "mpegvideo", "m4v", "h263", "rawvideo", "obu", "ivf")

        frame = _first_frame(container, stream)
        if frame is None:
            raise VideoProbeError(f"no decodable {codec} frame in the video stream", name)
        width, height = width or frame.width, height or frame.height
        if width <= 0 or height <= 0:
            raise VideoProbeError(f"invalid picture size {width}x{height}", name)
        pix_fmt = frame.format.name if frame.format is not None else (cc.pix_fmt or "unknown")
        rotation = normalise_rotation(getattr(frame, "rotation", None))
        sar_q = frame.sample_aspect_ratio if getattr(frame, "sample_aspect_ratio", None) else None
        sar_q = sar_q or stream.sample_aspect_ratio or cc.sample_aspect_ratio
        sar = float(sar_q) if sar_q and float(sar_q) > 0 else 1.0
        if not (0.1 <= sar <= 10.0):
            sar = 1.0

        fps = None
        try:
            avg = float(stream.average_rate) if stream.average_rate else 0.0
        except (TypeError, ZeroDivisionError, ValueError):
            avg = 0.0
        if 0.0 < avg < MIN_FPS:
            # The measured rate (frames over duration) says a frame every 10+ s: another rate
            # guess would turn the header's duration into thousands of empty clips.
            raise VideoProbeError(f"absurd frame rate: {avg:.3g} fps measured (below {MIN_FPS})", name)
        for cand in (stream.average_rate, stream.guessed_rate, stream.base_rate, cc.framerate):
            fps = _rate(cand)
            if fps:
                break
        if fps is None:
            if raw:
                fps = DEFAULT_RAW_FPS
            else:
                rates = [stream.average_rate, stream.guessed_rate, stream.base_rate]
                raise VideoProbeError(f"no usable frame rate (header rates {rates})", name)

        start = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
        duration = float(stream.duration * tb) if (stream.duration and tb) else None
        if not duration and container.duration:
            duration = container.duration / av.time_base
        num_frames = int(stream.frames or 0)
        counted = False
        if num_frames <= 0 and duration:
            num_frames = max(1, int(round(duration * fps)))
        if not duration or num_frames <= 0:
            # Header without timing (raw Annex-B, live-recorded WebM): demux, don't decode.
            counted = True
            idx = stream.index
            container.close()
            if not is_path:
                path_or_file.seek(0)
            container = open_container()
            stream = next(s for s in container.streams if s.index == idx)
            n, first, end = _count_packets(container, stream)
            if n <= 0:
                raise VideoProbeError("zero frames in the video stream", name)
            num_frames = n
            if first is not None and end is not None and end > first:
                duration = end - first
                start = first
                if raw or not _rate(stream.average_rate):
                    fps = _rate(n / duration) or fps
            else:
                duration = n / fps
        if num_frames <= 0 or not duration or duration <= 0:
            raise VideoProbeError("zero frames in the video stream", name)

        w_disp = max(1, int(round(width * sar)))
        h_disp = height
        if rotation in (90, 270):
            w_disp, h_disp = h_disp, w_disp
        audio = next(iter(container.streams.audio), None)
        return VideoInfo(
            path=name,
            container=container.format.name,
            width=width,
            height=height,
            display_width=w_disp,
            display_height=h_disp,
            rotation=rotation,
            sar=sar,
            fps=float(fps),
            num_frames=int(num_frames),
            duration=float(duration),
            video_codec=codec,
            pixel_format=pix_fmt,
            audio_codec=_canonical(audio.codec_context) if audio is not None else None,
            bit_depth=_bit_depth(pix_fmt),
            has_motion_vectors_codec=codec in MV_CODECS,
            stream_index=video_rank,
            container_stream_index=int(stream.index),
            start_time=start,
            time_base=tb,
            counted=counted,
        )
    except VideoProbeError:
        raise
    except av.error.FFmpegError as e:
        raise VideoProbeError(f"unreadable video ({_ffmpeg_msg(e)})", name) from None
    finally:
        container.close()


def _ffmpeg_msg(e: Exception) -> str:
    # FFmpegError's str() repeats errno and the file name; the strerror part is the message.
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).strip().rstrip(".") or type(e).__name__
