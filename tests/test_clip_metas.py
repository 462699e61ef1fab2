"""Per-clip metas, previews and chunk records in Curator's shapes: ``errors`` a list, one WebP
per caption window named by the window's clip-relative frames, chunks grouped by duration.
Read back with json, PyAV and PIL; expected values from tests/curator_rule.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import pytest
from conftest import media_path
from curastream import VideoRunConfig, run_videos
from curastream.writers.clip_model import (
    ClipChunk,
    ClipRecord,
    VideoRecord,
    chunk_by_duration,
)
from curastream.writers.clip_writer import ClipWriter
from curator_rule import curator_chunks, curator_windows
from PIL import Image


def _metas(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "metas" / "v0").glob("*.json"))]


def test_errors_are_a_list_of_stages_with_messages_beside(tmp_path):
    root = Path(os.path.realpath(tmp_path))
    video = VideoRecord(path=str(root / "in" / "v.mp4"), height=48, width=64, framerate=10.0, num_frames=20,
                        duration=2.0, video_codec="h264")
    clip = ClipRecord.for_span(video.path, 0.0, 1.0, 10.0,
                               errors={"transcode": "ValueError: no frame", "preview": "OSError: disk"})
    with ClipWriter(str(root / "out"), str(root / "in")) as w:
        w.write_chunk(ClipChunk(video.path, 0, [clip], 1), video)
    meta = json.loads((root / "out" / "metas" / "v0" / f"{clip.uuid}.json").read_text())
    # Curator writes list(clip.errors): the names of what failed, in the order they failed
    assert meta["errors"] == ["transcode", "preview"]
    assert meta["error_messages"] == {"transcode": "ValueError: no frame", "preview": "OSError: disk"}
    assert meta["valid"] is False and list(meta)[-2:] == ["windows", "valid"]


@pytest.mark.parametrize("durations", [[10.0] * 30, [255.9, 0.5, 1.0, 300.0, 3.0], [1.9] * 300, [], [400.0]])
def test_chunks_group_by_duration_as_curator(durations):
    clips, t = [], 0.0
    for d in durations:
        clips.append(ClipRecord.for_span("/v.mp4", t, t + d, 25.0))
        t += d
    got = [[clips.index(c) for c in g] for g in chunk_by_duration(clips)]
    want = curator_chunks(durations) or [[]]  # no clips: still one (empty) chunk record
    assert got == want


def test_windows_previews_and_captions(tmp_path):
    src = str(media_path("videos", "derived_nasa_13013_av1.mp4"))
    out = tmp_path / "o"

    def caption(frames):
        return f"{frames.shape[0]} frames"

    run_videos(VideoRunConfig(sources=[src], output=str(out), split="fixed", clip_len=20.0, clip_mode="reencode",
                              previews=True, captioner=caption, caption_models=["demo"], motion_filter=False,
                              progress=False))
    metas = _metas(out)
    assert len(metas) == 1
    m = metas[0]
    with av.open(m["clip_location"]) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate)
        total = s.frames or sum(1 for _ in c.decode(s))
    want = curator_windows(total)
    assert len(want) == 2  # 390 frames: 256 + a remainder of 134 (>= 128) in its own window
    assert [(w["start_frame"], w["end_frame"]) for w in m["windows"]] == want
    chunk = json.loads((out / "processed_clip_chunks" / "derived_nasa_13013_av1.mp4_0.json").read_text())
    assert chunk["num_clips_with_webp"] == 1 and chunk["num_clips_with_caption"] == 1
    names = sorted(p.name for p in (out / "previews" / m["span_uuid"]).iterdir())
    assert names == sorted(f"{a}_{b}.webp" for a, b in want)
    for (a, b), w in zip(want, m["windows"]):
        seconds = (b - a + 1) / fps
        # the captioner saw the window's frames (one a second), not the whole clip's
        assert abs(int(w["demo_caption"].split()[0]) - seconds) <= 1
        assert chunk["all_windows"][m["span_uuid"]][f"{a}_{b}"] == w["demo_caption"]
        with Image.open(out / "previews" / m["span_uuid"] / f"{a}_{b}.webp") as im:
            assert im.format == "WEBP" and im.size[1] == 240 and im.is_animated
            assert abs(im.n_frames - seconds) <= 1  # 1 frame a second of the window
            assert im.info["loop"] == 0


def test_upload_clips_false_still_encodes_and_records_the_location(tmp_path):
    src = str(media_path("videos", "jsonize_iphone_rotated.mov"))
    out = tmp_path / "o"
    run_videos(VideoRunConfig(sources=[src], output=str(out), split="fixed", clip_len=1.0, upload_clips=False,
                              motion_filter=False, progress=False))
    metas = _metas(out)
    assert len(metas) == 2  # 0-1 s and 1-2 s; the 0.2 s tail is under the minimum
    for m in metas:
        # Curator's upload_clips=False: the clip is encoded (its facts are in the metas), only
        # the MP4 is not written; clip_location says where it would be.
        assert m["num_frames"] > 0 and m["width"] == 320 and m["height"] == 568
        assert m["clip_location"] == str(out / "clips" / f"{m['span_uuid']}.mp4")
        assert not Path(m["clip_location"]).exists()
    assert not (out / "clips").exists()
    chunk = json.loads((out / "processed_clip_chunks" / "jsonize_iphone_rotated.mov_0.json").read_text())
    assert chunk["num_clips_transcoded"] == 2
