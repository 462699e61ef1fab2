"""Motion scores, from codec motion vectors (Curator's method) and from decoded frames (every
codec), on the same scale so either can stand in for the other.

Scale (SPEC §3): per-pixel flow magnitude in pixels divided by (W + H) of the frame it was
measured on. ``global_mean`` is the mean over sampled frames and pixels; ``per_patch_min_256``
is the minimum over a grid of ~256x256-source-pixel patches of the TRUE patch mean of the
per-pixel time-averaged magnitude (Curator instead bilinear-samples the centre of each patch
with ``cv2.resize(fx=1/256)``). The grid has ``max(1, round(H/256))`` x ``max(1, round(W/256))``
equal patches spanning the frame, the same count as Curator's resize, so edge remainders are
spread over the patches instead of forming slivers.

Work is split into per-sample statistics (:class:`MotionSample`: patch sums for one sampled
frame or frame pair) and their aggregation (:func:`aggregate_motion`). Sums are linear, so a
streaming pipeline keeps only the tiny per-sample patch sums of a whole video and scores any
frame span (a scene) at the end without keeping flow fields or frames:
:class:`MotionAccumulator` does exactly that over the decoder's chunks.

Cost on CPU: the frame method is ~2 ms per 256x144 pair (NumPy, one core), so at 2 pairs per
second of video it adds roughly a fifteenth to the analysis decode of 720p H.264; use the
vectors where the codec has them (``MotionAccumulator.score(method="auto")``).

Differences from Curator's motion-vector code, on purpose:
* every block size is painted (Curator paints only 8x8, 16x16, 16x8 and 8x16 blocks and leaves
  H.264 sub-8x8 partitions at zero flow); ``curator_blocks=True`` reproduces its choice;
* blocks that overlap the frame edge are clipped (Curator clamps their pixels onto the last
  row/column);
* where a bi-predicted block has two vectors the past-reference one wins (Curator: whichever
  its scatter writes last).
Like Curator, a vector counts as the displacement over one frame even when it points to a
reference several frames away (the side data carries only the direction of the reference):
on streams with B-frames, P-frame vectors span the whole B-run. ``block_flow`` on decoded
frames always measures one frame interval.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curastream.kernels._xp import get_xp

CURATOR_GLOBAL_MEAN_THRESHOLD = 0.00098
CURATOR_PER_PATCH_MIN_THRESHOLD = 1e-6
PATCH_PX = 256
# Curator's GPU flow field paints only these (w, h) block sizes.
CURATOR_BLOCK_SIZES = ((8, 8), (16, 16), (16, 8), (8, 16))
# H.264 and MPEG-family blocks are multiples of 4 px on a 4 px lattice: painting at this cell
# size is exact and 16x cheaper than per pixel.
MV_CELL = 4

BLOCK_MATCH_SOURCE = "block_match.cu"
BLOCK_MATCH_KERNEL = "block_match_sad"
_BLOCK_MATCH_THREADS = 128

BT601 = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------- scores and the filter


@dataclass(frozen=True)
class MotionScore:
    global_mean: float
    per_patch_min_256: float
    method: str  # "motion_vectors" | "frames" | "none"
    num_samples: int = 0

    @property
    def available(self) -> bool:
        return self.num_samples > 0 and self.global_mean >= 0


UNSCORED = "none"


def unscored(method: str = UNSCORED) -> MotionScore:
    """Curator's -1 for "no motion data" (it would fail any threshold)."""
    return MotionScore(-1.0, -1.0, method, 0)


def passes_motion_filter(
    score: MotionScore,
    global_mean_threshold: float = CURATOR_GLOBAL_MEAN_THRESHOLD,
    per_patch_min_threshold: float = CURATOR_PER_PATCH_MIN_THRESHOLD,
) -> tuple[bool, str | None]:
    """(keep, reason): Curator drops a clip when global_mean < t1 or per_patch_min_256 < t2."""
    if score is None or not score.available:
        return False, "motion_unscored"
    if score.global_mean < global_mean_threshold:
        return False, "motion_global_mean"
    if score.per_patch_min_256 < per_patch_min_threshold:
        return False, "motion_per_patch_min"
    return True, None


