"""Motion parity with NeMo Curator: Curator's formula reproduced from real codec vectors (against
an independent per-pixel painting + OpenCV resize), deterministic vector export, the default
method per codec, the frame method's calibration to the vector scale on real H.264/MPEG media,
and scripts/parity_videos.py's tree comparison on hand-made output trees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import media_path
from curastream.kernels.motion_accumulator import MotionAccumulator
from curastream.kernels.motion_score import MotionSample, aggregate_motion, passes_motion_filter
from curastream.kernels.motion_vectors import (
    TOO_SMALL,
    curator_clip_motion,
    curator_max_samples,
    curator_step,
    motion_sample_from_mvs,
    select_curator_samples,
)
from curastream.kernels.shots import fixed_stride_spans
from curastream.videos.decode import AnalysisDecoder, AnalysisSettings
from curastream.videos.probe import probe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import parity_videos  # noqa: E402

# ---------------------------------------------------------------- independent reference


def _first_vectors(path: Path, count: int, step: int):
    """Every step-th decoded frame's AVMotionVector array (frames carrying any), single thread."""
    import av

    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "NONE"
        s.codec_context.options = {"flags2": "+export_mvs"}
        for i, f in enumerate(c.decode(s)):
            sd = f.side_data.get("MOTION_VECTORS")
            if i % step == 0 and sd is not None:
                out.append(sd.to_ndarray())
                size = (f.width, f.height)
            if len(out) == count:
                break
    return out, size


def _painted_magnitude(mvs, w: int, h: int) -> np.ndarray:
    """Per-pixel |flow| / (W + H): each block's -motion/scale painted over its rectangle, one block
    at a time (future-reference vectors last, so they win where a block has two, as in Curator)."""
    flow = np.zeros((h, w, 2), np.float64)
    order = np.argsort(np.asarray(mvs["source"]), kind="stable")  # past (-1) first, future (+1) last
    for k in order:
        m = mvs[k]
        x0, y0 = int(m["dst_x"]) - int(m["w"]) // 2, int(m["dst_y"]) - int(m["h"]) // 2
        xs, ys = slice(max(0, x0), max(0, x0 + int(m["w"]))), slice(max(0, y0), max(0, y0 + int(m["h"])))
        flow[ys, xs] = (-m["motion_x"] / m["motion_scale"], -m["motion_y"] / m["motion_scale"])
    return np.hypot(flow[..., 0], flow[..., 1]) / (w + h)


@pytest.mark.parametrize("name, step", [("moviepy_fire2.mp4", 4), ("imageio_cockatoo.mp4", 10)])
def test_curator_formula_from_real_vectors(name, step):
    cv2 = pytest.importorskip("cv2")
    mvs, (w, h) = _first_vectors(media_path("videos", name), count=6, step=step)
    assert len(mvs) == 6
    field = np.mean([_painted_magnitude(m, w, h) for m in mvs], axis=0)
    ours = [motion_sample_from_mvs(m, w, h, frame_index=i) for i, m in enumerate(mvs)]
    # Curator's per_patch_min_256: cv2.resize(fx=1/256) of the time-averaged field, min.
    curator_patch = float(cv2.resize(field.astype(np.float32), None, fx=1 / 256, fy=1 / 256).min())
    centre = aggregate_motion(ours, patch_stat="centre")
    assert centre.global_mean == pytest.approx(field.mean(), rel=1e-6)
    assert centre.per_patch_min_256 == pytest.approx(curator_patch, rel=1e-5, abs=1e-12)
    # The true patch mean: round(side/256) equal parts of each side.
    ny, nx = max(1, round(h / 256)), max(1, round(w / 256))
    ey = [round(h * k / ny) for k in range(ny + 1)]
    ex = [round(w * k / nx) for k in range(nx + 1)]
    means = [field[ey[i]:ey[i + 1], ex[j]:ex[j + 1]].mean() for i in range(ny) for j in range(nx)]
    assert aggregate_motion(ours).per_patch_min_256 == pytest.approx(min(means), rel=1e-6)


