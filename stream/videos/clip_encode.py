"""Re-encode cut: frame-exact clips. :class:`ClipEncoder` takes the decoded frames of one span
(the video pipeline decodes a source once and pushes every frame to the open encoder of each
span); :func:`encode_clips` and :func:`cut_reencode` drive several encoders from one decode."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np

from curastream.videos.clip_facts import (
    MP4_TAGS,
    UNREADABLE,
    ClipMedia,
    SpanError,
    check_spans,
    fmt_sar,
    open_video,
    origin,
    stream_fps,
    tolerance,
)
from curastream.videos.encoder_open import open_encoder
from curastream.videos.mp4box import faststart
from curastream.videos.rotation import cw_from_ccw, ffmpeg_upright_filters, swaps_sides, upright_size
from curastream.videos.x264 import x264_options

# One x264 thread per clip encode, as Curator's ClipTranscodingStage (encoder_threads=1); clips
# are encoded in parallel by the clip stage's workers instead. x264's automatic thread count
# follows the machine's cores and its sliced threads code the frames otherwise, so one thread
# keeps a clip's bytes the same on a machine of any size (see videos/x264.py for the AVX-512
# fault that made them differ from run to run).
ENCODER_THREADS = 1

# Re-encoded clips keep source timing (VFR survives); 90 kHz represents every common frame rate.
_ENC_TIME_BASE = Fraction(1, 90000)


def _encoder_options(encoder: str, preset: str, crf: int) -> dict[str, str]:
    if encoder in ("libx264", "libx265"):
        opts = {"preset": preset, "crf": str(crf)}
        if encoder == "libx264":
            opts.update(x264_options())
        if encoder == "libx265":
            opts["x265-params"] = "log-level=error"
        return opts
    if encoder == "libsvtav1":
        svt = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8, "medium": 6, "slow": 4}
        return {"preset": str(svt.get(preset, 8)), "crf": str(crf)}
    if encoder == "libvpx-vp9":
        return {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
    return {}


def _output_size(width: int, height: int, cw: int) -> tuple[int, int]:
    """Upright size rounded down to even: 4:2:0 chroma needs even sides (one edge row/col is cropped)."""
    width, height = upright_size(width, height, cw)
    return width - width % 2, height - height % 2


class _Upright:
    """FFmpeg filter chain that bakes the display rotation into the pixels and crops to even size.

    Works in the frame's own pixel format, so there is no colour round trip through RGB.
    """

    def __init__(self, frame: av.VideoFrame, cw: int, out_w: int, out_h: int):
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format.name, time_base=_ENC_TIME_BASE
        )
        nodes = [src]
        nodes += [self.graph.add(name, args) for name, args in ffmpeg_upright_filters(cw)]
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
    ``rotation`` is FFmpeg's CCW display angle, as ``av.VideoFrame.rotation`` hands it over.
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
        threads: int = ENCODER_THREADS,
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
        self.cw = cw_from_ccw(rotation)  # the one conversion: frame.rotation is CCW
        self.pix_fmt = pix_fmt
        self.sar = Fraction(sar) if sar else None
        self.out_size = _output_size(self.width, self.height, self.cw)
        self.tol = tolerance(self.fps)
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
            data = faststart(self._buf.getvalue())
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
            sample_aspect_ratio=fmt_sar(self._out_sar()),
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
        return 1 / self.sar if swaps_sides(self.cw) else self.sar

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
        # PyAV opens encoders with slice threads: frame threads if a caller asks for several
        stream.codec_context.thread_type = "FRAME"
        stream.codec_context.thread_count = self.threads
        stream.codec_context.options = _encoder_options(self.encoder, self.preset, self.crf)
        if self._out_sar():
            stream.codec_context.sample_aspect_ratio = self._out_sar()
        tag = MP4_TAGS.get(av.codec.Codec(self.encoder, "w").canonical_name)
        if tag:
            stream.codec_context.codec_tag = tag
        open_encoder(stream.codec_context)  # libsvtav1 would leave its threads, and this one, real-time
        self._stream = stream
        if self.cw or (w, h) != (frame.width, frame.height):
            self._upright = _Upright(frame, self.cw, w, h)

    def _encode(self, frame: av.VideoFrame, t: float) -> None:
        if self._first_t is None:
            self._first_t = t
        pts = max(round((t - self._first_t) / _ENC_TIME_BASE), self._last_pts + 1)
        saved = frame.pts, frame.time_base, frame.pict_type
        # A decoded frame keeps its source picture type, which libx264 would obey as a forced
        # type: the encoder picks its own, as the ffmpeg command line (and so Curator) lets it.
        frame.pts, frame.time_base, frame.pict_type = pts, _ENC_TIME_BASE, av.video.frame.PictureType.NONE
        try:
            src = self._upright(frame) if self._upright is not None else frame
            for packet in self._stream.encode(src):
                self._mux(packet)
        finally:
            # the caller's frame may feed other encoders or later stages
            frame.pts, frame.pict_type = saved[0], saved[2]
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
    threads: int = ENCODER_THREADS,
) -> list[ClipMedia | Exception]:
    """Encode several spans from one pass over ``(time_s, frame)`` pairs (the single decode).

    ``rotation=None`` reads the display rotation from the first av.VideoFrame. Each encoder is
    finished as soon as the frames pass its end, so memory holds only the clips in progress.
    Results follow the order of ``spans``; a failed span holds its Exception.
    """
    check_spans(spans)
    results: list[ClipMedia | Exception | None] = [None] * len(spans)
    pending: list[tuple[int, ClipEncoder]] | None = None
    codec = (encoder, preset, crf, threads)
    tol = tolerance(Fraction(fps).limit_denominator(1_000_000))
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
    threads: int = ENCODER_THREADS,
    apply_rotation: bool = True,
) -> list[ClipMedia | Exception]:
    """Frame-exact clips: decode the source once and feed a ClipEncoder per span.

    Decoding starts at the keyframe before the earliest span (seek), not at the file start.
    """
    check_spans(spans)
    if not spans:
        return []
    try:
        container, vs = open_video(path, stream_index)
    except UNREADABLE as e:
        return [e] * len(spans)
    with container:
        # One decode thread, like the encode: the clip stage's workers cut several clips at once.
        # (Threaded decodes were once blamed for clips that differed between runs; the decoded
        # pixels were identical, and the fault was x264's: see videos/x264.py.)
        vs.thread_type = "SLICE"
        vs.thread_count = 1
        cc = vs.codec_context
        frames = _timed_frames(container, vs, min(s for s, _ in spans))
        return encode_clips(
            frames,
            spans,
            fps=stream_fps(vs),
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
        # a keyframe some files flag but FFmpeg cannot start from decodes as corrupt: go from the top
        if head is not None and head[0] <= first_s + tolerance(stream_fps(vs)) and not head[1].is_corrupt:
            yield head
            yield from frames
            return
        container.seek(vs.start_time, stream=vs, backward=True)  # overshot: index lacks that keyframe
    yield from _frame_times(container, vs)


def _frame_times(container, vs) -> Iterator[tuple[float, av.VideoFrame]]:
    tb, t0, fps = vs.time_base, origin(vs), stream_fps(vs)
    for i, frame in enumerate(container.decode(vs)):
        # frames without pts (raw streams) come in display order at the nominal rate
        t = i / float(fps) if frame.pts is None else float((frame.pts - t0) * tb)
        yield t, frame
