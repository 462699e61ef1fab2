"""The gpu tier: every GPU function against its CPU reference, on real media.

Skipped without CUDA (every test is marked ``gpu``, and the ``cp`` fixture needs CuPy and a
device that runs a kernel), so it collects and skips cleanly on the CPU machines. Run it on a
GPU machine with ``scripts/gpu_check.sh``. Tolerances, and why:

* image scores: rtol 1e-4 (float32 reductions in another order; the CPU's fused and reference
  scorers agree to 2e-6);
* pHash: at most 2 of 64 bits differ (a DCT coefficient within float error of the median);
* block matching: the CUDA SAD volume equals the NumPy one to rtol 1e-5 (same per-block
  summation order), and the flow to 1e-3 px;
* shot features to 1e-4, and the cut lists identical;
* NVDEC frames vs the CPU decoder: identical times and indices, mean |diff| <= 4 grey levels
  and 99th percentile <= 24 (NVDEC's YUV->RGB and chroma siting differ from swscale's; the CPU
  path's own area-vs-swscale gap is ~1 level, tests/test_gpu_path.py).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import media_path

pytestmark = pytest.mark.gpu

IMAGES = ["skimage_rocket.jpg", "derived_rocket_exif_orientation6.jpg", "opencv_fruits.jpg", "mate_Storm.jpg",
          "skimage_coffee.png", "opencv_left01.jpg", "mate_FreshFlower.jpg", "skimage_hubble_deep_field.jpg"]
# (file, why it is here)
NVDEC_VIDEOS = [
    "moviepy_chaplin.mp4",  # H.264 High
    "jsonize_iphone_rotated.mov",  # H.264 with a 90 degree display rotation
    "derived_cityCC0_hevc.mp4",  # HEVC
    "derived_cityCC0_vp9.webm",  # VP9
    "derived_nasa_13013_av1.mp4",  # AV1
]
FRAME_MEAN_TOL, FRAME_P99_TOL = 4.0, 24


@pytest.fixture(scope="module")
def cp():
    """CuPy with a device that runs a kernel, or a skip naming what is missing."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
        assert int(cupy.arange(4).sum()) == 6  # a real launch, not just a loaded library
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError without a driver
        pytest.skip(f"CUDA unusable: {type(e).__name__}: {e}")
    return cupy


def _analysis_images():
    from curastream.images.cpu_decode import ANALYSIS_SIZE
    from curastream.images.decode import decode_for_analysis
    from curastream.images.probe import probe_image

    datas = [media_path("images", n).read_bytes() for n in IMAGES]
    return datas, np.stack([decode_for_analysis(d, probe_image(d), size=ANALYSIS_SIZE) for d in datas])


def _video_frames(name: str, n: int | None = None, **kw):
    from curastream.videos.decode import decode_for_analysis
    from curastream.videos.probe import probe

    path = str(media_path("videos", name))
    info = probe(path)
    a = decode_for_analysis(path, info, motion_vectors=False, **kw)
    return path, info, (a.frames if n is None else a.frames[:n]), a


# -- images ----------------------------------------------------------------------------------


