"""The GPU path's shared code, run on the CPU: device resolution and its one-line errors, the
frame preparation kernels, the GPU analysis decoder driven by PyAV frames instead of NVDEC, and
the analysis stage's GPU wiring. Only ``nvdec_frames`` (NVDEC itself) is left to the gpu tier.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import curastream.engine.device as dev
from curastream.config import VideoRunConfig
from curastream.engine.device import Device, DeviceError, resolve_device
from curastream.kernels.motion_score import aggregate_motion
from curastream.kernels.gpu_frames import resize_area_rgb, to_uint8, upright
from curastream.videos import analyze, gpu_decode, stages
from curastream.videos import pipeline as video_pipeline
from curastream.videos.decode import AnalysisDecoder, AnalysisSettings, concat_chunks
from curastream.videos.gpu_decode import GpuAnalysisDecoder, NvdecUnsupported, iter_analysis_frames_gpu
from curastream.videos.probe import probe
from curastream.videos.rotation import upright_view

from conftest import media_path

# The GPU decoder area-averages full-size RGB; the CPU one scales YUV with swscale's area
# filter and converts after. Measured on the shared media: mean |diff| 0.9-1.5 grey levels,
# 99th percentile 2-9 (edges of saturated colour, where 4:2:0 chroma is placed differently).
MEAN_TOL, P99_TOL = 2.0, 12


def pyav_source(path, info):
    """What nvdec_frames yields, from PyAV: (seconds from start, full-size RGB, stored orientation)."""
    def frames():
        with av.open(str(path)) as c:
            s = c.streams.video[info.stream_index]
            for f in c.decode(s):
                t = float(f.pts * s.time_base) - info.start_time if f.pts is not None else None
                yield t, f.to_ndarray(format="rgb24")
    return frames


# -- device -----------------------------------------------------------------------------------


def test_gpu_without_cupy_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError, here and on a CPU CI
    with pytest.raises(DeviceError) as e:
        resolve_device("gpu", needs=gpu_decode.GPU_VIDEO_MODULES)
    msg = str(e.value)
    assert "\n" not in msg and "CuPy" in msg and "curastream[gpu]" in msg


def test_gpu_names_the_missing_video_module_in_one_line(monkeypatch, tmp_path):
    # A module that fails at import the way PyNvVideoCodec does without a driver: a
    # RuntimeError with a long troubleshooting text after its first line.
    (tmp_path / "fake_nvcodec.py").write_text(
        'raise RuntimeError("libnvidia-encode.so.1: cannot open shared object file\\n\\n=== TROUBLESHOOTING ===\\nstep 1")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(dev, "_cuda_problem", lambda: None)
    with pytest.raises(DeviceError) as e:
        resolve_device("gpu", needs=("fake_nvcodec",))
    msg = str(e.value)
    assert "\n" not in msg
    assert "fake_nvcodec" in msg and "libnvidia-encode.so.1" in msg and "TROUBLESHOOTING" not in msg


def test_auto_picks_cpu_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(dev, "_cuda_problem", lambda: None)
    with caplog.at_level(logging.INFO, logger="curastream.engine.device"):
        d = resolve_device("auto", needs=("no_such_module_for_curastream_tests",))
    assert d == Device("cpu", None)
    assert any("running on CPU" in r.getMessage() and "no_such_module_for_curastream_tests" in r.getMessage()
               for r in caplog.records)


def test_gpu_with_motion_vectors_stops_before_any_work(monkeypatch):
    monkeypatch.setattr(video_pipeline, "resolve_device", lambda *a, **k: Device("gpu", 0))
    with pytest.raises(DeviceError, match="NVDEC exports no motion vectors"):
        video_pipeline.video_device(VideoRunConfig(sources=["x"], device="gpu", motion_method="vectors"))
    assert video_pipeline.video_device(VideoRunConfig(sources=["x"], device="gpu")).is_gpu


def test_videos_cli_device_gpu_exits_2_with_one_line(tmp_path):
    src = media_path("videos", "imageio_realshort.mp4")
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("curastream")
    # A fresh interpreter where cupy cannot import, whether or not the [gpu] extra is installed.
    code = ("import sys; sys.modules['cupy'] = None; from curastream.cli import main; "
            f"sys.argv = ['curastream', 'videos', {str(src)!r}, '--output', {str(out)!r}, '--device', 'gpu']; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert exe.exists()
    assert r.returncode == 2, r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --device gpu") and "CuPy" in err[0], r.stderr
    assert not out.exists()  # stopped before the output was prepared: nothing ran on the CPU


# -- frame kernels ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(256, 144), (144, 256), (41, 53), (320, 240)])
def test_area_resize_matches_opencv_on_real_frames(size):
    path = media_path("videos", "moviepy_chaplin.mp4")
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(3), c.decode(video=0))])
    got = resize_area_rgb(frames, *size)
    want = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    assert got.shape == want.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want).max() <= 1  # float32 weights vs OpenCV's fixed point


@pytest.mark.parametrize("cw", [0, 90, 180, 270])
def test_upright_batch_matches_the_single_frame_view(cw):
    frames = np.random.default_rng(cw).integers(0, 256, (3, 7, 11, 3), dtype=np.uint8)
    got = upright(frames, cw)
    for k in range(3):
        assert np.array_equal(got[k], upright_view(frames[k], cw))


def test_to_uint8_keeps_the_high_byte():
    x = np.array([[0, 255, 256, 65535]], np.uint16)
    assert to_uint8(x).tolist() == [[0, 0, 1, 255]]
    with pytest.raises(ValueError):
        to_uint8(np.zeros(3, np.float32))


# -- the GPU analysis decoder, fed by PyAV ------------------------------------------------------


@pytest.mark.parametrize("name", ["imageio_realshort.mp4", "jsonize_iphone_rotated.mov"])
@pytest.mark.parametrize("sample_fps,pairs", [(None, False), (2.0, True)])
def test_gpu_decoder_matches_cpu_decoder(name, sample_fps, pairs):
    path = media_path("videos", name)
    info = probe(str(path))
    st = AnalysisSettings(chunk_size=16, sample_fps=sample_fps, motion_pairs=pairs, motion_vectors=True,
                          preview_fps=1.0)
    cpu = list(AnalysisDecoder(str(path), info, st))
    gpu = list(GpuAnalysisDecoder(str(path), info, st, source=pyav_source(path, info)))
    assert [len(c) for c in gpu] == [len(c) for c in cpu]  # same chunking
    assert [c.last for c in gpu] == [c.last for c in cpu]
    a, b = concat_chunks(cpu), concat_chunks(gpu)
    assert b.frames.shape == a.frames.shape and b.analysis_size == a.analysis_size
    assert np.array_equal(b.times, a.times) and np.array_equal(b.frame_indices, a.frame_indices)
    assert b.frames_decoded == a.frames_decoded
    d = np.abs(b.frames.astype(int) - a.frames)
    assert d.mean() <= MEAN_TOL and np.percentile(d, 99) <= P99_TOL
    assert b.mv_samples == []  # NVDEC has no vectors: asked for, none given
    assert [(t, i) for t, i, _ in b.preview_frames] == [(t, i) for t, i, _ in a.preview_frames]
    for (_, _, x), (_, _, y) in zip(a.preview_frames, b.preview_frames):
        assert x.shape == y.shape and np.abs(x.astype(int) - y).mean() <= MEAN_TOL


def test_gpu_decoder_falls_back_to_cpu_when_nvdec_cannot_start(caplog):
    path = media_path("videos", "mecavideo_g1.avi")  # MPEG-4 Part 2: no NVDEC on recent GPUs
    info = probe(str(path))

    def refuses():
        raise NvdecUnsupported(f"{path}: NVDEC cannot decode this stream (test)")
        yield  # pragma: no cover

    with caplog.at_level(logging.WARNING, logger="curastream.videos.gpu_decode"):
        got = concat_chunks(list(iter_analysis_frames_gpu(str(path), info, chunk_size=8, source=refuses)))
    want = concat_chunks(list(AnalysisDecoder(str(path), info, AnalysisSettings(chunk_size=8))))
    assert np.array_equal(got.frames, want.frames) and np.array_equal(got.times, want.times)
    assert any("decoding it on the CPU" in r.getMessage() for r in caplog.records)


def test_gpu_decoder_refuses_on_frame_and_reports_an_empty_stream():
    path = media_path("videos", "imageio_realshort.mp4")
    info = probe(str(path))
    with pytest.raises(ValueError, match="on_frame"):
        next(iter_analysis_frames_gpu(str(path), info, on_frame=lambda t, f: None, source=pyav_source(path, info)))
    from curastream.videos.decode import VideoDecodeError

    with pytest.raises(VideoDecodeError, match="no frame"):
        list(GpuAnalysisDecoder(str(path), info, source=lambda: iter(())))


def test_frame_time_uses_the_stream_time_base():
    from fractions import Fraction

    info = probe(str(media_path("videos", "moviepy_chaplin.mp4")))
    tb = info.time_base or Fraction(1, 12800)
    info2 = type(info)(**{**info.__dict__, "time_base": tb, "start_time": 0.5})
    assert gpu_decode.frame_time(int(2 / tb), info2) == pytest.approx(1.5)
    assert gpu_decode.frame_time(None, info2) is None


# -- the analysis stage's GPU wiring, on host arrays -------------------------------------------


@pytest.mark.parametrize("name,min_spans", [
    ("torchcodec_nasa_13013.mp4", 2),  # H.264 (vectors on a CPU run), a cut at 8.08 s, little motion
    ("nodeopencv_motion.mov", 1),  # H.264, people walking: flow well above the noise floor
])
@pytest.mark.slow
def test_analyze_stage_on_gpu_device_matches_cpu_frames_method(monkeypatch, name, min_spans):
    """AnalyzeStage with a GPU device: the GPU decoder is chosen, no motion vectors are asked
    for, and shots/motion/scores come out as the CPU run's frame method gives them."""
    path = str(media_path("videos", name))
    info = probe(path)
    chosen = []

    def fake_gpu(p, i, device_id=0, **kw):
        chosen.append((device_id, kw.get("motion_vectors"), kw.get("on_frame")))
        return iter_analysis_frames_gpu(p, i, source=pyav_source(p, i), **kw)

    monkeypatch.setattr(analyze, "iter_analysis_frames_gpu", fake_gpu)
    cfg = VideoRunConfig(sources=[path], split="scenes", motion_method="auto", previews=True)
    g_spans, g_motion, g_scores, g_prev, g_media, _, _ = stages.AnalyzeStage(cfg, Device("gpu", 0))._analyze(path, info)
    assert chosen == [(0, False, None)]
    cpu_cfg = VideoRunConfig(sources=[path], split="scenes", motion_method="frames", previews=True)
    c_spans, c_motion, c_scores, c_prev, _, _, _ = stages.AnalyzeStage(cpu_cfg, Device("cpu", None))._analyze(path, info)
    assert [(s.start_frame, s.end_frame) for s in g_spans] == [(s.start_frame, s.end_frame) for s in c_spans]
    assert len(g_spans) >= min_spans  # the comparison is not between two empty lists
    assert [k for k, _ in g_scores] == [k for k, _ in c_scores]
    assert all(isinstance(f, np.ndarray) for _, f in g_scores)  # host copies, for the clip stage
    assert [k for k, _ in g_prev] == [k for k, _ in c_prev]
    assert len(g_motion) == len(c_motion) > 0
    assert {m.method for m in g_motion} == {m.method for m in c_motion}
    assert [m.frame_index for m in g_motion] == [m.frame_index for m in c_motion]
    # Per-sample mean flow (in Curator's units, small numbers). The frames differ by ~1 grey
    # level, which moves single samples by up to ~20% (measured 0.80-1.28x) but not the bulk.
    g = np.array([m.patch_sum.sum() / m.patch_area.sum() for m in g_motion])
    c = np.array([m.patch_sum.sum() / m.patch_area.sum() for m in c_motion])
    assert c.max() > 0.001  # not all zero: there is motion to compare
    np.testing.assert_allclose(g, c, rtol=0.35)
    assert 0.9 <= float(np.median(g / c)) <= 1.1
    for sp in g_spans:
        gs = aggregate_motion(g_motion, sp.start_frame, sp.end_frame)
        cs = aggregate_motion(c_motion, sp.start_frame, sp.end_frame)
        assert gs.global_mean == pytest.approx(cs.global_mean, rel=0.1, abs=2e-5)


