"""Synthetic test videos with known motion and known cuts, rendered with PyAV.

Every clip is cut out of a real photo (shared/media/images) so codecs and kernels see natural
texture; without the media folder a smooth random texture stands in, so callers never skip.

    pan = render_pan(tmp_path / "pan.mp4", speed=(8, 0))         # 8 px/frame to the right
    still = render_pan(tmp_path / "still.mp4", speed=(0, 0))      # static camera
    cuts = render_cuts(tmp_path / "cuts.mp4", cut_times=(1.0, 2.2))

Each returns a ``Rendered`` record with what a test needs to check against (frame count, fps,
cut frame indices, speed).

Motion convention: ``speed=(dx, dy)`` is the displacement of the picture content in output
pixels per frame (the camera window moves the opposite way), so a flow estimator should report
``(+dx, +dy)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

MEDIA_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "media" / "images"
# Large, richly textured photos: a fast pan over several seconds must stay inside them.
PHOTOS = ("plasma_ColorfulCups_2560x1600.jpg", "mate_Storm.jpg", "mate_LadyBird.jpg", "opencv_building.jpg")

ENCODERS = {
    # bframes=0 and one reference keep every P-frame's vectors relative to the previous frame,
    # so a codec vector equals the per-frame displacement (B-frames and multi-reference P-frames
    # would report multiples of it: the MV side data carries only a direction, not a distance).
    "h264": ("libx264", {"preset": "veryfast", "crf": "20", "x264-params": "bframes=0:ref=1:keyint=50"}),
    # Real-world GOP structure (B-frames, 3 references) for tests of what real files look like.
    "h264-bframes": ("libx264", {"preset": "veryfast", "crf": "20"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b:v": "0", "row-mt": "1"}),
    "mpeg4": ("mpeg4", {"qscale": "3", "bf": "0"}),
}


@dataclass
class Rendered:
    path: Path
    width: int
    height: int
    fps: float
    num_frames: int
    speed: tuple[float, float] = (0.0, 0.0)
    cut_frames: list[int] = field(default_factory=list)

    @property
    def cut_times(self) -> list[float]:
        return [f / self.fps for f in self.cut_frames]


@functools.lru_cache(maxsize=8)
def load_photo(index: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a real photo, or a deterministic smooth texture without media."""
    name = PHOTOS[index % len(PHOTOS)]
    p = MEDIA_IMAGES / name
    if p.exists():
        from PIL import Image

        with Image.open(p) as im:
            im = im.convert("RGB")
            # Cap the size: decoding 4 Mpx once is fine, but keep memory and warps cheap.
            if max(im.size) > 1600:
                im.thumbnail((1600, 1600))
            return np.asarray(im).copy()
    return _texture(index)


