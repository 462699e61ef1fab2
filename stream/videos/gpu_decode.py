"""Analysis decode on the GPU: NVDEC through PyNvVideoCodec, frames kept on the device (CuPy).

Same contract as :class:`curastream.videos.decode.AnalysisDecoder` (read its docstring): chunks
of :class:`AnalysisFrames` with upright RGB frames at ``analysis_size``, presentation times from
the stream start, timeline frame indices, and preview frames; the one difference is that
``frames`` is a CuPy array on the decoding GPU, so shots, motion (the CUDA block matcher) and
frame scores run where the pixels are. Preview frames (a few per video) come back to the host:
they are JPEG-encoded there.

What NVDEC does not give, and what follows:

* Codec motion vectors: ``mv_samples`` is always empty; the analysis uses the frame method
  (block matching on the device) on GPU runs.
* The full-size ``av.VideoFrame`` that feeds single-pass clip encoders (``on_frame``): not
  supported; re-encoded clips are cut from the source by the clip stage instead.
* Codecs or pixel formats the GPU's NVDEC cannot decode (MPEG-4 Part 2, 4:2:2, ...): the
  decoder fails before the first picture and :func:`iter_analysis_frames_gpu` decodes that
  video with the CPU decoder and uploads its frames, logging a warning (one video, not the
  run, and the same result the CPU run gives).

Sessions: one PyNvVideoCodec decoder drives one NVDEC engine (an H100/H200 has 7). The stage
decodes several videos at once; ``max_sessions()`` (``CURASTREAM_NVDEC_SESSIONS``, default 4)
bounds how many decoders exist at a time in the process, so extra workers queue instead of
oversubscribing the engines.

Only the NVDEC source (:func:`nvdec_frames`) needs a GPU. Everything after it (sampling, time
and index bookkeeping, area resize, upright turn, chunking) is :class:`GpuAnalysisDecoder`,
which takes any source of full-size RGB frames; the CPU tests drive it with PyAV frames and
compare it with the CPU decoder on real media.

Not run on GPU hardware yet (see docs/PERFORMANCE.md, "GPU path").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from curastream.kernels.gpu_frames import resize_area_rgb, to_uint8, upright
from curastream.videos.decode import (
    DEFAULT_CHUNK,
    DEFAULT_SHORT_SIDE,
    AnalysisDecoder,
    AnalysisFrames,
    AnalysisSettings,
    VideoDecodeError,
    VideoDecodeTimeout,
    _Sampler,
    analysis_size,
)
from curastream.videos.probe import VideoInfo
from curastream.videos.rotation import upright_size

log = logging.getLogger(__name__)

# What the GPU video path imports besides the kernels' CuPy: resolve_device(needs=...) turns a
# missing one into the run's one-line error for --device gpu.
GPU_VIDEO_MODULES = ("cupy", "PyNvVideoCodec")
DEFAULT_SESSIONS = 4

# (time in seconds from the stream start or None, full-size RGB (H, W, 3) array, stored orientation)
FrameSource = Callable[[], Iterable[tuple[float | None, Any]]]


class NvdecUnsupported(VideoDecodeError):
    """NVDEC could not start on this stream (codec, profile or pixel format); nothing decoded."""


def max_sessions() -> int:
    try:
        return max(1, int(os.environ.get("CURASTREAM_NVDEC_SESSIONS", DEFAULT_SESSIONS)))
    except ValueError:
        return DEFAULT_SESSIONS


_sessions_lock = threading.Lock()
_sessions: threading.BoundedSemaphore | None = None


def _session_slots() -> threading.BoundedSemaphore:
    global _sessions
    with _sessions_lock:
        if _sessions is None:
            _sessions = threading.BoundedSemaphore(max_sessions())
        return _sessions


def frame_time(pts: int | None, info: VideoInfo) -> float | None:
    """Seconds from the stream start of a picture's pts (stream time base units), or None."""
    if pts is None or pts < 0 or info.time_base is None:
        return None
    return float(pts * info.time_base) - info.start_time


