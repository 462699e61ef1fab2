"""Reduced-resolution analysis decode (CPU, PyAV): upright RGB frames, their times, and codec
motion vectors, whole (``decode_for_analysis``) or in bounded chunks (``iter_analysis_frames``).

Analysis size: the upright display size (rotation and sample aspect ratio applied) scaled so
its short side is ``short_side`` (144 by default, ``VideoRunConfig.analysis_short_side``);
never upscaled. 144p keeps 30 min of 30 fps video at ~4 GB if held whole, which is why the
pipeline uses the chunked form and the kernels (shots, motion) carry their state across chunks.

Speed, measured on 720p H.264 (2 cores): the decoder runs with FFmpeg frame threading, and
scaling + YUV->RGB is one swscale pass through a *persistent* ``VideoReformatter`` with area
interpolation. ``frame.to_ndarray(width=, height=, format=)`` builds a new SwsContext per frame
(~4.5 ms at 720p->144p) where the reused one costs ~0.8 ms, so the analysis decode is faster
than the naive PyAV loop at the same output size. Frames that are not sampled
(``sample_fps``) are decoded (the codec needs them) but never converted.

Times are presentation timestamps in seconds relative to ``VideoInfo.start_time`` (previous +
1/fps where a stream has no timestamps, as raw Annex-B files do). Frame indices are positions
on the constant-rate timeline, ``round(time * fps)`` forced strictly increasing: for ordinary
constant-rate files that is simply the picture number, but files that skip pictures (AVI drop
packets, e.g. opencv_tree.avi decodes 68 pictures over 444 frame slots; VP9 hidden frames)
keep ``index / fps == time``, so frame spans from the shot kernels convert to times with fps
and ``VideoInfo.num_frames`` bounds them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curastream.videos.probe import VideoInfo

DEFAULT_SHORT_SIDE = 144
DEFAULT_CHUNK = 256


class VideoDecodeError(RuntimeError):
    """The video stream could not be decoded at all (not raised for isolated bad packets)."""


class VideoDecodeTimeout(VideoDecodeError):
    """Decoding ran past the per-item time limit."""


@dataclass
class AnalysisFrames:
    frames: np.ndarray  # (N, h, w, 3) uint8 RGB, upright, at analysis_size
    times: np.ndarray  # (N,) float64 seconds from the stream start
    frame_indices: np.ndarray  # (N,) int64 presentation-order picture numbers
    mv_samples: list[tuple[float, int, np.ndarray]] | None  # (time, frame_index, AVMotionVector records)
    analysis_size: tuple[int, int]  # (w, h) of frames
    source: VideoInfo
    decode_errors: int = 0  # packets the decoder rejected (skipped), cumulative in a stream of chunks
    frames_decoded: int = 0  # pictures decoded so far, sampled or not (cumulative)
    last: bool = True  # chunked form: this is the final chunk
    error_messages: list[str] = field(default_factory=list)
    # preview_fps: (time, frame_index, (ph, pw, 3) uint8 RGB upright at preview_height)
    preview_frames: list[tuple[float, int, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.frame_indices)


def _av_major(av) -> int:
    try:
        return int(str(av.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


def analysis_size(info: VideoInfo, short_side: int = DEFAULT_SHORT_SIDE) -> tuple[int, int]:
    """(w, h) of upright analysis frames: display aspect kept, short side ``short_side`` at most."""
    dw, dh = info.display_width, info.display_height
    scale = min(1.0, short_side / max(1, min(dw, dh)))
    return max(1, int(round(dw * scale))), max(1, int(round(dh * scale)))


def _upright(img: np.ndarray, rot: int) -> np.ndarray:
    """View of a stored-orientation (h, w, 3) image turned clockwise by ``rot`` degrees."""
    if rot == 90:
        return np.rot90(img, k=-1)
    if rot == 180:
        return img[::-1, ::-1]
    if rot == 270:
        return np.rot90(img, k=1)
    return img


class _Sampler:
    """Picks the first frame at or after each point of a ``rate`` grid (None: every frame).

    Half a frame of slack keeps a 30 fps stream sampled at 2 fps on every 15th frame instead of
    drifting by one when timestamps are rounded.
    """

    def __init__(self, rate: float | None, fps: float):
        self.rate = rate if rate and rate > 0 else None
        self.slack = 0.5 / fps if fps > 0 else 0.0
        self.next_t = -math.inf

    def take(self, t: float) -> bool:
        if self.rate is None:
            return True
        if t + self.slack < self.next_t:
            return False
        # Grid-aligned, so a gap in the stream does not shift later samples.
        self.next_t = (math.floor((t + self.slack) * self.rate) + 1) / self.rate
        return True


def iter_analysis_frames(
    path,
    info: VideoInfo,
    short_side: int = DEFAULT_SHORT_SIDE,
    sample_fps: float | None = None,
    motion_vectors: bool = True,
    mv_sample_fps: float = 2.0,
    time_limit_s: float | None = None,
    threads: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    motion_pairs: bool = False,
    on_frame: Callable[[float, Any], None] | None = None,
    preview_fps: float | None = None,
    preview_height: int = 240,
    scale_threads: int = 1,
) -> Iterator[AnalysisFrames]:
    """Decode ``info``'s video stream into chunks of at most ``chunk_size`` analysis frames.

    sample_fps: None converts every frame (shot detection needs them all); a rate keeps the
        first frame at or after each 1/sample_fps grid point.
    motion_pairs: with sample_fps, also keep the frame right after each sampled one, so the
        frame-based motion kernel has consecutive (t, t+1) pairs.
    motion_vectors: ask the decoder to export codec motion vectors (H.264 / MPEG family; ignored
        for other codecs, whose ``mv_samples`` stay empty) and keep those of the first frame
        carrying vectors at or after each 1/mv_sample_fps grid point.
    time_limit_s: wall-clock budget for the whole decode; exceeding it raises VideoDecodeTimeout.
    threads: FFmpeg decoder threads (0: FFmpeg picks, one per core), frame + slice threading.
    on_frame: called as ``on_frame(time, av.VideoFrame)`` with every decoded picture, full size
        and in stored orientation, before any sampling: lets one decode also feed clip encoders.
    preview_fps / preview_height: also keep upright RGB frames ``preview_height`` px high
        (display aspect, never upscaled) at about preview_fps, in ``preview_frames``.
    scale_threads: swscale threads per conversion (0: one per core, PyAV's default). One: a
        144p output is too small to split, the slice threads' hand-offs cost ~15% more CPU for
        the same pixels (measured on the bench videos), and the decoder's frame threads and a
        second video already keep the cores busy.

    Every chunk is a fresh array (the consumer may keep it). Packets the decoder rejects are
    skipped and counted (``decode_errors``); a stream from which no frame decodes raises
    VideoDecodeError.
    """
    import av
    from av.video.reformatter import VideoReformatter

    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    deadline = time.monotonic() + time_limit_s if time_limit_s else None
    wa, ha = analysis_size(info, short_side)
    rot = info.rotation % 360
    # swscale works in stored orientation: scale to the rotated target, then rotate.
    sw, sh = (ha, wa) if rot in (90, 270) else (wa, ha)
    want_mvs = bool(motion_vectors) and info.has_motion_vectors_codec
    fps = info.fps if info.fps > 0 else 25.0
    if preview_fps:
        ph = max(2, min(int(preview_height), info.display_height))
        pw = max(2, int(round(info.display_width * ph / info.display_height)))
        psw, psh = (ph, pw) if rot in (90, 270) else (pw, ph)

    src = path if path is not None else info.path
    name = str(getattr(src, "name", src))
    try:
        container = av.open(src, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoDecodeError(f"{name}: cannot open ({e})") from None
    try:
        stream = container.streams.video[info.stream_index]
        cc = stream.codec_context
        cc.thread_type = "AUTO"
        cc.thread_count = int(threads)
        if want_mvs:
            cc.options = {"flags2": "+export_mvs"}
        # One reformatter per output size: each caches its SwsContext, which is the saving.
        # PyAV < 17 has no threads argument (and its swscale runs on the calling thread).
        sws = {"threads": int(scale_threads)} if _av_major(av) >= 17 else {}
        reformatter = VideoReformatter()
        preview_reformatter = VideoReformatter() if preview_fps else None
        tb = stream.time_base
        t0 = info.start_time

        frame_sampler = _Sampler(sample_fps, fps)
        mv_sampler = _Sampler(mv_sample_fps, fps)
        preview_sampler = _Sampler(preview_fps, fps)
        errors = 0
        messages: list[str] = []
        decoded = 0
        last_t = -1.0 / fps
        last_idx = -1
        pair_pending = False

        buf = np.empty((chunk_size, ha, wa, 3), np.uint8)
        times: list[float] = []
        indices: list[int] = []
        mvs: list[tuple[float, int, np.ndarray]] = []
        previews: list[tuple[float, int, np.ndarray]] = []

        def emit(final: bool) -> AnalysisFrames:
            n = len(indices)
            return AnalysisFrames(
                frames=buf[:n],
                times=np.asarray(times, np.float64),
                frame_indices=np.asarray(indices, np.int64),
                mv_samples=list(mvs) if want_mvs or motion_vectors else None,
                analysis_size=(wa, ha),
                source=info,
                decode_errors=errors,
                frames_decoded=decoded,
                last=final,
                error_messages=list(messages),
                preview_frames=list(previews) if preview_fps else None,
            )

        def packets():
            for packet in container.demux(stream):
                yield packet
            yield None  # flush the decoder's delayed pictures

        for packet in packets():
            if deadline is not None and time.monotonic() > deadline:
                raise VideoDecodeTimeout(
                    f"{name}: decode exceeded the time limit of {time_limit_s:g} s after {decoded} frames"
                )
            try:
                frames = cc.decode(packet)
            except av.error.EOFError:
                break
            except (av.error.FFmpegError, ValueError) as e:
                errors += 1
                if len(messages) < 5:
                    messages.append(str(e))
                continue
            for frame in frames:
                if frame.pts is not None and tb is not None:
                    t = float(frame.pts * tb) - t0
                else:
                    t = last_t + 1.0 / fps if decoded else 0.0
                last_t = t
                decoded += 1
                # Timeline index, not a decode counter: AVI "drop" packets and VP9 hidden
                # frames make the two differ, and spans/cuts are turned into times with fps.
                idx = max(last_idx + 1, int(round(t * fps)))
                last_idx = idx
                if on_frame is not None:
                    on_frame(t, frame)
                if preview_reformatter is not None and preview_sampler.take(t):
                    img = preview_reformatter.reformat(frame, width=psw, height=psh, format="rgb24",
                                                       interpolation="AREA", **sws).to_ndarray()
                    previews.append((t, idx, np.ascontiguousarray(_upright(img, rot))))

                if want_mvs and mv_sampler.rate is not None:
                    sd = frame.side_data.get("MOTION_VECTORS")
                    if sd is not None and mv_sampler.take(t):
                        mvs.append((t, idx, sd.to_ndarray()))

                keep = frame_sampler.take(t)
                if not keep and pair_pending:
                    keep = True
                    pair_pending = False
                elif keep and motion_pairs and frame_sampler.rate is not None:
                    pair_pending = True
                if not keep:
                    continue

                rgb = reformatter.reformat(frame, width=sw, height=sh, format="rgb24",
                                           interpolation="AREA", **sws).to_ndarray()
                buf[len(indices)] = _upright(rgb, rot)  # the one copy: a view goes in
                times.append(t)
                indices.append(idx)
                if len(indices) == chunk_size:
                    yield emit(False)
                    buf = np.empty((chunk_size, ha, wa, 3), np.uint8)
                    times, indices, mvs, previews = [], [], [], []

        if decoded == 0:
            detail = f" ({errors} packets rejected: {messages[0] if messages else ''})" if errors else ""
            raise VideoDecodeError(f"{name}: no frame could be decoded{detail}")
        yield emit(True)
    finally:
        container.close()


_END = object()


def read_ahead(chunks: Iterator[AnalysisFrames], depth: int = 1) -> Iterator[AnalysisFrames]:
    """Run the generator ``chunks`` (e.g. :func:`iter_analysis_frames`) on a thread of its own,
    at most ``depth`` chunks ahead of the consumer; yields the same chunks in the same order and
    re-raises its exceptions (VideoDecodeError, the time limit) at the same point.

    Without it the decoder stops whenever the consumer runs its kernels on a chunk: FFmpeg's
    frame threads only work ahead by a few pictures. With it the kernels overlap the decode of
    the next chunk, which matters when one video is left in flight (its kernels on one core,
    the decoder's threads on the other). The generator is closed on the reading thread when the
    consumer stops early (its ``finally`` closes the container), and this waits for that.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put((chunk, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, e))
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        put((_END, None))

    thread = threading.Thread(target=produce, name="video-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is _END:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def concat_chunks(chunks: list[AnalysisFrames]) -> AnalysisFrames:
    """Join chunks of one video (in order) into one AnalysisFrames."""
    if not chunks:
        raise ValueError("no chunks")
    last = chunks[-1]
    mv = None
    if any(c.mv_samples is not None for c in chunks):
        mv = [s for c in chunks for s in (c.mv_samples or [])]
    frames = chunks[0].frames if len(chunks) == 1 else np.concatenate([c.frames for c in chunks])
    previews = None
    if any(c.preview_frames is not None for c in chunks):
        previews = [p for c in chunks for p in (c.preview_frames or [])]
    return AnalysisFrames(
        frames=frames,
        times=np.concatenate([c.times for c in chunks]),
        frame_indices=np.concatenate([c.frame_indices for c in chunks]),
        mv_samples=mv,
        analysis_size=last.analysis_size,
        source=last.source,
        decode_errors=last.decode_errors,
        frames_decoded=last.frames_decoded,
        last=True,
        error_messages=last.error_messages,
        preview_frames=previews,
    )


def decode_for_analysis(
    path,
    info: VideoInfo,
    short_side: int = DEFAULT_SHORT_SIDE,
    sample_fps: float | None = None,
    motion_vectors: bool = True,
    mv_sample_fps: float = 2.0,
    time_limit_s: float | None = None,
    threads: int = 0,
    motion_pairs: bool = False,
    **kw,
) -> AnalysisFrames:
    """Whole-video form of :func:`iter_analysis_frames` (holds every frame: short videos only).
    Extra keywords (on_frame, preview_fps, preview_height) pass through."""
    return concat_chunks(list(iter_analysis_frames(
        path, info, short_side=short_side, sample_fps=sample_fps, motion_vectors=motion_vectors,
        mv_sample_fps=mv_sample_fps, time_limit_s=time_limit_s, threads=threads,
        # One chunk for the whole video when the header's count is right; more if it is low.
        chunk_size=max(1, min(4096, info.num_frames + 8)), motion_pairs=motion_pairs, **kw,
    )))
