"""Motion from codec motion vectors (Curator's method): the flow field painted from a frame's
AVMotionVector side data, the same patch statistics computed from the block rectangles without
painting (:class:`~curastream.kernels.motion_score.MotionSample` per frame), and Curator's choice
of frames per clip (:func:`curator_clip_motion`).

As Curator (NeMo Curator 1.4 MotionVectorDecodeStage + MotionFilterStage):
* per clip, every ``round(fps / 2)``-th frame from the clip's start, frames without vectors
  skipped, the first ``max(10, whole seconds)`` of them (the first half at 2 frames/s);
* where a bi-predicted block has two vectors the future-reference one wins (FFmpeg exports a
  block's past vector before its future one, and Curator's scatter keeps the last write);
* a picture under 256 px on a side scores -1.
Given the same bytes, the scores equal Curator's (tests/test_motion_parity.py). Curator scores
its own re-encode of each clip, not the source: the remaining difference (source vectors, and
the source's frame types at the sampled frames) is not reproduced, see docs/CLIP_FORMAT.md.

Differences from Curator's motion-vector code, on purpose:
* every block size is painted (Curator paints only 8x8, 16x16, 16x8 and 8x16 blocks and leaves
  H.264 sub-8x8 partitions at zero flow); ``curator_blocks=True`` reproduces its choice;
* blocks that overlap the frame edge are clipped (Curator clamps their pixels onto the last
  row/column).
Like Curator, a vector counts as the displacement over one frame even when it points to a
reference several frames away (the side data carries only the direction of the reference):
on streams with B-frames, P-frame vectors span the whole B-run. ``block_flow`` on decoded
frames always measures one frame interval.
"""

from __future__ import annotations

import bisect

import numpy as np

from curastream.kernels._xp import to_host
from curastream.kernels.motion_score import (
    DEFAULT_PATCH_STAT,
    MotionSample,
    MotionScore,
    aggregate_motion,
    centre_points,
    patch_grid,
    patch_sums,
    split_edges,
    unscored,
)

# Curator's GPU flow field paints only these (w, h) block sizes.
CURATOR_BLOCK_SIZES = ((8, 8), (16, 16), (16, 8), (8, 16))
# Curator's MotionVectorDecodeStage: target_fps, target_duration_ratio, its floor of 10 frames,
# and the side under which it gives up (VideoResolutionTooSmallError -> -1).
CURATOR_TARGET_FPS = 2.0
CURATOR_DURATION_RATIO = 0.5
CURATOR_MIN_SAMPLES = 10
MV_MIN_SIDE = 256
TOO_SMALL = "resolution_too_small"
# H.264 and MPEG-family blocks are multiples of 4 px on a 4 px lattice: painting at this cell
# size is exact and 16x cheaper than per pixel.
MV_CELL = 4