def nvdec_frames(path: str, info: VideoInfo, device_id: int = 0) -> Iterator[tuple[float | None, Any]]:
    """Decode ``path``'s video with NVDEC: (time, (H, W, 3) CuPy RGB) per picture in display
    order. The CuPy array is a copy (the decoder reuses its surfaces)."""
    import cupy
    import PyNvVideoCodec as nvc  # lazy: it raises at import without a driver

    with cupy.cuda.Device(device_id):
        try:
            demuxer = nvc.CreateDemuxer(filename=str(path))
            decoder = nvc.CreateDecoder(gpuid=device_id, codec=demuxer.GetNvCodecId(), usedevicememory=True,
                                        outputColorType=nvc.OutputColorType.RGB)
        except Exception as e:  # noqa: BLE001 - PyNvVideoCodec raises its own types
            raise NvdecUnsupported(f"{path}: NVDEC cannot decode this stream ({type(e).__name__}: {e})") from None
        started = False
        try:
            for packet in demuxer:  # its last packet is empty and flushes the decoder
                for frame in decoder.Decode(packet):
                    started = True
                    try:
                        rgb = cupy.from_dlpack(frame)
                    except (TypeError, AttributeError, BufferError):  # no DLPack: the CUDA array interface
                        rgb = cupy.asarray(frame)
                    if rgb.ndim != 3:  # a flat surface: interleaved RGB at the display size
                        rgb = rgb.reshape(info.height, info.width, 3)
                    pts = frame.getPTS() if hasattr(frame, "getPTS") else None
                    yield frame_time(pts, info), rgb.copy()
        except VideoDecodeError:
            raise
        except Exception as e:  # noqa: BLE001
            if not started:
                raise NvdecUnsupported(f"{path}: NVDEC failed before the first picture "
                                       f"({type(e).__name__}: {e})") from None
            raise VideoDecodeError(f"{path}: NVDEC failed mid-stream ({type(e).__name__}: {e})") from None


