"""Motion scores from codec motion vectors and from decoded frames, the block-matching kernel and
its CUDA twin (compiled with nvcc; the launcher driven through a NumPy emulation)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import media_path
from curastream.kernels import block_match
from curastream.kernels.block_match import (
    BLOCK_MATCH_KERNEL,
    _sad_cost_volume_cuda,
    block_flow,
    block_match_launch,
    block_match_source_path,
    sad_cost_volume,
)
from curastream.kernels.frame_motion import (
    FRAME_MOTION_SCALE,
    _pair_indices,
    motion_samples_from_frames,
    motion_score_from_frames,
)
from curastream.kernels.motion_accumulator import MotionAccumulator
from curastream.kernels.motion_score import (
    MOTION_GLOBAL_MEAN_THRESHOLD,
    MotionSample,
    MotionScore,
    aggregate_motion,
    passes_motion_filter,
    patch_grid,
    split_edges,
)
from curastream.kernels.motion_vectors import (
    TOO_SMALL,
    _mv_patch_sums,
    flow_from_motion_vectors,
    motion_sample_from_mvs,
    motion_score_from_mvs,
)
from curastream.videos.decode import decode_for_analysis
from curastream.videos.probe import probe

import videogen

SIZE = (320, 240)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Synthetic clips, decoded once: name -> (Rendered, VideoInfo, AnalysisFrames)."""
    d = tmp_path_factory.mktemp("motion")
    specs = {
        "static": ((0, 0), "h264"),
        "slow": ((4, 0), "h264"),
        "fast": ((8, 0), "h264"),
        "diag": ((6.4, 4.8), "h264"),  # 8 px/frame at 37 degrees, sub-pixel positions
        "static_vp9": ((0, 0), "vp9"),
        "slow_vp9": ((4, 0), "vp9"),
        "fast_vp9": ((8, 0), "vp9"),
    }
    out = {}
    for name, (speed, codec) in specs.items():
        ext = "webm" if codec == "vp9" else "mp4"
        r = videogen.render_pan(d / f"{name}.{ext}", speed=speed, size=SIZE, seconds=2.0, codec=codec,
                                noise=1.5 if "static" in name else 0.0)
        info = probe(r.path)
        a = decode_for_analysis(r.path, info, sample_fps=2.0, motion_pairs=True, motion_vectors=True)
        out[name] = (r, info, a)
    return out


def frame_score(info, a):
    return motion_score_from_frames(a.frames, a.frame_indices, a.times, info.fps,
                                    (info.display_width, info.display_height))


def mv_score(info, a):
    return motion_score_from_mvs([m for _, _, m in a.mv_samples], info.width, info.height)


# ---------------------------------------------------------------- end to end on synthetic pans


def test_static_camera_scores_far_below_a_pan(clips):
    for suffix in ("", "_vp9"):
        still = frame_score(*clips["static" + suffix][1:])
        pan = frame_score(*clips["slow" + suffix][1:])
        assert still.method == "frames" and still.num_samples >= 3
        assert still.global_mean < 0.05 * pan.global_mean
        assert still.global_mean < MOTION_GLOBAL_MEAN_THRESHOLD / 5
        assert passes_motion_filter(pan) == (True, None)
        assert passes_motion_filter(still) == (False, "motion_global_mean")
    mv_still, mv_pan = mv_score(*clips["static"][1:]), mv_score(*clips["slow"][1:])
    assert mv_still.method == "motion_vectors"
    assert mv_still.global_mean < 0.05 * mv_pan.global_mean


@pytest.mark.parametrize("method", ["frames", "motion_vectors", "frames_vp9"])
def test_twice_the_speed_scores_twice(clips, method):
    suffix = "_vp9" if method.endswith("vp9") else ""
    score = mv_score if method == "motion_vectors" else frame_score
    slow = score(*clips["slow" + suffix][1:]).global_mean
    fast = score(*clips["fast" + suffix][1:]).global_mean
    assert 1.6 <= fast / slow <= 2.4, (slow, fast)


@pytest.mark.parametrize("name", ["fast", "diag"])
def test_mv_score_of_an_8px_pan_matches_its_definition(clips, name):
    r, info, a = clips[name]
    expected = 8.0 / (r.width + r.height)
    s = mv_score(info, a)
    assert s.global_mean == pytest.approx(expected, rel=0.25)
    # A uniform pan moves every patch alike.
    assert s.per_patch_min_256 == pytest.approx(s.global_mean, rel=0.25)


