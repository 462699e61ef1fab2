"""Clip previews: the windows Curator cuts a clip into, and the animated WebP it writes per window."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

# WebP's largest side (libwebp's WEBP_MAX_DIMENSION): a preview of a 3000x4 video at 240 px
# high would be 180000 px wide, which the encoder refuses.
WEBP_MAX_SIDE = 16383

# Curator's captioning windows (CaptionPreparationStage / windowing_utils defaults of its
# video split tutorial): 256 frames, a remainder of 128+ frames gets its own window, shorter
# ones join the last; clips under 4 frames get none.
WINDOW_SIZE = 256
WINDOW_REMAINDER = 128
WINDOW_MIN_FRAMES = 4


def clip_windows(num_frames: int, size: int = WINDOW_SIZE, remainder_min: int = WINDOW_REMAINDER) -> list[tuple[int, int]]:
    """``(start_frame, end_frame)`` windows of a clip of ``num_frames`` frames, Curator's way:
    frames counted from the clip's first, ``end_frame`` inclusive (the last window of a
    300-frame clip ends at 299), which is also how preview files are named."""
    if num_frames < WINDOW_MIN_FRAMES:
        return []
    if num_frames <= size:
        return [(0, num_frames - 1)]
    full, rest = divmod(num_frames, size)
    out = [(k * size, k * size + size - 1) for k in range(full)]
    if rest >= remainder_min:
        out.append((num_frames - rest, num_frames - 1))
    elif rest:
        out[-1] = (out[-1][0], num_frames - 1)
    return out


def make_preview(
    frames: Sequence[np.ndarray] | np.ndarray,
    fps_in: float,
    target_fps: float = 1.0,
    height: int = 240,
    quality: int = 50,
) -> bytes:
    """Animated WebP as Curator writes it: ``target_fps`` frames a second, ``height`` px high.

    ``frames`` are RGB uint8 (N, h, w, 3), the clip's frames at ``fps_in``; frame k of the preview
    is the source frame at time k / target_fps. Every preview frame lasts 1000 / target_fps ms.
    A frame so wide (or tall) that ``height`` px high would pass WebP's size limit is scaled
    down further, keeping its aspect, to fit.
    """
    from PIL import Image

    count = len(frames)
    if count == 0:
        raise ValueError("no frames for a preview")
    step = float(fps_in) / float(target_fps)
    picks = sorted({min(count - 1, int(k * step)) for k in range(max(1, math.ceil(count / step)))})
    h0, w0 = np.asarray(frames[0]).shape[:2]
    w, h = w0 * height / h0, float(height)
    fit = min(1.0, WEBP_MAX_SIDE / w, WEBP_MAX_SIDE / h)
    size = (min(WEBP_MAX_SIDE, max(1, round(w * fit))), min(WEBP_MAX_SIDE, max(1, round(h * fit))))
    images = [Image.fromarray(np.ascontiguousarray(frames[i][..., :3])).resize(size, Image.BILINEAR) for i in picks]
    out = io.BytesIO()
    images[0].save(
        out,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / float(target_fps)),
        loop=0,
        quality=int(quality),
    )
    return out.getvalue()
