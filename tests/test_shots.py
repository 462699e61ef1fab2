"""Shot-boundary detection on real footage and synthetic clips, and scene/stride spans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import media_path
from curastream.kernels.shots import (
    NUM_FEATURES,
    ShotDetector,
    detect_shots,
    fixed_stride_spans,
    frame_features,
    split_scenes,
)
from curastream.videos.decode import iter_analysis_frames
from curastream.videos.probe import probe

import videogen

TOL_S = 0.5


def stream_cuts(path, chunk_size=128) -> tuple[list[float], float]:
    """Cut times (s) the way the pipeline gets them: chunked decode feeding the detector."""
    info = probe(path)
    det = ShotDetector(info.fps)
    for chunk in iter_analysis_frames(path, info, chunk_size=chunk_size, motion_vectors=False):
        det.update(frame_features(chunk.frames), chunk.frame_indices)
    return [c / info.fps for c in det.finish()], info.duration


def assert_cuts(found: list[float], expected: list[float]):
    assert len(found) == len(expected), f"found {found}, expected {expected}"
    for f, e in zip(found, expected):
        assert abs(f - e) <= TOL_S, f"found {found}, expected {expected}"


@pytest.mark.slow
@pytest.mark.parametrize("name,expected", [
    ("pyscenedetect_testvideo.mp4", [1.00, 6.01, 13.15]),
    ("torchcodec_nasa_13013.mp4", [8.08]),
    # Opens with a fade from black: no cut there (a fade is not a boundary; nothing precedes it).
    ("moviepy_big_buck_bunny_0_30.webm", [11.79, 15.67, 22.96]),
    ("derived_cityCC0_hevc.mp4", [4.64]),
    ("derived_cityCC0_vp9.webm", [4.64]),
    ("derived_nasa_13013_av1.mp4", [8.01]),
    # Static surveillance camera with pedestrians, 79.5 s: nothing to cut.
    ("opencv_vtest.avi", []),
])
def test_real_cuts(name, expected):
    found, _ = stream_cuts(media_path("videos", name))
    assert_cuts(found, expected)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("shots")
    return {
        "cuts": videogen.render_cuts(d / "cuts.mp4", cut_times=(1.0, 2.2), seconds=3.2, size=(256, 144)),
        "pan": videogen.render_pan(d / "pan.mp4", speed=(8, 3), seconds=3.0, size=(256, 144)),
        "fast_pan": videogen.render_pan(d / "fast.mp4", speed=(24, 0), seconds=2.0, size=(256, 144), photo=1),
        "static": videogen.render_pan(d / "static.webm", speed=(0, 0), seconds=2.0, size=(256, 144), codec="vp9",
                                      noise=2.0),
    }


def test_synthetic_cuts_exact(synthetic):
    r = synthetic["cuts"]
    info = probe(r.path)
    det = ShotDetector(info.fps)
    for chunk in iter_analysis_frames(r.path, info, chunk_size=32):
        det.update(frame_features(chunk.frames), chunk.frame_indices)
    assert det.finish() == r.cut_frames


@pytest.mark.parametrize("name", ["pan", "fast_pan", "static"])
def test_no_cuts_without_cuts(synthetic, name):
    found, _ = stream_cuts(synthetic[name].path)
    assert found == []


def _frames(path):
    from curastream.videos.decode import decode_for_analysis

    info = probe(path)
    return decode_for_analysis(path, info, motion_vectors=False), info


def test_chunking_does_not_change_the_result(synthetic):
    a, info = _frames(synthetic["cuts"].path)
    feats = frame_features(a.frames)
    whole = ShotDetector(info.fps)
    whole.update(feats, a.frame_indices)
    expected = whole.finish()
    assert expected == synthetic["cuts"].cut_frames
    for size in (1, 5, 24, 25, 26):
        det = ShotDetector(info.fps)
        for s in range(0, len(a), size):
            det.update(feats[s:s + size], a.frame_indices[s:s + size])
        assert det.finish() == expected, size
    assert detect_shots(a.frames, info.fps, frame_indices=a.frame_indices, chunk=17) == expected


def test_fade_through_black_is_one_cut_and_a_flash_is_none():
    fps = 25.0
    rng = np.random.default_rng(0)
    shot_a = videogen.load_photo(0)[:144, :256]
    shot_b = videogen.load_photo(1)[:144, :256]
    gains = [1.0] * 20 + list(np.linspace(1, 0, 12)) + [0.0] * 8 + list(np.linspace(0, 1, 12)) + [1.0] * 20
    frames = []
    for i, g in enumerate(gains):
        src = shot_a if i < 32 else shot_b
        frames.append(np.clip(src * g + rng.normal(0, 1, src.shape), 0, 255).astype(np.uint8))
    frames = np.stack(frames)
    cuts = detect_shots(frames, fps)
    assert len(cuts) == 1 and 40 <= cuts[0] <= 44  # the exit of the black run, where the fade-in starts
    # A two-frame white flash inside one shot.
    flash = np.stack([shot_a] * 30)
    flash[15:17] = 255
    assert detect_shots(flash, fps) == []
    # Fading in from and out to black at the ends adds nothing (no shot on the other side)...
    black = np.zeros((10, 144, 256, 3), np.uint8)
    ramp = np.stack([(shot_a * g).astype(np.uint8) for g in np.linspace(0.05, 1, 15)])
    body = np.stack([shot_a] * 10)
    assert detect_shots(np.concatenate([black, ramp, body, ramp[::-1], black]), fps) == []
    # ...but a hard cut to black is a cut, as PySceneDetect's golden 6.01 s is.
    assert detect_shots(np.concatenate([black, ramp, body, black]), fps) == [35]


def test_features_shape_and_input_checks():
    f = frame_features(np.zeros((3, 144, 256, 3), np.uint8))
    assert f.shape == (3, NUM_FEATURES) and f.dtype == np.float32
    assert frame_features(np.zeros((2, 5, 7, 3), np.uint8)).shape == (2, NUM_FEATURES)  # tiny frames
    with pytest.raises(ValueError):
        frame_features(np.zeros((3, 144, 256), np.uint8))
    with pytest.raises(ValueError):
        ShotDetector(0)
    det = ShotDetector(25)
    with pytest.raises(ValueError):
        det.update(np.zeros((2, 5), np.float32), [0, 1])
    det.finish()
    with pytest.raises(RuntimeError):
        det.update(f, [0, 1, 2])


# ---------------------------------------------------------------- spans


def test_split_scenes_examples():
    fps = 10
    assert split_scenes([30, 80], 100, fps, 2.0, 10.0) == [(0, 30), (30, 80), (80, 100)]
    # 1 s scene in the middle joins its shorter neighbour (merge) or disappears (drop).
    assert split_scenes([30, 40], 100, fps, 2.0, 10.0) == [(0, 40), (40, 100)]
    assert split_scenes([30, 40], 100, fps, 2.0, 10.0, short="drop") == [(0, 30), (40, 100)]
    # 25 s with max 10 s: three equal parts, not 10 + 10 + 5.
    assert split_scenes([], 250, fps, 2.0, 10.0) == [(0, 83), (83, 166), (166, 250)]
    assert split_scenes([], 15, fps, 2.0, 10.0) == []  # whole video shorter than the minimum
    assert split_scenes([0, 100, 120], 100, fps, 1.0, 60.0) == [(0, 100)]  # out-of-range cuts ignored


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), fps=st.sampled_from([10.0, 24.0, 29.97, 30.0]),
       cuts=st.lists(st.integers(0, 3000), max_size=30), min_len=st.floats(0, 3), extra=st.floats(0, 20),
       short=st.sampled_from(["merge", "drop"]))
def test_split_scenes_properties(n, fps, cuts, min_len, extra, short):
    max_len = 2 * min_len + 0.5 + extra  # splitting a long scene never makes a part shorter than min
    spans = split_scenes(cuts, n, fps, min_len, max_len, short=short)
    min_f = max(1, round(min_len * fps))
    max_f = int(np.floor(max_len * fps + 1e-9))
    if n < min_f:
        assert spans == []
        return
    assert all(0 <= a < b <= n for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    assert all(b - a <= max_f for a, b in spans)
    assert all(b - a >= min_f for a, b in spans)
    inner = {c for c in cuts if 0 < c < n}
    if short == "merge":
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(b1 == a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    else:
        # No span crosses a cut.
        assert not any(a < c < b for a, b in spans for c in inner)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 5000), fps=st.sampled_from([10.0, 25.0, 29.97]), clip=st.floats(0.5, 20),
       rem=st.floats(0, 5))
def test_fixed_stride_properties(n, fps, clip, rem):
    spans = fixed_stride_spans(n, fps, clip, rem)
    duration = n / fps
    # Curator's rule: starts step by `clip`, ends at min(start + clip, duration), spans under
    # `rem` dropped; float sums may drop a span that lasts `rem` to within rounding.
    starts = {round(sp.start_s / clip) for sp in spans}
    for sp in spans:
        assert abs(sp.start_s / clip - round(sp.start_s / clip)) < 1e-6
        assert sp.end_s == min(sp.start_s + clip, duration)
        assert sp.end_s - sp.start_s >= rem
        assert (sp.start_frame, sp.end_frame) == (int(sp.start_s * fps), int(sp.end_s * fps))
    k = 0
    while k * clip < duration - 1e-6:
        if min(clip, duration - k * clip) >= rem + 1e-6:
            assert k in starts, (k, spans)
        k += 1


def _span_frames(spans):
    return [(sp.start_frame, sp.end_frame) for sp in spans]


def test_fixed_stride_examples():
    assert _span_frames(fixed_stride_spans(250, 25, 4.0, 2.0)) == [(0, 100), (100, 200), (200, 250)]  # 2.0 s kept
    assert _span_frames(fixed_stride_spans(240, 25, 4.0, 2.0)) == [(0, 100), (100, 200)]  # 1.6 s remainder dropped
    assert _span_frames(fixed_stride_spans(10, 25, 4.0, 0.0)) == [(0, 10)]
    # overlapping spans with a stride shorter than the clip; the 1 s tail still reaches the minimum
    assert _span_frames(fixed_stride_spans(100, 25, 2.0, 1.0, stride_s=1.0)) == [(0, 50), (25, 75), (50, 100), (75, 100)]
    # 390 frames at 30000/1001 fps end at 13.013 s, and int(13.013 * fps) truncates to 389 (Curator's id)
    fps = 30000 / 1001
    assert fixed_stride_spans(390, fps, 10.0, 2.0)[-1].end_frame == int(390 / fps * fps)