def test_frame_score_is_the_true_speed_times_the_calibration(clips):
    # Block matching measures the true px/frame; the documented calibration constant maps it
    # onto the codec-vector scale (0.6, fitted on real footage, tests/test_motion_parity.py).
    assert FRAME_MOTION_SCALE == 0.6
    for name in ("slow", "fast", "diag", "slow_vp9", "fast_vp9"):
        r, info, a = clips[name]
        expected = 0.6 * np.hypot(*r.speed) / (r.width + r.height)
        assert frame_score(info, a).global_mean == pytest.approx(expected, rel=0.15), name


def test_both_methods_rank_h264_clips_alike(clips):
    cars = media_path("videos", "libvpl_cars_320x240.h264")  # real traffic footage
    info = probe(cars)
    real = (info, decode_for_analysis(cars, info, motion_vectors=True))
    set_ = {"static": clips["static"][1:], "slow": clips["slow"][1:], "fast": clips["fast"][1:], "real": real}
    by_mv = sorted(set_, key=lambda k: mv_score(*set_[k]).global_mean)
    by_frames = sorted(set_, key=lambda k: frame_score(*set_[k]).global_mean)
    assert by_mv == by_frames
    assert by_mv[0] == "static" and by_mv[-1] == "fast"


@pytest.mark.parametrize("name", ["derived_cityCC0_vp9.webm", "derived_cityCC0_hevc.mp4", "derived_nasa_13013_av1.mp4"])
def test_codecs_without_vectors_get_real_frame_scores(name):
    path = media_path("videos", name)
    info = probe(path)
    a = decode_for_analysis(path, info, sample_fps=2.0, motion_pairs=True, motion_vectors=True)
    assert a.mv_samples == []
    assert mv_score(info, a).global_mean == -1.0  # Curator's "no motion vectors"
    s = frame_score(info, a)
    assert s.num_samples >= 10 and s.global_mean > 0 and s.per_patch_min_256 > 0


# ---------------------------------------------------------------- motion vectors -> flow


def mv_records(rows):
    dt = np.dtype([("source", "i4"), ("w", "u1"), ("h", "u1"), ("src_x", "i2"), ("src_y", "i2"),
                   ("dst_x", "i2"), ("dst_y", "i2"), ("flags", "u8"), ("motion_x", "i4"),
                   ("motion_y", "i4"), ("motion_scale", "u2")])
    a = np.zeros(len(rows), dt)
    for i, r in enumerate(rows):
        for k, v in r.items():
            a[i][k] = v
    return a