def test_image_scores_match_cpu(cp):
    from curastream.kernels.image_scores import luma, score_batch

    _, rgb = _analysis_images()
    want = score_batch(rgb, luma(rgb))
    g = cp.asarray(rgb)
    got = score_batch(g, luma(g))
    assert set(got) == set(want)
    for name in want:
        assert isinstance(got[name], cp.ndarray), name  # computed on the device
        np.testing.assert_allclose(cp.asnumpy(got[name]), want[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_phash_matches_cpu(cp):
    from curastream.kernels.image_scores import luma
    from curastream.kernels.phash import hamming, phash

    _, rgb = _analysis_images()
    want = phash(luma(rgb))
    got = cp.asnumpy(phash(luma(cp.asarray(rgb))))
    assert got.dtype == want.dtype
    assert max(int(d) for d in np.asarray(hamming(got, want))) <= 2


def test_dali_mixed_decode_stays_on_device_and_matches_cpu(cp):
    pytest.importorskip("nvidia.dali")
    from curastream.images import dali
    from curastream.images.probe import probe_image

    datas, cpu_rgb = _analysis_images()
    probes = [probe_image(d) for d in datas]
    pipe = dali.make_decode_pipeline(batch_size=len(datas), num_threads=2, device="mixed", device_id=0,
                                     keep_on_device=True)
    out = dali.dali_decode_batch(pipe, datas, probes=probes)
    assert all(isinstance(o, cp.ndarray) for o in out), [type(o) for o in out]
    got = np.stack([cp.asnumpy(o) for o in out])
    # nvJPEG vs libjpeg-turbo DCT scaling and DALI's antialiased resize vs INTER_AREA: the
    # same tolerance the CPU DALI test uses (tests/test_image_decode.py, mean |diff| < 4).
    for k, name in enumerate(IMAGES):
        assert np.abs(got[k].astype(int) - cpu_rgb[k]).mean() < 4.0, name
    # Scoring straight from the device batch.
    from curastream.kernels.image_scores import luma, score_batch

    stack = cp.stack(out)
    s = score_batch(stack, luma(stack))
    assert all(isinstance(v, cp.ndarray) for v in s.values())


def test_image_run_on_gpu_scores_views_left_on_the_device(cp, tmp_path, monkeypatch):
    """--device gpu on images: nvJPEG's views reach the score stage as device arrays (no host
    round trip), and the run's scores and kept rows match a CPU run (DALI vs libjpeg-turbo
    views: the tolerance of test_dali_mixed_decode_stays_on_device_and_matches_cpu)."""
    pytest.importorskip("nvidia.dali")
    import pyarrow.parquet as pq

    from curastream.config import ImageFilters, ImageRunConfig
    from curastream.images import stages
    from curastream.images.pipeline import run_images

    src = tmp_path / "src"
    src.mkdir()
    for n in IMAGES:
        (src / n).symlink_to(media_path("images", n))
    seen = []
    score = stages.ScoreStage._score

    def spy(self, analysis, rows, cols):
        seen.extend(type(analysis[i]).__module__.split(".")[0] for i in rows)
        return score(self, analysis, rows, cols)

    monkeypatch.setattr(stages.ScoreStage, "_score", spy)
    tables = {}
    for device in ("gpu", "cpu"):
        out = tmp_path / device
        run_images(ImageRunConfig(sources=[str(src)], output=str(out), device=device, progress=False,
                                  filters=ImageFilters(dedup=False, min_resolution=None)))
        tables[device] = pq.read_table(sorted(out.glob("*.parquet"))).sort_by("image_id").to_pylist()
        if device == "gpu":
            assert seen and set(seen) == {"cupy"}, seen
    g, c = tables["gpu"], tables["cpu"]
    assert [r["image_id"] for r in g] == [r["image_id"] for r in c]
    for rg, rc in zip(g, c):
        assert rg["mean_luma"] == pytest.approx(rc["mean_luma"], abs=4.0), rg["image_id"]


# -- video kernels -----------------------------------------------------------------------------


def test_block_match_cuda_matches_reference(cp):
    from curastream.kernels import block_match

    _, _, frames, _ = _video_frames("nodeopencv_motion.mov", n=9)
    y = block_match.to_luma(frames)
    prev, cur = y[:-1], y[1:]
    n, h, w = prev.shape
    rng = np.random.default_rng(0)
    pred = rng.integers(-3, 4, (n, h // 8, w // 8, 2)).astype(np.int32)
    want = block_match.sad_cost_volume(prev, cur, pred, 8, 4)
    got = block_match.sad_cost_volume(cp.asarray(prev), cp.asarray(cur), cp.asarray(pred), 8, 4)
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-5, atol=1e-4)
    flow_cpu = block_match.block_flow(prev, cur)
    flow_gpu = cp.asnumpy(block_match.block_flow(cp.asarray(prev), cp.asarray(cur)))
    np.testing.assert_allclose(flow_gpu, flow_cpu, atol=1e-3)
    assert np.abs(flow_cpu).max() > 0.5  # real motion was compared


def test_motion_accumulator_matches_cpu(cp):
    from curastream.kernels.motion_accumulator import MotionAccumulator

    _, info, frames, a = _video_frames("nodeopencv_motion.mov", sample_fps=2.0, motion_pairs=True)
    out = []
    for xp_frames in (frames, cp.asarray(frames)):
        acc = MotionAccumulator(info.fps, source_size=(info.display_width, info.display_height), sample_fps=2.0)
        for s in range(0, len(frames), 32):
            acc.add(xp_frames[s:s + 32], a.frame_indices[s:s + 32], a.times[s:s + 32])
        out.append(acc.frame_samples)
    cpu, gpu = out
    assert [m.frame_index for m in gpu] == [m.frame_index for m in cpu] and len(cpu) > 5
    for g, c in zip(gpu, cpu):
        np.testing.assert_allclose(g.patch_sum, c.patch_sum, rtol=1e-3, atol=1e-5)


def test_shot_features_and_cuts_match_cpu(cp):
    from curastream.kernels.shots import ShotDetector, frame_features

    _, info, frames, a = _video_frames("pyscenedetect_testvideo.mp4")
    want = frame_features(frames)
    got = frame_features(cp.asarray(frames))
    np.testing.assert_allclose(cp.asnumpy(got), want, atol=1e-4)
    cuts = []
    for f in (frames, cp.asarray(frames)):
        det = ShotDetector(info.fps)
        for s in range(0, len(a.frame_indices), 128):
            det.update(frame_features(f[s:s + 128]), a.frame_indices[s:s + 128])
        cuts.append(det.finish())
    assert cuts[1] == cuts[0] and len(cuts[0]) >= 2


def test_frame_resize_and_upright_match_cpu(cp):
    from curastream.kernels.gpu_frames import resize_area_rgb, upright

    import av

    with av.open(str(media_path("videos", "moviepy_fire2.mp4"))) as c:  # 1280x720
        full = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(4), c.decode(video=0))])
    want = resize_area_rgb(full, 256, 144)
    got = cp.asnumpy(resize_area_rgb(cp.asarray(full), 256, 144))
    assert np.abs(got.astype(int) - want).max() <= 1
    for cw in (90, 180, 270):
        assert np.array_equal(cp.asnumpy(upright(cp.asarray(want), cw)), upright(want, cw))


