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
from curastream.kernels.motion_score import aggregate_motion, passes_motion_filter
from curastream.kernels.motion_vectors import motion_sample_from_mvs
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
    at a time (past-reference vectors last, so they win where a block has two)."""
    flow = np.zeros((h, w, 2), np.float64)
    order = np.argsort(-np.asarray(mvs["source"]), kind="stable")  # future (+1) first, past (-1) last
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
    for name in ("imageio_realshort.mp4", "mecavideo_balle1-vp9.avi"):
        shutil.copyfile(media_path("videos", name), src / name)
    out = tmp_path / "out"
    cfg = VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", dry_run=True, progress=False)
    assert cfg.motion_method == "auto"
    run_videos(cfg)
    summary = json.loads((out / "_curastream" / "summary.json").read_text())
    methods = {Path(v["video"]).name: v["motion_method"] for v in summary["videos"]}
    assert methods == {"imageio_realshort.mp4": "motion_vectors", "mecavideo_balle1-vp9.avi": "frames"}


# ---------------------------------------------------------------- calibration on real media

MV_VIDEOS = ["imageio_cockatoo.mp4", "imageio_realshort.mp4", "jsonize_iphone_rotated.mov",
             "mecavideo_balle-jbart.mp4", "moviepy_chaplin.mp4", "moviepy_fire2.mp4", "nodeopencv_motion.mov",
             "pyscenedetect_testvideo.mp4", "torchcodec_nasa_13013.mp4", "opencv_vtest.avi"]


def _both_methods(name: str, clip_len: float = 3.0):
    """(codec, vector score, frame score) per fixed span, from one decode."""
    path = media_path("videos", name)
    info = probe(path)
    acc = MotionAccumulator(info.fps, mv_size=(info.width, info.height),
                            source_size=(info.display_width, info.display_height))
    settings = AnalysisSettings(sample_fps=2.0, motion_pairs=True, motion_vectors=True, mv_sample_fps=2.0)
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
    assert sum(h264) / len(h264) >= 0.85, (sum(h264), len(h264))
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