def test_flow_paints_each_block_with_its_vector():
    mvs = mv_records([
        dict(source=-1, w=16, h=16, dst_x=8, dst_y=8, motion_x=-12, motion_y=8, motion_scale=4),  # (3, -2)
        dict(source=-1, w=8, h=4, dst_x=20, dst_y=2, motion_x=2, motion_y=0, motion_scale=2),  # (-1, 0)
        # a block hanging over the bottom-right corner is clipped, not piled on the edge
        dict(source=-1, w=16, h=16, dst_x=40, dst_y=24, motion_x=0, motion_y=-4, motion_scale=1),
    ])
    flow = flow_from_motion_vectors(mvs, 44, 28)
    assert flow.shape == (28, 44, 2) and flow.dtype == np.float32
    np.testing.assert_array_equal(flow[0:16, 0:16], np.broadcast_to([3, -2], (16, 16, 2)))
    np.testing.assert_array_equal(flow[0:4, 16:24], np.broadcast_to([-1, 0], (4, 8, 2)))
    np.testing.assert_array_equal(flow[16:28, 32:44], np.broadcast_to([0, 4], (12, 12, 2)))
    assert not flow[4:16, 16:32].any() and not flow[16:28, 0:32].any()
    # The 4 px cell grid the scores use is the per-pixel field sampled on 4 px.
    coarse = flow_from_motion_vectors(mvs, 44, 28, cell=4)
    np.testing.assert_array_equal(coarse, flow[::4, ::4])


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (2, 1, 0)])
def test_future_reference_wins_on_bipredicted_blocks_and_curator_blocks_option(order):
    # Curator keeps the vector its scatter writes last, and FFmpeg exports a block's past (-1)
    # vector before its future (+1) one: the future vector wins, whatever the record order.
    rows = [
        dict(source=-1, w=16, h=16, dst_x=8, dst_y=8, motion_x=-8, motion_y=0, motion_scale=4),  # (2, 0)
        dict(source=1, w=16, h=16, dst_x=8, dst_y=8, motion_x=6, motion_y=0, motion_scale=4),  # (-1.5, 0)
        dict(source=-1, w=4, h=4, dst_x=18, dst_y=2, motion_x=-40, motion_y=0, motion_scale=4),
    ]
    mvs = mv_records([rows[k] for k in order])
    flow = flow_from_motion_vectors(mvs, 32, 16)
    assert flow[0, 0, 0] == -1.5 and flow[15, 15, 0] == -1.5
    assert flow[0, 16, 0] == 10.0
    assert flow_from_motion_vectors(mvs, 32, 16, curator_blocks=True)[0, 16, 0] == 0.0  # 4x4: not painted
    # The patch sums (no painting) and Curator's centre points count the future vector too.
    s = motion_sample_from_mvs(mvs, 32, 16)
    assert s.patch_sum.sum() == pytest.approx((16 * 16 * 1.5 + 4 * 4 * 10.0) / 48)
    assert s.patch_centre[0, 0] == pytest.approx(0.0)  # centre (127.5, 127.5) lies outside every block
    big = motion_sample_from_mvs(mv_records([dict(r, dst_x=r["dst_x"] + 120, dst_y=r["dst_y"] + 120)
                                             for r in (rows[k] for k in order)]), 256, 256)
    assert big.patch_centre[0, 0] == pytest.approx(1.5 / 512)  # the bi-predicted block covers 127..128


def test_patch_statistics_are_true_patch_means():
    # 1280x720 -> Curator's round(720/256) x round(1280/256) = 3 x 5 patches.
    assert patch_grid(1280, 720) == (3, 5)
    assert patch_grid(320, 180) == (1, 1)
    w, h = 1280, 720
    # Motion only in the left half: one 16x16 block per macroblock column < 40, 2 px each.
    rows = [dict(source=-1, w=16, h=16, dst_x=8 + 16 * i, dst_y=8 + 16 * j, motion_x=-2, motion_y=0, motion_scale=1)
            for i in range(40) for j in range(45)]
    s = motion_score_from_mvs([mv_records(rows)], w, h)
    assert s.global_mean == pytest.approx(0.5 * 2 / (w + h), rel=1e-6)
    assert s.per_patch_min_256 == 0.0  # the right-hand patches are static
    sample = motion_sample_from_mvs(mv_records(rows), w, h)
    assert sample.patch_sum.shape == (3, 5) and sample.patch_area.sum() == w * h
    # Patch 2 of 5 spans x 512..768: exactly half of it (512..640) moves.
    assert sample.patch_sum[0, 2] / sample.patch_area[0, 2] == pytest.approx(0.5 * 2 / (w + h))


def test_scores_aggregate_over_frame_spans():
    def sample(i, v):
        return MotionSample(i, i / 25, np.full((1, 2), v * 100.0), np.full((1, 2), 100.0), "frames")

    samples = [sample(0, 0.01), sample(10, 0.03), sample(20, 0.0)]
    assert aggregate_motion(samples).global_mean == pytest.approx(0.04 / 3)
    assert aggregate_motion(samples, 0, 15).global_mean == pytest.approx(0.02)
    assert aggregate_motion(samples, 15, 30).per_patch_min_256 == 0.0
    empty = aggregate_motion(samples, 30, 40)
    assert (empty.global_mean, empty.per_patch_min_256, empty.num_samples) == (-1.0, -1.0, 0)
    assert passes_motion_filter(empty) == (False, "motion_unscored")


def test_filter_thresholds():
    keep = MotionScore(0.002, 1e-4, "frames", 4)
    assert passes_motion_filter(keep) == (True, None)
    assert passes_motion_filter(MotionScore(0.0009, 1e-4, "frames", 4)) == (False, "motion_global_mean")
    assert passes_motion_filter(MotionScore(0.002, 5e-7, "frames", 4)) == (False, "motion_per_patch_min")
    assert passes_motion_filter(keep, global_mean_threshold=0.01)[0] is False


