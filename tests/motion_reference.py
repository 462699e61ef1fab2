"""Motion-vector scoring as it stood before issue 14's per-frame reduction, transcribed verbatim
from kernels/motion_vectors.py and kernels/motion_score.py (CPU only): the reference the compact
per-frame path must match bit for bit (tests/test_motion_compact.py), and the "before" row of
``scripts/bench_videos.py ours-analysis``. Raw AVMotionVector arrays in, MotionScore out.
"""

from __future__ import annotations

import bisect

import numpy as np

from curastream.kernels.motion_score import MotionSample, MotionScore, unscored

PATCH_PX = 256
PATCH_STATS = ("centre", "mean")
DEFAULT_PATCH_STAT = "mean"
CURATOR_BLOCK_SIZES = ((8, 8), (16, 16), (16, 8), (8, 16))
CURATOR_TARGET_FPS = 2.0
CURATOR_DURATION_RATIO = 0.5
CURATOR_MIN_SAMPLES = 10
MV_MIN_SIDE = 256
TOO_SMALL = "resolution_too_small"
MV_CELL = 4
UNSCORED = "none"


def get_xp(_a):
    return np


def to_host(a):
    return np.asarray(a)


def aggregate_motion(samples, start_frame: int | None = None, end_frame: int | None = None,
                     method: str | None = None, patch_stat: str = DEFAULT_PATCH_STAT) -> MotionScore:
    """MotionScore of the samples whose frame_index lies in [start_frame, end_frame).

    patch_stat: "centre" (Curator's per_patch_min_256: min over patches of the bilinear sample at
    each patch centre) or "mean" (min over patches of the true patch mean). Samples without
    centre values fall back to "mean".
    """
    if patch_stat not in PATCH_STATS:
        raise ValueError(f"patch_stat must be one of {PATCH_STATS}")
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
    if patch_stat == "centre" and all(s.patch_centre is not None for s in sel):
        per_patch = float(np.mean([np.asarray(s.patch_centre, np.float64) for s in sel], axis=0).min())
    else:
        per_patch = float((total / np.maximum(area, 1e-12)).min())
    return MotionScore(global_mean, per_patch, method or sel[0].method, len(sel))


def patch_grid(width: int, height: int, patch_px: int = PATCH_PX) -> tuple[int, int]:
    """(ny, nx) patches for a width x height source: Curator's ``round(side / 256)``, at least 1."""
    return max(1, int(round(height / patch_px))), max(1, int(round(width / patch_px)))


def centre_points(length: int, parts: int, patch_px: int = PATCH_PX) -> np.ndarray:
    """(parts, 2) pixel pairs Curator's per-patch value is read from along one side.

    ``cv2.resize(fx=1/256)`` (bilinear) maps output pixel k to source coordinate 256k + 127.5:
    the mean of pixels 256k + 127 and 256k + 128, clamped to the frame like OpenCV's border.
    """
    lo = np.arange(parts) * patch_px + patch_px // 2 - 1
    return np.clip(np.stack([lo, lo + 1], axis=1), 0, max(0, length - 1))


def split_edges(length: int, parts: int) -> np.ndarray:
    """Edges of ``parts`` near-equal intervals covering 0..length: the patch grid along one side."""
    return np.round(np.linspace(0, length, parts + 1)).astype(np.int64)


def _overlap(cell_edges: np.ndarray, patch_edges: np.ndarray) -> np.ndarray:
    """(n_patches, n_cells) pixels shared by each patch interval and each cell interval."""
    lo = np.maximum(patch_edges[:-1, None], cell_edges[None, :-1])
    hi = np.minimum(patch_edges[1:, None], cell_edges[None, 1:])
    return np.maximum(hi - lo, 0).astype(np.float64)


