"""Block-matching optical flow between decoded frames, for codecs without motion vectors:
a coarse-to-fine SAD search on a 2x pyramid, then Lucas-Kanade sub-pixel refinement per block.
The same xp code runs on NumPy and CuPy; on CuPy only the SAD cost volume comes from the CUDA
kernel in ``cuda/block_match.cu``.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

import numpy as np

from curastream.kernels._xp import get_xp
from curastream.kernels.color import BT601_LUMA

BLOCK_MATCH_SOURCE = "block_match.cu"
BLOCK_MATCH_KERNEL = "block_match_sad"
_BLOCK_MATCH_THREADS = 128


def to_luma(frames):
    """(N, h, w, 3) uint8 RGB -> (N, h, w) float32 BT.601 luma; luma input passes through."""
    xp = get_xp(frames)
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return frames.astype(xp.float32) @ xp.asarray(BT601_LUMA, dtype=xp.float32)
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