# ---------------------------------------------------------------- Curator's sampling of a clip


def _curator_decode_loop(path: Path):
    """Curator's decode_for_motion, re-done by hand on a file that is a whole clip: every
    round(fps/2)-th decoded frame (fps 25 -> 12: Python rounds halves to even), frames without
    vectors skipped, stop after max(10, round(2 * int(duration) * 0.5)) frames with vectors;
    (frame numbers, vector arrays, (W, H))."""
    import av

    picked, arrays = [], []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "NONE"  # Curator uses frame threads: run to run noise
        s.codec_context.options = {"flags2": "+export_mvs"}
        step = max(1, round(float(s.average_rate) / 2))
        limit = max(10, round(2 * int(c.duration / 1_000_000) * 0.5))
        for i, f in enumerate(c.decode(s)):
            size = (f.width, f.height)
            sd = f.side_data.get("MOTION_VECTORS")
            if i % step or sd is None:
                continue
            picked.append(i)
            arrays.append(sd.to_ndarray())
            if len(picked) >= limit:
                break
    return picked, arrays, size


def test_curator_step_and_sample_count_follow_its_rounding():
    # round(fps / 2) with Python's round; frames read = max(10, whole seconds) (half the clip
    # at 2 frames/s), a clip under one second counting as 30 s.
    assert [curator_step(f) for f in (25, 29.97, 30, 24, 20, 10.505, 59.94, 1)] == [12, 15, 15, 12, 10, 5, 30, 1]
    assert [curator_max_samples(d) for d in (2.2, 9.64, 10.0, 14.0, 24.0, 21.9, 0.5)] == [10, 10, 10, 14, 24, 21, 30]


@pytest.mark.parametrize("fps, start, end", [(25.0, 0, 250), (25.0, 250, 500), (29.97, 299, 599),
                                             (20.0, 40, 320), (30.0, 17, 40), (10.505, 0, 25)])
def test_select_curator_samples_is_its_decode_loop_over_the_clip(fps, start, end):
    # Every 7th frame and every frame from 120 to 160 carry no vectors (intra).
    has_vectors = [not (k % 7 == 3 or 120 <= k < 160) for k in range(end + 10)]
    samples = [MotionSample(k, k / fps, np.ones((1, 1)), np.ones((1, 1)), "motion_vectors")
               for k in range(end + 10) if has_vectors[k]]
    step = {25.0: 12, 29.97: 15, 20.0: 10, 30.0: 15, 10.505: 5}[fps]
    limit = max(10, int((end - start) / fps + 1e-9))
    want = []
    for i in range(end - start):  # the clip's frames; its frame 0 is Curator's re-encode's keyframe
        if i % step == 0 and i > 0 and has_vectors[start + i]:
            want.append(start + i)
        if len(want) == limit:
            break
    got = [s.frame_index for s in select_curator_samples(samples, start, end, fps)]
    assert got == want
    assert all(start < k < end for k in got)


def test_tiny_pictures_get_curators_minus_one_with_a_reason():
    sample = MotionSample(12, 0.5, np.ones((1, 1)), np.ones((1, 1)), "motion_vectors")
    for size in ((320, 240), (255, 1000), (1000, 255)):
        s = curator_clip_motion([sample], 0, 25, 25.0, size)
        assert (s.global_mean, s.per_patch_min_256, s.reason) == (-1.0, -1.0, TOO_SMALL)
        assert passes_motion_filter(s) == (False, "motion_unscored")
    ok = curator_clip_motion([sample], 0, 25, 25.0, (256, 256))
    assert ok.available and ok.reason is None and ok.global_mean == 1.0


