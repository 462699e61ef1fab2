"""Frame preparation for device-decoded video: area resize and upright turn of RGB frames,
written once against the array module (NumPy here, CuPy beside NVDEC).

NVDEC hands full-size RGB pictures to the GPU decoder (stream/videos/gpu_decode.py); the
analysis wants them at 144p, upright. The resize is an exact area average done as two matrix
products with the weights of :func:`curastream.kernels.phash.area_matrix` (one GEMM per axis,
which is what a GPU does best; no gather, no custom kernel), so the CPU tests check the very
code the GPU runs.
"""

from __future__ import annotations

from curastream.kernels._xp import get_xp
from curastream.kernels.phash import area_matrix


def resize_area_rgb(frames, out_w: int, out_h: int):
    """(N, H, W, C) uint8 -> (N, out_h, out_w, C) uint8, area average (cv2 INTER_AREA's
    weights for downscales), rounded to nearest. An input already at the size passes through."""
    xp = get_xp(frames)
    if frames.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) frames, got shape {frames.shape}")
    n, h, w, c = frames.shape
    if (h, w) == (out_h, out_w):
        return frames
    if out_w < 1 or out_h < 1:
        raise ValueError(f"output size must be positive, got {out_w}x{out_h}")
    rh = xp.asarray(area_matrix(h, out_h))  # (out_h, h)
    rw = xp.asarray(area_matrix(w, out_w))  # (out_w, w)
    x = frames.astype(xp.float32)
    # Two plain 2-D GEMMs over the whole batch (a broadcast 2-D @ 3-D takes NumPy's slow
    # stacked loop): rows first, then columns.
    t = rh @ x.transpose(1, 0, 2, 3).reshape(h, n * w * c)  # (out_h, N*W*C)
    t = t.reshape(out_h, n, w, c).transpose(1, 0, 3, 2).reshape(n * out_h * c, w)
    out = (t @ rw.T).reshape(n, out_h, c, out_w).transpose(0, 1, 3, 2)
    return xp.clip(xp.rint(out), 0, 255).astype(xp.uint8)


def upright(frames, cw: int):
    """(N, h, w, C) frames in stored orientation turned clockwise by ``cw`` degrees (0, 90,
    180, 270): the batch form of videos.rotation.upright_view, for either array module."""
    xp = get_xp(frames)
    cw %= 360
    if cw == 90:
        return xp.rot90(frames, k=-1, axes=(1, 2))
    if cw == 180:
        return frames[:, ::-1, ::-1]
    if cw == 270:
        return xp.rot90(frames, k=1, axes=(1, 2))
    if cw:
        raise ValueError(f"rotation must be a multiple of 90, got {cw}")
    return frames


def to_uint8(frames):
    """8-bit view of decoded frames: 16-bit output (10/12-bit sources) keeps its high byte."""
    xp = get_xp(frames)
    if frames.dtype == xp.uint8:
        return frames
    if frames.dtype == xp.uint16:
        return (frames >> 8).astype(xp.uint8)
    raise ValueError(f"unexpected frame dtype {frames.dtype}")


__all__ = ["resize_area_rgb", "to_uint8", "upright"]
