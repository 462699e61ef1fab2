"""What an analysis decode is asked for and gives back: shared by the CPU and the GPU decoder."""

from __future__ import annotations

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
    # (time, frame_index, AVMotionVector records), or what the decoder's mv_reduce made of them
    mv_samples: list[tuple[float, int, Any]] | None
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

def analysis_size(info: VideoInfo, short_side: int = DEFAULT_SHORT_SIDE) -> tuple[int, int]:
    """(w, h) of upright analysis frames: display aspect kept, short side ``short_side`` at most."""
    dw, dh = info.display_width, info.display_height
    scale = min(1.0, short_side / max(1, min(dw, dh)))
    return max(1, int(round(dw * scale))), max(1, int(round(dh * scale)))


@dataclass(frozen=True)
class AnalysisSettings:
    """How to decode for analysis; one value serves every video of a run.

    sample_fps: None converts every frame (shot detection needs them all); a rate keeps the
        first frame at or after each 1/sample_fps grid point.
    motion_pairs: with sample_fps, also keep the frame right after each sampled one, so the
        frame-based motion kernel has consecutive (t, t+1) pairs.
    motion_vectors: ask the decoder to export codec motion vectors (H.264 / MPEG family; ignored
        for other codecs, whose ``mv_samples`` stay empty) and keep those of the first frame
        carrying vectors at or after each 1/mv_sample_fps grid point; mv_sample_fps None keeps
        every frame's (the decoder's ``mv_frames`` then picks by frame index).
    time_limit_s: wall-clock budget for the whole decode; exceeding it raises VideoDecodeTimeout.
    threads: FFmpeg decoder threads (0: FFmpeg picks, one per core), frame + slice threading;
        slice threading only while motion vectors are exported (frame threading makes them
        nondeterministic).
    preview_fps / preview_height: also keep upright RGB frames ``preview_height`` px high
        (display aspect, never upscaled) at about preview_fps, in ``preview_frames``.
    scale_threads: swscale threads per conversion (0: one per core, PyAV's default). One: a
        144p output is too small to split, the slice threads' hand-offs cost ~15% more CPU for
        the same pixels (measured on the bench videos), and the decoder's frame threads and a
        second video already keep the cores busy.
    """

    short_side: int = DEFAULT_SHORT_SIDE
    sample_fps: float | None = None
    motion_vectors: bool = True
    mv_sample_fps: float = 2.0
    time_limit_s: float | None = None
    threads: int = 0
    chunk_size: int = DEFAULT_CHUNK
    motion_pairs: bool = False
    preview_fps: float | None = None
    preview_height: int = 240
    scale_threads: int = 1
    # A part of the video (a Ray task's group of spans): seek to the keyframe at or before
    # start_s, stop after the first frame at or past stop_s. None: from the start, to the end.
    start_s: float | None = None
    stop_s: float | None = None
