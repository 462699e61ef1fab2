"""Motion from decoded frames (every codec): which frame pairs to measure at ~``sample_fps``,
their block-matching flow, and the patch statistics of each pair as
:class:`~curastream.kernels.motion_score.MotionSample`, on the motion-vector method's scale.

Cost on CPU: the frame method is ~2 ms per 256x144 pair (NumPy, one core), so at 2 pairs per
second of video it adds roughly a fifteenth to the analysis decode of 720p H.264; use the
vectors where the codec has them (``MotionAccumulator.score(method="auto")``).
"""

from __future__ import annotations

import numpy as np

from curastream.kernels._xp import get_xp, to_host
from curastream.kernels.block_match import block_flow, to_luma
from curastream.kernels.motion_score import MotionSample, MotionScore, aggregate_motion, patch_grid, patch_sums


def _block_edges(length: int, block: int, count: int) -> np.ndarray:
    e = np.arange(count + 1) * block
    e[-1] = length  # leftover pixels belong to the last block
    return e


def _pair_indices(frame_indices, times, sample_fps: float | None, max_gap: int, fps: float | None = None):
    """Positions i of the (i, i+1) pairs to score: index gap in 1..max_gap, and per
    1/sample_fps interval of time the pair with the smallest gap (then the earliest).

    Preferring the smallest gap matters when the decoder already sampled (frame, next frame)
    pairs: the gap between one pair and the next is also <= max_gap at low fps, and a pair
    spanning many frames measures motion beyond the search range.
    """
    idx = np.asarray(frame_indices, np.int64)
    t = np.asarray(times, np.float64)
    if idx.size < 2:
        return np.zeros(0, np.int64)
    gaps = np.diff(idx)
    ok = np.flatnonzero((gaps >= 1) & (gaps <= max_gap))
    if sample_fps is None or sample_fps <= 0 or ok.size == 0:
        return ok
    slack = 0.5 / fps if fps else 1e-6
    cell = np.floor((t[ok] + slack) * sample_fps).astype(np.int64)
    order = np.lexsort((ok, gaps[ok], cell))  # by cell, then gap, then position
    first = np.ones(order.size, bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    return np.sort(ok[order][first])


def select_pairs(frames, frame_indices, times, fps, sample_fps, max_gap, prev_frame, prev_index, prev_time,
                 min_time):
    """The pairs motion_samples_from_frames scores: (luma of first frames, luma of second frames,
    (k,) index of each first frame, of each second, time of each first, of each second)."""
    xp = get_xp(frames)
    n = frames.shape[0]
    if frame_indices is None:
        frame_indices = np.arange(n)
    frame_indices = np.asarray(frame_indices, np.int64)
    if times is None:
        times = frame_indices / float(fps or 1.0)
    times = np.asarray(times, np.float64)
    has_prev = prev_frame is not None and prev_index is not None
    if has_prev:
        # Index arithmetic instead of concatenating: a chunk of frames is tens of MB.
        frame_indices = np.concatenate([[prev_index], frame_indices])
        times = np.concatenate([[prev_time if prev_time is not None else prev_index / float(fps or 1.0)], times])
    if n + int(has_prev) < 2:
        return None
    pos = _pair_indices(frame_indices, times, sample_fps, max_gap, fps)
    if min_time is not None:
        pos = pos[times[pos] >= min_time]
    if pos.size == 0:
        return None

    def pick(positions):
        return xp.stack([prev_frame if (has_prev and p == 0) else frames[p - int(has_prev)] for p in positions])

    return (to_luma(pick(pos)), to_luma(pick(pos + 1)), frame_indices[pos], frame_indices[pos + 1],
            times[pos], times[pos + 1])


def pair_samples(first, second, idx0, idx1, t0, t1, source_size, block: int, radius: int, levels: int,
                 batch: int) -> list[MotionSample]:
    """MotionSamples of luma pairs (k, h, w) (see motion_samples_from_frames), ``batch`` pairs
    per block_flow call."""
    xp = get_xp(first)
    h, w = first.shape[1:3]
    sw, sh = source_size or (w, h)
    ny, nx = patch_grid(sw, sh)
    b = max(1, min(block, h, w))
    out: list[MotionSample] = []
    for s in range(0, first.shape[0], batch):
        sl = slice(s, s + batch)
        flow = block_flow(first[sl], second[sl], block=block, radius=radius, levels=levels)
        gap = xp.asarray((idx1[sl] - idx0[sl]).astype(np.float32))
        mag = xp.sqrt((flow * flow).sum(axis=-1)) / gap[:, None, None] / float(w + h)
        row_edges = _block_edges(h, b, mag.shape[1])
        col_edges = _block_edges(w, b, mag.shape[2])
        sums, area = patch_sums(mag, row_edges, col_edges, ny, nx, h, w)
        sums = to_host(sums)
        for j in range(sums.shape[0]):
            k = s + j
            out.append(MotionSample(int(idx1[k]), float(t1[k]), sums[j], area, "frames", float(t0[k])))
    return out


def motion_samples_from_frames(frames, frame_indices=None, times=None, fps: float | None = None,
                               source_size: tuple[int, int] | None = None, sample_fps: float | None = 2.0,
                               max_gap: int = 12, block: int = 8, radius: int = 4, levels: int = 3,
                               prev_frame=None, prev_index: int | None = None, prev_time: float | None = None,
                               min_time: float | None = None, batch: int = 4) -> list[MotionSample]:
    """Frame-based MotionSamples for consecutive pairs (t, t+1) taken at ~sample_fps.

    frames: (N, h, w, 3) uint8 RGB (or (N, h, w) luma) analysis frames, upright.
    frame_indices / times: from the decoder (default: 0..N-1 and index / fps). A pair is two
        neighbours in the array whose indices differ by 1..max_gap; its flow is divided by the
        gap, so scores are px per nominal frame interval even on streams that skip pictures.
    source_size: (W, H) of the upright source, for the 256-source-px patch grid (default: the
        analysis size). Magnitudes are normalised by the ANALYSIS (w + h), so the score does
        not depend on the analysis resolution and matches the motion-vector method's scale.
    prev_frame/prev_index/prev_time: the last frame of the previous chunk, so a pair that
        straddles a chunk border is not lost in streaming use.
    min_time: ignore pairs starting before this time (keeps the sampling grid continuous
        across chunks; see MotionAccumulator).
    Each sample is keyed by the pair's second frame.
    batch: pairs per block_flow call. Small on purpose: the temporaries of 16 pairs at 144p are
        several MB each, and freeing and re-faulting them cost ~25% of the kernel in page faults
        in the pipeline's threads (measured: 4 pairs, same user time, sys 0.2 -> 0.03 s).
    """
    pairs = select_pairs(frames, frame_indices, times, fps, sample_fps, max_gap, prev_frame, prev_index,
                         prev_time, min_time)
    if pairs is None:
        return []
    return pair_samples(*pairs, source_size, block, radius, levels, batch)


def motion_score_from_frames(frames, frame_indices=None, times=None, fps: float | None = None,
                             source_size: tuple[int, int] | None = None, sample_fps: float | None = 2.0,
                             **kw) -> MotionScore:
    """Frame-based motion score of one clip's analysis frames (see motion_samples_from_frames)."""
    samples = motion_samples_from_frames(frames, frame_indices, times, fps, source_size, sample_fps, **kw)
    return aggregate_motion(samples, method="frames")
