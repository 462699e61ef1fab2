"""Clip spans and span_uuids are NeMo Curator's, on real media of several codecs, in dry runs,
real runs and resumes alike. Expected values come from tests/curator_rule.py (Curator's rule over
PyAV's stream facts), never from curastream."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import av
import pytest
from conftest import media_path
from curastream import VideoRunConfig, run_videos
from curastream.kernels.shots import fixed_stride_spans, span_from_frames
from curastream.videos.probe import probe
from curastream.writers.clip_model import ClipRecord
from curator_rule import curator_chunks, curator_meta, curator_spans

# Chosen for their codecs and for timings where float truncation bites:
# 2.2016666 s printed as 2.201667, 10.2 s x 25 = 254.99999, 24.023333 s x 29.97 = 719.9999.
VIDEOS = [
    "derived_cityCC0_hevc.mp4",  # HEVC, MP4
    "derived_cityCC0_vp9.webm",  # VP9, WebM: no stream duration, the container's is used
    "derived_nasa_13013_av1.mp4",  # AV1, 30000/1001 fps
    "imageio_cockatoo.mp4",  # H.264 4:4:4
    "imageio_realshort.mp4",  # 45000/1499 fps, 1.2 s: one short span
    "jsonize_iphone_rotated.mov",  # 39600/1321 fps, rotated
    "mecavideo_balle-jbart.mp4",  # int(10.2 * 25) = 254
    "mecavideo_balle1-vp9.avi",  # VP9 in AVI, 78125/417 fps
    "moviepy_fire2.mp4",  # 750000/71393 fps
    "pyscenedetect_testvideo.mp4",  # int(24.023333 * 29.97) = 719
    "torchcodec_nasa_13013.mp4",  # two video streams: ids from the last (Curator's), 30000/1001 fps
]
# (clip_len, stride, minimum): the tutorial's defaults, short back-to-back clips, overlapping
# clips with a float stride whose running sum drifts.
SETTINGS = [(10.0, None, 2.0), (1.0, None, 0.5), (2.0, 0.7, 0.3)]


def _ids_from_chunks(out: Path) -> list[str]:
    ids = []
    for p in sorted((out / "processed_clip_chunks").rglob("*.json"),
                    key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        d = json.loads(p.read_text())
        ids += d["clips"] + d["filtered_clips"]
    return ids


@pytest.mark.parametrize("name", VIDEOS)
def test_probe_reports_curators_metadata(name):
    path = str(media_path("videos", name))
    want = curator_meta(path)
    info = probe(path)
    assert (info.meta_fps, info.meta_duration, info.meta_num_frames) == (want.fps, want.duration, want.num_frames)


@pytest.mark.parametrize("name", VIDEOS)
@pytest.mark.parametrize("clip_len,stride,minimum", SETTINGS)
def test_fixed_stride_spans_and_ids_are_curators(name, clip_len, stride, minimum):
    path = str(media_path("videos", name))
    want = curator_spans(path, curator_meta(path), clip_len, stride or clip_len, minimum)
    info = probe(path)
    got = []
    for sp in fixed_stride_spans(info.meta_num_frames, info.meta_fps, clip_len, minimum, stride):
        rec = ClipRecord.for_span(path, sp.start_s, sp.end_s, info.meta_fps, frames=(sp.start_frame, sp.end_frame))
        got.append((rec.span[0], rec.span[1], rec.uuid))
    assert got == want  # exact floats: duration_span is Curator's to the bit


def test_defaults_are_the_tutorials():
    cfg = VideoRunConfig(sources=["-"])
    # tutorials/video/getting-started/video_split_clip_example.py: --fixed-stride-split-duration
    # 10, --fixed-stride-min-clip-length-s 2, clip_stride_s = the split duration; 32 clips a chunk
    assert (cfg.clip_len, cfg.stride, cfg.min_clip_len, cfg.clips_per_chunk) == (10.0, None, 2.0, 32)


def test_scene_span_ids_use_the_frames_themselves():
    # Curator's shot splitter names a clip by its frame numbers; int(29 / 25 * 25) would be 28.
    sp = span_from_frames(29, 113, 25.0)
    assert (sp.start_frame, sp.end_frame) == (29, 113) and sp.start_s == 29 / 25 and sp.end_s == 113 / 25
    rec = ClipRecord.for_span("/v.mp4", sp.start_s, sp.end_s, 25.0, frames=(sp.start_frame, sp.end_frame))
    assert rec.uuid == str(uuid.uuid5(uuid.NAMESPACE_URL, "/v.mp4_29_113"))


@pytest.mark.slow
def test_dry_run_real_run_and_resume_give_curators_ids(tmp_path):
    names = ["pyscenedetect_testvideo.mp4", "jsonize_iphone_rotated.mov", "mecavideo_balle-jbart.mp4"]
    srcs = [str(media_path("videos", n)) for n in names]
    root = str(Path(srcs[0]).parent)
    want = {s: [u for _, _, u in curator_spans(s, curator_meta(s))] for s in srcs}
    base = dict(sources=srcs, input_path=root, split="fixed", motion_filter=False, progress=False)

    def ids(out: Path) -> dict[str, list[str]]:
        got = {}
        for s in srcs:
            rel = Path(s).name
            chunk_dir = out / "processed_clip_chunks"
            got[s] = []
            for p in sorted(chunk_dir.glob(f"{rel}_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
                d = json.loads(p.read_text())
                got[s] += d["clips"] + d["filtered_clips"]
        return got

    dry, real = tmp_path / "dry", tmp_path / "real"
    run_videos(VideoRunConfig(**base, output=str(dry), dry_run=True))
    run_videos(VideoRunConfig(**base, output=str(real), clip_mode="reencode"))
    assert ids(dry) == want
    assert ids(real) == want
    # the metas of the real run carry the same ids and Curator's spans, and name their files
    spans = {u: (a, b) for s in srcs for a, b, u in curator_spans(s, curator_meta(s))}
    for p in (real / "metas" / "v0").glob("*.json"):
        m = json.loads(p.read_text())
        assert tuple(m["duration_span"]) == spans[m["span_uuid"]]
        assert p.stem == m["span_uuid"] and Path(m["clip_location"]).stem == m["span_uuid"]
        with av.open(m["clip_location"]) as c:
            assert c.streams.video[0].frames or sum(1 for _ in c.demux(c.streams.video[0])) > 0
    assert sorted(p.stem for p in (real / "metas" / "v0").glob("*.json")) == sorted(spans)
    # resume: one video's completion marker gone; it is done again, under the same ids
    victim = real / "processed_videos" / f"{Path(srcs[0]).name}.json"
    victim.unlink()
    (real / "index.json").unlink()
    run_videos(VideoRunConfig(**base, output=str(real), clip_mode="reencode", on_existing="resume"))
    assert victim.exists() and ids(real) == want


@pytest.mark.slow
def test_processed_json_follows_curators_metadata_and_chunking(tmp_path):
    src = str(media_path("videos", "pyscenedetect_testvideo.mp4"))
    meta = curator_meta(src)
    out = tmp_path / "o"
    # clips_per_chunk=1: a chunk closes at 8 s of int() clip seconds, as Curator's re-chunking does
    run_videos(VideoRunConfig(sources=[src], output=str(out), split="fixed", clip_len=4.0, clips_per_chunk=1,
                              motion_filter=False, dry_run=True, progress=False))
    v = json.loads((out / "processed_videos" / "pyscenedetect_testvideo.mp4.json").read_text())
    assert (v["framerate"], v["duration"], v["num_frames"]) == (meta.fps, meta.duration, meta.num_frames)
    spans = curator_spans(src, meta, 4.0, 4.0, 2.0)
    groups = curator_chunks([b - a for a, b, _ in spans], 1)
    assert v["num_total_clips"] == len(spans) and v["num_clip_chunks"] == len(groups) > 1
    for k, g in enumerate(groups):
        d = json.loads((out / "processed_clip_chunks" / f"pyscenedetect_testvideo.mp4_{k}.json").read_text())
        assert d["clip_chunk_index"] == k
        assert d["clips"] + d["filtered_clips"] == [spans[i][2] for i in g]
        assert d["total_clip_duration"] == pytest.approx(sum(spans[i][1] - spans[i][0] for i in g))
    assert _ids_from_chunks(out) == [u for _, _, u in spans]
