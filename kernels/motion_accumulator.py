"""Streaming motion scoring of one video: :class:`MotionAccumulator` takes the decoder's chunks
(frames and motion vectors) in order, keeps only per-sample patch sums, and scores any frame
span (a scene or clip) at the end, from the vectors where the span has them, else the frames.
"""

from __future__ import annotations

import math

import numpy as np

from curastream.kernels._xp import get_xp
from curastream.kernels.frame_motion import pair_samples, select_pairs
from curastream.kernels.motion_score import MotionSample, MotionScore, aggregate_motion
from curastream.kernels.motion_vectors import MotionVectorReducer, curator_clip_motion


class MotionAccumulator:
    """Streaming motion samples of one video, scored per frame span at the end.

    Feed the decoder's chunks in order with ``add``; ``score(start, end)`` then gives the
    MotionScore of any [start, end) frame span (a scene or clip) from the samples inside it.
    Only per-sample patch sums are kept (a few floats per sample), never flow or frames beyond
    the last one of the previous chunk, and the luma of fewer than ``batch`` frame pairs waiting
    to be matched: pairs are matched ``batch`` at a time across chunk borders, since a chunk
    holds any number of them and a block_flow call on one pair costs nearly as much as on
    several. ``frame_samples`` matches what is left.

    mv_size: (W, H) of the decoded picture (VideoInfo.width/height) for the motion-vector
        method, or None to skip it; ``reduce_mvs`` is then its per-frame reduction, to hand to
        the decoder (``mv_reduce``) so that chunks carry samples instead of vectors.
    source_size: upright (W, H) for the frame method's patch grid
        (VideoInfo.display_width/height), or None to skip the frame method.
    """

    def __init__(self, fps: float, mv_size: tuple[int, int] | None = None,
                 source_size: tuple[int, int] | None = None, sample_fps: float = 2.0,
                 curator_blocks: bool = False, max_gap: int = 12, block: int = 8, radius: int = 4,
                 levels: int = 3, batch: int = 4):
        self.fps = float(fps)
        self.mv_size = mv_size
        self.source_size = source_size
        self.sample_fps = sample_fps
        self.curator_blocks = curator_blocks
        self.max_gap = max_gap
        self.flow_kw = {"block": block, "radius": radius, "levels": levels}
        self.batch = max(1, int(batch))
        self.mv_samples: list[MotionSample] = []
        self.reduce_mvs = MotionVectorReducer(*mv_size, curator_blocks) if mv_size is not None else None
        self._frame_samples: list[MotionSample] = []
        self._pending: list[tuple] = []  # select_pairs results not matched yet
        self._pending_n = 0
        self._last = None  # (frame, index, time) ending the previous chunk
        self._next_time: float | None = None

    @property
    def frame_samples(self) -> list[MotionSample]:
        self._match(self._pending_n)
        return self._frame_samples

    def add(self, frames=None, frame_indices=None, times=None, mv_samples=None) -> None:
        """mv_samples: the decoder's ``(time, frame_index, x)``, x a frame's AVMotionVector
        records or the MotionSample ``reduce_mvs`` already made of them."""
        if self.reduce_mvs is not None and mv_samples:
            self.mv_samples.extend(m if isinstance(m, MotionSample) else self.reduce_mvs(m, i, t)
                                   for t, i, m in mv_samples)
        if self.source_size is None or frames is None or len(frames) == 0:
            return
        prev = self._last or (None, None, None)
        pairs = select_pairs(frames, frame_indices, times, self.fps, self.sample_fps, self.max_gap, *prev,
                             min_time=self._next_time)
        if pairs is not None:
            self._pending.append(pairs)
            self._pending_n += len(pairs[2])
            if self.sample_fps:
                # The next chunk starts sampling at the grid cell after the last pair taken here.
                slack = 0.5 / self.fps
                cell = math.floor((float(pairs[4][-1]) + slack) * self.sample_fps)
                self._next_time = (cell + 1) / self.sample_fps - slack
            self._match(self._pending_n - self._pending_n % self.batch)
        idx = np.asarray(frame_indices) if frame_indices is not None else None
        t = np.asarray(times) if times is not None else None
        last_i = int(idx[-1]) if idx is not None else (self._last[1] + len(frames) if self._last else len(frames) - 1)
        last_t2 = float(t[-1]) if t is not None else last_i / self.fps
        self._last = (frames[-1].copy(), last_i, last_t2)

    def _match(self, count: int) -> None:
        """Match the first ``count`` pending pairs (whole batches unless flushing)."""
        if count <= 0 or not self._pending:
            return
        xp = get_xp(self._pending[0][0])
        cat = [xp.concatenate([p[0] for p in self._pending]), xp.concatenate([p[1] for p in self._pending])]
        cat += [np.concatenate([p[k] for p in self._pending]) for k in range(2, 6)]
        self._frame_samples.extend(pair_samples(*(a[:count] for a in cat), self.source_size, **self.flow_kw,
                                                batch=self.batch))
        rest = tuple(a[count:].copy() for a in cat)  # not views: they would pin the whole concatenation
        self._pending_n = len(rest[2])
        self._pending = [rest] if self._pending_n else []

    def score(self, start_frame: int | None = None, end_frame: int | None = None,
              method: str = "auto") -> MotionScore:
        """method: "motion_vectors", "frames", or "auto" (vectors where they give a score, else
        frames: also under Curator's 256 px, where vectors give -1). Vectors are scored as Curator samples a clip (``curator_clip_motion``), so they
        must have been kept for every frame of the span that Curator reads (the decoder's
        ``mv_sample_fps=None``)."""
        if method not in ("auto", "motion_vectors", "frames"):
            raise ValueError("method must be auto, motion_vectors or frames")
        if method in ("auto", "motion_vectors") and self.mv_size is not None:
            start = 0 if start_frame is None else start_frame
            end = end_frame if end_frame is not None else (self.mv_samples[-1].frame_index + 1 if self.mv_samples else 0)
            s = curator_clip_motion(self.mv_samples, start, end, self.fps, self.mv_size)
            if s.available or method == "motion_vectors":
                return s
        elif method == "motion_vectors":
            return aggregate_motion([], method="motion_vectors")
        return aggregate_motion(self.frame_samples, start_frame, end_frame, method="frames")
