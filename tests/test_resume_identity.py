"""A resume knows what it resumes (issue 12, item 3): items are identified by their full source
identity, never by a relative name, and a resume with other output-shaping settings refuses,
naming each difference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curastream import ImageRunConfig, VideoRunConfig, run_images, run_videos
from curastream.engine.run_settings import OutputSettingsError

CLI = [sys.executable, "-m", "curastream"]  # stream/__main__.py


def _two_days_of_videos(tmp_path: Path) -> tuple[Path, Path]:
    from curastream.samples import make_sample_videos

    pool = tmp_path / "pool"
    vids = make_sample_videos(pool)
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    day1.mkdir()
    day2.mkdir()
    # same name, different videos: what a camera's numbering does across two days
    shutil.copy(vids[0].path, day1 / "VID_0001.mp4")
    shutil.copy(vids[1].path, day2 / "VID_0001.mp4")
    return day1, day2


@pytest.mark.slow
def test_video_resume_with_a_same_named_other_video_refuses_naming_both(tmp_path):
    day1, day2 = _two_days_of_videos(tmp_path)
    out = tmp_path / "out"
    run_videos(VideoRunConfig(sources=[str(day1)], output=str(out), dry_run=True, progress=False))
    record = out / "processed_videos" / "VID_0001.mp4.json"
    before = record.read_bytes()
    with pytest.raises(OutputSettingsError) as e:
        run_videos(VideoRunConfig(sources=[str(day2)], output=str(out), dry_run=True, progress=False,
                                  on_existing="resume"))
    msg = str(e.value)
    assert str(day2 / "VID_0001.mp4") in msg and str(day1 / "VID_0001.mp4") in msg
    assert record.read_bytes() == before  # day1's record untouched
    assert json.loads(before)["video"] == str(day1 / "VID_0001.mp4")
    # from the CLI: exit 2, one line
    r = subprocess.run(CLI + ["videos", str(day2), "--output", str(out), "--dry-run", "--no-progress",
                              "--on-existing", "resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "resume refused" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_video_resume_with_the_same_inputs_skips_them(tmp_path):
    day1, _ = _two_days_of_videos(tmp_path)
    out = tmp_path / "out"
    cfg = dict(sources=[str(day1)], output=str(out), dry_run=True, progress=False)
    run_videos(VideoRunConfig(**cfg))
    first = json.loads((out / "_curastream" / "summary.json").read_text())
    stats = run_videos(VideoRunConfig(**cfg, on_existing="resume"))
    summary = json.loads((out / "_curastream" / "summary.json").read_text())
    assert summary["totals"]["videos_skipped_done"] == 1 and stats.items_in == 0
    # the summary still describes the whole output, not only what the resume did
    assert summary["videos"] == first["videos"] and summary["totals"]["videos_processed"] == 1
    assert summary["totals"]["clips"] == first["totals"]["clips"] > 0
    assert summary["this_run"]["videos_processed"] == 0


def test_resume_with_other_shaping_settings_refuses_naming_them(tmp_path):
    day1, _ = _two_days_of_videos(tmp_path)
    out = tmp_path / "out"
    cfg = dict(sources=[str(day1)], output=str(out), dry_run=True, progress=False)
    run_videos(VideoRunConfig(**cfg, clip_len=4.0))
    with pytest.raises(OutputSettingsError) as e:
        run_videos(VideoRunConfig(**cfg, clip_len=2.0, on_existing="resume"))
    assert "clip_len 4.0 -> 2.0" in str(e.value)
    # what does not shape the output may change
    run_videos(VideoRunConfig(**{**cfg, "progress": True}, clip_len=4.0, on_existing="resume", max_workers=1))
    doc = json.loads((out / "_curastream" / "run.json").read_text())
    assert doc["kind"] == "videos" and doc["settings"]["clip_len"] == 4.0 and "progress" not in doc["settings"]


def test_images_resume_as_videos_is_refused(tmp_path):
    from curastream.samples import make_sample_images

    photos = tmp_path / "photos"
    make_sample_images(photos)
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(photos)], output=str(out), progress=False))
    day1, _ = _two_days_of_videos(tmp_path)
    with pytest.raises(OutputSettingsError, match="holds a images run"):
        run_videos(VideoRunConfig(sources=[str(day1)], output=str(out), dry_run=True, progress=False,
                                  on_existing="resume"))


def test_image_resume_with_other_settings_refuses(tmp_path):
    from curastream.samples import make_sample_images

    photos = tmp_path / "photos"
    make_sample_images(photos)
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(photos)], output=str(out), progress=False, images_per_tar=3))
    with pytest.raises(OutputSettingsError, match="images_per_tar 3 -> 5"):
        run_images(ImageRunConfig(sources=[str(photos)], output=str(out), progress=False, images_per_tar=5,
                                  on_existing="resume"))


def _tar_members(out: Path) -> dict[str, bytes]:
    got = {}
    for t in sorted(out.glob("*.tar")):
        with tarfile.open(t) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".jpg"):
                    got[m.name[:-4]] = tf.extractfile(m).read()
    return got


def test_image_resume_with_new_same_named_inputs_processes_them(tmp_path):
    """day1/IMG_1.jpg then day2/IMG_1.jpg (another photo) into one output with resume: both are
    in the dataset, under distinct ids, each with its own original_path; nothing skipped."""
    from curastream.samples import make_sample_images

    pool = tmp_path / "pool"
    make_sample_images(pool)
    photos = [pool / "astronaut.jpg", pool / "coffee.jpg"]
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    day1.mkdir()
    day2.mkdir()
    shutil.copy(photos[0], day1 / "IMG_1.jpg")
    shutil.copy(photos[1], day2 / "IMG_1.jpg")
    out = tmp_path / "out"
    cfg = dict(output=str(out), progress=False, images_per_tar=4)
    run_images(ImageRunConfig(sources=[str(day1)], **cfg))
    stats = run_images(ImageRunConfig(sources=[str(day2)], **cfg, on_existing="resume"))
    assert stats.items_out == 1
    members = _tar_members(out)
    assert sorted(members.values()) == sorted([photos[0].read_bytes(), photos[1].read_bytes()])
    rows = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert sorted(r["original_path"] for r in rows) == sorted([str(day1 / "IMG_1.jpg"), str(day2 / "IMG_1.jpg")])
    assert len({r["image_id"] for r in rows}) == 2
    # and a second resume with day2 again does nothing more
    stats = run_images(ImageRunConfig(sources=[str(day2)], **cfg, on_existing="resume"))
    assert stats.items_out == 0
    assert len(_tar_members(out)) == 2


def test_foreign_shard_named_files_are_not_read_as_done_work(tmp_path):
    """A user's images-*.parquet/.tar pair dropped beside our shards is not our record: a resume
    neither skips inputs it lists nor numbers new shards after it, and keeps it untouched."""
    from curastream.samples import make_sample_images

    photos = tmp_path / "photos"
    make_sample_images(photos)
    out = tmp_path / "out"
    cfg = dict(output=str(out), progress=False, images_per_tar=100)
    run_images(ImageRunConfig(sources=[str(photos)], **cfg))
    ours = sorted(p.name for p in out.glob("images-*"))
    ref = _tar_members(out)
    (out / ours[1]).rename(tmp_path / "keep.parquet")  # our only shard's Parquet gone: redo it
    foreign_tar, foreign_pq = out / "images-0123456789ab-000007.tar", out / "images-0123456789ab-000007.parquet"
    shutil.copy(out / ours[0], foreign_tar)
    shutil.copy(tmp_path / "keep.parquet", foreign_pq)
    foreign_bytes = foreign_pq.read_bytes()
    run_images(ImageRunConfig(sources=[str(photos)], **cfg, on_existing="resume"))
    assert foreign_pq.read_bytes() == foreign_bytes and foreign_tar.exists()
    assert sorted(p.name for p in out.glob("images-*") if "0123456789ab" not in p.name) == ours
    got = {}
    for t in sorted(out.glob("images-*.tar")):
        if "0123456789ab" in t.name:
            continue
        with tarfile.open(t) as tf:
            got.update({m.name[:-4]: tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".jpg")})
    assert got == ref
