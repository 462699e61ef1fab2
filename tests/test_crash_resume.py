"""Crash and resume (issue 6): SIGKILL the CLI at random moments, resume, compare with a clean run.

Each trial starts the real ``curastream`` command in a subprocess, kills it with SIGKILL at a
seeded random moment (most of them after the first output file appears, so the kill lands while
shards / clips are being committed), sometimes kills the first ``--on-existing resume`` too, and
then resumes to the end. The finished output must equal an uninterrupted run into the same path:

- images: the same files, byte for byte (tars, Parquet, _curastream/rejects.parquet); every input
  either in exactly one shard or in the rejects; nothing lost, nothing twice;
- videos: the same clip files, metas, processed_* JSON and _curastream/rejects.parquet, byte for byte (the
  runs write into the same path, so even ``clip_location`` is equal);
- no ``*.tmp-*`` file anywhere; ``index.json`` lists every file on disk but itself, each with the
  bytes and sha256 it really has, and the same file list as the clean run.

Figures (trials, kills, where the kills landed, items lost) are printed at the end of the module
and kept in ``SUMMARY``. Seed: ``CURASTREAM_CRASH_SEED`` (default 6).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import MEDIA, report

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CURASTREAM_CRASH_SEED", "6"))
IMAGE_TRIALS = int(os.environ.get("CURASTREAM_CRASH_IMAGE_TRIALS", "12"))
VIDEO_TRIALS = int(os.environ.get("CURASTREAM_CRASH_VIDEO_TRIALS", "8"))

SUMMARY: dict[str, dict[str, int]] = {
    k: {"trials": 0, "kills": 0, "kills_mid_run": 0, "kills_before_output": 0, "kills_after_finish": 0,
        "resumes": 0, "items": 0, "items_lost": 0, "items_duplicated": 0}
    for k in ("images", "videos")
}


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request):
    yield
    tot = {k: sum(SUMMARY[p][k] for p in SUMMARY) for k in SUMMARY["images"]}
    lines = ["", f"crash-resume summary (seed {SEED}):"]
    for name, d in list(SUMMARY.items()) + [("total", tot)]:
        lines.append(f"  {name:7s} " + ", ".join(f"{k}={v}" for k, v in d.items()))
    report(request.config, *lines)


# -- the CLI in a subprocess ----------------------------------------------------------------------
def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "curastream.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run_ok(cmd: list[str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return time.monotonic() - t0


def _has_output(out: Path) -> bool:
    return out.is_dir() and any(p.is_file() for p in out.rglob("*"))


def _read(f) -> str:
    f.seek(0)
    text = f.read().decode(errors="replace")
    f.close()
    return text


def _run_and_kill(cmd: list[str], out: Path, delay: float, after_files: int = 0) -> str:
    """Start ``cmd``; SIGKILL it ``delay`` s after start, or after its ``after_files``-th new
    output file (temporaries count: they are files being written).

    Returns where the kill landed: ``before_output``, ``mid_run`` or ``after_finish``.
    """
    errf = tempfile.TemporaryFile()  # not a pipe: a chatty run must never block on a full one
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=_env(), start_new_session=True)
    t0 = time.monotonic()
    if after_files:
        had = {q for q in out.rglob("*") if q.is_file()} if out.is_dir() else set()
        seen: set[Path] = set()  # kept across looks: a temporary renamed away still counted
        while p.poll() is None and time.monotonic() - t0 < 120:
            if out.is_dir():
                seen |= {q for q in out.rglob("*") if q.is_file() and q not in had}
                if len(seen) >= after_files:
                    break
            time.sleep(0.005)
        t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < delay:
        time.sleep(0.005)
    if p.poll() is not None:
        err = _read(errf)
        assert p.returncode == 0, f"run failed before it was killed ({p.returncode}):\n{err[-3000:]}"
        return "after_finish"
    landed = "mid_run" if _has_output(out) and not (out / "index.json").exists() else "before_output"
    if (out / "index.json").exists():
        landed = "after_finish"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    err = _read(errf)
    if p.returncode == 0:  # it finished between the last look and the signal
        return "after_finish"
    assert p.returncode == -signal.SIGKILL, f"run failed before it was killed ({p.returncode}):\n{err[-3000:]}"
    return landed


def _crash_trial(kind: str, cmd: list[str], out: Path, rng: random.Random, t_total: float,
                 t_active: float) -> None:
    """Kill a fresh run, maybe kill a resume too, then resume to the end."""
    if out.exists():
        shutil.rmtree(out)
    s = SUMMARY[kind]
    s["trials"] += 1
    if rng.random() < 0.8:
        # Placed by the run's own progress (its k-th new file), not by the reference run's
        # clock: that run is timed cold and at another load, and delays taken from it landed
        # after the end of faster runs, so too few kills hit a run in progress.
        after_files, delay = rng.randint(1, 8), rng.uniform(0.0, min(t_active, 0.1))
    else:
        after_files, delay = 0, rng.uniform(0.0, t_total)
    s[f"kills_{_run_and_kill(cmd, out, delay, after_files)}"] += 1
    s["kills"] += 1
    resume = cmd + ["--on-existing", "resume"]
    if rng.random() < 0.5:  # kill the resume as well, somewhere in its run
        landed = _run_and_kill(resume, out, rng.uniform(0.0, t_total))
        s[f"kills_{landed}"] += 1
        s["kills"] += 1
        s["resumes"] += 1
    if not out.exists():  # killed before anything was written: a resume of nothing is a fresh run
        out.mkdir(parents=True)
    _run_ok(resume)
    s["resumes"] += 1


# -- checks shared by both pipelines ----------------------------------------------------------------
def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_index(out: Path, ref_index: dict | None = None, skip: frozenset[str] = frozenset()) -> dict:
    files = _files(out)
    temps = [f for f in files if ".tmp-" in f]
    assert not temps, f"temporary files left: {temps}"
    index = json.loads(files["index.json"])
    listed = {f["path"]: f for f in index["files"]}
    assert len(listed) == len(index["files"]), "index.json lists a file twice"
    on_disk = set(files) - {"index.json"}
    assert set(listed) == on_disk, (f"index.json vs disk: missing {sorted(on_disk - set(listed))[:5]}, "
                                    f"listed but absent {sorted(set(listed) - on_disk)[:5]}")
    for path, f in listed.items():
        data = files[path]
        assert f["bytes"] == len(data), path
        assert f["sha256"] == hashlib.sha256(data).hexdigest(), path
    if ref_index is not None:
        strip = lambda fs: sorted((f["path"], f["bytes"], f["sha256"], f["rows"]) for f in fs  # noqa: E731
                                  if f["path"] not in skip)
        assert strip(index["files"]) == strip(ref_index["files"])
    return index


def _compare_files(out: Path, ref: Path, skip: set[str]) -> None:
    got, want = _files(out), _files(ref)
    assert sorted(set(got) - skip) == sorted(set(want) - skip), (
        f"files differ: extra {sorted(set(got) - set(want))[:5]}, missing {sorted(set(want) - set(got))[:5]}")
    for name in sorted(set(want) - skip):
        assert got[name] == want[name], f"{name} differs from the uninterrupted run"


# -- images --------------------------------------------------------------------------------------
def _make_images(d: Path, n: int = 60) -> list[str]:
    from PIL import Image

    d.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    keys = []
    for i in range(n):
        h, w = 200 + 8 * (i % 5), 280 + 8 * (i % 7)
        low = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC)).astype(np.int16)
        img = np.clip(img + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
        ext = "png" if i % 4 == 3 else "jpg"
        Image.fromarray(img).save(d / f"img{i:03d}.{ext}", quality=90)
        keys.append(f"img{i:03d}")
        if i % 20 == 5:  # a near-duplicate: the dedup state must survive a resume
            Image.fromarray(img).resize((w // 2, h // 2)).save(d / f"img{i:03d}_dup.jpg", quality=80)
            keys.append(f"img{i:03d}_dup")
    (d / "broken.jpg").write_bytes((d / "img000.jpg").read_bytes()[:1500])
    (d / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return keys + ["broken", "junk"]


def _reference_run(cmd: list[str], out: Path, ref: Path) -> dict:
    """Run ``cmd`` uninterrupted, move its output to ``ref``, and time it: ``t_total`` from start,
    ``t_active`` from its first output file (the window in which kills land mid-run)."""
    errf = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=_env())
    t0 = time.monotonic()
    t_first = None
    while p.poll() is None:
        if t_first is None and _has_output(out):
            t_first = time.monotonic()
        time.sleep(0.005)
    t_total = time.monotonic() - t0
    err = _read(errf)
    assert p.returncode == 0, err
    out.rename(ref)
    t_active = t_total - ((t_first or t0 + t_total) - t0)
    return {"ref": ref, "t_total": t_total, "t_active": max(t_active, 0.3)}


@pytest.fixture(scope="module")
def image_case(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash_images")
    keys = _make_images(base / "src")
    out = base / "out"
    cmd = _cmd("images", str(base / "src"), "--output", str(out), "--images-per-tar", "7", "--batch-size", "4",
               "--no-progress")
    # an uninterrupted run into the same path (tar_file holds that path), timed for the kill moments
    return {"keys": keys, "cmd": cmd, "out": out, **_reference_run(cmd, out, base / "ref")}


def _image_keys(out: Path) -> tuple[list[str], list[str]]:
    kept = []
    for p in sorted(out.glob("images-*.parquet")):
        kept += pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()
    rejected = pq.read_table(out / "_curastream" / "rejects.parquet").column("image_id").to_pylist()
    return kept, rejected


def test_image_reference_run_is_complete(image_case):
    ref = image_case["ref"]
    kept, rejected = _image_keys(ref)
    assert len(kept) == len(set(kept)) and not set(kept) & set(rejected)
    assert sorted(kept + rejected) == sorted(image_case["keys"])
    assert len(list(ref.glob("images-*.tar"))) >= 8, "the run must be long enough for kills to land mid-run"
    assert {"broken", "junk"} <= set(rejected) and any(k.endswith("_dup") for k in rejected)
    _check_index(ref)


def test_images_sigkill_then_resume_equals_uninterrupted_run(image_case):
    rng = random.Random(SEED * 1000 + 1)
    out, ref = image_case["out"], image_case["ref"]
    ref_index = json.loads((ref / "index.json").read_bytes())
    ref_kept, ref_rej = _image_keys(ref)
    for trial in range(IMAGE_TRIALS):
        _crash_trial("images", image_case["cmd"], out, rng, image_case["t_total"], image_case["t_active"])
        kept, rejected = _image_keys(out)
        s = SUMMARY["images"]
        s["items"] += len(image_case["keys"])
        s["items_duplicated"] += len(kept) - len(set(kept)) + len(rejected) - len(set(rejected))
        s["items_lost"] += len(set(image_case["keys"]) - set(kept) - set(rejected))
        assert sorted(kept) == sorted(ref_kept) and sorted(rejected) == sorted(ref_rej), f"trial {trial}"
        _compare_files(out, ref, skip={"index.json"})
        _check_index(out, ref_index)
    assert SUMMARY["images"]["items_lost"] == 0 and SUMMARY["images"]["items_duplicated"] == 0
    # the harness is only worth something if most kills hit a run in progress
    assert SUMMARY["images"]["kills_mid_run"] >= IMAGE_TRIALS // 2, SUMMARY["images"]


# -- videos --------------------------------------------------------------------------------------
REAL_VIDEOS = ("imageio_realshort.mp4", "libvpl_cars_320x240.h264", "mecavideo_g1.avi")
BAD_VIDEOS = ("derived_nasa_13013_no_moov.mp4",)


@pytest.fixture(scope="module")
def video_case(tmp_path_factory):
    from curastream.samples import make_sample_videos

    base = tmp_path_factory.mktemp("crash_videos")
    src = base / "src"
    make_sample_videos(src)
    names = sorted(p.name for p in src.iterdir())
    for sub, group in (("videos", REAL_VIDEOS), ("bad", BAD_VIDEOS)):
        for name in group:
            if (MEDIA / sub / name).exists():  # copies, not links: input paths are resolved
                shutil.copyfile(MEDIA / sub / name, src / name)
                names.append(name)
    out = base / "out"
    cmd = _cmd("videos", str(src), "--output", str(out), "--split", "fixed", "--clip-len", "1", "--no-progress")
    return {"names": sorted(names), "src": src, "cmd": cmd, "out": out, **_reference_run(cmd, out, base / "ref")}


def _video_state(out: Path, src: Path) -> tuple[set[str], set[str], list[str]]:
    done = {p.name[: -len(".json")] for p in (out / "processed_videos").rglob("*.json")}
    rejected = {Path(s).name for s in pq.read_table(out / "_curastream" / "rejects.parquet").column("source").to_pylist()}
    clips = sorted(p.name for d in ("clips", "filtered_clips") if (out / d).is_dir() for p in (out / d).rglob("*.mp4"))
    return done, rejected, clips


def _check_video_summary(out: Path, n_inputs: int) -> None:
    doc = json.loads((out / "_curastream" / "summary.json").read_bytes())
    t = doc["totals"]
    assert t["videos"] == n_inputs
    # totals describe the whole output, whatever number of resumes made it; this_run what the
    # last one did (the rest it skipped as done)
    assert t["videos_processed"] + t["videos_rejected"] == n_inputs, t
    r = doc["this_run"]
    assert r["videos_processed"] + r["videos_rejected"] + t["videos_skipped_done"] == n_inputs, (r, t)
    rej = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    assert sorted(r["source"] for r in doc["rejects"]) == sorted(r["source"] for r in rej)


def test_video_reference_run_is_complete(video_case):
    ref, names = video_case["ref"], video_case["names"]
    done, rejected, clips = _video_state(ref, video_case["src"])
    assert done | rejected == set(names) and not done & rejected
    assert len(clips) >= 15 and len(clips) == len(set(clips))
    _check_index(ref)
    _check_video_summary(ref, len(names))


def test_videos_sigkill_then_resume_equals_uninterrupted_run(video_case):
    rng = random.Random(SEED * 1000 + 2)
    out, ref, names = video_case["out"], video_case["ref"], video_case["names"]
    ref_index = json.loads((ref / "index.json").read_bytes())
    ref_done, ref_rej, ref_clips = _video_state(ref, video_case["src"])
    for trial in range(VIDEO_TRIALS):
        _crash_trial("videos", video_case["cmd"], out, rng, video_case["t_total"], video_case["t_active"])
        done, rejected, clips = _video_state(out, video_case["src"])
        s = SUMMARY["videos"]
        s["items"] += len(names) + len(ref_clips)
        s["items_lost"] += len(set(names) - done - rejected) + len(set(ref_clips) - set(clips))
        s["items_duplicated"] += len(clips) - len(set(clips))
        assert (done, rejected, clips) == (ref_done, ref_rej, ref_clips), f"trial {trial}"
        _compare_files(out, ref, skip={"index.json", "_curastream/summary.json"})
        _check_index(out, ref_index, skip=frozenset({"_curastream/summary.json"}))
        _check_video_summary(out, len(names))
    assert SUMMARY["videos"]["items_lost"] == 0 and SUMMARY["videos"]["items_duplicated"] == 0
    assert SUMMARY["videos"]["kills_mid_run"] >= VIDEO_TRIALS // 2, SUMMARY["videos"]


# -- crash points that random kills rarely hit, made by hand from the finished output ------------------
def _restore(ref: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ref, out)


def test_images_resume_from_handmade_crash_points(image_case):
    out, ref = image_case["out"], image_case["ref"]
    ref_index = json.loads((ref / "index.json").read_bytes())
    stems = sorted(p.stem for p in ref.glob("images-*.tar"))
    states = {
        # killed between a shard's tar commit and its Parquet commit, rejects never written
        "tar_without_parquet": lambda: [(out / f"{stems[3]}.parquet").unlink(), (out / "_curastream" / "rejects.parquet").unlink()]
        + [(out / f"{s}.{e}").unlink() for s in stems[4:] for e in ("tar", "parquet")],
        # killed while writing the next tar: its temporary is left behind
        "stray_temp": lambda: [(out / f"{s}.{e}").unlink() for s in stems[5:] for e in ("tar", "parquet")]
        + [(out / f"{stems[5]}.tar.tmp-999-deadbeef").write_bytes(b"\0" * 700)],
        # killed after the last shard, before index.json
        "no_index": lambda: None,
        # nothing committed but temporaries
        "only_temps": lambda: [shutil.rmtree(p) if p.is_dir() else p.unlink() for p in out.iterdir()]
        + [(out / "_curastream").mkdir(), (out / "_curastream" / "rejects.parquet.tmp-1-00000000").write_bytes(b"x")],
    }
    for name, damage in states.items():
        _restore(ref, out)
        (out / "index.json").unlink()
        damage()
        _run_ok(image_case["cmd"] + ["--on-existing", "resume"])
        _compare_files(out, ref, skip={"index.json"})
        _check_index(out, ref_index)
        SUMMARY["images"]["resumes"] += 1


def test_videos_resume_from_handmade_crash_points(video_case):
    out, ref = video_case["out"], video_case["ref"]
    ref_index = json.loads((ref / "index.json").read_bytes())
    victim = "pan_fast.mp4"
    chunk = json.loads((ref / "processed_clip_chunks" / f"{victim}_0.json").read_bytes())
    uuids = chunk["clips"] + chunk["filtered_clips"]
    assert len(uuids) >= 3

    def clip_file(u: str) -> Path:
        return next(p for d in ("clips", "filtered_clips") for p in [out / d / f"{u}.mp4"] if p.exists())

    states = {
        # clips and metas partly written, no chunk or video marker yet
        "partial_clips": lambda: [(out / "processed_videos" / f"{victim}.json").unlink(),
                                  (out / "processed_clip_chunks" / f"{victim}_0.json").unlink(),
                                  clip_file(uuids[0]).unlink(), (out / "metas/v0" / f"{uuids[1]}.json").unlink()],
        # chunk marker written, video marker not (killed between the two)
        "chunk_without_video_marker": lambda: (out / "processed_videos" / f"{victim}.json").unlink(),
        # a clip's temporary left behind, summary and rejects never written
        "stray_temp": lambda: [(out / "processed_videos" / f"{victim}.json").unlink(),
                               (out / "_curastream" / "summary.json").unlink(), (out / "_curastream" / "rejects.parquet").unlink(),
                               (out / "clips" / f"{uuids[0]}.mp4.tmp-999-deadbeef").write_bytes(b"\0" * 100)],
    }
    for name, damage in states.items():
        _restore(ref, out)
        (out / "index.json").unlink()
        damage()
        _run_ok(video_case["cmd"] + ["--on-existing", "resume"])
        _compare_files(out, ref, skip={"index.json", "_curastream/summary.json"})
        _check_index(out, ref_index, skip=frozenset({"_curastream/summary.json"}))
        _check_video_summary(out, len(video_case["names"]))
        SUMMARY["videos"]["resumes"] += 1


def _metas_of(out: Path, video: Path) -> list[str]:
    """Span uuids of the metas an output holds for ``video`` (its ``source_video`` field)."""
    found = []
    for p in (out / "metas" / "v0").glob("*.json") if (out / "metas" / "v0").is_dir() else []:
        try:
            doc = json.loads(p.read_bytes())
        except ValueError:  # caught mid-write: not committed yet (a temporary has another name)
            continue
        if Path(doc["source_video"]).name == video.name:
            found.append(doc["span_uuid"])
    return found


def _kill_while_writing(cmd: list[str], out: Path, victim: Path) -> bool:
    """Run ``cmd``; SIGKILL it once a meta of ``victim`` is committed and its processed_videos
    record is not. False when the run got past that window first."""
    errf = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=_env(), start_new_session=True)
    marker = out / "processed_videos" / f"{victim.name}.json"
    t0 = time.monotonic()
    hit = False
    while p.poll() is None and time.monotonic() - t0 < 120:
        if _metas_of(out, victim) and not marker.exists():
            os.killpg(p.pid, signal.SIGKILL)
            hit = True
            break
        time.sleep(0.002)
    p.wait(timeout=30)
    if not hit:
        assert p.returncode == 0, _read(errf)[-3000:]
    return hit and not marker.exists()


def test_video_killed_while_written_then_rejected_on_resume_keeps_none_of_its_files(tmp_path):
    """Killed while a video's clips are committed, a run leaves some of its clips and metas and
    no processed_videos record. The resume does the video again; when it rejects it this time
    (its file broke in between), the output must hold nothing the killed run wrote of it: clips
    of a video that rejects.parquet and summary.json call rejected are not training data. The
    other video's files and a file that is not ours stay."""
    from curastream.samples import make_sample_videos

    src = tmp_path / "src"
    make_sample_videos(src)
    for p in src.iterdir():
        if p.name not in ("pan_slow.mp4", "three_shots.mp4"):
            p.unlink()
    victim, other = src / "three_shots.mp4", src / "pan_slow.mp4"
    out = tmp_path / "out"
    cmd = _cmd("videos", str(src), "--output", str(out), "--split", "fixed", "--clip-len", "1", "--no-progress")
    for _ in range(6):
        if out.exists():
            shutil.rmtree(out)
        if _kill_while_writing(cmd, out, victim):
            break
    else:
        pytest.fail("no kill landed while the video's files were being written")
    left = _metas_of(out, victim)
    assert left and not (out / "processed_videos" / f"{victim.name}.json").exists()
    (out / "README.txt").write_text("not curastream's\n")
    victim.write_bytes(b"this is no longer a video\n" * 100)

    _run_ok(cmd + ["--on-existing", "resume"])

    assert _metas_of(out, victim) == []
    named = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and any(u in p.name or
             u in p.parent.name for u in left)]
    assert named == [], f"files of the rejected video left from the killed run: {named[:5]}"
    assert not list((out / "processed_clip_chunks").glob(f"{victim.name}_*.json"))
    rejects = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    assert [Path(r["source"]).name for r in rejects] == [victim.name]
    # the other video is whole: done, and every clip its chunk record lists is there
    chunk = json.loads((out / "processed_clip_chunks" / f"{other.name}_0.json").read_bytes())
    assert (out / "processed_videos" / f"{other.name}.json").exists()
    assert sorted(_metas_of(out, other)) == sorted(chunk["clips"] + chunk["filtered_clips"])
    clips = sorted(p.stem for d in ("clips", "filtered_clips") for p in (out / d).glob("*.mp4"))
    assert clips == sorted(chunk["clips"] + chunk["filtered_clips"])
    assert (out / "README.txt").read_text() == "not curastream's\n"
    (out / "README.txt").unlink()  # the index lists only ours
    _check_index(out)
    summary = json.loads((out / "_curastream" / "summary.json").read_bytes())
    assert summary["totals"]["videos_rejected"] == 1 and summary["totals"]["videos_processed"] == 1
