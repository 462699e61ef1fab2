"""A video cut short after its header is processed, and says so with the numbers."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from curastream import VideoRunConfig, run_videos


def _faststart_mp4(path, frames: int = 41, fps: int = 25) -> None:
    """An H.264 MP4 whose moov (with the frame count) sits before the media data."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        rng = np.random.default_rng(0)
        for k in range(frames):
            img = np.roll(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8), 4 * k, axis=1)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.parametrize("split", ["scenes", "fixed"])
def test_truncated_mp4_is_flagged_with_the_frame_counts(tmp_path, split):
    whole = tmp_path / "whole.mp4"
    _faststart_mp4(whole)
    data = whole.read_bytes()
    cut = tmp_path / "in" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with av.open(str(cut)) as c:  # an independent count: what the container declares, what decodes
        declared = c.streams.video[0].frames
        decoded = 0
        try:
            for _ in c.decode(video=0):
                decoded += 1
        except av.error.FFmpegError:
            pass
    assert declared == 41 and 0 < decoded < declared - 13, (declared, decoded)

    run_videos(VideoRunConfig(sources=[str(cut)], output=str(tmp_path / "out"), split=split, progress=False,
                              dry_run=True))
    summary = json.loads((tmp_path / "out" / "_curastream" / "summary.json").read_text())
    (entry,) = summary["videos"]
    assert entry["status"] == "ok"
    (warning,) = [w for w in entry.get("warnings", []) if w.startswith("truncated")]
    assert f"of {declared} frames the container declares" in warning
    n = int(warning.split("decoded ")[1].split(" of")[0])
    # our decoder (slice threads) may get a frame or two more out of the cut than PyAV's
    # default frame threads, which lose the frames in flight at the error
    assert decoded - 1 - (13 if split == "fixed" else 0) <= n <= decoded + 2 and n < declared


def test_a_whole_mp4_has_no_truncation_warning(tmp_path):
    whole = tmp_path / "in" / "whole.mp4"
    whole.parent.mkdir()
    _faststart_mp4(whole)
    for split in ("scenes", "fixed"):
        out = tmp_path / f"out-{split}"
        run_videos(VideoRunConfig(sources=[str(whole)], output=str(out), split=split, progress=False, dry_run=True))
        (entry,) = json.loads((out / "_curastream" / "summary.json").read_text())["videos"]
        assert not [w for w in entry.get("warnings", []) if w.startswith("truncated")], entry
