"""Reduced-resolution analysis decode (CPU, PyAV): upright RGB frames, their times, and codec
motion vectors, whole (``decode_for_analysis``) or in bounded chunks (``iter_analysis_frames``,
a thin wrapper over :class:`AnalysisDecoder` driven by an :class:`AnalysisSettings`).

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

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from curastream.videos.analysis_types import (
    DEFAULT_CHUNK,
    DEFAULT_SHORT_SIDE,
    AnalysisFrames,
    AnalysisSettings,
    VideoDecodeError,
    VideoDecodeTimeout,
    analysis_size,
)
from curastream.videos.motion_side_data import has_motion_vectors, motion_vector_carrier, read_motion_vectors
from curastream.videos.probe import VideoInfo
from curastream.videos.read_ahead import read_ahead  # noqa: F401 - callers import it from here
from curastream.videos.rotation import upright_size, upright_view
from curastream.videos.sampler import _Sampler  # gpu_decode imports it from here


def _av_major(av) -> int:
    try:
        return int(str(av.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


class AnalysisDecoder:
    """Decodes ``info``'s video stream into chunks of at most ``settings.chunk_size`` analysis
    frames; iterate it (once) to run the decode.

    on_frame: called as ``on_frame(time, av.VideoFrame)`` with every decoded picture, full size
        and in stored orientation, before any sampling: lets one decode also feed clip encoders.
    mv_frames: with ``mv_sample_fps=None``, keep the vectors of frame index i only where
        ``mv_frames(i)`` (Curator samples each clip on its own frame grid, which fixed spans
        know before the decode); None keeps every frame carrying vectors.
    mv_reduce: called as ``mv_reduce(records, frame_index, time)`` on each kept frame's vectors
        as it is decoded; ``mv_samples`` then holds what it returns instead of the records. With
        every frame's vectors kept (shot spans), a 720p H.264 frame carries ~7000 records
        (~250 kB): reduced at once, a chunk holds a few floats per frame instead.

    Every chunk is a fresh array (the consumer may keep it). Packets the decoder rejects are
    skipped and counted (``decode_errors``); a stream from which no frame decodes raises
    VideoDecodeError.
    """

    def __init__(self, path, info: VideoInfo, settings: AnalysisSettings = AnalysisSettings(),
                 on_frame: Callable[[float, Any], None] | None = None,
                 mv_frames: Callable[[int], bool] | None = None,
                 mv_reduce: Callable[[np.ndarray, int, float], Any] | None = None):
        if settings.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.info, self.settings, self.on_frame = info, settings, on_frame
        self.mv_frames = mv_frames
        self.mv_reduce = mv_reduce
        self.src = path if path is not None else info.path
        self.name = str(getattr(self.src, "name", self.src))
        self.fps = info.fps if info.fps > 0 else 25.0
        self.rot = info.rotation % 360
        self.size = analysis_size(info, settings.short_side)
        # swscale works in stored orientation: scale to the rotated target, then rotate.
        self.scale_size = upright_size(*self.size, self.rot)
        self.preview_scale_size = None
        if settings.preview_fps:
            ph = max(2, min(int(settings.preview_height), info.display_height))
            pw = max(2, int(round(info.display_width * ph / info.display_height)))
            self.preview_scale_size = upright_size(pw, ph, self.rot)
        self.want_mvs = bool(settings.motion_vectors) and info.has_motion_vectors_codec
        self.errors = 0
        self.messages: list[str] = []
        self.decoded = 0

    def __iter__(self) -> Iterator[AnalysisFrames]:
        import av

        s = self.settings
        deadline = time.monotonic() + s.time_limit_s if s.time_limit_s else None
        try:
            container = av.open(self.src, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise VideoDecodeError(f"{self.name}: cannot open ({e})") from None
        try:
            stream = container.streams.video[self.info.stream_index]
            cc = self._setup_codec(stream.codec_context)
            self._new_chunk()
            if s.start_s:
                self._seek(container, stream, cc, s.start_s)
            for packet in self._packets(container, stream):
                if deadline is not None and time.monotonic() > deadline:
                    raise VideoDecodeTimeout(f"{self.name}: decode exceeded the time limit of "
                                             f"{s.time_limit_s:g} s after {self.decoded} frames")
                try:
                    frames = cc.decode(packet)
                except av.error.EOFError:
                    break
                except (av.error.FFmpegError, ValueError) as e:
                    self.errors += 1
                    if len(self.messages) < 5:
                        self.messages.append(str(e))
                    continue
                for frame in frames:
                    if self._take(frame, stream.time_base) and len(self._indices) == s.chunk_size:
                        yield self._emit(False)
                        self._new_chunk()
                    if s.stop_s is not None and self._last_t >= s.stop_s:
                        break
                if s.stop_s is not None and self._last_t >= s.stop_s:
                    break
            if self.decoded == 0:
                detail = ""
                if self.errors:
                    detail = f" ({self.errors} packets rejected: {self.messages[0] if self.messages else ''})"
                raise VideoDecodeError(f"{self.name}: no frame could be decoded{detail}")
            yield self._emit(True)
        finally:
            container.close()

    # -- steps

    def _setup_codec(self, cc):
        import av
        from av.video.reformatter import VideoReformatter

        s = self.settings
        # FFmpeg exports a frame's vectors while frame threads may still be writing them: with
        # frame threading the same H.264 file gave different vectors (and 715 vs 716 frames
        # carrying any) from run to run on B-frame streams (chaplin, pyscenedetect testvideo).
        # Slice threading is deterministic, so the same input always gets the same scores and
        # filter decisions. Measured on 2 cores the decode was no slower (720p: 1.2 vs 1.4 s);
        # many cores lose frame parallelism, but the pipeline decodes several videos at once.
        cc.thread_type = "SLICE" if self.want_mvs else "AUTO"
        cc.thread_count = int(s.threads)
        if self.want_mvs:
            cc.options = {"flags2": "+export_mvs"}
        # One reformatter per output size: each caches its SwsContext, which is the saving.
        # PyAV < 17 has no threads argument (and its swscale runs on the calling thread).
        self._sws = {"threads": int(s.scale_threads)} if _av_major(av) >= 17 else {}
        self._reformatter = VideoReformatter()
        self._mv_reformatter = VideoReformatter()  # for frames whose vectors are read without a picture
        self._preview_reformatter = VideoReformatter() if s.preview_fps else None
        self._frame_sampler = _Sampler(s.sample_fps, self.fps)
        self._mv_sampler = _Sampler(s.mv_sample_fps, self.fps)
        self._preview_sampler = _Sampler(s.preview_fps, self.fps)
        self._last_t = -1.0 / self.fps
        self._last_idx = -1
        self._pair_pending = False
        return cc

    def _seek(self, container, stream, cc, start_s: float) -> None:
        """Position the demuxer on the keyframe at or before ``start_s``. A demuxer that lands
        later (a sparse seek index) would lose frames, so then the decode starts at the beginning.

        The stream's first packet is decoded first (its pictures dropped): the decoder takes
        state from it that a keyframe later on does not carry. x264 writes its version in an SEI
        there, and FFmpeg decodes 4:4:4 streams of old x264 builds differently by it: without it
        every picture of imageio_cockatoo.mp4 after a seek came out wrong (mean 70 grey levels)."""
        import av

        opening = next(container.demux(stream), None)
        if opening is not None and opening.size:
            try:
                cc.decode(opening)
            except (av.error.FFmpegError, ValueError):
                pass
        cc.flush_buffers()
        tb = stream.time_base
        target = max(0, int((start_s + self.info.start_time) / tb))  # floor: never past the start
        container.seek(target, stream=stream, backward=True, any_frame=False)
        first = next((p for p in container.demux(stream) if p.pts is not None), None)
        if first is None:
            raise VideoDecodeError(f"{self.name}: nothing to decode after a seek to {start_s:.3f} s")
        landed = float(first.pts * tb) - self.info.start_time
        early = landed <= start_s + 0.5 / self.fps
        container.seek(target if early else int(stream.start_time or 0), stream=stream, backward=True,
                       any_frame=False)

    @staticmethod
    def _packets(container, stream):
        for packet in container.demux(stream):
            yield packet
        yield None  # flush the decoder's delayed pictures

    def _new_chunk(self) -> None:
        wa, ha = self.size
        self._buf = np.empty((self.settings.chunk_size, ha, wa, 3), np.uint8)
        self._times: list[float] = []
        self._indices: list[int] = []
        self._mvs: list[tuple[float, int, np.ndarray]] = []
        self._previews: list[tuple[float, int, np.ndarray]] = []

    def _picture(self, reformatter, frame, size: tuple[int, int]):
        return reformatter.reformat(frame, width=size[0], height=size[1], format="rgb24",
                                    interpolation="AREA", **self._sws)

    def _rgb(self, reformatter, frame, size: tuple[int, int]) -> np.ndarray:
        return self._picture(reformatter, frame, size).to_ndarray()

    def _take(self, frame, tb) -> bool:
        """Account one decoded picture and keep what is sampled; True when it joined the chunk."""
        if frame.pts is not None and tb is not None:
            t = float(frame.pts * tb) - self.info.start_time
        elif self.settings.start_s:
            raise VideoDecodeError(f"{self.name}: frames without timestamps cannot be decoded from a seek point")
        else:
            t = self._last_t + 1.0 / self.fps if self.decoded else 0.0
        self._last_t = t
        self.decoded += 1
        # Timeline index, not a decode counter: AVI "drop" packets and VP9 hidden
        # frames make the two differ, and spans/cuts are turned into times with fps.
        idx = max(self._last_idx + 1, int(round(t * self.fps)))
        self._last_idx = idx
        if self.on_frame is not None:
            self.on_frame(t, frame)
        if self._preview_reformatter is not None and self._preview_sampler.take(t):
            img = self._rgb(self._preview_reformatter, frame, self.preview_scale_size)
            self._previews.append((t, idx, np.ascontiguousarray(upright_view(img, self.rot))))

        keep = self._frame_sampler.take(t)
        if not keep and self._pair_pending:
            keep = True
            self._pair_pending = False
        elif keep and self.settings.motion_pairs and self._frame_sampler.rate is not None:
            self._pair_pending = True
        picture = self._picture(self._reformatter, frame, self.scale_size) if keep else None

        if self.want_mvs and (self.mv_frames is None or self._mv_sampler.rate is not None or self.mv_frames(idx)):
            # never frame.side_data: see videos/motion_side_data.py
            carrier = picture if picture is not None else motion_vector_carrier(frame, self._mv_reformatter)
            if has_motion_vectors(carrier) and self._mv_sampler.take(t):
                reduce = None if self.mv_reduce is None else (lambda mvs: self.mv_reduce(mvs, idx, t))
                self._mvs.append((t, idx, read_motion_vectors(carrier, reduce)))
            del carrier
        if not keep:
            return False

        rgb = picture.to_ndarray()
        del picture
        self._buf[len(self._indices)] = upright_view(rgb, self.rot)  # the one copy: a view goes in
        self._times.append(t)
        self._indices.append(idx)
        return True

    def _emit(self, final: bool) -> AnalysisFrames:
        n = len(self._indices)
        s = self.settings
        return AnalysisFrames(
            frames=self._buf[:n],
            times=np.asarray(self._times, np.float64),
            frame_indices=np.asarray(self._indices, np.int64),
            mv_samples=list(self._mvs) if self.want_mvs or s.motion_vectors else None,
            analysis_size=self.size,
            source=self.info,
            decode_errors=self.errors,
            frames_decoded=self.decoded,
            last=final,
            error_messages=list(self.messages),
            preview_frames=list(self._previews) if s.preview_fps else None,
        )


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
    mv_frames: Callable[[int], bool] | None = None,
    mv_reduce: Callable[[np.ndarray, int, float], Any] | None = None,
    start_s: float | None = None,
    stop_s: float | None = None,
) -> Iterator[AnalysisFrames]:
    """Keyword form of ``AnalysisDecoder(path, info, AnalysisSettings(...), on_frame, mv_frames,
    mv_reduce)``;
    see :class:`AnalysisSettings` for the parameters. A generator: nothing runs until the first
    chunk is asked for."""
    settings = AnalysisSettings(
        short_side=short_side, sample_fps=sample_fps, motion_vectors=motion_vectors,
        mv_sample_fps=mv_sample_fps, time_limit_s=time_limit_s, threads=threads,
        chunk_size=chunk_size, motion_pairs=motion_pairs, preview_fps=preview_fps,
        preview_height=preview_height, scale_threads=scale_threads, start_s=start_s, stop_s=stop_s,
    )
    yield from AnalysisDecoder(path, info, settings, on_frame, mv_frames, mv_reduce)


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