# -- DALI image decode: the run's max_pixels and one probe per image ---------------------------


def _dali():
    pytest.importorskip("nvidia.dali")
    from curastream.images import dali

    return dali


def test_dali_probe_uses_the_runs_max_pixels():
    dali = _dali()
    from curastream.images.probe import ImageDecodeError

    small = media_path("images", "opencv_fruits.jpg").read_bytes()  # 512x480 = 245,760 px
    big = media_path("images", "mate_Storm.jpg").read_bytes()  # 1920x1280 = 2,457,600 px
    pipe = dali.make_decode_pipeline(batch_size=2, num_threads=1, max_pixels=1_000_000)
    out = dali.dali_decode_batch(pipe, [small, big])
    assert isinstance(out[0], np.ndarray) and out[0].shape == (pipe.size, pipe.size, 3)
    assert isinstance(out[1], ImageDecodeError) and "pixel" in str(out[1])
    # A raised limit lets the same image through (before, DALI re-probed at the default).
    roomy = dali.make_decode_pipeline(batch_size=2, num_threads=1, max_pixels=3_000_000)
    assert all(isinstance(o, np.ndarray) for o in dali.dali_decode_batch(roomy, [small, big]))


def test_dali_batch_takes_the_callers_probes(monkeypatch):
    dali = _dali()
    from curastream.images.probe import probe_image

    datas = [media_path("images", n).read_bytes() for n in ("opencv_fruits.jpg", "skimage_coffee.png")]
    probes = [probe_image(d) for d in datas]
    monkeypatch.setattr(dali, "probe_image", lambda *a, **k: pytest.fail("probed a second time"))
    pipe = dali.make_decode_pipeline(batch_size=2, num_threads=1)
    want = [dali.decode_cpu(datas[1], probes[1], size=pipe.size)]
    out = dali.dali_decode_batch(pipe, datas, probes=probes)
    assert out[0].shape == (pipe.size, pipe.size, 3)
    assert np.array_equal(out[1], want[0])  # the PNG takes the CPU path, from the given probe
    with pytest.raises(ValueError, match="probes"):
        dali.dali_decode_batch(pipe, datas, probes=probes[:1])


