"""motion_source="reencode": clips scored, as Curator scores them, from the vectors of a libx264
re-encode of each clip (x264 codes still areas as skip blocks: no vector, patch minimum 0), with
the reference made here independently: a PyAV encode of the span, its vectors exported by FFmpeg,
Curator's formula written out (per-pixel painted field, cv2.resize(fx=1/256) patch minimum)."""

from __future__ import annotations

import io
import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import media_path
from curastream import VideoRunConfig, run_videos
from curastream.videos import motion_reencode

# iPhone clip, 568x320 at 30 fps, one 241-frame clip at --clip-len 10: its camera encoder gives
# the still background small non-zero vectors (source patch minimum ~0.0017, clip passes), x264
# codes it as skip blocks (patch minimum 0: Curator's parity driver drops it).
VIDEO = "nodeopencv_motion.mov"
SPAN_FRAMES = 241


def _run(tmp_path: Path, name: str, **kw) -> list[dict]:
    src = tmp_path / "in"
    if not src.exists():
        src.mkdir()
        shutil.copyfile(media_path("videos", VIDEO), src / VIDEO)
    out = tmp_path / name
    run_videos(VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", min_clip_len=2.0, progress=False,
                              **kw))
    return sorted((json.loads(p.read_text()) for p in (out / "metas" / "v0").glob("*.json")),
                  key=lambda m: m["duration_span"][0])


def _x264_params() -> dict[str, str]:
    # The package pins x264 to AVX2 on AVX-512 machines (one AVX-512 routine reads uninitialised
    # memory); the same SIMD level is needed for the same bitstream.
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return {}
    return {"x264-params": "asm=AVX2"} if "avx512f" in flags.split() else {}


def _encode_span(path: Path, frames: int, preset: str = "veryfast", crf: int = 23) -> bytes:
    """The first ``frames`` frames of ``path`` encoded with libx264 at source timing, one thread."""
    import av

    buf = io.BytesIO()
    with av.open(str(path)) as src, av.open(buf, "w", format="mp4") as dst:
        vs = src.streams.video[0]
        out = dst.add_stream("libx264", rate=Fraction(vs.average_rate))
        out.width, out.height, out.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
        out.time_base = out.codec_context.time_base = Fraction(1, 90000)
        out.codec_context.thread_type, out.codec_context.thread_count = "FRAME", 1
        out.codec_context.options = {"preset": preset, "crf": str(crf), **_x264_params()}
        for k, f in enumerate(src.decode(vs)):
            if k == frames:
                break
            f.pts, f.time_base = round(f.time * 90000), Fraction(1, 90000)
            f.pict_type = av.video.frame.PictureType.NONE  # the encoder chooses, as ffmpeg's CLI lets it
            for p in out.encode(f):
                p.duration = p.duration or 3000
                dst.mux(p)
        for p in out.encode(None):
            p.duration = p.duration or 3000
            dst.mux(p)
    return buf.getvalue()


def _painted(mvs, w: int, h: int) -> np.ndarray:
    """Per-pixel |flow| / (W + H), each block's -motion/scale over its rectangle (future-reference
    vectors last: they win where a bi-predicted block has two, as Curator's scatter)."""
    flow = np.zeros((h, w, 2), np.float64)
    for k in np.argsort(np.asarray(mvs["source"]), kind="stable"):
        m = mvs[k]
        x0, y0 = int(m["dst_x"]) - int(m["w"]) // 2, int(m["dst_y"]) - int(m["h"]) // 2
        flow[max(0, y0):max(0, y0 + int(m["h"])), max(0, x0):max(0, x0 + int(m["w"]))] = (
            -m["motion_x"] / m["motion_scale"], -m["motion_y"] / m["motion_scale"])
    return np.hypot(flow[..., 0], flow[..., 1]) / (w + h)


def _curator_score(data: bytes, first: int = 0, stop: int | None = None, limit: int | None = None):
    """Curator's decode_for_motion + check_if_small_motion over frames [first, stop) of a file:
    every round(fps/2)-th frame from ``first``, frames without vectors skipped, the first
    max(10, whole seconds of the file) of them; (global_mean, per_patch_min_256)."""
    import av

    cv2 = pytest.importorskip("cv2")
    fields = []
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"flags2": "+export_mvs"}
        step = max(1, round(float(s.average_rate) / 2))
        limit = limit or max(10, round(2 * int(c.duration / 1_000_000) * 0.5))
        for i, f in enumerate(c.decode(s)):
            if stop is not None and i >= stop:
                break
            sd = f.side_data.get("MOTION_VECTORS")
            if i < first or (i - first) % step or sd is None:
                continue
            fields.append(_painted(sd.to_ndarray(), f.width, f.height))
            if len(fields) == limit:
                break
    field = np.mean(fields, axis=0)
    return float(field.mean()), float(cv2.resize(field.astype(np.float32), None, fx=1 / 256, fy=1 / 256).min())


def test_reencode_score_is_curators_formula_on_an_independent_x264_encode(tmp_path):
    [m] = _run(tmp_path, "re", motion_source="reencode")
    assert m["num_frames"] == SPAN_FRAMES
    want_mean, want_patch = _curator_score(_encode_span(media_path("videos", VIDEO), SPAN_FRAMES))
    assert m["motion_score"]["global_mean"] == pytest.approx(want_mean, rel=1e-6)
    assert m["motion_score"]["per_patch_min_256"] == pytest.approx(want_patch, rel=1e-5, abs=1e-12)
    # The still background is skip blocks in x264's encode: Curator's filter drops the clip.
    assert want_patch == 0.0
    assert m["filtered_by"] == ["motion"]
    assert Path(m["clip_location"]).parent.name == "filtered_clips"