class GpuAnalysisDecoder:
    """Chunks of analysis frames from a source of full-size RGB frames (NVDEC by default);
    see the module docstring. Iterate it once."""

    def __init__(self, path, info: VideoInfo, settings: AnalysisSettings = AnalysisSettings(),
                 source: FrameSource | None = None, device_id: int = 0):
        if settings.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.info, self.settings = info, settings
        self.src = path if path is not None else info.path
        self.name = str(getattr(self.src, "name", self.src))
        self.source = source or (lambda: nvdec_frames(self.src, info, device_id))
        self.fps = info.fps if info.fps > 0 else 25.0
        self.rot = info.rotation % 360
        self.size = analysis_size(info, settings.short_side)
        self.scale_size = upright_size(*self.size, self.rot)
        self.preview_scale_size = None
        if settings.preview_fps:
            ph = max(2, min(int(settings.preview_height), info.display_height))
            pw = max(2, int(round(info.display_width * ph / info.display_height)))
            self.preview_scale_size = upright_size(pw, ph, self.rot)
        self.decoded = 0

    def __iter__(self) -> Iterator[AnalysisFrames]:
        s = self.settings
        deadline = time.monotonic() + s.time_limit_s if s.time_limit_s else None
        self._frame_sampler = _Sampler(s.sample_fps, self.fps)
        self._preview_sampler = _Sampler(s.preview_fps, self.fps)
        self._last_t = -1.0 / self.fps
        self._last_idx = -1
        self._pair_pending = False
        self._buf = None
        self._new_chunk()
        for t, rgb in self.source():
            if deadline is not None and time.monotonic() > deadline:
                raise VideoDecodeTimeout(f"{self.name}: decode exceeded the time limit of "
                                         f"{s.time_limit_s:g} s after {self.decoded} frames")
            if self._take(t, rgb) and len(self._indices) == s.chunk_size:
                yield self._emit(False)
                self._new_chunk()
        if self.decoded == 0:
            raise VideoDecodeError(f"{self.name}: no frame could be decoded")
        yield self._emit(True)

    def _new_chunk(self) -> None:
        self._frames: list = []
        self._times: list[float] = []
        self._indices: list[int] = []
        self._previews: list = []

    def _take(self, t: float | None, rgb) -> bool:
        if t is None:
            t = self._last_t + 1.0 / self.fps if self.decoded else 0.0
        self._last_t = t
        self.decoded += 1
        idx = max(self._last_idx + 1, int(round(t * self.fps)))
        self._last_idx = idx
        if self.preview_scale_size is not None and self._preview_sampler.take(t):
            small = upright(resize_area_rgb(to_uint8(rgb)[None], *self.preview_scale_size), self.rot)[0]
            host = small.get() if hasattr(small, "get") else small
            self._previews.append((t, idx, host.copy()))
        keep = self._frame_sampler.take(t)
        if not keep and self._pair_pending:
            keep = True
            self._pair_pending = False
        elif keep and self.settings.motion_pairs and self._frame_sampler.rate is not None:
            self._pair_pending = True
        if not keep:
            return False
        self._frames.append(resize_area_rgb(to_uint8(rgb)[None], *self.scale_size))
        self._times.append(t)
        self._indices.append(idx)
        return True

    def _emit(self, final: bool) -> AnalysisFrames:
        import numpy as np

        s = self.settings
        w, h = self.size
        if self._frames:
            xp = _xp_of(self._frames[0])
            frames = xp.ascontiguousarray(upright(xp.concatenate(self._frames), self.rot))
        else:
            frames = np.empty((0, h, w, 3), np.uint8)
        return AnalysisFrames(
            frames=frames,
            times=np.asarray(self._times, np.float64),
            frame_indices=np.asarray(self._indices, np.int64),
            mv_samples=[] if s.motion_vectors else None,
            analysis_size=self.size,
            source=self.info,
            frames_decoded=self.decoded,
            last=final,
            preview_frames=list(self._previews) if s.preview_fps else None,
        )


def _xp_of(a):
    from curastream.kernels._xp import get_xp

    return get_xp(a)


def _uploaded(chunks: Iterable[AnalysisFrames], device_id: int) -> Iterator[AnalysisFrames]:
    import cupy

    with cupy.cuda.Device(device_id):
        for c in chunks:
            c.frames = cupy.asarray(c.frames)
            yield c


def iter_analysis_frames_gpu(
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
    device_id: int = 0,
    source: FrameSource | None = None,
) -> Iterator[AnalysisFrames]:
    """:func:`curastream.videos.decode.iter_analysis_frames` on the GPU (same keywords, plus
    ``device_id``); a generator. ``threads``/``scale_threads``/``mv_sample_fps`` serve only the
    CPU fallback."""
    if on_frame is not None:
        raise ValueError("the GPU decoder does not feed clip encoders (on_frame); cut clips from the source")
    settings = AnalysisSettings(
        short_side=short_side, sample_fps=sample_fps, motion_vectors=motion_vectors,
        mv_sample_fps=mv_sample_fps, time_limit_s=time_limit_s, threads=threads,
        chunk_size=chunk_size, motion_pairs=motion_pairs, preview_fps=preview_fps,
        preview_height=preview_height, scale_threads=scale_threads,
    )
    slots = _session_slots() if source is None else None
    if slots is not None:
        slots.acquire()
    held = slots is not None
    try:
        chunks = iter(GpuAnalysisDecoder(path, info, settings, source=source, device_id=device_id))
        try:
            first = next(chunks)
        except NvdecUnsupported as e:
            if held:  # the CPU decode needs no NVDEC session: let another video have it
                slots.release()
                held = False
            log.warning("%s; decoding it on the CPU", e)
            cpu = AnalysisDecoder(path, info, settings)
            yield from (_uploaded(cpu, device_id) if source is None else cpu)
            return
        yield first
        yield from chunks
    finally:
        if held:
            slots.release()