# -- NVDEC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NVDEC_VIDEOS)
def test_nvdec_analysis_frames_match_cpu_decoder(cp, name):
    pytest.importorskip("PyNvVideoCodec")
    from curastream.videos.decode import AnalysisDecoder, AnalysisSettings, concat_chunks
    from curastream.videos.gpu_decode import GpuAnalysisDecoder
    from curastream.videos.probe import probe

    path = str(media_path("videos", name))
    info = probe(path)
    st = AnalysisSettings(chunk_size=64, motion_vectors=False, preview_fps=1.0)
    chunks = list(GpuAnalysisDecoder(path, info, st))  # NVDEC itself: no fallback here
    assert all(isinstance(c.frames, cp.ndarray) for c in chunks)  # frames stay on the device
    got = concat_chunks([_on_host(c) for c in chunks])
    want = concat_chunks(list(AnalysisDecoder(path, info, st)))
    assert got.frames.shape == want.frames.shape
    assert got.frames_decoded == want.frames_decoded
    np.testing.assert_allclose(got.times, want.times, atol=1e-6)
    assert np.array_equal(got.frame_indices, want.frame_indices)
    d = np.abs(got.frames.astype(int) - want.frames)
    assert d.mean() <= FRAME_MEAN_TOL and np.percentile(d, 99) <= FRAME_P99_TOL, (d.mean(), np.percentile(d, 99))
    assert len(got.preview_frames) == len(want.preview_frames)
    assert all(isinstance(p[2], np.ndarray) for p in got.preview_frames)  # previews come back to the host


def _on_host(chunk):
    chunk.frames = chunk.frames.get()
    return chunk


def test_nvdec_sessions_in_parallel_match_serial(cp):
    pytest.importorskip("PyNvVideoCodec")
    from curastream.videos.decode import concat_chunks
    from curastream.videos.gpu_decode import iter_analysis_frames_gpu
    from curastream.videos.probe import probe

    names = ["moviepy_chaplin.mp4", "torchcodec_nasa_13013.mp4", "nodeopencv_motion.mov", "derived_cityCC0_hevc.mp4"]
    infos = {n: probe(str(media_path("videos", n))) for n in names}

    def run(n):
        return concat_chunks([_on_host(c) for c in iter_analysis_frames_gpu(infos[n].path, infos[n], chunk_size=64)])

    serial = {n: run(n) for n in names}
    parallel: dict = {}
    threads = [threading.Thread(target=lambda n=n: parallel.__setitem__(n, run(n))) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for n in names:
        assert np.array_equal(parallel[n].frames, serial[n].frames), n  # NVDEC is deterministic


def test_video_pipeline_on_gpu_matches_cpu_frames_method(cp, tmp_path):
    pytest.importorskip("PyNvVideoCodec")
    from curastream.config import VideoRunConfig
    from curastream.videos.pipeline import stream_videos

    path = str(media_path("videos", "torchcodec_nasa_13013.mp4"))
    rows = {}
    for device, method in (("gpu", "auto"), ("cpu", "frames")):
        cfg = VideoRunConfig(sources=[path], device=device, motion_method=method, split="scenes", dry_run=True)
        batches = list(stream_videos([path], cfg))
        assert batches, device
        rows[device] = [r for b in batches for r in b.to_pylist()]
    spans = {d: [(r["start_frame"], r["end_frame"]) for r in rows[d]] for d in rows}
    assert spans["gpu"] == spans["cpu"] and len(spans["cpu"]) >= 2
    for g, c in zip(rows["gpu"], rows["cpu"]):
        assert g["motion_method"] == c["motion_method"]
        assert g["motion_global_mean"] == pytest.approx(c["motion_global_mean"], rel=0.15, abs=2e-5)
