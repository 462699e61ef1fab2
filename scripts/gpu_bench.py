"""Short GPU bench for scripts/gpu_check.sh: one JSON object on stdout.

    python scripts/gpu_bench.py [--media DIR] [--seconds S] [--sessions 1,2,4,7]

images/s: DALI "mixed" decode + resize to the analysis size, kept on the device, then the
scores and pHash on CuPy (the image path's GPU half), batches of 64 real JPEGs.
video fps: NVDEC analysis decode (144p frames on the device, every frame kept) plus the shot
features and the CUDA block matcher on those frames, one video per session; aggregate fps
over 1..N concurrent sessions, each decoding its own copy of a 720p H.264 clip.
NVDEC engines as the driver reports them; GPU memory: the peak of CuPy's pool and of
nvidia-smi's used memory during the run.

Media: ``--media`` (shared/media layout) when present, else built-in samples (scikit-image's
photos, a 720p H.264 clip rendered with PyAV into a temp folder): no network needed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _smi_used_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        return int(out.strip().splitlines()[0])
    except Exception:  # noqa: BLE001 - the figure is optional
        return None


class _MemWatch:
    """Samples nvidia-smi's used memory every 0.5 s; ``peak`` in MiB."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            v = _smi_used_mib()
            if v is not None:
                self.peak = max(self.peak, v)
            self._stop.wait(0.5)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=5)


def _jpegs(media: Path | None) -> list[bytes]:
    files = sorted(glob.glob(str(media / "images" / "*.jp*g"))) if media else []
    if not files:
        import skimage

        files = sorted(glob.glob(os.path.join(os.path.dirname(skimage.__file__), "data", "*.jpg")))
    if not files:
        raise SystemExit("no JPEG found for the image bench")
    return [Path(f).read_bytes() for f in files]


def bench_images(media: Path | None, seconds: float) -> dict:
    import cupy

    from curastream.images import dali
    from curastream.images.probe import probe_image
    from curastream.kernels.image_scores import luma, score_batch
    from curastream.kernels.phash import phash

    base = _jpegs(media)
    batch = (base * (64 // len(base) + 1))[:64]
    probes = [probe_image(d, max_pixels=1 << 31) for d in batch]
    pipe = dali.make_decode_pipeline(batch_size=len(batch), num_threads=4, device="mixed", device_id=0,
                                     max_pixels=1 << 31, keep_on_device=True)

    def one():
        out = [o for o in dali.dali_decode_batch(pipe, batch, probes=probes) if not isinstance(o, Exception)]
        stack = cupy.stack([cupy.asarray(o) for o in out])
        y = luma(stack)
        score_batch(stack, y)
        phash(y)
        cupy.cuda.Device().synchronize()
        return len(out)

    one()  # build, nvJPEG warm-up, kernel compiles
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += one()
    return {"images_per_s": round(n / (time.perf_counter() - t0), 1), "image_batch": len(batch),
            "images_distinct": len(base)}


def _clip(media: Path | None, tmp: Path) -> Path:
    if media and (media / "videos" / "pyscenedetect_testvideo.mp4").exists():
        return media / "videos" / "pyscenedetect_testvideo.mp4"  # 1280x720 H.264, 24 s
    import av

    path = tmp / "bench_720p.mp4"
    rng = np.random.default_rng(0)
    # Coarse random texture (10 px cells): something for the block matcher, yet compressible.
    tex = np.repeat(np.repeat(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8), 10, axis=0), 10, axis=1)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "60"}
        for k in range(300):  # 10 s, a pan of 1 px per frame
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[90:810, k:k + 1280]), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _analyse(path: str, info) -> int:
    """One video through the GPU analysis: decode, shot features, motion. Returns frames decoded."""
    from curastream.kernels.motion_accumulator import MotionAccumulator
    from curastream.kernels.shots import ShotDetector, frame_features
    from curastream.videos.gpu_decode import iter_analysis_frames_gpu

    det = ShotDetector(info.fps)
    acc = MotionAccumulator(info.fps, source_size=(info.display_width, info.display_height), sample_fps=2.0)
    n = 0
    for chunk in iter_analysis_frames_gpu(path, info, chunk_size=128, motion_vectors=False):
        if len(chunk.frame_indices):
            det.update(frame_features(chunk.frames), chunk.frame_indices)
            acc.add(chunk.frames, chunk.frame_indices, chunk.times)
        n = chunk.frames_decoded
    det.finish()
    acc.frame_samples  # noqa: B018 - flushes the pending pairs through the block matcher
    return n


def bench_video(media: Path | None, sessions: list[int], tmp: Path) -> dict:
    import cupy

    from curastream.videos.probe import probe

    clip = _clip(media, tmp)
    info = probe(str(clip))
    _analyse(str(clip), info)  # warm-up: NVDEC session, kernel compiles
    out: dict = {"video": f"{clip.name} {info.width}x{info.height} {info.video_codec}", "video_fps": {}}
    os.environ["CURASTREAM_NVDEC_SESSIONS"] = str(max(sessions))
    from curastream.videos import gpu_decode

    gpu_decode._sessions = None  # re-read the session limit
    for k in sessions:
        counts = [0] * k
        t0 = time.perf_counter()
        threads = [threading.Thread(target=lambda i=i: counts.__setitem__(i, _analyse(str(clip), info)))
                   for i in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cupy.cuda.Device().synchronize()
        out["video_fps"][k] = round(sum(counts) / (time.perf_counter() - t0), 1)
    out["nvdec_engines"] = _nvdec_engines()
    return out


def _nvdec_engines():
    try:
        import PyNvVideoCodec as nvc

        caps = nvc.GetDecoderCaps(gpuid=0, codec=nvc.cudaVideoCodec.H264,
                                  chromaformat=nvc.cudaVideoChromaFormat.YUV420, bitdepth=8)
        return caps.get("num_decoder_engines") if isinstance(caps, dict) else getattr(caps, "num_decoder_engines", None)
    except Exception as e:  # noqa: BLE001 - a figure, not a check
        return f"unknown ({type(e).__name__})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--sessions", default="1,2,4,7")
    a = ap.parse_args(argv)
    media = a.media if a.media and a.media.is_dir() else None
    import cupy

    result: dict = {"media": str(media) if media else "built-in samples",
                    "gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()}
    pool = cupy.get_default_memory_pool()
    with _MemWatch() as mem, tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("images", lambda: bench_images(media, a.seconds)),
                         ("video", lambda: bench_video(media, [int(s) for s in a.sessions.split(",")], Path(tmp)))):
            try:
                result.update(fn())
            except Exception as e:  # noqa: BLE001 - report the part that failed, keep the rest
                result[f"{name}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    result["cupy_pool_held_mib"] = round(pool.total_bytes() / 2**20, 1)
    result["gpu_mem_peak_mib"] = mem.peak or None
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
