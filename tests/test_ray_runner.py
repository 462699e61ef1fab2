"""``--runner ray`` on a real two-node Ray cluster on loopback: same items as a local run, exactly once.

The module starts its own cluster (a head and a second raylet, one CPU each) in a temp dir of its
own and stops only the processes it started: ``ray stop`` would end every Ray process on the
machine, other people's included. Outputs are read back with tarfile, pyarrow and json, and
compared with a local run of the same inputs and settings: the same members with the same bytes
(images), the same clip ids, clip bytes and metas (videos), the same rejects. Shard grouping
differs by design (one shard per partition) and is not compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import MEDIA

ray = pytest.importorskip("ray")

from curastream.config import ImageRunConfig, VideoRunConfig  # noqa: E402
from curastream.engine.lock import is_control_file  # noqa: E402
from curastream.images.pipeline import run_images  # noqa: E402
from curastream.videos.pipeline import run_videos  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

# No token auth (a ~/.ray/auth_token would turn it on for the head only) and no usage report.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
IMAGES = ["mate_Dune.jpg", "mate_FreshFlower.jpg", "mate_GreenMeadow.jpg", "opencv_building.jpg",
          "opencv_fruits.jpg", "opencv_left01.jpg", "skimage_coffee.png", "skimage_chelsea.png",
          "go_video-005.gray.jpeg", "derived_rocket_exif_orientation6.jpg", "opencv_squirrel_cls.jpg"]
BAD = ["pillow_truncated_image.png", "forensics_empty.jpg"]
VIDEOS = ["imageio_realshort.mp4", "libvpl_cars_320x240.h264"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (our cluster's temp dir): ours only."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(d))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def cluster():
    if not (MEDIA / "images").is_dir():
        pytest.skip("shared media folder absent")
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="csray-", dir="/tmp")  # short: Unix socket paths are limited
    port = _free_port()
    env = {**os.environ, **RAY_ENV}
    common = ["--num-cpus", "1", "--object-store-memory", str(80 << 20), "--disable-usage-stats"]
    started = []
    old = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    try:
        # --block: each `ray start` stays our child, so its PID is known and ends with it
        started.append(subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--temp-dir", temp,
                                         "--include-dashboard", "false", "--block", *common], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = f"127.0.0.1:{port}"
        _wait_nodes(address, 1, started)
        started.append(subprocess.Popen([ray_bin, "start", "--address", address, "--block", *common], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_nodes(address, 2, started)
        yield address
    finally:
        for p in started:
            p.send_signal(signal.SIGTERM)
        for p in started:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for pid in _pids_using(temp):  # a raylet's workers or a daemon outliving its `ray start`
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_nodes(address: str, n: int, procs: list, timeout: float = 240.0) -> None:
    # Generous: on a loaded 2-core machine one `ray.init` to a starting head took over 60 s
    # (the whole suite plus another test run), and a probe that times out is simply retried.
    code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("ray start exited")
        try:
            r = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                               env={**os.environ, **RAY_ENV}, timeout=max(5.0, min(90.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            continue
        if r.returncode == 0 and r.stdout.strip() and int(r.stdout.split()[-1]) >= n:
            return
        time.sleep(1)
    raise RuntimeError(f"cluster at {address} did not reach {n} nodes")


@pytest.fixture(scope="module")
def image_inputs(tmp_path_factory) -> Path:
    """Real photos, two broken files, and a smaller re-encode of mate_Dune whose name sorts into
    the first partition while the original lands in a later one: only a dedup decided across
    partitions keeps the better (original) copy."""
    from PIL import Image

    d = tmp_path_factory.mktemp("img-in")
    for name in IMAGES:
        os.symlink(MEDIA / "images" / name, d / name)
    for name in BAD:
        os.symlink(MEDIA / "bad" / name, d / name)
    with Image.open(MEDIA / "images" / "mate_Dune.jpg") as im:
        im.convert("RGB").resize((840, 525)).save(d / "aa_dune_small.jpg", quality=90)
    return d


@pytest.fixture(scope="module")
def local_images(image_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("img-local") / "out"
    run_images(ImageRunConfig(sources=[str(image_inputs)], output=str(out), images_per_tar=4, progress=False))
    return out


def _members(out: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for tar in sorted(out.glob("images-*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                assert m.name not in found, f"{m.name} written twice"
                found[m.name] = tf.extractfile(m).read()
    return found


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for p in sorted(out.glob("images-*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["image_id"] not in rows
            r.pop("tar_file")  # names the shard, which differs by design
            rows[r["image_id"]] = r
    return rows


def _rejects(out: Path) -> set[tuple]:
    t = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    return {(Path(r["source"]).name, r["stage"], r["reason"], r.get("duplicate_of")) for r in t}


def _check_index_and_clean(out: Path) -> dict:
    """No temporary anywhere; index.json lists every file present (but itself), with its real
    bytes and sha256; the ownership journal is gone."""
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert not [p for p in present if ".tmp-" in p]
    index = json.loads((out / "index.json").read_text())
    listed = {f["path"]: f for f in index["files"]}
    control = {p for p in present if is_control_file(p)}  # the lock and the journal: never indexed
    assert set(listed) == present - {"index.json"} - control
    for rel, f in listed.items():
        data = (out / rel).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"]), rel
    assert not (out / "_curastream" / "journal").exists() or not any((out / "_curastream" / "journal").iterdir())
    return index


def test_images_on_two_nodes_match_local(cluster, image_inputs, local_images, tmp_path):
    out = tmp_path / "ray"
    stats = run_images(ImageRunConfig(sources=[str(image_inputs)], output=str(out), images_per_tar=4,
                                      progress=False, runner="ray", ray_address=cluster))
    got, want = _members(out), _members(local_images)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want)
    assert _rows(out) == _rows(local_images)
    assert _rejects(out) == _rejects(local_images)
    # the smaller copy sorts first but loses to the original, across partitions
    assert ("aa_dune_small.jpg", "dedup") in {r[:2] for r in _rejects(out)}
    assert {r[3] for r in _rejects(out) if r[0] == "aa_dune_small.jpg"} == {"mate_Dune"}
    assert "mate_Dune.jpg" in got
    index = _check_index_and_clean(out)
    assert index["partitions"] == 4  # 14 inputs, 4 per partition
    # both nodes worked, and the driver's totals are the tasks'
    assert len(stats.extra["nodes"]) == 2
    assert stats.items_in == len(IMAGES) + len(BAD) + 1
    assert stats.items_out == len(want) // 2


def test_worker_killed_mid_task_is_retried_without_duplicates(cluster, image_inputs, local_images, tmp_path):
    """SIGKILL the worker process that holds a shard temporary (its PID is in the temporary's
    name): Ray retries the task, which rewrites the same names; nothing is lost or doubled and
    the dead attempt's temporary is gone."""
    out = tmp_path / "ray"
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for p in out.glob("images-*.tar.tmp-*"):
                pid = int(p.name.split(".tmp-")[1].split("-")[0])
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        is_worker = f.read().startswith(b"ray::")
                except OSError:
                    continue
                if is_worker and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        run_images(ImageRunConfig(sources=[str(image_inputs)], output=str(out), images_per_tar=2,
                                  progress=False, runner="ray", ray_address=cluster))
    finally:
        stop.set()
        t.join()
    assert killed, "no worker was caught mid-shard"
    got, want = _members(out), _members(local_images)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want)
    assert _rejects(out) == _rejects(local_images)
    _check_index_and_clean(out)