def flow_from_motion_vectors(mvs, width: int, height: int, xp=np, cell: int = 1,
                             curator_blocks: bool = False):
    """Flow field painted from codec motion vectors: (ceil(H/cell), ceil(W/cell), 2) float32.

    Each block's vector ``(-motion_x/motion_scale, -motion_y/motion_scale)`` (pixels; the
    content's displacement from its reference) fills the block centred on (dst_x, dst_y) of
    size (w, h). cell=1 is per pixel; cell=4 is exact for H.264/MPEG-family blocks (all on a
    4 px lattice). Pixels without a vector (intra blocks) are 0. This is the definition; the
    scores compute the same patch sums from the block rectangles without painting
    (``MotionVectorReducer``) and paint only if blocks overlap.
    """
    gh, gw = -(-height // cell), -(-width // cell)
    flow = xp.zeros((gh, gw, 2), dtype=xp.float32)
    if mvs is None or len(mvs) == 0:
        return flow
    x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, width, height, curator_blocks)
    vx, vy = vx.astype(np.float32), vy.astype(np.float32)
    cx0, cy0 = x0 // cell, y0 // cell
    nxc, nyc = -(-x1 // cell) - cx0, -(-y1 // cell) - cy0
    # Past references first, future ones second: the second write wins where a bi-predicted
    # block has both (Curator's outcome), and within one pass no two blocks overlap, so the
    # result does not depend on scatter order (deterministic on GPU too).
    for pass_mask in (src <= 0, src > 0):
        idx = np.flatnonzero(pass_mask)
        if idx.size == 0:
            continue
        counts = nxc[idx] * nyc[idx]
        rep = np.repeat(idx, counts)
        k = np.arange(rep.size) - np.repeat(np.cumsum(counts) - counts, counts)
        ry = cy0[rep] + k // nxc[rep]
        rx = cx0[rep] + k % nxc[rep]
        vals = np.stack([vx[rep], vy[rep]], axis=-1)
        flow.reshape(-1, 2)[xp.asarray(ry * gw + rx)] = xp.asarray(vals)
    return flow


def _mv_rects(mvs, width: int, height: int, curator_blocks: bool):
    """Clipped block rectangles (x0, y0, x1, y1), vectors (vx, vy) and the source direction.

    Coordinates are int32 (an AVMotionVector's are int16 and uint8): every step of the scores
    sees the same integer values as in int64, at half the memory traffic."""
    bw, bh = np.asarray(mvs["w"]).astype(np.int32), np.asarray(mvs["h"]).astype(np.int32)
    ms = np.asarray(mvs["motion_scale"]).astype(np.float64)
    keep = (bw > 0) & (bh > 0) & (ms != 0)
    if curator_blocks:
        keep &= np.any([(bw == a) & (bh == b) for a, b in CURATOR_BLOCK_SIZES], axis=0)
    lx = np.asarray(mvs["dst_x"]).astype(np.int32) - (bw >> 1)
    ly = np.asarray(mvs["dst_y"]).astype(np.int32) - (bh >> 1)
    x0, y0 = np.minimum(np.maximum(lx, 0), width), np.minimum(np.maximum(ly, 0), height)
    lx += bw
    ly += bh
    x1, y1 = np.minimum(np.maximum(lx, 0), width), np.minimum(np.maximum(ly, 0), height)
    keep &= (x1 > x0) & (y1 > y0)
    mx, my = np.asarray(mvs["motion_x"]).astype(np.float64), np.asarray(mvs["motion_y"]).astype(np.float64)
    src = np.asarray(mvs["source"])
    if keep.all():  # the usual case: no copies through a mask
        return x0, y0, x1, y1, -mx / ms, -my / ms, src
    ms = np.where(keep, ms, 1.0)
    return (x0[keep], y0[keep], x1[keep], y1[keep], (-mx / ms)[keep], (-my / ms)[keep], src[keep])


class MotionVectorReducer:
    """One frame's AVMotionVector records -> its :class:`MotionSample` (patch sums, areas and
    Curator's patch-centre values), for pictures of one size.

    Shot spans are known only after the decode, and Curator samples each span on its own frame
    grid, so every frame carrying vectors may be one a clip samples: the decoder reduces each
    frame's thousands of vectors to this sample as it goes (a few dozen floats), instead of
    keeping the vectors. It runs ~30 times a second of video, so what depends only on the size
    (patch edges, centre points, areas) is computed once, and the same values come out of
    cheaper steps than painting: "paint past, then future" is "drop each past-reference block
    whose rectangle also has a future vector, then add |v| x (block area inside each patch)",
    exact because within one reference direction codec blocks tile the picture without overlap
    (overlapping blocks fall back to painting, the definition). One caller at a time: each call
    borrows a scratch table of the reducer's.
    """

    def __init__(self, width: int, height: int, curator_blocks: bool = False):
        self.width, self.height, self.curator_blocks = int(width), int(height), curator_blocks
        self.ny, self.nx = patch_grid(self.width, self.height)
        ey, ex = split_edges(self.height, self.ny), split_edges(self.width, self.nx)
        self.area = np.outer(np.diff(ey), np.diff(ex)).astype(np.float64)
        ey, ex = ey.astype(np.int32), ex.astype(np.int32)
        self._ey = (ey[None, :-1], ey[None, 1:])
        self._ex = (ex[None, :-1], ex[None, 1:])
        self._py = centre_points(self.height, self.ny).ravel().astype(np.int32)
        self._px = centre_points(self.width, self.nx).ravel().astype(np.int32)
        # How many centre rows (columns) lie before each coordinate: a block [y0, y1) covers one
        # iff the counts at y0 and y1 differ (two lookups instead of comparing every point).
        self._rows_before = np.searchsorted(self._py, np.arange(self.height + 1)).astype(np.int32)
        self._cols_before = np.searchsorted(self._px, np.arange(self.width + 1)).astype(np.int32)
        self._norm = float(self.width + self.height)
        # Future-reference blocks by the 4x4 cell of their top-left corner (cleared after use).
        self._cells_w = self.width // 4 + 1
        self._corner = np.zeros((self.height // 4 + 1) * self._cells_w, np.int32)

    def __call__(self, mvs, frame_index: int = 0, time: float = 0.0) -> MotionSample:
        if mvs is None or len(mvs) == 0:
            return self._painted(mvs, frame_index, time)
        x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, self.width, self.height, self.curator_blocks)
        mag = np.hypot(vx, vy) / self._norm
        future = src > 0
        sums = self.patch_sums(x0, y0, x1, y1, mag, future)
        if sums is None:
            return self._painted(mvs, frame_index, time)
        return MotionSample(int(frame_index), float(time), sums, self.area, "motion_vectors",
                            patch_centre=self.patch_centres(x0, y0, x1, y1, mag, future))

    def _painted(self, mvs, frame_index: int, time: float) -> MotionSample:
        """The definition: patch sums of the painted field (no vectors, or overlapping blocks)."""
        w, h = self.width, self.height
        flow = flow_from_motion_vectors(mvs, w, h, cell=MV_CELL, curator_blocks=self.curator_blocks)
        mag = np.sqrt((flow * flow).sum(axis=-1)) / float(w + h)
        row_edges = np.minimum(np.arange(flow.shape[0] + 1) * MV_CELL, h)
        col_edges = np.minimum(np.arange(flow.shape[1] + 1) * MV_CELL, w)
        sums, area = patch_sums(mag, row_edges, col_edges, self.ny, self.nx, h, w)
        if mvs is None or len(mvs) == 0:
            centre = np.zeros((self.ny, self.nx), np.float64)
        else:
            x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, w, h, self.curator_blocks)
            centre = self.patch_centres(x0, y0, x1, y1, np.hypot(vx, vy) / self._norm, src > 0)
        return MotionSample(int(frame_index), float(time), to_host(sums), area, "motion_vectors",
                            patch_centre=centre)

    def _past_duplicates(self, x0, y0, x1, y1, future) -> np.ndarray:
        """Past-reference blocks whose rectangle also carries a future vector (bool mask)."""
        out = np.zeros(future.shape, bool)
        fidx = np.flatnonzero(future)
        if fidx.size == 0:
            return out
        cell = (y0 >> 2) * self._cells_w + (x0 >> 2)
        fc = cell[fidx]
        tbl, tag = self._corner, np.arange(1, fidx.size + 1, dtype=np.int32)
        tbl[fc] = tag
        try:
            if np.array_equal(tbl[fc], tag):  # one future block per corner cell (always, for codecs)
                found = tbl[cell]
                cand = np.flatnonzero((found > 0) & ~future)  # past blocks sharing a future corner
                j = fidx[found[cand] - 1]
                same = (x0[j] == x0[cand]) & (y0[j] == y0[cand]) & (x1[j] == x1[cand]) & (y1[j] == y1[cand])
                out[cand[same]] = True
                return out
        finally:
            tbl[fc] = 0
        key = ((x0.astype(np.int64) * 16384 + y0) * 16384 + x1) * 16384 + y1
        fk = np.sort(key[future])
        return ~future & (fk[np.minimum(np.searchsorted(fk, key), fk.size - 1)] == key)

    def patch_sums(self, x0, y0, x1, y1, mag, future) -> np.ndarray | None:
        """(ny, nx) sums of the painted magnitude, or None where blocks overlap."""
        if x0.size and future.any():  # P-frames have past vectors only: nothing to drop
            keep = np.flatnonzero(~self._past_duplicates(x0, y0, x1, y1, future))
            x0, y0, x1, y1, mag = x0.take(keep), y0.take(keep), x1.take(keep), y1.take(keep), mag.take(keep)
        if int(np.dot((x1 - x0).astype(np.int64), (y1 - y0).astype(np.int64))) > self.width * self.height:
            return None  # overlapping blocks: only painting defines the answer
        oy, ox = self._overlap(y0, y1, *self._ey), self._overlap(x0, x1, *self._ex)
        # The same product, in the same layout, as ever: BLAS's summation order sets the last bits.
        return (mag[:, None] * oy).T @ ox.astype(np.float64)

    @staticmethod
    def _overlap(lo, hi, edge_lo, edge_hi) -> np.ndarray:
        """(n, parts) pixels of each block's [lo, hi) inside each patch interval (in place: the
        temporaries of the plain expression cost as much as the arithmetic)."""
        out = np.minimum(hi[:, None], edge_hi)
        out -= np.maximum(lo[:, None], edge_lo)
        return np.maximum(out, 0, out=out)

    def patch_centres(self, x0, y0, x1, y1, mag, future) -> np.ndarray:
        """(ny, nx) magnitude of the painted field at Curator's patch-centre points (bilinear
        mean of the 2x2 pixels around each centre)."""
        ny, nx, py, px = self.ny, self.nx, self._py, self._px
        out = np.zeros((2 * ny, 2 * nx), np.float64)
        # Only the few blocks over a centre point matter.
        rb, cb = self._rows_before, self._cols_before
        near = (rb[y0] < rb[y1]) & (cb[x0] < cb[x1])
        iy = ((y0[near, None] <= py) & (py < y1[near, None])).astype(np.float64)
        ix = ((x0[near, None] <= px) & (px < x1[near, None])).astype(np.float64)
        mag, future = mag[near], future[near]
        # Within one reference direction blocks do not overlap, so each point sums at most one
        # block per direction; the future-reference block wins, as in the painting.
        for sel in (~future, future):
            val = np.einsum("n,ny,nx->yx", mag[sel], iy[sel], ix[sel])
            hit = np.einsum("ny,nx->yx", iy[sel], ix[sel]) > 0
            out = np.where(hit, val, out)
        return out.reshape(ny, 2, nx, 2).mean(axis=(1, 3))


def _mv_patch_sums(mvs, width: int, height: int, ny: int, nx: int, curator_blocks: bool):
    """(patch sums, areas) of the painted magnitude field without painting it, or None if
    blocks overlap (``MotionVectorReducer``'s patch grid: ny, nx must be ``patch_grid``'s)."""
    r = MotionVectorReducer(width, height, curator_blocks)
    if (ny, nx) != (r.ny, r.nx):
        raise ValueError(f"patch grid {(ny, nx)} is not {(r.ny, r.nx)} for {width}x{height}")
    x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, width, height, curator_blocks)
    sums = r.patch_sums(x0, y0, x1, y1, np.hypot(vx, vy) / float(width + height), src > 0)
    return None if sums is None else (sums, r.area)