@pytest.mark.parametrize("name", ["moviepy_chaplin.mp4", "nodeopencv_motion.mov"])
def test_curator_score_of_a_whole_file_clip(name):
    # chaplin: B-frames (two vectors on bi-predicted blocks), 25 fps -> every 12th frame, 9.64 s
    # -> 10 frames; nodeopencv: 30 fps -> every 15th, where every other one (30, 60, ...) has no
    # vectors. The file starts on a keyframe, as Curator's clip does, so Curator's loop over it
    # is the reference for span [0, n).
    cv2 = pytest.importorskip("cv2")
    path = media_path("videos", name)
    picked, arrays, (w, h) = _curator_decode_loop(path)
    info = probe(path)
    acc = MotionAccumulator(info.fps, mv_size=(info.width, info.height))
    settings = AnalysisSettings(motion_vectors=True, mv_sample_fps=None, short_side=32)
    for chunk in AnalysisDecoder(path, info, settings):
        acc.add(mv_samples=chunk.mv_samples)
    sel = select_curator_samples(acc.mv_samples, 0, info.num_frames, info.fps)
    assert [s.frame_index for s in sel] == picked and len(picked) >= 8
    field = np.mean([_painted_magnitude(m, w, h) for m in arrays], axis=0)
    ours = curator_clip_motion(acc.mv_samples, 0, info.num_frames, info.fps, (w, h), patch_stat="centre")
    assert ours.global_mean == pytest.approx(field.mean(), rel=1e-6)
    curator_patch = float(cv2.resize(field.astype(np.float32), None, fx=1 / 256, fy=1 / 256).min())
    assert ours.per_patch_min_256 == pytest.approx(curator_patch, rel=1e-5, abs=1e-12)
    assert acc.score(0, info.num_frames, "motion_vectors").global_mean == pytest.approx(field.mean(), rel=1e-6)


def test_decoder_keeps_the_vectors_of_the_frames_asked_for():
    import av

    path = media_path("videos", "moviepy_chaplin.mp4")
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"flags2": "+export_mvs"}
        carrying = [i for i, f in enumerate(c.decode(s)) if f.side_data.get("MOTION_VECTORS") is not None]
    info = probe(path)
    settings = AnalysisSettings(motion_vectors=True, mv_sample_fps=None, short_side=32)
    every = [i for ch in AnalysisDecoder(path, info, settings) for _, i, _ in ch.mv_samples]
    assert every == carrying
    wanted = {0, 12, 24, 100, 101, 240, 9999}
    some = [i for ch in AnalysisDecoder(path, info, settings, mv_frames=wanted.__contains__) for _, i, _ in ch.mv_samples]
    assert some == sorted(wanted & set(carrying)) and 0 not in some  # frame 0 is a keyframe


@pytest.mark.slow
def test_run_scores_clips_as_curator_samples_them(tmp_path):
    # chaplin with 4 s clips: spans [0, 4), [4, 8), [8, 9.64); each clip's score comes from
    # its own frames 12, 24, ... (first 10 with vectors), clip-relative as Curator's decode.
    from curastream import VideoRunConfig, run_videos

    path = media_path("videos", "moviepy_chaplin.mp4")
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(path, src / path.name)
    out = tmp_path / "out"
    run_videos(VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", clip_len=4.0, min_clip_len=1.0,
                              progress=False))
    metas = sorted((json.loads(p.read_text()) for p in (out / "metas" / "v0").glob("*.json")),
                   key=lambda m: m["duration_span"][0])
    assert [m["duration_span"][0] for m in metas] == [0.0, 4.0, 8.0]
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "NONE"
        s.codec_context.options = {"flags2": "+export_mvs"}
        frames = [(f.side_data.get("MOTION_VECTORS"), f.width, f.height) for f in c.decode(s)]
    for m in metas:
        a, b = (int(round(t * 25)) for t in m["duration_span"])
        want = [k for k in range(a + 12, b, 12) if frames[k][0] is not None][:10]
        w, h = frames[0][1], frames[0][2]
        field = np.mean([_painted_magnitude(frames[k][0].to_ndarray(), w, h) for k in want], axis=0)
        assert m["motion_score"]["global_mean"] == pytest.approx(field.mean(), rel=1e-6)