def _clip_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "clips").rglob("*.mp4"))}


def _metas(out: Path) -> dict[str, dict]:
    docs = {}
    for p in sorted((out / "metas").rglob("*.json")):
        # clip_location names the output folder, which differs between the two runs
        docs[p.relative_to(out).as_posix()] = json.loads(p.read_text().replace(str(out), "<out>"))
    return docs


def test_videos_on_two_nodes_match_local(cluster, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for name in VIDEOS:
        os.symlink(MEDIA / "videos" / name, src / name)
    os.symlink(MEDIA / "bad" / "derived_nasa_13013_no_moov.mp4", src / "no_moov.mp4")
    runs = {}
    for runner in ("local", "ray"):
        out = tmp_path / runner
        cfg = VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", clip_len=2.0, min_clip_len=0.5,
                             progress=False, runner=runner, ray_address=cluster if runner == "ray" else None)
        runs[runner] = (out, run_videos(cfg))
    (lo, _), (ro, rstats) = runs["local"], runs["ray"]
    assert _clip_files(lo), "the local run wrote no clips: the comparison would be empty"
    # Every clip byte for byte, the raw .h264's re-encode included: it differed now and then
    # until libx264's AVX-512 code was switched off (videos/x264.py).
    assert _clip_files(ro) == _clip_files(lo)
    assert _metas(ro) == _metas(lo)
    rej = [pq.read_table(o / "_curastream" / "rejects.parquet").to_pylist() for o in (lo, ro)]
    assert [Path(r["source"]).name for r in rej[1]] == ["no_moov.mp4"]
    assert [(r["source"], r["stage"]) for r in rej[1]] == [(r["source"], r["stage"]) for r in rej[0]]
    sums = [json.loads((o / "_curastream" / "summary.json").read_text()) for o in (lo, ro)]
    assert sums[1]["totals"] == sums[0]["totals"]
    assert sums[1]["writer"]["clips"] == sums[0]["writer"]["clips"]
    _check_index_and_clean(ro)
    assert rstats.extra["tasks"] == len(VIDEOS) + 1
    assert len(rstats.extra["nodes"]) == 2, "videos spread over both nodes"