def motion_sample_from_mvs(mvs, width: int, height: int, frame_index: int = 0, time: float = 0.0,
                           curator_blocks: bool = False) -> MotionSample:
    """Patch statistics of one frame's motion vectors (width/height: the decoded picture size).
    Many frames of one video: make one :class:`MotionVectorReducer` and call it."""
    return MotionVectorReducer(width, height, curator_blocks)(mvs, frame_index, time)


def motion_samples_from_mvs(mv_samples, width: int, height: int, curator_blocks: bool = False) -> list[MotionSample]:
    """MotionSamples from the decoder's ``(time, frame_index, mvs)`` list."""
    reduce = MotionVectorReducer(width, height, curator_blocks)
    return [reduce(m, frame_index=i, time=t) for t, i, m in mv_samples]


def motion_score_from_mvs(mv_frames, width: int, height: int, curator_blocks: bool = False) -> MotionScore:
    """Curator's motion score from a list of per-frame AVMotionVector arrays (-1 if empty)."""
    samples = [motion_sample_from_mvs(m, width, height, frame_index=i, curator_blocks=curator_blocks)
               for i, m in enumerate(mv_frames)]
    return aggregate_motion(samples, method="motion_vectors")


# ---------------------------------------------------------------- Curator's sampling of a clip


def curator_step(fps: float) -> int:
    """Curator samples every ``round(fps / 2)``-th decoded frame of a clip (Python's round:
    25 fps -> 12, 29.97 -> 15)."""
    return max(1, round(float(fps) / CURATOR_TARGET_FPS)) if fps and fps > 0 else 1