@dataclass(frozen=True)
class MotionSample:
    """Statistics of one sampled frame (MV method) or frame pair (frame method).

    patch_sum[i, j] is the sum over the pixels of patch (i, j) of the normalised flow magnitude;
    patch_area[i, j] is that patch's pixel count (in the pixels the flow was measured on).
    """

    frame_index: int
    time: float
    patch_sum: np.ndarray
    patch_area: np.ndarray
    method: str
    start_time: float | None = None  # frame method: time of the pair's first frame


def aggregate_motion(samples, start_frame: int | None = None, end_frame: int | None = None,
                     method: str | None = None) -> MotionScore:
    """MotionScore of the samples whose frame_index lies in [start_frame, end_frame)."""
    sel = [s for s in samples
           if (start_frame is None or s.frame_index >= start_frame)
           and (end_frame is None or s.frame_index < end_frame)]
    if not sel:
        return unscored(method or (samples[0].method if samples else UNSCORED))
    shapes = {s.patch_sum.shape for s in sel}
    if len(shapes) != 1:
        raise ValueError(f"samples from different patch grids: {shapes}")
    total = np.zeros(sel[0].patch_sum.shape, np.float64)
    area = np.zeros_like(total)
    for s in sel:
        total += np.asarray(s.patch_sum, np.float64)
        area += np.asarray(s.patch_area, np.float64)
    global_mean = float(total.sum() / max(area.sum(), 1e-12))
    per_patch = float((total / np.maximum(area, 1e-12)).min())
    return MotionScore(global_mean, per_patch, method or sel[0].method, len(sel))


# ---------------------------------------------------------------- patch geometry


def patch_grid(width: int, height: int, patch_px: int = PATCH_PX) -> tuple[int, int]:
    """(ny, nx) patches for a width x height source: Curator's ``round(side / 256)``, at least 1."""
    return max(1, int(round(height / patch_px))), max(1, int(round(width / patch_px)))


def _edges(length: int, parts: int) -> np.ndarray:
    return np.round(np.linspace(0, length, parts + 1)).astype(np.int64)


def _overlap(cell_edges: np.ndarray, patch_edges: np.ndarray) -> np.ndarray:
    """(n_patches, n_cells) pixels shared by each patch interval and each cell interval."""
    lo = np.maximum(patch_edges[:-1, None], cell_edges[None, :-1])
    hi = np.minimum(patch_edges[1:, None], cell_edges[None, 1:])
    return np.maximum(hi - lo, 0).astype(np.float64)


def _patch_sums(mag, row_edges: np.ndarray, col_edges: np.ndarray, ny: int, nx: int, height: int, width: int):
    """Patch sums and areas of a cell-constant field mag (..., n_rows, n_cols) (xp arrays)."""
    xp = get_xp(mag)
    ry = _overlap(row_edges, _edges(height, ny))
    rx = _overlap(col_edges, _edges(width, nx))
    # Separable: each cell's value times its pixel overlap with each patch.
    sums = xp.asarray(ry, dtype=xp.float64) @ mag.astype(xp.float64) @ xp.asarray(rx.T, dtype=xp.float64)
    area = np.outer(ry.sum(1), rx.sum(1))
    return sums, area


# ---------------------------------------------------------------- motion vectors


def _mv_fields(mvs):
    """Plain int/float arrays from an AVMotionVector structured array (or a dict of arrays)."""
    get = (lambda k: np.asarray(mvs[k]))
    return (get("w").astype(np.int64), get("h").astype(np.int64), get("dst_x").astype(np.int64),
            get("dst_y").astype(np.int64), get("motion_x").astype(np.float64),
            get("motion_y").astype(np.float64), get("motion_scale").astype(np.float64),
            get("source").astype(np.int64))