def test_keep_on_device_is_only_for_the_gpu_decoder():
    dali = _dali()
    assert dali.make_decode_pipeline(batch_size=1, num_threads=1, keep_on_device=True).keep_on_device is False


def test_nvdec_sessions_are_bounded_and_released(monkeypatch):
    """At most CURASTREAM_NVDEC_SESSIONS decoders exist at once; a video NVDEC refuses gives
    its session back before its CPU decode."""
    import threading
    import time

    path = media_path("videos", "imageio_realshort.mp4")
    info = probe(str(path))
    lock = threading.Lock()
    active, peak = [0], [0]

    def fake_nvdec(p, i, device_id=0):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            for k, item in enumerate(pyav_source(path, info)()):
                if k % 8 == 0:
                    time.sleep(0.01)  # let the other threads pile up on the semaphore
                yield item
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setenv("CURASTREAM_NVDEC_SESSIONS", "2")
    monkeypatch.setattr(gpu_decode, "_sessions", None)
    monkeypatch.setattr(gpu_decode, "nvdec_frames", fake_nvdec)
    monkeypatch.setattr(gpu_decode, "_uploaded", lambda chunks, device_id: chunks)  # no CuPy here
    results: dict = {}

    def run(k):
        results[k] = concat_chunks(list(iter_analysis_frames_gpu(str(path), info, chunk_size=8)))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert peak[0] == 2 and active[0] == 0
    assert len(results) == 5 and all(len(r) == len(results[0]) > 0 for r in results.values())
    # All sessions were handed back: two more decoders can start at once.
    assert gpu_decode._sessions.acquire(timeout=1) and gpu_decode._sessions.acquire(timeout=1)
    gpu_decode._sessions.release()
    gpu_decode._sessions.release()

    def refuses(p, i, device_id=0):
        raise NvdecUnsupported("test: no NVDEC for this codec")
        yield  # pragma: no cover

    monkeypatch.setattr(gpu_decode, "nvdec_frames", refuses)
    assert len(concat_chunks(list(iter_analysis_frames_gpu(str(path), info, chunk_size=8)))) == len(results[0])
    assert gpu_decode._sessions.acquire(timeout=1) and gpu_decode._sessions.acquire(timeout=1)
