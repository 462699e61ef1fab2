"""Probe a video cheaply: container header, one decoded frame, and a packet count only when the
header has no duration. Nothing else is decoded.

The probe is a chain of small steps over one open container (:class:`_Probe`): check the file,
open it, pick the stream, read the first picture, the frame rate, the header's timing, count
packets when the header has none, and derive the display size.

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
from dataclasses import dataclass
from fractions import Fraction

from curastream.videos.mp4box import missing_moov
from curastream.videos.rotation import cw_from_ccw, upright_size
from curastream.videos.stream_facts import (  # noqa: F401
    MAX_FPS,
    MIN_FPS,
    _bit_depth,
    _canonical,
    _count_packets,
    _first_frame,
    _name_of,
    _pick_stream,
    _rate,
    curator_timing,
)

# Raw elementary streams carry no rate; FFmpeg's own default for them is 25.
DEFAULT_RAW_FPS = 25.0

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
    # The video's facts by Curator's metadata rule (what it splits by and what processed_videos
    # records): the stream's average frame rate, its duration else the container's, and
    # int(duration * fps) frames. Where the rule has no answer (no average rate, no duration
    # anywhere: Curator rejects such a video) they repeat fps/duration/num_frames above.
    meta_fps: float = 0.0
    meta_duration: float = 0.0
    meta_num_frames: int = 0

    @property
    def upright_size(self) -> tuple[int, int]:
        """(w, h) of the stored picture after rotation, before the SAR is applied."""
        return upright_size(self.width, self.height, self.rotation)


_RAW_FORMATS = ("h264", "hevc", "mpegvideo", "m4v", "h263", "rawvideo", "obu", "ivf")


@dataclass
class _Picture:
    """What the first decoded picture tells: the facts the header may lack or get wrong."""

    width: int
    height: int
    pix_fmt: str
    rotation: int  # clockwise, our convention
    sar: float


class _Probe:
    """One probe: the source, its open container, and the steps :func:`probe` chains."""

    def __init__(self, path_or_file):
        self.src = path_or_file
        self.name = _name_of(path_or_file)
        self.is_path = isinstance(path_or_file, (str, os.PathLike))
        self.container = None

    def fail(self, reason: str) -> VideoProbeError:
        return VideoProbeError(reason, self.name)

    def check_file(self) -> None:
        if not self.is_path:
            return
        import stat

        try:
            st = os.stat(self.name)
        except FileNotFoundError:
            if os.path.islink(self.name):
                raise self.fail(f"dangling symlink -> {os.readlink(self.name)}") from None
            raise self.fail("file not found") from None
        # By stat alone: opening a FIFO or a device could block the decoder forever.
        if not stat.S_ISREG(st.st_mode):
            kind = ("FIFO" if stat.S_ISFIFO(st.st_mode) else "character device" if stat.S_ISCHR(st.st_mode)
                    else "block device" if stat.S_ISBLK(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode)
                    else "directory" if stat.S_ISDIR(st.st_mode) else "special file")
            raise self.fail(f"not a regular file ({kind})")
        if st.st_size == 0:
            raise self.fail("empty file")

    def open(self):
        """(Re)open the container; on failure say why, naming the MP4 without an index."""
        import av

        try:
            self.container = av.open(self.src if not self.is_path else self.name, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            if missing_moov(self.src):
                raise self.fail("moov atom not found (unfinished or truncated MP4: no index)") from None
            raise self.fail(f"not a readable media file ({_ffmpeg_msg(e)})") from None
        return self.container

    def close(self) -> None:
        if self.container is not None:
            self.container.close()

    def stream(self):
        """The video stream to describe, after the checks that rule the file out early."""
        container = self.container
        stream = _pick_stream(container)
        if stream is None:
            raise self.fail("no video stream")
        fmt = container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):
            raise self.fail(f"a still image ({fmt}), not a video")
        if stream.codec_context is None:  # PyAV gives no decoder context when the codec parameters never arrived
            raise self.fail("the video stream has no codec parameters (file cut short?)")
        return stream

    def picture(self, stream, codec: str) -> _Picture:
        """Decode the first picture: size fallback, pixel format, rotation and SAR."""
        cc = stream.codec_context
        frame = _first_frame(self.container, stream)
        if frame is None:
            raise self.fail(f"no decodable {codec} frame in the video stream")
        width, height = int(cc.width or 0) or frame.width, int(cc.height or 0) or frame.height
        if width <= 0 or height <= 0:
            raise self.fail(f"invalid picture size {width}x{height}")
        pix_fmt = frame.format.name if frame.format is not None else (cc.pix_fmt or "unknown")
        rotation = cw_from_ccw(getattr(frame, "rotation", None))  # PyAV reports FFmpeg's CCW angle
        sar_q = frame.sample_aspect_ratio if getattr(frame, "sample_aspect_ratio", None) else None
        sar_q = sar_q or stream.sample_aspect_ratio or cc.sample_aspect_ratio
        sar = float(sar_q) if sar_q and float(sar_q) > 0 else 1.0
        if not (0.1 <= sar <= 10.0):
            sar = 1.0
        return _Picture(width, height, pix_fmt, rotation, sar)

    def frame_rate(self, stream, raw: bool) -> float:
        try:
            avg = float(stream.average_rate) if stream.average_rate else 0.0
        except (TypeError, ZeroDivisionError, ValueError):
            avg = 0.0
        if 0.0 < avg < MIN_FPS:
            # The measured rate (frames over duration) says a frame every 10+ s: another rate
            # guess would turn the header's duration into thousands of empty clips.
            raise self.fail(f"absurd frame rate: {avg:.3g} fps measured (below {MIN_FPS})")
        for cand in (stream.average_rate, stream.guessed_rate, stream.base_rate, stream.codec_context.framerate):
            fps = _rate(cand)
            if fps:
                return fps
        if raw:
            return DEFAULT_RAW_FPS
        rates = [stream.average_rate, stream.guessed_rate, stream.base_rate]
        raise self.fail(f"no usable frame rate (header rates {rates})")

    def header_timing(self, stream, fps: float) -> tuple[float, float | None, int]:
        """(start, duration, num_frames) as the header states them; 0/None where it does not."""
        import av

        tb = stream.time_base
        start = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
        duration = float(stream.duration * tb) if (stream.duration and tb) else None
        if not duration and self.container.duration:
            duration = self.container.duration / av.time_base
        num_frames = int(stream.frames or 0)
        if num_frames <= 0 and duration:
            num_frames = max(1, int(round(duration * fps)))
        return start, duration, num_frames

    def counted_timing(self, stream, fps: float, raw: bool):
        """(stream, start, duration, num_frames, fps) from demuxed packets, on a fresh container.

        For headers without timing (raw Annex-B, live-recorded WebM): demux, don't decode.
        """
        idx = stream.index
        self.container.close()
        if not self.is_path:
            self.src.seek(0)
        container = self.open()
        stream = next(s for s in container.streams if s.index == idx)
        n, first, end = _count_packets(container, stream)
        if n <= 0:
            raise self.fail("zero frames in the video stream")
        start = None
        if first is not None and end is not None and end > first:
            duration = end - first
            start = first
            if raw or not _rate(stream.average_rate):
                fps = _rate(n / duration) or fps
        else:
            duration = n / fps
        return stream, start, duration, n, fps

    def run(self) -> VideoInfo:
        container = self.open()
        stream = self.stream()
        video_rank = next(i for i, s in enumerate(container.streams.video) if s.index == stream.index)
        codec = _canonical(stream.codec_context)
        tb = stream.time_base
        raw = container.format.name in _RAW_FORMATS
        pic = self.picture(stream, codec)
        fps = self.frame_rate(stream, raw)
        start, duration, num_frames = self.header_timing(stream, fps)
        # Curator's metadata reads the last video stream ffprobe lists: span ids come from its
        # rate and duration even where we decode another (a file with a second rendition), so
        # the ids stay Curator's (SPEC: same video, same span_uuids).
        meta_fps, meta_duration = curator_timing(self.container, self.container.streams.video[-1])
        counted = not duration or num_frames <= 0
        if counted:
            stream, first, duration, num_frames, fps = self.counted_timing(stream, fps, raw)
            start = start if first is None else first
        if num_frames <= 0 or not duration or duration <= 0:
            raise self.fail("zero frames in the video stream")
        # SAR widens the stored picture; the rotation then turns it upright.
        w_disp, h_disp = upright_size(max(1, int(round(pic.width * pic.sar))), pic.height, pic.rotation)
        audio = next(iter(self.container.streams.audio), None)
        if not meta_fps or not meta_duration or meta_duration <= 0:
            meta_fps, meta_duration, meta_num_frames = float(fps), float(duration), int(num_frames)
        else:
            meta_num_frames = int(meta_duration * meta_fps)
        return VideoInfo(
            path=self.name,
            container=self.container.format.name,
            width=pic.width,
            height=pic.height,
            display_width=w_disp,
            display_height=h_disp,
            rotation=pic.rotation,
            sar=pic.sar,
            fps=float(fps),
            num_frames=int(num_frames),
            duration=float(duration),
            video_codec=codec,
            pixel_format=pic.pix_fmt,
            audio_codec=_canonical(audio.codec_context) if audio is not None else None,
            bit_depth=_bit_depth(pic.pix_fmt),
            has_motion_vectors_codec=codec in MV_CODECS,
            stream_index=video_rank,
            container_stream_index=int(stream.index),
            start_time=start,
            time_base=tb,
            counted=counted,
            meta_fps=meta_fps,
            meta_duration=meta_duration,
            meta_num_frames=meta_num_frames,
        )


def probe(path_or_file) -> VideoInfo:
    """Describe the first/default video stream of a file; raise VideoProbeError if unusable."""
    import av

    p = _Probe(path_or_file)
    p.check_file()
    try:
        return p.run()
    except VideoProbeError:
        raise
    except av.error.FFmpegError as e:
        raise p.fail(f"unreadable video ({_ffmpeg_msg(e)})") from None
    finally:
        p.close()


def _ffmpeg_msg(e: Exception) -> str:
    # FFmpegError's str() repeats errno and the file name; the strerror part is the message.
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).strip().rstrip(".") or type(e).__name__