def test_run_under_256_px_says_what_happens(tmp_path):
    # Curator's vectors give -1 under 256 px and its filter drops every clip. By default ("auto")
    # such a video is scored from frames, as a codec without vectors; "vectors" keeps Curator's
    # outcome. Either way the video's warnings say it (and the run logs them).
    from curastream import VideoRunConfig, run_videos

    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(media_path("videos", "imageio_realshort.mp4"), src / "realshort.mp4")  # 320x240 H.264
    runs = {}
    for method in ("auto", "vectors", "reencode"):
        out = tmp_path / method
        how = {"motion_source": "reencode"} if method == "reencode" else {"motion_method": method}
        run_videos(VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", clip_len=1.0, min_clip_len=0.5,
                                  progress=False, **how))
        metas = [json.loads(p.read_text()) for p in (out / "metas" / "v0").glob("*.json")]
        (video,) = json.loads((out / "_curastream" / "summary.json").read_text())["videos"]
        assert metas
        runs[method] = metas, video
    metas, video = runs["vectors"]
    assert video["motion_method"] == "motion_vectors"
    for m in metas:
        assert "motion_decode" in m["errors"] and "motion" in m["filtered_by"] and not m.get("motion_score")
        assert "resolution_too_small" in m["error_messages"]["motion_decode"]
    assert any("under 256 px" in w and "drops every clip" in w for w in video["warnings"])
    metas, video = runs["auto"]
    assert video["motion_method"] == "frames"
    for m in metas:
        assert not m.get("errors") and m["motion_score"]["global_mean"] > 0
    assert any("under 256 px" in w and "from decoded frames" in w for w in video["warnings"])
    # Scored from each clip's x264 re-encode, at the source's size: Curator's -1, said as such.
    metas, video = runs["reencode"]
    for m in metas:
        assert "motion" in m["filtered_by"] and m["motion_score"]["global_mean"] == -1.0
    assert any("under 256 px" in w and "drops every clip" in w for w in video["warnings"])
    assert not any("from decoded frames" in w for w in video["warnings"])


def test_vector_export_is_deterministic():
    # chaplin has B-frames: with frame threads FFmpeg gave different vectors run to run.
    path = media_path("videos", "moviepy_chaplin.mp4")
    info = probe(path)
    settings = AnalysisSettings(motion_vectors=True, mv_sample_fps=25.0, short_side=32)

    def run():
        got = []
        for chunk in AnalysisDecoder(path, info, settings):
            for t, i, m in chunk.mv_samples:
                got.append((i, {k: np.asarray(m[k]).copy() for k in m.dtype.names}))
        return got

    first = run()
    assert len(first) > 200
    for _ in range(2):
        again = run()
        assert [i for i, _ in again] == [i for i, _ in first]
        for (_, a), (_, b) in zip(first, again):
            assert all(np.array_equal(a[k], b[k]) for k in a)


def test_default_method_uses_vectors_where_the_codec_has_them(tmp_path):
    from curastream import VideoRunConfig, run_videos

    src = tmp_path / "in"
    src.mkdir()
    for name in ("jsonize_iphone_rotated.mov", "imageio_realshort.mp4", "mecavideo_balle1-vp9.avi"):
        shutil.copyfile(media_path("videos", name), src / name)
    out = tmp_path / "out"
    cfg = VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", dry_run=True, progress=False)
    assert cfg.motion_method == "auto"
    run_videos(cfg)
    summary = json.loads((out / "_curastream" / "summary.json").read_text())
    methods = {Path(v["video"]).name: v["motion_method"] for v in summary["videos"]}
    # realshort is H.264 but 320x240: under Curator's 256 px, so frames as for VP9
    assert methods == {"jsonize_iphone_rotated.mov": "motion_vectors", "imageio_realshort.mp4": "frames",
                       "mecavideo_balle1-vp9.avi": "frames"}