# ---------------------------------------------------------------- block matching


def textured(h=96, w=128, seed=0):
    photo = videogen.load_photo(seed).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return photo[200:200 + 2 * h:2, 300:300 + 2 * w:2].copy()  # real texture, lightly decimated


def shifted(img, dx, dy):
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, img.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("dx,dy", [(0, 0), (3, -2), (-7, 5), (13, 4), (1.5, 0.5), (-0.3, 0.6)])
def test_block_flow_recovers_a_translation(dx, dy):
    big = textured(160, 224)
    a = big[32:128, 48:176]
    b = shifted(big, dx, dy)[32:128, 48:176]
    flow = block_flow(a, b)
    assert flow.shape == (12, 16, 2)
    inner = flow[2:-2, 2:-2].reshape(-1, 2)
    med = np.median(inner, axis=0)
    np.testing.assert_allclose(med, [dx, dy], atol=0.2)
    if dx == 0 and dy == 0:
        assert not flow.any()  # identical frames: exactly no motion


def test_block_flow_batches_and_flat_frames():
    a = textured()
    batch_a = np.stack([a, a, np.full_like(a, 80)])
    batch_b = np.stack([shifted(a, 2, 0), shifted(a, 0, 3), np.full_like(a, 80)])
    flow = block_flow(batch_a, batch_b)
    assert flow.shape == (3, 12, 16, 2)
    np.testing.assert_allclose(np.median(flow[0, 1:-1, 1:-1].reshape(-1, 2), 0), [2, 0], atol=0.2)
    np.testing.assert_allclose(np.median(flow[1, 1:-1, 1:-1].reshape(-1, 2), 0), [0, 3], atol=0.2)
    assert not flow[2].any()  # featureless: the tie-break keeps zero
    with pytest.raises(ValueError):
        block_flow(a, a[:-1])


def _sad_naive(prev, cur, pred, block, radius):
    n, h, w = prev.shape
    nby, nbx = pred.shape[1:3]
    side = 2 * radius + 1
    out = np.zeros((n, nby, nbx, side * side), np.float32)
    for i in range(n):
        for by in range(nby):
            for bx in range(nbx):
                for k in range(side * side):
                    dy = pred[i, by, bx, 0] + k // side - radius
                    dx = pred[i, by, bx, 1] + k % side - radius
                    s = 0.0
                    for y in range(by * block, by * block + block):
                        for x in range(bx * block, bx * block + block):
                            ry, rx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
                            s += abs(float(cur[i, y, x]) - float(prev[i, ry, rx]))
                    out[i, by, bx, k] = s / (block * block)
    return out


def test_sad_cost_volume_matches_a_naive_loop():
    rng = np.random.default_rng(3)
    prev = rng.uniform(0, 255, (2, 13, 17)).astype(np.float32)
    cur = rng.uniform(0, 255, (2, 13, 17)).astype(np.float32)
    pred = rng.integers(-3, 4, (2, 3, 4, 2)).astype(np.int32)  # reaches past the frame edges
    got = sad_cost_volume(prev, cur, pred, 4, 2)
    np.testing.assert_allclose(got, _sad_naive(prev, cur, pred, 4, 2), rtol=1e-5)


def test_motion_samples_carry_pairs_across_chunks(clips):
    r, info, a = clips["slow"]
    whole = motion_samples_from_frames(a.frames, a.frame_indices, a.times, info.fps, sample_fps=None)
    k = 3  # split between the frames of the second (t, t+1) pair
    first = motion_samples_from_frames(a.frames[:k], a.frame_indices[:k], a.times[:k], info.fps, sample_fps=None)
    second = motion_samples_from_frames(a.frames[k:], a.frame_indices[k:], a.times[k:], info.fps, sample_fps=None,
                                        prev_frame=a.frames[k - 1], prev_index=a.frame_indices[k - 1],
                                        prev_time=a.times[k - 1])
    assert [s.frame_index for s in first + second] == [s.frame_index for s in whole]
    for x, y in zip(first + second, whole):
        np.testing.assert_allclose(x.patch_sum, y.patch_sum)