def flow_from_motion_vectors(mvs, width: int, height: int, xp=np, cell: int = 1,
                             curator_blocks: bool = False):
    """Flow field painted from codec motion vectors: (ceil(H/cell), ceil(W/cell), 2) float32.

    Each block's vector ``(-motion_x/motion_scale, -motion_y/motion_scale)`` (pixels; the
    content's displacement from its reference) fills the block centred on (dst_x, dst_y) of
    size (w, h). cell=1 is per pixel; cell=4 is exact for H.264/MPEG-family blocks (all on a
    4 px lattice). Pixels without a vector (intra blocks) are 0. This is the definition; the
    scores compute the same patch sums from the block rectangles without painting
    (``_mv_patch_sums``) and paint only if blocks overlap.
    """
    gh, gw = -(-height // cell), -(-width // cell)
    flow = xp.zeros((gh, gw, 2), dtype=xp.float32)
    if mvs is None or len(mvs) == 0:
        return flow
    x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, width, height, curator_blocks)
    vx, vy = vx.astype(np.float32), vy.astype(np.float32)
    cx0, cy0 = x0 // cell, y0 // cell
    nxc, nyc = -(-x1 // cell) - cx0, -(-y1 // cell) - cy0
    # Future references first, past ones second: the second write wins where a bi-predicted
    # block has both, and within one pass no two blocks overlap (deterministic on GPU too).
    for pass_mask in (src > 0, src <= 0):
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
    """Clipped block rectangles (x0, y0, x1, y1), vectors (vx, vy) and the source direction."""
    bw, bh, dx, dy, mx, my, ms, src = _mv_fields(mvs)
    keep = (bw > 0) & (bh > 0) & (ms != 0)
    if curator_blocks:
        keep &= np.any([(bw == a) & (bh == b) for a, b in CURATOR_BLOCK_SIZES], axis=0)
    x0 = np.clip(dx - bw // 2, 0, width)
    y0 = np.clip(dy - bh // 2, 0, height)
    x1 = np.clip(dx - bw // 2 + bw, 0, width)
    y1 = np.clip(dy - bh // 2 + bh, 0, height)
    keep &= (x1 > x0) & (y1 > y0)
    ms = np.where(keep, ms, 1.0)
    return (x0[keep], y0[keep], x1[keep], y1[keep], (-mx / ms)[keep], (-my / ms)[keep], src[keep])


def _mv_patch_sums(mvs, width: int, height: int, ny: int, nx: int, curator_blocks: bool):
    """Patch sums of the painted magnitude field without painting it, or None if blocks overlap.

    Within one reference direction codec blocks tile the picture without overlap, and a
    bi-predicted block carries its two vectors on the same rectangle, so "paint future, then
    past" equals: drop each future-reference block whose rectangle also has a past vector, then
    add |v| x (block area inside each patch). Exact, and ~20x cheaper than painting 1080p.
    """
    x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, width, height, curator_blocks)
    if x0.size:
        key = ((x0 * 16384 + y0) * 16384 + x1) * 16384 + y1
        past = src <= 0
        drop = ~past & np.isin(key, key[past])
        keepm = ~drop
        x0, y0, x1, y1, vx, vy = (a[keepm] for a in (x0, y0, x1, y1, vx, vy))
        if ((x1 - x0) * (y1 - y0)).sum() > width * height:
            return None  # overlapping blocks: only painting defines the answer
    ey, ex = _edges(height, ny), _edges(width, nx)
    mag = np.hypot(vx, vy) / float(width + height)
    oy = np.maximum(np.minimum(y1[:, None], ey[None, 1:]) - np.maximum(y0[:, None], ey[None, :-1]), 0)
    ox = np.maximum(np.minimum(x1[:, None], ex[None, 1:]) - np.maximum(x0[:, None], ex[None, :-1]), 0)
    sums = (mag[:, None] * oy).T @ ox.astype(np.float64)
    area = np.outer(np.diff(ey), np.diff(ex)).astype(np.float64)
    return sums, area


def motion_sample_from_mvs(mvs, width: int, height: int, frame_index: int = 0, time: float = 0.0,
                           curator_blocks: bool = False) -> MotionSample:
    """Patch statistics of one frame's motion vectors (width/height: the decoded picture size)."""
    ny, nx = patch_grid(width, height)
    fast = _mv_patch_sums(mvs, width, height, ny, nx, curator_blocks) if mvs is not None and len(mvs) else None
    if fast is not None:
        sums, area = fast
    else:
        flow = flow_from_motion_vectors(mvs, width, height, cell=MV_CELL, curator_blocks=curator_blocks)
        mag = np.sqrt((flow * flow).sum(axis=-1)) / float(width + height)
        row_edges = np.minimum(np.arange(flow.shape[0] + 1) * MV_CELL, height)
        col_edges = np.minimum(np.arange(flow.shape[1] + 1) * MV_CELL, width)
        sums, area = _patch_sums(mag, row_edges, col_edges, ny, nx, height, width)
    return MotionSample(int(frame_index), float(time), _host(sums), area, "motion_vectors")


def motion_samples_from_mvs(mv_samples, width: int, height: int, curator_blocks: bool = False) -> list[MotionSample]:
    """MotionSamples from the decoder's ``(time, frame_index, mvs)`` list."""
    return [motion_sample_from_mvs(m, width, height, frame_index=i, time=t, curator_blocks=curator_blocks)
            for t, i, m in mv_samples]


def motion_score_from_mvs(mv_frames, width: int, height: int, curator_blocks: bool = False) -> MotionScore:
    """Curator's motion score from a list of per-frame AVMotionVector arrays (-1 if empty)."""
    samples = [motion_sample_from_mvs(m, width, height, frame_index=i, curator_blocks=curator_blocks)
               for i, m in enumerate(mv_frames)]
    return aggregate_motion(samples, method="motion_vectors")


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


# ---------------------------------------------------------------- block matching on frames


def to_luma(frames):
    """(N, h, w, 3) uint8 RGB -> (N, h, w) float32 BT.601 luma; luma input passes through."""
    xp = get_xp(frames)
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return frames.astype(xp.float32) @ xp.asarray(BT601, dtype=xp.float32)
    if frames.ndim in (2, 3):
        return frames.astype(xp.float32, copy=False)
    raise ValueError(f"expected (N, h, w, 3) RGB or (N, h, w) luma, got shape {frames.shape}")


def _downsample2(y):
    """2x2 box average. Strided adds, not ``reshape(...).mean(axis=(2, 4))``: NumPy reduces
    over the two short interleaved axes element by element, ~25x slower at 144p (5.7 vs
    0.23 ms for 16 frames), which made the pyramid a fifth of the whole motion kernel."""
    n, h, w = y.shape
    h2, w2 = h // 2, w // 2
    y = y[:, : 2 * h2, : 2 * w2]
    rows = y[:, 0::2] + y[:, 1::2]
    return (rows[:, :, 0::2] + rows[:, :, 1::2]) * y.dtype.type(0.25)


@functools.cache
def _candidates(radius: int) -> np.ndarray:
    """(K, 2) int32 (dy, dx) offsets in raster order: k = (dy + r) * (2r + 1) + (dx + r).
    Cached (read-only): block_flow asks for the same two radii a few times per frame pair."""
    d = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    out = np.stack([dy.ravel(), dx.ravel()], axis=1).astype(np.int32)
    out.flags.writeable = False
    return out


def sad_cost_volume(prev, cur, pred, block: int, radius: int):
    """Mean absolute difference of every block of ``cur`` against ``prev`` displaced by
    ``pred + (dy, dx)`` for every (dy, dx) in [-radius, radius]^2.

    prev, cur: (N, h, w) float32. pred: (N, nby, nbx, 2) int32 (dy, dx) search centres.
    Returns (N, nby, nbx, K) float32, K = (2r+1)^2 in ``_candidates`` order. Reads outside the
    frame are clamped to the nearest edge pixel. This is the xp reference of
    ``cuda/block_match.cu``, which computes the same volume one thread per (block, candidate)
    and sums each block's pixels in the same raster order.
    """
    xp = get_xp(prev)
    if xp is not np:
        return _sad_cost_volume_cuda(prev, cur, pred, block, radius)
    n = prev.shape[0]
    nby, nbx = pred.shape[1:3]
    m = n * nby * nbx
    bb = block * block
    side = 2 * radius + 1
    # Blocks on the last (contiguous) axis: the work is a few long vector operations per row of
    # candidates instead of millions of block-wide rows, and per-call overhead stays small
    # enough that a batch of one frame pair is not dominated by it.
    windows = _gather_blocks_last(prev, pred, block, radius)  # (win, win, M)
    cur_blocks = _blocks_last(cur, nby, nbx, block)  # (block, block, M)
    s0, s1, s2 = windows.strides
    # cand[dy, dx, i, j] = windows[dy + i, dx + j]: every candidate's block as a view, no copy.
    cand = np.lib.stride_tricks.as_strided(windows, (side, side, block, block, m), (s0, s1, s0, s1, s2),
                                           writeable=False)
    cost = np.empty((side, side, m), dtype=np.float32)
    d = np.empty((side, block, block, m), dtype=np.float32)
    for dy in range(side):
        np.subtract(cur_blocks, cand[dy], out=d)
        np.abs(d, out=d)
        # Reducing a non-contiguous axis adds pixel rows in raster order, as the CUDA loop does.
        np.add.reduce(d.reshape(side, bb, m), axis=1, out=cost[dy])
    cost *= np.float32(1.0 / bb)
    return np.ascontiguousarray(cost.reshape(side * side, m).T).reshape(n, nby, nbx, side * side)


def _padded_origins(img, disp, block: int, lo_margin: int, hi_margin: int):
    """Edge-padded img (N, h, w) flattened, and the flat index of the pixel at (-lo_margin,
    -lo_margin) from each block's origin displaced by disp (N, nby, nbx, 2), such that every
    pixel up to ``block + hi_margin`` past the origin is inside the padding (edge padding =
    clamping reads to the frame). Returns (flat, base (M,), padded row length)."""
    xp = get_xp(img)
    n, h, w = img.shape
    nby, nbx = disp.shape[1:3]
    dmin = int(disp.min()) if disp.size else 0
    dmax = int(disp.max()) if disp.size else 0
    lo = max(0, lo_margin - dmin)
    hi_y = max(0, (nby - 1) * block + block + hi_margin + dmax - h)
    hi_x = max(0, (nbx - 1) * block + block + hi_margin + dmax - w)
    padded = _edge_pad(img, lo, hi_y, lo, hi_x)
    hp, wp = padded.shape[1:]
    y0 = xp.arange(nby)[None, :, None] * block - lo_margin + lo + disp[..., 0]
    x0 = xp.arange(nbx)[None, None, :] * block - lo_margin + lo + disp[..., 1]
    base = (xp.arange(n)[:, None, None] * (hp * wp) + y0 * wp + x0).reshape(-1)
    return padded.reshape(-1), base, wp


def _edge_pad(img, top: int, bottom: int, left: int, right: int):
    """``pad(img, ((0, 0), (top, bottom), (left, right)), mode="edge")`` for (N, h, w), by
    slice assignments: np.pad's generic path costs more than the copy at these sizes."""
    xp = get_xp(img)
    n, h, w = img.shape
    out = xp.empty((n, top + h + bottom, left + w + right), dtype=img.dtype)
    out[:, top:top + h, left:left + w] = img
    if left:
        out[:, top:top + h, :left] = img[:, :, :1]
    if right:
        out[:, top:top + h, left + w:] = img[:, :, -1:]
    if top:
        out[:, :top] = out[:, top:top + 1]
    if bottom:
        out[:, top + h:] = out[:, top + h - 1:top + h]
    return out


def _take_windows(flat, base, row: int, size: int):
    """(size, size, M) windows of a flattened padded image starting at flat indices base (M,)."""
    xp = get_xp(flat)
    offs = xp.arange(size)[:, None] * row + xp.arange(size)[None, :]
    return xp.take(flat, offs[:, :, None] + base)


def _gather_blocks_last(img, disp, block: int, margin: int, extra: int = 0):
    """Each block's window of img (N, h, w) displaced by disp (N, nby, nbx, 2), blocks last:
    (m, m, N * nby * nbx) for rows/columns [-margin, block + margin + extra) around the block's
    origin, clamped to the frame. One flat take into an edge-padded copy: no per-pixel clamping
    and no (M, m, m) -> (m, m, M) transpose."""
    flat, base, row = _padded_origins(img, disp, block, margin, margin + extra)
    return _take_windows(flat, base, row, block + 2 * margin + extra)


def _blocks_last(img, nby: int, nbx: int, block: int):
    """(block, block, N * nby * nbx) contiguous copy of the blocks of img (N, h, w): blocks on
    the last axis, so per-pixel work over all blocks runs as long contiguous vector operations."""
    xp = get_xp(img)
    n = img.shape[0]
    b = img[:, : nby * block, : nbx * block].reshape(n, nby, block, nbx, block).transpose(2, 4, 0, 1, 3)
    return xp.ascontiguousarray(b, dtype=xp.float32).reshape(block, block, n * nby * nbx)


def _dot_blocks(a, b):
    """Per-block sum of a * b over (block, block, M) -> (M,), without the product temporary."""
    xp = get_xp(a)
    return xp.einsum("ijm,ijm->m", a, b)


def _central_gradients(img):
    """(gy, gx) central differences of (N, h, w), one-sided at the borders."""
    xp = get_xp(img)
    gy = xp.empty_like(img)
    gx = xp.empty_like(img)
    if img.shape[1] > 1:
        gy[:, 1:-1] = 0.5 * (img[:, 2:] - img[:, :-2])
        gy[:, 0] = img[:, 1] - img[:, 0]
        gy[:, -1] = img[:, -1] - img[:, -2]
    else:
        gy[...] = 0
    if img.shape[2] > 1:
        gx[:, :, 1:-1] = 0.5 * (img[:, :, 2:] - img[:, :, :-2])
        gx[:, :, 0] = img[:, :, 1] - img[:, :, 0]
        gx[:, :, -1] = img[:, :, -1] - img[:, :, -2]
    else:
        gx[...] = 0
    return gy, gx


def _lk_refine(prev, cur, disp, block: int, reg: float, iterations: int):
    """Sub-pixel (dy, dx) displacement from integer ``disp`` by Lucas-Kanade iterations.

    Each step samples prev bilinearly at the current estimate and solves the 2x2 normal
    equations over the block, with the gradients of the cur block (constant across steps, so
    the system is built once: the "template gradient" form of Lucas-Kanade). Unlike a curve fit
    on the SAD (biased toward the integer grid and fooled by asymmetric texture: its floor on a
    static camera was ~0.1 px per block, 40% of Curator's threshold at 144p), it returns exactly
    0 for identical blocks and converges for sub-pixel pans, which at 144p is most camera
    motion. ``reg`` (grey^2 per pixel) damps flat blocks, whose gradients carry no position;
    steps are capped at 1 px and the total correction at 1.5 px.
    """
    xp = get_xp(prev)
    n, nby, nbx = disp.shape[:3]
    # Blocks on the last axis (see _blocks_last): (block, block, M) pixels, (M,) per-block values.
    c = _blocks_last(cur, nby, nbx, block)
    gy_full, gx_full = _central_gradients(cur)
    gy = _blocks_last(gy_full, nby, nbx, block)
    gx = _blocks_last(gx_full, nby, nbx, block)
    lam = reg * block * block
    gxx = _dot_blocks(gx, gx) + lam
    gyy = _dot_blocks(gy, gy) + lam
    gxy = _dot_blocks(gx, gy)
    det = gxx * gyy - gxy * gxy
    base = disp.astype(xp.float32)
    m = c.shape[-1]
    dy = xp.zeros(m, dtype=xp.float32)
    dx = xp.zeros(m, dtype=xp.float32)
    # The correction stays within +-1.5 px, so the integer part of every sample position is
    # disp + (-2..1): one padded copy of prev serves all iterations.
    flat, origin, row = _padded_origins(prev, disp, block, 2, 2)
    origin = origin + (2 * row + 2)
    for _ in range(iterations):
        fy, fx = xp.floor(dy), xp.floor(dx)
        start = origin + fy.astype(xp.int64) * row + fx.astype(xp.int64)
        win = _take_windows(flat, start, row, block + 1)  # (b+1, b+1, M)
        wy = dy - fy
        wx = dx - fx
        # Bilinear: along rows first (b+1 rows), then down the columns.
        across = win[:, :-1] + wx * (win[:, 1:] - win[:, :-1])
        it = c - (across[:-1] + wy * (across[1:] - across[:-1]))
        bx = _dot_blocks(gx, it)
        by = _dot_blocks(gy, it)
        # The cur gradients stand in for the warped prev's: P(p + d + s) ~ P(p + d) + grad C . s
        dy = xp.clip(dy + xp.clip((gxx * by - gxy * bx) / det, -1.0, 1.0), -1.5, 1.5)
        dx = xp.clip(dx + xp.clip((gyy * bx - gxy * by) / det, -1.0, 1.0), -1.5, 1.5)
    return base[..., 0] + dy.reshape(n, nby, nbx), base[..., 1] + dx.reshape(n, nby, nbx)


def block_flow(prev_y, cur_y, block: int = 8, radius: int = 4, levels: int = 3,
               refine_radius: int = 2, penalty: float = 0.25, lk_reg: float = 0.5,
               lk_iterations: int = 3):
    """Block-matching flow from ``prev_y`` to ``cur_y``: (..., by, bx, 2) float32 (dx, dy) px.

    prev_y, cur_y: (h, w) or (N, h, w) luma (any real dtype). Each ``block`` x ``block`` block of
    ``cur_y`` (by = h // block, bx = w // block; leftover edge pixels belong to the last block)
    gets the displacement of its content since ``prev_y``: cur(p) ~ prev(p - flow).

    Coarse-to-fine: a full +-``radius`` search on a 2x-downsampled pyramid's coarsest level
    (``levels`` levels at most, fewer for small frames), then +-``refine_radius`` around the
    doubled vector at each finer level: reach radius * 2^L + refine_radius * (2^L - 1) px for L
    = levels - 1 (22 px at the defaults, 15% of a 144 px frame per frame), then sub-pixel by
    ``lk_iterations`` Lucas-Kanade steps on each matched block (see _lk_refine). ``penalty``
    (grey levels per pixel of search offset, halved per pyramid level) breaks ties toward the
    search centre so flat, textureless blocks report no motion instead of noise.

    This is the xp reference of the GPU path: on CuPy arrays the same code runs and only the
    SAD cost volume is computed by ``cuda/block_match.cu``.
    """
    xp = get_xp(prev_y)
    if prev_y.shape != cur_y.shape:
        raise ValueError(f"frame shapes differ: {prev_y.shape} vs {cur_y.shape}")
    single = prev_y.ndim == 2
    prev = to_luma(prev_y[None] if single else prev_y)
    cur = to_luma(cur_y[None] if single else cur_y)
    n, h, w = prev.shape
    block = max(1, min(block, h, w))
    pyramid = [(prev, cur)]
    while len(pyramid) < levels and min(pyramid[-1][0].shape[1:]) // 2 >= 2 * block:
        p, c = pyramid[-1]
        pyramid.append((_downsample2(p), _downsample2(c)))

    pred = None
    for level in range(len(pyramid) - 1, -1, -1):
        p, c = pyramid[level]
        nby, nbx = p.shape[1] // block, p.shape[2] // block
        if pred is None:
            pred = xp.zeros((n, nby, nbx, 2), dtype=xp.int32)
            r = radius
        else:
            iy = np.minimum(np.arange(nby) // 2, pred.shape[1] - 1)
            ix = np.minimum(np.arange(nbx) // 2, pred.shape[2] - 1)
            pred = 2 * pred[:, xp.asarray(iy)][:, :, xp.asarray(ix)]
            r = refine_radius
        cost = sad_cost_volume(p, c, pred, block, r)
        cands = _candidates(r)
        # Averaging 2^level x 2^level pixels shrinks the noise, and so the tie-breaker.
        pen = xp.asarray(penalty / 2 ** level * np.abs(cands).sum(axis=1), dtype=xp.float32)
        k = xp.argmin(cost + pen, axis=-1)  # (N, nby, nbx)
        pred = pred + xp.asarray(cands)[k]  # best integer (dy, dx) per block
    p, c = pyramid[0]
    disp_y, disp_x = _lk_refine(p, c, pred, block, lk_reg, lk_iterations)
    # The match sits at p + disp in prev, so the content moved by -disp.
    flow = xp.stack([-disp_x, -disp_y], axis=-1).astype(xp.float32)
    return flow[0] if single else flow


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


def _select_pairs(frames, frame_indices, times, fps, sample_fps, max_gap, prev_frame, prev_index, prev_time,
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


def _pair_samples(first, second, idx0, idx1, t0, t1, source_size, block: int, radius: int, levels: int,
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
        sums, area = _patch_sums(mag, row_edges, col_edges, ny, nx, h, w)
        sums = _host(sums)
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
    pairs = _select_pairs(frames, frame_indices, times, fps, sample_fps, max_gap, prev_frame, prev_index,
                          prev_time, min_time)
    if pairs is None:
        return []
    return _pair_samples(*pairs, source_size, block, radius, levels, batch)


def motion_score_from_frames(frames, frame_indices=None, times=None, fps: float | None = None,
                             source_size: tuple[int, int] | None = None, sample_fps: float | None = 2.0,
                             **kw) -> MotionScore:
    """Frame-based motion score of one clip's analysis frames (see motion_samples_from_frames)."""
    samples = motion_samples_from_frames(frames, frame_indices, times, fps, source_size, sample_fps, **kw)
    return aggregate_motion(samples, method="frames")


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
        method, or None to skip it; source_size: upright (W, H) for the frame method's patch
        grid (VideoInfo.display_width/height), or None to skip the frame method.
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
        self._frame_samples: list[MotionSample] = []
        self._pending: list[tuple] = []  # _select_pairs results not matched yet
        self._pending_n = 0
        self._last = None  # (frame, index, time) ending the previous chunk
        self._next_time: float | None = None

    @property
    def frame_samples(self) -> list[MotionSample]:
        self._match(self._pending_n)
        return self._frame_samples

    def add(self, frames=None, frame_indices=None, times=None, mv_samples=None) -> None:
        if self.mv_size is not None and mv_samples:
            w, h = self.mv_size
            self.mv_samples.extend(motion_samples_from_mvs(mv_samples, w, h, curator_blocks=self.curator_blocks))
        if self.source_size is None or frames is None or len(frames) == 0:
            return
        prev = self._last or (None, None, None)
        pairs = _select_pairs(frames, frame_indices, times, self.fps, self.sample_fps, self.max_gap, *prev,
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
        self._frame_samples.extend(_pair_samples(*(a[:count] for a in cat), self.source_size, **self.flow_kw,
                                                 batch=self.batch))
        rest = tuple(a[count:].copy() for a in cat)  # not views: they would pin the whole concatenation
        self._pending_n = len(rest[2])
        self._pending = [rest] if self._pending_n else []

    def score(self, start_frame: int | None = None, end_frame: int | None = None,
              method: str = "auto") -> MotionScore:
        """method: "motion_vectors", "frames", or "auto" (vectors where the span has any, as
        Curator would compute, else frames)."""
        if method not in ("auto", "motion_vectors", "frames"):
            raise ValueError("method must be auto, motion_vectors or frames")
        if method in ("auto", "motion_vectors"):
            s = aggregate_motion(self.mv_samples, start_frame, end_frame, method="motion_vectors")
            if s.available or method == "motion_vectors":
                return s
        return aggregate_motion(self.frame_samples, start_frame, end_frame, method="frames")


# ---------------------------------------------------------------- CUDA path


def block_match_source_path() -> Path:
    """The .cu file the CuPy path compiles (the tests build this exact file with nvcc)."""
    return Path(str(importlib.resources.files("curastream.kernels").joinpath("cuda", BLOCK_MATCH_SOURCE)))


@functools.lru_cache(maxsize=None)
def _block_match_kernel():
    import cupy  # only reached with a CuPy input

    return cupy.RawKernel(block_match_source_path().read_text(), BLOCK_MATCH_KERNEL)


def block_match_launch(prev, cur, pred, cost, block: int, radius: int):
    """(grid, block, args) for block_match_sad; kept apart so CPU tests can check it against PTX."""
    n, h, w = prev.shape
    nby, nbx = pred.shape[1:3]
    k = (2 * radius + 1) ** 2
    total = n * nby * nbx * k
    grid = (max(1, -(-total // _BLOCK_MATCH_THREADS)),)
    args = (prev, cur, pred, cost, np.int32(n), np.int32(h), np.int32(w), np.int32(nby), np.int32(nbx),
            np.int32(block), np.int32(radius))
    return grid, (_BLOCK_MATCH_THREADS,), args


def _sad_cost_volume_cuda(prev, cur, pred, block, radius):
    xp = get_xp(prev)
    prev = xp.ascontiguousarray(prev, dtype=xp.float32)
    cur = xp.ascontiguousarray(cur, dtype=xp.float32)
    pred = xp.ascontiguousarray(pred, dtype=xp.int32)
    n = prev.shape[0]
    nby, nbx = pred.shape[1:3]
    cost = xp.empty((n, nby, nbx, (2 * radius + 1) ** 2), dtype=xp.float32)
    if cost.size:
        _block_match_kernel()(*block_match_launch(prev, cur, pred, cost, block, radius))
    return cost