# ---------------------------------------------------------------- calibration on real media

# imageio_realshort.mp4 (320x240) and torchcodec_nasa_13013.mp4 (320x180) are under Curator's
# 256 px: their vectors give -1, nothing to calibrate against.
MV_VIDEOS = ["imageio_cockatoo.mp4", "jsonize_iphone_rotated.mov", "mecavideo_balle-jbart.mp4",
             "moviepy_chaplin.mp4", "moviepy_fire2.mp4", "nodeopencv_motion.mov", "pyscenedetect_testvideo.mp4",
             "opencv_vtest.avi"]


def _both_methods(name: str, clip_len: float = 3.0):
    """(codec, vector score, frame score) per fixed span, from one decode; vectors scored as
    Curator samples each span (every frame's kept, the span picks)."""
    path = media_path("videos", name)
    info = probe(path)
    acc = MotionAccumulator(info.fps, mv_size=(info.width, info.height),
                            source_size=(info.display_width, info.display_height))
    settings = AnalysisSettings(sample_fps=2.0, motion_pairs=True, motion_vectors=True, mv_sample_fps=None)
    for chunk in AnalysisDecoder(path, info, settings):
        acc.add(chunk.frames, chunk.frame_indices, chunk.times, chunk.mv_samples)
    rows = []
    for sp in fixed_stride_spans(info.num_frames, info.fps, clip_len, 1.5):
        mv = acc.score(sp.start_frame, sp.end_frame, "motion_vectors")
        fr = acc.score(sp.start_frame, sp.end_frame, "frames")
        assert mv.available and fr.available, (name, sp)
        rows.append((info.video_codec, mv, fr))
    return rows


@pytest.mark.slow
def test_frame_method_is_calibrated_to_the_vector_scale():
    rows = [r for name in MV_VIDEOS for r in _both_methods(name)]
    assert len(rows) >= 50
    agree = [passes_motion_filter(mv)[0] == passes_motion_filter(fr)[0] for _, mv, fr in rows]
    h264 = [a for (codec, _, _), a in zip(rows, agree) if codec == "h264"]
    assert sum(agree) / len(agree) >= 0.9, (sum(agree), len(agree))
    assert sum(h264) / len(h264) >= 0.75, (sum(h264), len(h264))  # 19 of 24 measured
    # Scores, where both see real motion: the same on average, a small factor apart per clip.
    lr = np.log([mv.global_mean / fr.global_mean for _, mv, fr in rows
                 if mv.global_mean > 2e-4 and fr.global_mean > 2e-4])
    assert len(lr) >= 15
    assert abs(lr.mean()) < np.log(1.3), np.exp(lr.mean())
    assert np.abs(lr).mean() < np.log(2.0), np.exp(np.abs(lr).mean())


# ---------------------------------------------------------------- parity script


def _write_tree(root: Path, metas: dict, passed: dict, filtered: dict, videos: dict) -> Path:
    """A Curator-layout output tree: metas/v0, clips/ (passed: uuid -> sub folder or ""),
    filtered_clips/, processed_videos/."""
    (root / "metas" / "v0").mkdir(parents=True)
    for uid, m in metas.items():
        (root / "metas" / "v0" / f"{uid}.json").write_text(json.dumps(m, indent=4))
    for base, ids in (("clips", passed), ("filtered_clips", filtered)):
        for uid, sub in ids.items():
            d = root / base / sub
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{uid}.mp4").write_bytes(b"\0\0\0\x18ftypmp42")
    for rel, v in videos.items():
        p = root / "processed_videos" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(v, indent=4))
    return root