def test_pairs_prefer_one_frame_gaps():
    # decoder layout with motion_pairs at 2 fps of 25 fps: (0,1) (12,13) (25,26)
    idx = np.array([0, 1, 12, 13, 25, 26])
    pos = _pair_indices(idx, idx / 25.0, 2.0, 12, 25.0)
    assert list(pos) == [0, 2, 4]


# ---------------------------------------------------------------- CUDA source


def _nvcc():
    return shutil.which("nvcc") or next((c for c in ("/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc")
                                         if os.access(c, os.X_OK)), None)


def test_block_match_cu_compiles_and_matches_the_launcher(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not available")
    src = block_match_source_path()
    out = tmp_path / "bm.ptx"
    proc = subprocess.run([nvcc, "--ptx", "-arch=sm_80", "-o", str(out), str(src)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    ptx = out.read_text()
    m = re.search(rf"\.entry\s+{BLOCK_MATCH_KERNEL}\s*\((.*?)\)", ptx, re.S)
    assert m, "kernel entry point missing"
    params = re.findall(r"\.param\s+\.(\w+)", m.group(1))
    prev = np.zeros((1, 16, 16), np.float32)
    pred = np.zeros((1, 2, 2, 2), np.int32)
    cost = np.zeros((1, 2, 2, 9), np.float32)
    _, block, args = block_match_launch(prev, prev, pred, cost, 8, 1)
    assert params == ["u64" if isinstance(a, np.ndarray) else "u32" for a in args]
    threads = int(re.search(r"#define\s+BLOCK_MATCH_THREADS\s+(\d+)", src.read_text()).group(1))
    assert block == (threads,)


def _emulate_block_match(grid, block, args):
    """NumPy stand-in for block_match_sad, one 'thread' at a time, following the .cu indexing."""
    prev, cur, pred, cost, n, h, w, nby, nbx, bsz, radius = args
    n, h, w, nby, nbx, bsz, radius = (int(v) for v in (n, h, w, nby, nbx, bsz, radius))
    side = 2 * radius + 1
    kc = side * side
    total = n * nby * nbx * kc
    p, c, pr, out = prev.ravel(), cur.ravel(), pred.ravel(), cost.reshape(-1)
    for tid in range(grid[0] * block[0]):
        if tid >= total:
            continue
        k, b = tid % kc, tid // kc
        bx, by, img = b % nbx, (b // nbx) % nby, b // (nbx * nby)
        dy = pr[2 * b] + k // side - radius
        dx = pr[2 * b + 1] + k % side - radius
        s = 0.0
        for iy in range(bsz):
            y = by * bsz + iy
            ry = min(max(y + dy, 0), h - 1)
            for ix in range(bsz):
                x = bx * bsz + ix
                rx = min(max(x + dx, 0), w - 1)
                s += abs(c[img * h * w + y * w + x] - p[img * h * w + ry * w + rx])
        out[tid] = s / (bsz * bsz)


def test_cuda_launcher_matches_the_reference(monkeypatch):
    monkeypatch.setattr(block_match, "_block_match_kernel", lambda: _emulate_block_match)
    rng = np.random.default_rng(5)
    prev = rng.uniform(0, 255, (2, 11, 14)).astype(np.float32)
    cur = rng.uniform(0, 255, (2, 11, 14)).astype(np.float32)
    pred = rng.integers(-2, 3, (2, 2, 3, 2)).astype(np.int32)
    got = _sad_cost_volume_cuda(prev, cur, pred, 4, 1)
    np.testing.assert_allclose(got, sad_cost_volume(prev, cur, pred, 4, 1), rtol=1e-5)


def test_accumulator_streams_chunks_like_the_whole(clips):
    r, info, a = clips["diag"]
    whole = MotionAccumulator(info.fps, mv_size=(info.width, info.height),
                              source_size=(info.display_width, info.display_height))
    whole.add(a.frames, a.frame_indices, a.times, a.mv_samples)
    streamed = MotionAccumulator(info.fps, mv_size=(info.width, info.height),
                                 source_size=(info.display_width, info.display_height))
    for s in range(0, len(a), 3):
        mv = [m for m in a.mv_samples if s <= np.searchsorted(a.frame_indices, m[1]) < s + 3]
        streamed.add(a.frames[s:s + 3], a.frame_indices[s:s + 3], a.times[s:s + 3], mv)
    assert [x.frame_index for x in streamed.frame_samples] == [x.frame_index for x in whole.frame_samples]
    assert [x.frame_index for x in streamed.mv_samples] == [x.frame_index for x in whole.mv_samples]
    assert aggregate_motion(streamed.mv_samples) == aggregate_motion(whole.mv_samples)
    for method in ("motion_vectors", "frames"):
        assert streamed.score(method=method) == whole.score(method=method)
    # 320x240: under Curator's 256 px the vectors give its -1, and "auto" takes the frames.
    mv = whole.score(method="motion_vectors")
    assert (mv.reason, mv.global_mean, mv.num_samples) == (TOO_SMALL, -1, 0)
    assert whole.score() == whole.score(method="frames") and whole.score().available
    half = int(a.frame_indices[len(a) // 2])
    first, second = whole.score(0, half, "frames"), whole.score(half, None, "frames")
    assert first.num_samples + second.num_samples == whole.score(method="frames").num_samples
    # No vectors in a span -> the frame method answers.
    only_frames = MotionAccumulator(info.fps, source_size=(info.display_width, info.display_height))
    only_frames.add(a.frames, a.frame_indices, a.times, a.mv_samples)
    assert only_frames.score().method == "frames" and only_frames.score().available


@pytest.mark.parametrize("name", ["moviepy_chaplin.mp4", "opencv_vtest.avi", "mecavideo_g1.avi",
                                  "nodeopencv_motion.mov"])
def test_rectangle_sums_equal_the_painted_field(name):
    # The scores sum |v| x block area per patch instead of painting; on real vectors (B-frames,
    # sub-8x8 partitions, MPEG-4 and MS-MPEG4 blocks) it must equal painting pixel by pixel.
    path = media_path("videos", name)
    info = probe(path)
    a = decode_for_analysis(path, info, sample_fps=0.5, mv_sample_fps=4.0)
    w, h = info.width, info.height
    ny, nx = patch_grid(w, h)
    assert a.mv_samples
    for _, _, mvs in a.mv_samples[:12]:
        for curator in (False, True):
            fast = _mv_patch_sums(mvs, w, h, ny, nx, curator)
            assert fast is not None
            flow = flow_from_motion_vectors(mvs, w, h, curator_blocks=curator)
            mag = np.sqrt((flow.astype(np.float64) ** 2).sum(-1)) / (w + h)
            ey, ex = split_edges(h, ny), split_edges(w, nx)
            painted = np.array([[mag[ey[i]:ey[i + 1], ex[j]:ex[j + 1]].sum() for j in range(nx)] for i in range(ny)])
            np.testing.assert_allclose(fast[0], painted, rtol=1e-5, atol=1e-9)


def test_overlapping_blocks_fall_back_to_painting():
    mvs = mv_records([dict(source=-1, w=16, h=16, dst_x=8, dst_y=8, motion_x=-4, motion_y=0, motion_scale=1),
                      dict(source=-1, w=16, h=16, dst_x=12, dst_y=8, motion_x=-8, motion_y=0, motion_scale=1)])
    assert _mv_patch_sums(mvs, 16, 16, 1, 1, False) is None
    s = motion_sample_from_mvs(mvs, 16, 16)
    flow = flow_from_motion_vectors(mvs, 16, 16)
    assert s.patch_sum.sum() == pytest.approx(np.hypot(flow[..., 0], flow[..., 1]).sum() / 32)


def test_frame_samples_carry_curator_patch_centres(clips):
    # A uniform pan moves every block alike: Curator's centre sample and the true patch mean
    # agree, and both follow the pan; a still clip has its centres near zero.
    r, info, a = clips["fast"]
    samples = motion_samples_from_frames(a.frames, a.frame_indices, a.times, info.fps,
                                         (info.display_width, info.display_height))
    assert samples and all(s.patch_centre is not None and s.patch_centre.shape == s.patch_sum.shape
                           for s in samples)
    centre = aggregate_motion(samples, patch_stat="centre").per_patch_min_256
    assert centre == pytest.approx(aggregate_motion(samples).per_patch_min_256, rel=0.2)
    assert centre == pytest.approx(0.6 * 8.0 / (r.width + r.height), rel=0.2)
    with pytest.raises(ValueError):
        aggregate_motion(samples, patch_stat="median")