def test_default_scores_the_source_and_the_setting_changes_the_decision(tmp_path):
    assert VideoRunConfig(sources=[]).motion_source == "source"
    [default] = _run(tmp_path, "default")
    [re] = _run(tmp_path, "re", motion_source="reencode")
    # Default: the source's own vectors, sampled as Curator samples its clip (from frame 15).
    source = media_path("videos", VIDEO).read_bytes()
    want_mean, _ = _curator_score(source, first=0, stop=SPAN_FRAMES, limit=10)
    assert default["motion_score"]["global_mean"] == pytest.approx(want_mean, rel=1e-6)
    assert default["motion_score"]["per_patch_min_256"] > 1e-4  # noise vectors on the still background
    assert "filtered_by" not in default or not default["filtered_by"]
    assert Path(default["clip_location"]).parent.name == "clips"
    assert re["span_uuid"] == default["span_uuid"]
    assert re["motion_score"]["global_mean"] < default["motion_score"]["global_mean"]


@pytest.mark.slow
def test_a_reencoded_clip_is_scored_from_its_own_bytes(tmp_path, monkeypatch):
    # --reencode --encoder libx264 at the run's preset: the clip file is the encode motion needs.
    import av

    def no_second_encode(*a, **kw):
        raise AssertionError("the clip's own re-encode should have been scored")

    monkeypatch.setattr(motion_reencode, "cut_reencode", no_second_encode)
    [m] = _run(tmp_path, "re", motion_source="reencode", clip_mode="reencode", preset="veryfast")
    assert not m.get("errors")
    data = Path(m["clip_location"]).read_bytes()
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    want_mean, want_patch = _curator_score(data)
    assert m["motion_score"]["global_mean"] == pytest.approx(want_mean, rel=1e-6)
    assert m["motion_score"]["per_patch_min_256"] == pytest.approx(want_patch, rel=1e-5, abs=1e-12)


@pytest.mark.slow
def test_reencode_scores_are_the_same_run_to_run(tmp_path):
    a = motion_reencode.reencoded_motion(str(media_path("videos", VIDEO)), [(0.0, 4.0), (4.0, 8.0)], [None, None],
                                         stream_index=0, clip_mode="exact", encoder="libx264", preset="veryfast",
                                         crf=23)
    b = motion_reencode.reencoded_motion(str(media_path("videos", VIDEO)), [(0.0, 4.0), (4.0, 8.0)], [None, None],
                                         stream_index=0, clip_mode="exact", encoder="libx264", preset="veryfast",
                                         crf=23)
    assert [(s.global_mean, s.per_patch_min_256) for s in a] == [(s.global_mean, s.per_patch_min_256) for s in b]
    assert all(s.num_samples > 0 for s in a)


@pytest.mark.slow
def test_a_failed_reencode_is_that_clips_error(tmp_path, monkeypatch):
    real = motion_reencode.cut_reencode

    def first_fails(path, spans, **kw):
        done = real(path, spans, **kw)
        return [RuntimeError("encoder gave up") if s == 0.0 else m for (s, _), m in zip(spans, done)]

    monkeypatch.setattr(motion_reencode, "cut_reencode", first_fails)
    first, second = _run(tmp_path, "re", motion_source="reencode", clip_len=4.0)
    assert first["duration_span"][0] == 0.0 and second["duration_span"][0] == 4.0
    assert "motion_decode" in first["errors"]
    assert first["filtered_by"] == ["motion"]
    assert first["motion_score"] == {"global_mean": -1.0, "per_patch_min_256": -1.0}  # Curator's -1
    assert first["valid"] is False
    assert not second.get("errors")
    assert second["motion_score"]["global_mean"] > 0


def test_unreadable_bytes_raise_the_modules_error():
    with pytest.raises(motion_reencode.MotionReencodeError):
        motion_reencode.score_clip_bytes(b"not an mp4 at all")


def test_reencode_mode_spends_nothing_on_the_sources_motion(tmp_path, monkeypatch):
    # Every clip is scored from its re-encode, so the analysis decode exports no vectors (which
    # would also hold the decoder to slice threads) and no motion is accumulated from frames.
    from curastream.kernels.motion_accumulator import MotionAccumulator
    from curastream.videos import analyze

    asked, added = [], []
    real = analyze.iter_analysis_frames

    def spy(*a, **kw):
        asked.append((kw["motion_vectors"], kw["motion_pairs"]))
        return real(*a, **kw)

    monkeypatch.setattr(analyze, "iter_analysis_frames", spy)
    monkeypatch.setattr(MotionAccumulator, "add", lambda self, *a, **kw: added.append(1))
    [m] = _run(tmp_path, "re", motion_source="reencode", clip_mode="reencode", preset="veryfast")
    assert asked == [(False, False)] and not added
    assert m["motion_score"]["global_mean"] > 0  # scored, from the clip's own vectors
    summary = json.loads((tmp_path / "re" / "_curastream" / "summary.json").read_text())
    assert summary["videos"][0]["motion_method"] == "motion_vectors"