def patch_sums(mag, row_edges: np.ndarray, col_edges: np.ndarray, ny: int, nx: int, height: int, width: int):
    """Patch sums and areas of a cell-constant field mag (..., n_rows, n_cols) (xp arrays)."""
    xp = get_xp(mag)
    ry = _overlap(row_edges, split_edges(height, ny))
    rx = _overlap(col_edges, split_edges(width, nx))
    # Separable: each cell's value times its pixel overlap with each patch.
    sums = xp.asarray(ry, dtype=xp.float64) @ mag.astype(xp.float64) @ xp.asarray(rx.T, dtype=xp.float64)
    area = np.outer(ry.sum(1), rx.sum(1))
    return sums, area


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
    bi-predicted block carries its two vectors on the same rectangle, so "paint past, then
    future" equals: drop each past-reference block whose rectangle also has a future vector, then
    add |v| x (block area inside each patch). Exact, and ~20x cheaper than painting 1080p.
    """
    x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, width, height, curator_blocks)
    future = src > 0
    if x0.size and future.any():  # P-frames have past vectors only: nothing to drop
        key = ((x0 * 16384 + y0) * 16384 + x1) * 16384 + y1
        drop = ~future & np.isin(key, key[future])
        keepm = ~drop
        x0, y0, x1, y1, vx, vy = (a[keepm] for a in (x0, y0, x1, y1, vx, vy))
    if ((x1 - x0) * (y1 - y0)).sum() > width * height:
        return None  # overlapping blocks: only painting defines the answer
    ey, ex = split_edges(height, ny), split_edges(width, nx)
    mag = np.hypot(vx, vy) / float(width + height)
    oy = np.maximum(np.minimum(y1[:, None], ey[None, 1:]) - np.maximum(y0[:, None], ey[None, :-1]), 0)
    ox = np.maximum(np.minimum(x1[:, None], ex[None, 1:]) - np.maximum(x0[:, None], ex[None, :-1]), 0)
    sums = (mag[:, None] * oy).T @ ox.astype(np.float64)
    area = np.outer(np.diff(ey), np.diff(ex)).astype(np.float64)
    return sums, area


def _mv_patch_centres(mvs, width: int, height: int, ny: int, nx: int, curator_blocks: bool) -> np.ndarray:
    """(ny, nx) magnitude of the painted field at Curator's patch-centre points (bilinear mean
    of the 2x2 pixels around each centre), from the block rectangles without painting."""
    py, px = centre_points(height, ny), centre_points(width, nx)
    out = np.zeros((2 * ny, 2 * nx), np.float64)
    if mvs is None or len(mvs) == 0:
        return out.reshape(ny, 2, nx, 2).mean(axis=(1, 3))
    x0, y0, x1, y1, vx, vy, src = _mv_rects(mvs, width, height, curator_blocks)
    mag = np.hypot(vx, vy) / float(width + height)
    iy = (y0[:, None] <= py.ravel()[None]) & (py.ravel()[None] < y1[:, None])
    ix = (x0[:, None] <= px.ravel()[None]) & (px.ravel()[None] < x1[:, None])
    # Only the few blocks over a centre point matter (every frame is scored when shot spans
    # are sampled as Curator does, so this runs ~30 times a second of video).
    near = iy.any(1) & ix.any(1)
    iy, ix = iy[near].astype(np.float64), ix[near].astype(np.float64)
    mag, src = mag[near], src[near]
    # Within one reference direction blocks do not overlap, so each point sums at most one
    # block per direction; the future-reference block wins, as in the painting.
    future = src > 0
    for sel in (~future, future):
        val = np.einsum("n,ny,nx->yx", mag[sel], iy[sel], ix[sel])
        hit = np.einsum("ny,nx->yx", iy[sel], ix[sel]) > 0
        out = np.where(hit, val, out)
    return out.reshape(ny, 2, nx, 2).mean(axis=(1, 3))


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
        sums, area = patch_sums(mag, row_edges, col_edges, ny, nx, height, width)
    centre = _mv_patch_centres(mvs, width, height, ny, nx, curator_blocks)
    return MotionSample(int(frame_index), float(time), to_host(sums), area, "motion_vectors",
                        patch_centre=centre)


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