def curator_max_samples(duration_s: float) -> int:
    """How many frames carrying vectors Curator reads from the start of a clip: vectors of
    ``target_fps x target_duration_ratio x whole seconds`` frames (the first half of the clip),
    at least 10; a clip under one second counts as 30 s (Curator's fallback for duration 0)."""
    secs = int(duration_s + 1e-9)  # Curator: int(container.duration / AV_TIME_BASE)
    if secs <= 0:
        secs = 30
    return max(CURATOR_MIN_SAMPLES, round(CURATOR_TARGET_FPS * secs * CURATOR_DURATION_RATIO))


def curator_sample_frames(start_frame: int, end_frame: int, fps: float) -> range:
    """Source frames of the clip [start_frame, end_frame) Curator would read the vectors of.

    Curator decodes its own re-encode of the clip, which opens on a keyframe: a keyframe has no
    vectors, so its first sample is always the clip's frame ``step``, never frame 0. The source
    frame at the clip's start usually has vectors; it is left out for that reason."""
    return range(start_frame + curator_step(fps), end_frame, curator_step(fps))


def select_curator_samples(samples, start_frame: int, end_frame: int, fps: float) -> list[MotionSample]:
    """The samples Curator's decode keeps for one clip: at its sample frames, only frames that
    carry vectors (the samples present), the first ``curator_max_samples`` of them.

    ``samples``: MotionSamples in increasing frame_index order (the decoder's)."""
    wanted = curator_sample_frames(start_frame, end_frame, fps)
    keys = [s.frame_index for s in samples]
    lo, hi = bisect.bisect_left(keys, wanted.start), bisect.bisect_left(keys, end_frame)
    picked = [s for s in samples[lo:hi] if (s.frame_index - start_frame) % wanted.step == 0]
    return picked[:curator_max_samples((end_frame - start_frame) / fps if fps else 0.0)]


def curator_clip_motion(samples, start_frame: int, end_frame: int, fps: float, size: tuple[int, int],
                        patch_stat: str = DEFAULT_PATCH_STAT) -> MotionScore:
    """Curator's motion score of the clip [start_frame, end_frame) from per-frame vector samples.

    size: (W, H) of the decoded picture. Under ``MV_MIN_SIDE`` px on a side Curator gives -1
    (its filter then drops the clip): the score says so in ``reason``."""
    if min(size) < MV_MIN_SIDE:
        return unscored("motion_vectors", TOO_SMALL)
    picked = select_curator_samples(samples, start_frame, end_frame, fps)
    return aggregate_motion(picked, method="motion_vectors", patch_stat=patch_stat)