def _texture(seed: int, h: int = 1000, w: int = 1600) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3), np.float32)
    for scale in (4, 16, 64):
        small = rng.uniform(0, 255, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        out += cv2.resize(small, (w + 2 * scale, h + 2 * scale), interpolation=cv2.INTER_CUBIC)[scale:scale + h, scale:scale + w]
    out = (out - out.min()) / (out.max() - out.min())
    # A per-channel gamma per seed: without it every texture has the same colours and histogram
    # (uniform noise, normalised), so a cut between two of them changes nothing the shot
    # detector measures, unlike a cut between two photos. Edges, and so motion, stay.
    gamma = np.array(((0.5, 1.0, 2.0), (2.0, 1.0, 0.5), (1.0, 2.2, 0.8), (0.7, 0.6, 1.8))[seed % 4], np.float32)
    return (255 * out ** gamma).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _zoomed(index: int, zoom: float) -> np.ndarray:
    import cv2

    photo = load_photo(index)
    h, w = photo.shape[:2]
    # INTER_AREA when shrinking: a bilinear shrink would alias, and aliasing flickers in a pan.
    interp = cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC
    return cv2.resize(photo, (max(1, round(w * zoom)), max(1, round(h * zoom))), interpolation=interp)


def _window(img: np.ndarray, x: float, y: float, width: int, height: int) -> np.ndarray:
    """The (height, width) view of ``img`` whose top-left corner is at (x, y), sub-pixel."""
    import cv2

    if float(x).is_integer() and float(y).is_integer() and 0 <= x and 0 <= y \
            and x + width <= img.shape[1] and y + height <= img.shape[0]:
        return np.ascontiguousarray(img[int(y):int(y) + height, int(x):int(x) + width])
    # Pure translation, bilinear: keeps fractional pans honest.
    m = np.array([[1.0, 0.0, x], [0.0, 1.0, y]], np.float64)
    return cv2.warpAffine(img, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _shot_frames(photo_index: int, n: int, width: int, height: int, speed, start=(0.0, 0.0), noise: float = 0.0, seed: int = 0):
    photo = load_photo(photo_index)
    ph, pw = photo.shape[:2]
    # Zoom so the whole pan stays inside the photo (fewer reflected borders).
    need_w = width + abs(speed[0]) * n + 2
    need_h = height + abs(speed[1]) * n + 2
    zoom = max(need_w / pw, need_h / ph, width / pw * 1.25, height / ph * 1.25)
    zoom = round(min(zoom, 4.0), 3)
    img = _zoomed(photo_index, zoom)
    span_h, span_w = img.shape[:2]
    # Start so that the pan ends inside: content moving right = window moving left.
    x0 = start[0] + (speed[0] * n + 1 if speed[0] > 0 else 1)
    y0 = start[1] + (speed[1] * n + 1 if speed[1] > 0 else 1)
    x0 = float(min(x0, max(span_w - width - 1, 0)))
    y0 = float(min(y0, max(span_h - height - 1, 0)))
    rng = np.random.default_rng(seed)
    for i in range(n):
        out = _window(img, x0 - speed[0] * i, y0 - speed[1] * i, width, height)
        if noise:
            out = np.clip(out + rng.normal(0, noise, out.shape), 0, 255).astype(np.uint8)
        yield out


def encode(path: Path | str, frames, width: int, height: int, fps: float, codec: str = "h264",
           pix_fmt: str = "yuv420p") -> int:
    """Encode an iterable of (H, W, 3) uint8 RGB frames; returns the number written.

    pix_fmt="yuv420p10le" gives a 10-bit stream (libx264 High 10).
    """
    name, options = ENCODERS[codec]
    path = Path(path)
    n = 0
    with av.open(str(path), "w") as out:
        rate = round(fps) if float(fps).is_integer() else Fraction(fps).limit_denominator(1001)
        s = out.add_stream(name, rate=rate)
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        s.options = dict(options)
        s.codec_context.thread_count = 2
        for img in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pix_fmt != "yuv420p":
                vf = vf.reformat(format=pix_fmt)
            for pkt in s.encode(vf):
                out.mux(pkt)
            n += 1
        for pkt in s.encode():
            out.mux(pkt)
    return n


def render_pan(path, speed=(8.0, 0.0), size=(320, 240), fps: float = 25, seconds: float = 2.0,
               codec: str = "h264", photo: int = 0, noise: float = 0.0, pix_fmt: str = "yuv420p") -> Rendered:
    """A camera pan over a photo: content moves ``speed`` px/frame; (0, 0) is a static camera.

    ``noise`` adds Gaussian sensor noise (sigma in grey levels) so a "static" camera is not
    bit-identical from frame to frame, as no real one is.
    """
    w, h = size
    n = max(2, round(fps * seconds))
    frames = _shot_frames(photo, n, w, h, speed, noise=noise)
    written = encode(path, frames, w, h, fps, codec, pix_fmt)
    return Rendered(Path(path), w, h, float(fps), written, (float(speed[0]), float(speed[1])))


def render_cuts(path, cut_times=(1.0, 2.2), size=(320, 240), fps: float = 25, seconds: float = 3.2,
                codec: str = "h264", speed=(2.0, 1.0)) -> Rendered:
    """Shots of different photos (each gently panning) joined by hard cuts at ``cut_times``.

    The cut frame is the first frame of the new shot: ``round(t * fps)``.
    """
    w, h = size
    n = max(2, round(fps * seconds))
    cuts = sorted(round(t * fps) for t in cut_times)
    bounds = [0, *cuts, n]

    def frames():
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            yield from _shot_frames(k, b - a, w, h, speed, start=(37.0 * k, 23.0 * k))

    written = encode(path, frames(), w, h, fps, codec)
    return Rendered(Path(path), w, h, float(fps), written, (float(speed[0]), float(speed[1])), cuts)