def _meta(uid: str, start: float, end: float, **kw) -> dict:
    m = {"span_uuid": uid, "source_video": "/in/v.mp4", "duration_span": [start, end], "width_source": 640,
         "height_source": 360, "framerate_source": 25.0, "clip_location": f"/out/clips/{uid}.mp4",
         "width": 640, "height": 360, "framerate": 25.0, "num_frames": int((end - start) * 25),
         "video_codec": "h264", "num_bytes": 1000,
         "motion_score": {"global_mean": 0.002, "per_patch_min_256": 1e-4}, "valid": True}
    m.update(kw)
    return m


def test_compare_trees_reports_every_kind_of_difference(tmp_path):
    video = {"video": "/in/v.mp4", "height": 360, "width": 640, "framerate": 25.0, "num_frames": 1000,
             "duration": 40.0, "video_codec": "h264", "pixel_format": "yuv420p", "audio_format": None,
             "num_total_clips": 3, "num_clip_chunks": 1}
    cur = _write_tree(
        tmp_path / "cur",
        {"a": _meta("a", 0.0, 10.0), "b": _meta("b", 10.0, 20.0), "c": _meta("c", 20.0, 30.0)},
        passed={"a": "", "c": ""}, filtered={"b": ""}, videos={"v.mp4.json": video})
    ours_video = dict(video, num_total_clips=2, framerate=25)
    del ours_video["num_clip_chunks"]
    ours = _write_tree(
        tmp_path / "ours",
        {"a": _meta("a", 0.0, 10.0004, framerate_source=25, num_bytes=2000, clip_location="/o/clips/a.mp4"),
         "b": _meta("b", 10.0, 20.0, num_frames=249),
         "d": _meta("d", 30.0, 40.0)},
        passed={"a": "a_", "b": "", "d": ""}, filtered={}, videos={"v.mp4.json": ours_video})

    r = parity_videos.compare_trees(cur, ours)
    assert (r.only_curator, r.only_ours, r.common) == (["c"], ["d"], ["a", "b"])
    assert r.decisions_agree == 1
    assert [(d.span_uuid, d.curator, d.ours) for d in r.decision_diffs] == [("b", "filtered", "passed")]
    got = {(d.item, d.field, d.kind, json.dumps(d.curator), json.dumps(d.ours)) for d in r.field_diffs}
    assert got == {
        ("a", "framerate_source", "type", '"float"', '"int"'),
        ("a", "num_bytes", "info", "1000", "2000"),
        ("a", "clip_location", "info", '"/out/clips/a.mp4"', '"/o/clips/a.mp4"'),
        ("b", "num_frames", "value", "250", "249"),
    }  # duration_span 10.0 vs 10.0004 is within the tolerance
    vgot = {(d.field, d.kind) for d in r.video_diffs}
    assert vgot == {("num_total_clips", "value"), ("framerate", "type"), ("num_clip_chunks", "missing_in_ours")}
    # 2 ids + 1 decision + type + value + 3 video differences; "info" ones do not count
    assert r.mismatches == 8
    text = parity_videos.format_report(r)
    assert "filter decisions: 1 of 2 agree" in text and "only Curator: c" in text and "parity mismatches: 8" in text
    assert "  b (v.mp4 10-20 s): Curator filtered (mean 0.002, patch min 0.0001) | ours passed (mean 0.002," in text


def test_identical_trees_have_no_mismatch(tmp_path):
    metas = {"a": _meta("a", 0.0, 10.0), "b": _meta("b", 10.0, 12.5)}
    cur = _write_tree(tmp_path / "cur", metas, {"a": ""}, {"b": ""}, {})
    ours = _write_tree(tmp_path / "ours", metas, {"a": "a_"}, {"b": "b_"}, {})
    r = parity_videos.compare_trees(cur, ours)
    assert r.mismatches == 0 and r.decisions_agree == 2 and r.field_diffs == []


def test_parity_script_skips_without_curator(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "parity_videos.py"), "--curator-python",
                        str(tmp_path / "no-python")], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert p.returncode == 0, p.stderr
    assert "skipped: no Curator venv" in p.stdout