def _kill_cli_once(args: list[str], out: Path, committed: str, timeout_s: float) -> None:
    """Run the ``curastream`` command and SIGKILL it as soon as ``out`` holds a ``committed``
    file, while it is still running."""
    cli = str(Path(sys.executable).parent / "curastream")
    p = subprocess.Popen([cli, *args], env={**os.environ, **RAY_ENV}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not list(out.glob(committed)) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.poll() is None, "the run ended before it could be killed"
        p.kill()
    finally:
        p.wait()


def test_driver_killed_mid_run_resumes(cluster, image_inputs, local_images, tmp_path):
    """SIGKILL the driver (the ``curastream`` command) once a shard is committed, then resume:
    the workers' commits were journaled under the dead run's id, so the resume keeps them,
    removes their temporaries and writes only what is missing."""
    out = tmp_path / "ray"
    _kill_cli_once(["images", str(image_inputs), "-o", str(out), "--images-per-tar", "2", "--runner", "ray",
                    "--ray-address", cluster], out, "images-*.parquet", 120)
    assert not (out / "index.json").exists()
    written_before = {q.name for q in out.glob("images-*.parquet")}
    assert written_before
    run_images(ImageRunConfig(sources=[str(image_inputs)], output=str(out), images_per_tar=2, progress=False,
                              runner="ray", ray_address=cluster, on_existing="resume"))
    assert written_before <= {q.name for q in out.glob("images-*.parquet")}
    got, want = _members(out), _members(local_images)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want)
    assert _rejects(out) == _rejects(local_images)
    _check_index_and_clean(out)


def test_gpu_share_per_task_reaches_ray_and_is_checked():
    """--gpus-per-task: a fraction lets tasks share a GPU (Ray schedules 0.25 GPU), whole
    numbers reserve several; 1.5 is refused as Ray would, by flag name; CPU tasks ask none."""
    from curastream.distributed.cluster import task_options

    assert task_options(2, "gpu", 0.25)["num_gpus"] == 0.25
    assert task_options(2, "gpu", 2.0)["num_gpus"] == 2
    assert task_options(2, "cpu", 0.25)["num_gpus"] == 0
    assert task_options(2, "cpu")["scheduling_strategy"] == "SPREAD"
    for cfg in (ImageRunConfig(sources=["x"], output="o", gpus_per_task=1.5),
                VideoRunConfig(sources=["x"], output="o", gpus_per_task=0)):
        with pytest.raises(ValueError, match="gpus-per-task"):
            cfg.validate()
    r = subprocess.run([str(Path(sys.executable).parent / "curastream"), "videos", "x", "-o", "o",
                        "--gpus-per-task", "1.5"], capture_output=True, text=True)
    assert r.returncode == 2 and "--gpus-per-task" in r.stderr and "Traceback" not in r.stderr


