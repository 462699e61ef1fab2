"""Built-in sample data for the demo: real photos and short videos rendered from them.

The photos ship inside scikit-image's wheel (the ``samples`` extra), so nothing is downloaded.
Videos are camera pans over those photos at a known speed (pixels per frame) and hard cuts at
known times, so a run's motion scores and shot boundaries can be checked by eye.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# Photos bundled in the scikit-image wheel (no network needed).
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry", "motorcycle_left")


def _photos() -> dict[str, np.ndarray]:
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise RuntimeError("sample photos need scikit-image: pip install 'curastream[samples]'") from e
    out = {}
    for name in SAMPLE_PHOTOS:
        try:
            img = getattr(data, name)()
        except Exception:  # noqa: BLE001 - some skimage images are fetched on demand; skip those
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out[name] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    return out


def make_sample_images(out_dir: str | os.PathLike) -> list[Path]:
    """Write the photos as JPEG and PNG, plus a near-duplicate and a broken file."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, img) in enumerate(sorted(_photos().items())):
        p = out / (f"{name}.png" if i % 3 == 2 else f"{name}.jpg")
        Image.fromarray(img).save(p, quality=90)
        written.append(p)
        if name == "astronaut":  # a resized re-encode: the dedup stage should catch it
            small = Image.fromarray(img).resize((img.shape[1] // 2, img.shape[0] // 2))
            p2 = out / "astronaut_small_copy.jpg"
            small.save(p2, quality=70)
            written.append(p2)
    bad = out / "broken.jpg"
    bad.write_bytes((out / "astronaut.jpg").read_bytes()[:2000])
    written.append(bad)
    return written


@dataclass(frozen=True)
class SampleVideo:
    name: str
    path: Path
    pan_px_per_frame: float
    cut_times_s: tuple[float, ...]


def _pan_frames(img: np.ndarray, n: int, w: int, h: int, speed: float, x0: float = 0.0) -> np.ndarray:
    """Frames of a window of w x h sliding right by ``speed`` px per frame over ``img``."""
    H, W = img.shape[:2]
    scale = max(h / H, (w + speed * n + 2) / W, 1.0)
    if scale > 1.0:
        from PIL import Image

        img = np.asarray(Image.fromarray(img).resize((int(W * scale) + 1, int(H * scale) + 1)))
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        x = int(round(x0 + speed * i))
        frames[i] = img[:h, x:x + w]
    return frames


def _encode(path: Path, frames: np.ndarray, fps: int, codec: str = "libx264") -> None:
    import av

    from curastream.videos.x264 import x264_options

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.thread_count = 1  # the same bytes on any machine (videos.clip_encode.ENCODER_THREADS)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        s.time_base = Fraction(1, fps)
        if codec == "libx264":
            s.options = {"preset": "veryfast", "crf": "23", "g": str(fps), **x264_options()}
        elif codec == "libvpx-vp9":
            s.options = {"crf": "36", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": str(fps)}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def make_sample_videos(out_dir: str | os.PathLike, fps: int = 25, size: tuple[int, int] = (320, 240)) -> list[SampleVideo]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    photos = _photos()
    w, h = size
    vids = []
    n = 4 * fps
    for name, speed in (("pan_slow", 2.0), ("pan_fast", 4.0)):
        p = out / f"{name}.mp4"
        _encode(p, _pan_frames(photos["coffee"], n, w, h, speed), fps)
        vids.append(SampleVideo(name, p, speed, ()))
    static = np.repeat(_pan_frames(photos["chelsea"], 1, w, h, 0.0), n, axis=0)
    p = out / "static.mp4"
    _encode(p, static, fps)
    vids.append(SampleVideo("static", p, 0.0, ()))
    # three shots, hard cuts at 2 s and 4 s, each a slow pan over a different photo
    shots = [_pan_frames(photos[k], 2 * fps, w, h, 1.5) for k in ("astronaut", "rocket", "coffee")]
    p = out / "three_shots.mp4"
    _encode(p, np.concatenate(shots), fps)
    vids.append(SampleVideo("three_shots", p, 1.5, (2.0, 4.0)))
    p = out / "pan_vp9.webm"
    _encode(p, _pan_frames(photos["astronaut"], 2 * fps, w, h, 3.0), fps, codec="libvpx-vp9")
    vids.append(SampleVideo("pan_vp9", p, 3.0, ()))
    return vids
