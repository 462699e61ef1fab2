"""Motion from decoded frames (every codec): which frame pairs to measure at ~``sample_fps``,
their block-matching flow, and the patch statistics of each pair as
:class:`~curastream.kernels.motion_score.MotionSample`, on the motion-vector method's scale.

Scale. The motion-vector method (Curator's definition) is the reference: the frame method's
magnitudes are multiplied by ``FRAME_MOTION_SCALE`` so that Curator's thresholds mean the same
thing for both. Calibrated on the codec-vector media of ../shared/media/videos (9 H.264 videos
and the MS-MPEG4v3 vtest.avi), 3 s fixed spans, 2 samples/s, both methods on the same spans
(tests/test_motion_parity.py::test_frame_method_is_calibrated_to_the_vector_scale holds it).
Re-checked after the vector method took Curator's per-clip sampling (first half of the clip,
every round(fps/2)-th frame, future vectors, -1 under 256 px; 51 spans of the 7 H.264 videos
>= 256 px and vtest.avi): 0.6 still centres the ratio (MV / scaled frames: geometric mean
0.92, typical factor 1.6, n = 17); decisions agree on 46 of 51 (19 of 24 H.264). Against
Curator's real scores (its rule on libx264 veryfast crf 23 re-encodes of 98 spans of 3 and
6 s, which reproduces Curator's output) the frame method agrees on 72 of 98, the vectors of
the source on 67; 0.3 would centre frames on the re-encodes (75 of 98), not worth leaving the
source-vector scale for. Before that re-check (past vectors, all of the clip at 2 frames/s):
  * unscaled, the frame method read higher on real footage: MV / frames per clip (clips with
    both global means > 2e-4, n = 20) had geometric mean 0.595, median 0.644, range 0.10-2.6;
    on synthetic pans both read the true px/frame, so the gap is real footage (intra blocks
    are zero motion to the vectors; the encoder's zero/skip vectors on flat and noisy areas),
    not a units error;
  * scale 0.6: filter decisions agree with the vector method's on 51 of 55 clips (93%; 24 of
    28 H.264-only clips, 86%, all four near the 0.00098 threshold); on the 19 clips where both
    scaled global means exceed 2e-4, MV / scaled-frames has geometric mean 0.92 and a typical
    factor (exp of the mean |log ratio|) of 1.6;
  * against Curator's own score of libx264 (veryfast, crf 23) re-encodes of the same spans
    (what Curator scores), the scaled frame method agrees on 46 of 51 clips >= 256 px, the
    same as the vector method on the source (46 of 51), unscaled 43 of 51.
Synthetic pans therefore read FRAME_MOTION_SCALE x their px/frame with this method.

Cost on CPU: the frame method is ~2 ms per 256x144 pair (NumPy, one core), so at 2 pairs per
second of video it adds roughly a fifteenth to the analysis decode of 720p H.264; use the
vectors where the codec has them (``MotionAccumulator.score(method="auto")``).
"""

from __future__ import annotations

import numpy as np

from curastream.kernels._xp import get_xp, to_host
from curastream.kernels.block_match import block_flow, to_luma
from curastream.kernels.motion_score import (
    MotionSample,
    MotionScore,
    aggregate_motion,
    centre_points,
    patch_grid,
    patch_sums,
)


# Codec vectors read lower than block matching on real footage (intra-coded blocks count as no
# motion, encoders pick zero or predicted vectors on flat and noisy areas); this maps frame-method
# magnitudes onto the motion-vector scale. See the module docstring for the calibration.
FRAME_MOTION_SCALE = 0.6


def _block_edges(length: int, block: int, count: int) -> np.ndarray:
    e = np.arange(count + 1) * block
    e[-1] = length  # leftover pixels belong to the last block
    return e


def _centre_blocks(points: np.ndarray, scale: float, block: int, count: int) -> np.ndarray:
    """Block row (or column) holding each source-pixel centre point at analysis scale."""
    px = np.floor((points + 0.5) * scale).astype(np.int64)
    return np.clip(px // block, 0, max(0, count - 1))


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
    cy = _centre_blocks(centre_points(sh, ny).ravel(), h / sh, b, h // b)
    cx = _centre_blocks(centre_points(sw, nx).ravel(), w / sw, b, w // b)
    out: list[MotionSample] = []
    for s in range(0, first.shape[0], batch):
        sl = slice(s, s + batch)
        flow = block_flow(first[sl], second[sl], block=block, radius=radius, levels=levels)
        gap = xp.asarray((idx1[sl] - idx0[sl]).astype(np.float32))
        mag = xp.sqrt((flow * flow).sum(axis=-1)) * (FRAME_MOTION_SCALE / float(w + h)) / gap[:, None, None]
        row_edges = _block_edges(h, b, mag.shape[1])
        col_edges = _block_edges(w, b, mag.shape[2])
        sums, area = patch_sums(mag, row_edges, col_edges, ny, nx, h, w)
        sums = to_host(sums)
        centres = to_host(mag[:, xp.asarray(cy)][:, :, xp.asarray(cx)]).reshape(-1, ny, 2, nx, 2).mean(axis=(2, 4))
        for j in range(sums.shape[0]):
            k = s + j
            out.append(MotionSample(int(idx1[k]), float(t1[k]), sums[j], area, "frames", float(t0[k]),
                                    patch_centre=centres[j]))
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