def _dataset_files(out: Path) -> dict[str, bytes]:
    """Every file of the dataset (not the run's own records), JSON with the output folder masked:
    metas record where their clip went, which names the output."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not rel.startswith("_curastream/") and rel != "index.json":
            data = p.read_bytes()
            files[rel] = data.replace(str(out).encode(), b"<out>") if rel.endswith(".json") else data
    return files


def test_long_videos_split_across_tasks_match_local(cluster, tmp_path):
    """Two real videos longer than ``ray_video_chunk_s`` run as parts of consecutive fixed spans,
    each part decoding from a keyframe before its first span: Big Buck Bunny (VP8, 30 s, motion
    from frames) in 4 tasks and the cockatoo (H.264 4:4:4 from an old x264, motion from codec
    vectors) in 2. Clips, metas, previews and the processed_* records equal a local run's byte
    for byte, and the summary counts each video once."""
    names = ["moviepy_big_buck_bunny_0_30.webm", "imageio_cockatoo.mp4"]
    src = tmp_path / "videos"
    src.mkdir()
    for name in names:
        os.symlink(MEDIA / "videos" / name, src / name)
    runs = {}
    for runner in ("local", "ray"):
        out = tmp_path / runner[0] / "out"  # equal lengths: metas name the output, and bytes are compared
        cfg = VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", clip_len=3.0, min_clip_len=0.5,
                             previews=True, ray_video_chunk_s=10.0, progress=False, runner=runner,
                             ray_address=cluster if runner == "ray" else None)
        runs[runner] = (out, run_videos(cfg))
    (lo, _), (ro, rstats) = runs["local"], runs["ray"]
    want, got = _dataset_files(lo), _dataset_files(ro)
    # 10 + 5 three-second spans; the comparison must cover every kind of file
    assert len([k for k in want if k.startswith("metas/")]) == 15
    assert {k.split("/")[0] for k in want} >= {"clips", "metas", "previews", "processed_videos",
                                               "processed_clip_chunks"}
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    assert rstats.extra["tasks"] == 4 + 2 and rstats.extra["videos_split"] == 2
    sums = [json.loads((o / "_curastream" / "summary.json").read_text()) for o in (lo, ro)]
    assert sums[1]["totals"] == sums[0]["totals"]
    assert sums[1]["totals"]["videos_processed"] == 2
    for k in ("videos", "videos_incomplete", "chunks", "clips", "clips_passed", "clips_with_webp", "files_written",
              "bytes_written"):
        assert sums[1]["writer"][k] == sums[0]["writer"][k], k
    by_video = {Path(v["video"]).name: v for v in sums[1]["videos"]}
    assert sorted(by_video) == sorted(names)
    assert (by_video[names[0]]["tasks"], by_video[names[1]]["tasks"]) == (4, 2)
    local_by_video = {Path(v["video"]).name: v for v in sums[0]["videos"]}
    for name in names:
        assert by_video[name]["clips"] == local_by_video[name]["clips"]
        assert by_video[name]["clips_passed"] == local_by_video[name]["clips_passed"]
    assert rstats.items_in == 2 and rstats.items_out == 2
    assert not pq.read_table(ro / "_curastream" / "rejects.parquet").num_rows
    _check_index_and_clean(ro)

    # The driver killed once a part has committed a clip: no video is done (its processed_videos
    # record is the driver's to write), so the resume redoes every part of the unfinished ones
    # and the output is the local run's again.
    ko = tmp_path / "k" / "out"
    _kill_cli_once(["videos", str(src), "-o", str(ko), "--split", "fixed", "--clip-len", "3", "--min-clip-len", "0.5",
                    "--previews", "--ray-video-chunk-s", "10", "--runner", "ray", "--ray-address", cluster],
                   ko, "metas/*/*.json", 180)
    assert list(ko.glob("metas/*/*.json")) and not (ko / "index.json").exists()
    assert len(list(ko.glob("processed_videos/*.json"))) < 2
    # every file the workers committed is journaled as its video's: what a resume removes first
    # when it does that video again (and keeps none of, should the video be rejected this time)
    from curastream.engine.ownership import Ownership
    from curastream.engine.storage import Storage

    committed = sorted(q.relative_to(ko).as_posix() for d in ("clips", "metas", "previews")
                       for q in (ko / d).rglob("*") if q.is_file() and ".tmp-" not in q.name)
    journaled = Ownership(Storage(str(ko)), "check").files_of(set(names))
    assert committed and set(committed) <= set(journaled)  # the journal may also name an uncommitted one
    run_videos(VideoRunConfig(sources=[str(src)], output=str(ko), split="fixed", clip_len=3.0, min_clip_len=0.5,
                              previews=True, ray_video_chunk_s=10.0, progress=False, runner="ray",
                              ray_address=cluster, on_existing="resume"))
    again = _dataset_files(ko)
    assert sorted(again) == sorted(want)
    assert [k for k in want if again[k] != want[k]] == []
    _check_index_and_clean(ko)


def test_split_video_rejected_by_one_part_keeps_no_file(tmp_path):
    """A part that rejects its video rejects it whole: the clip files the other part committed
    are removed (a local run writes none for a rejected video), one reject row and one summary
    entry remain, and the run's stats count the video once, as rejected."""
    from curastream.distributed.stats import merge_stats
    from curastream.distributed.video_plan import VideoTask
    from curastream.distributed.videos import _merge_summaries, _VideoResults
    from curastream.engine.ownership import Ownership
    from curastream.engine.stats import RunStats
    from curastream.engine.storage import Storage
    from curastream.videos.sources import VideoInput
    from curastream.writers.rejects import reject_row

    storage = Storage(str(tmp_path / "out"))
    inp = VideoInput(str(tmp_path / "long.mp4"), 1000, True)
    plan = [VideoTask(inp, "vid000000-0000", (0, 3), 0, 2), VideoTask(inp, "vid000000-0001", (3, 5), 1, 2)]

    def part(files: list[str], reason: str | None) -> dict:
        st = RunStats(kind="videos")
        st.items_in, st.bytes_in = 1, 1000
        if reason:
            st.count_reject("decode:error")
        else:
            st.items_out = 1
        written = [storage.write_atomic(rel, b"clip bytes").to_dict() for rel in files]
        entry = ({"video": inp.path, "status": "rejected", "stage": "decode", "reason": reason} if reason else
                 {"video": inp.path, "status": "ok", "clips": len(files), "clips_passed": len(files)})
        summary = {"clips": len(files), "files_written": len(written), "files_by_dir": {"clips": len(files)}}
        return {"files": written, "stats": st.to_dict(), "node": "n1", "seconds": 1.0, "summary": summary,
                "rejects": [reject_row(None, inp.path, None, "decode", reason)] if reason else [],
                "per_video": [entry], "clips_total": len(files), "clips_passed": len(files), "clips_filtered": 0,
                "videos_with_warnings": 0, "records": []}

    videos = _VideoResults(plan, storage, Ownership(storage, "run"), None, 32)
    videos.add(1, part(["clips/b.mp4"], "no frame could be decoded"))  # parts finish in any order
    assert (tmp_path / "out" / "clips" / "b.mp4").exists() and videos.results == []
    videos.add(0, part(["clips/a.mp4", "metas/a.json"], None))
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    [r] = videos.results
    assert [(x["source"], x["stage"]) for x in r["rejects"]] == [(inp.path, "decode")]
    assert [e["status"] for e in r["per_video"]] == ["rejected"] and r["clips_total"] == 0
    stats = merge_stats("videos", videos.tasks, 1.0)
    assert (stats.items_in, stats.items_out, stats.bytes_in, stats.items_rejected) == (1, 0, 1000, 1)
    assert stats.extra["tasks"] == 2 and videos.split == 1
    # the writer summary counts what the output holds: none of the deleted files
    assert _merge_summaries([t["summary"] for t in videos.tasks]) == {}
