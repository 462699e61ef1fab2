"""Output safety: a run deletes only what it wrote, never touches its inputs, one run per output.

Each test reproduces a reported data loss with real files and real ``curastream`` processes:
overwrite deleting the photos it was pointed at, user files named like our temporaries or shards
skipped or deleted, two runs into one output, a killed run's lock.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import shutil
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import MEDIA

ROOT = Path(__file__).resolve().parents[1]
CS = str(ROOT / ".venv" / "bin" / "curastream")
if not os.path.exists(CS):
    CS = str(Path(sys.executable).parent / "curastream")


def _photos() -> list[Path]:
    d = MEDIA / "images"
    if not d.is_dir():
        pytest.skip("shared media folder absent")
    return sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


def _photo_dir(root: Path, copies: int = 1) -> Path:
    """A folder of real photos; copies > 1 adds hard links under new names (a longer run)."""
    d = root / "photos"
    d.mkdir(parents=True)
    for p in _photos():
        shutil.copyfile(p, d / p.name)
        for c in range(1, copies):
            os.link(d / p.name, d / f"{p.stem}-{c:03d}{p.suffix}")
    return d


def _cs(*args, cwd=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([CS, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300, **kw)


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _kept_and_rejected(out: Path) -> tuple[list[str], list[str]]:
    kept = []
    for p in sorted(out.glob("images-*.parquet")):
        kept += pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()
    rejected = pq.read_table(out / "_curastream" / "rejects.parquet").column("image_id").to_pylist()
    return kept, rejected


def _check_index(out: Path) -> dict:
    index = json.loads((out / "index.json").read_text())
    on_disk = set(_tree(out)) - {"index.json"}
    assert {f["path"] for f in index["files"]} == on_disk
    # a finished run holds its dataset and run files only: no lock, no journal (index.json is
    # the record); an image run with dedup also keeps pass 1's results for a later resume
    assert sorted(p.name for p in (out / "_curastream").iterdir()) in (
        ["rejects.parquet", "run.json"], ["dedup_facts.parquet", "rejects.parquet", "run.json"])
    return index


# -- finding 1: overwrite and inputs ---------------------------------------------------------------
def test_overwrite_into_the_input_folder_is_refused(tmp_path):
    photos = _photo_dir(tmp_path)
    before = _tree(photos)
    r = _cs("images", photos, "--output", photos, "--on-existing", "overwrite")
    assert r.returncode == 2, r.stderr
    assert "is the input" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert _tree(photos) == before


def test_output_that_contains_or_sits_inside_an_input_is_refused(tmp_path):
    photos = _photo_dir(tmp_path)
    (tmp_path / "README").write_text("mine")
    before = _tree(tmp_path)
    r = _cs("images", photos, "--output", tmp_path, "--on-existing", "overwrite")
    assert r.returncode == 2 and "contains the input" in r.stderr, r.stderr
    r = _cs("images", photos, "--output", photos / "out", "--on-existing", "overwrite")
    assert r.returncode == 2 and "inside the input" in r.stderr, r.stderr
    # through a symlink, and through a glob
    (tmp_path / "link").symlink_to(photos)
    r = _cs("images", f"{photos}/*.jpg", "--output", tmp_path / "link", "--on-existing", "overwrite")
    assert r.returncode == 2, r.stderr
    assert _tree(tmp_path) == before
    vids = tmp_path / "vids"
    vids.mkdir()
    r = _cs("videos", vids, "--output", tmp_path, "--on-existing", "overwrite")
    assert r.returncode == 2 and "contains the input" in r.stderr, r.stderr


@pytest.mark.slow
def test_overwrite_keeps_foreign_files_and_removes_ours(tmp_path):
    photos = _photo_dir(tmp_path)
    out = tmp_path / "out"
    r = _cs("images", photos, "--output", out, "--images-per-tar", "4")
    assert r.returncode == 0, r.stderr
    first_shards = sorted(p.name for p in out.glob("images-*.tar"))
    assert len(first_shards) > 1
    (out / "README").write_text("not yours")
    r = _cs("images", photos, "--output", out)
    assert r.returncode == 2 and "earlier run" in r.stderr, r.stderr
    # fewer, larger shards: a stale shard of the first run would survive a name-for-name replace
    r = _cs("images", photos, "--output", out, "--images-per-tar", "100", "--on-existing", "overwrite")
    assert r.returncode == 0, r.stderr
    assert "README" in r.stderr  # the one line naming what was kept
    assert (out / "README").read_text() == "not yours"
    assert len(list(out.glob("images-*.tar"))) == 1
    index = json.loads((out / "index.json").read_text())
    assert {f["path"] for f in index["files"]} == set(_tree(out)) - {"index.json", "README"}


def test_output_of_only_foreign_files_is_not_called_ours(tmp_path):
    photos = _photo_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    r = _cs("images", photos, "--output", out)
    assert r.returncode == 2 and "no record of a curastream run" in r.stderr, r.stderr
    (out / "index.json").write_bytes(b"theirs")
    r = _cs("images", photos, "--output", out, "--on-existing", "overwrite")
    assert r.returncode == 2 and "index.json" in r.stderr, r.stderr
    assert (out / "index.json").read_bytes() == b"theirs"
    assert not (out / "_curastream").exists()  # a refused run leaves no trace


# -- finding 4: names are not identity ---------------------------------------------------------------
def test_user_files_named_like_ours_are_inputs(tmp_path):
    photos = _photo_dir(tmp_path)
    src = _photos()
    sub = photos / "sub"
    sub.mkdir()
    (sub / "x.tmp-1.jpg").write_bytes(src[0].read_bytes())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i, p in enumerate(src[1:3]):
            data = p.read_bytes()
            ti = tarfile.TarInfo(f"member{i}.jpg")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    (sub / "images-aaaaaaaaaaaa-000000.tar").write_bytes(buf.getvalue())
    out = tmp_path / "out"
    r = _cs("images", photos, "--output", out)
    assert r.returncode == 0, r.stderr
    kept, rejected = _kept_and_rejected(out)
    keys = set(kept) | set(rejected)
    assert len(kept) + len(rejected) == len(src) + 3
    assert any("x_tmp-1" in k for k in keys), keys  # keys are made file-name safe
    assert sum("member" in k for k in keys) == 2, keys


@pytest.mark.slow
def test_an_earlier_output_inside_an_input_folder_is_not_input(tmp_path):
    photos = _photo_dir(tmp_path)
    first = tmp_path / "first"
    assert _cs("images", photos, "--output", first).returncode == 0
    inner = photos / "old_run"
    first.rename(inner)
    out = tmp_path / "out"
    r = _cs("images", photos, "--output", out)
    assert r.returncode == 0, r.stderr
    kept, rejected = _kept_and_rejected(out)
    assert len(kept) + len(rejected) == len(_photos())


@pytest.mark.slow
def test_resume_keeps_a_users_shard_named_tar(tmp_path):
    photos = _photo_dir(tmp_path)
    out = tmp_path / "out"
    assert _cs("images", photos, "--output", out, "--images-per-tar", "4").returncode == 0
    (out / "index.json").unlink()  # as if killed before the end
    theirs = out / "images-bbbbbbbbbbbb-000099.tar"
    theirs.write_bytes(b"user data")
    r = _cs("images", photos, "--output", out, "--images-per-tar", "4", "--on-existing", "resume")
    assert r.returncode == 0, r.stderr
    assert theirs.read_bytes() == b"user data"
    index = json.loads((out / "index.json").read_text())
    assert theirs.name not in {f["path"] for f in index["files"]}


# -- finding 5: one run per output ----------------------------------------------------------------------
def _wait_for(pred, proc, timeout=60.0):
    t0 = time.monotonic()
    while not pred():
        assert proc.poll() is None, f"run ended early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_second_run_into_a_busy_output_is_refused(tmp_path):
    photos = _photo_dir(tmp_path, copies=25)
    n = len(list(photos.iterdir()))
    out = tmp_path / "out"
    cmd = [CS, "images", str(photos), "--output", str(out), "--workers", "1", "--batch-size", "4",
           "--images-per-tar", "50"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / "_curastream" / "lock.json").exists(), first)
        second = _cs(*cmd[1:], "--on-existing", "overwrite")
        still_running = first.poll() is None
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert still_running, "the first run ended before the second started: make it longer"
    assert second.returncode == 2, second.stderr
    assert "in use by another run" in second.stderr and f"pid {first.pid} " in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert first.returncode == 0, err
    _check_index(out)
    kept, rejected = _kept_and_rejected(out)
    assert sorted(kept + rejected) == sorted(set(kept + rejected)) and len(kept) + len(rejected) == n


@pytest.mark.slow
def test_lock_of_a_killed_run_is_taken_over_by_resume(tmp_path):
    photos = _photo_dir(tmp_path, copies=25)
    n = len(list(photos.iterdir()))
    out = tmp_path / "out"
    # No dedup: shards are then written as the photos are read, so the first one lands early in
    # the run. With dedup every shard is written in pass 2, which on a quiet machine could finish
    # (and release the lock) before the kill.
    cmd = [CS, "images", str(photos), "--output", str(out), "--workers", "1", "--batch-size", "4",
           "--images-per-tar", "40", "--no-dedup"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(out.glob("images-*.parquet")), first)
        assert first.poll() is None, "the run ended before the kill: make it longer"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    held = json.loads((out / "_curastream" / "lock.json").read_text())
    assert held["pid"] == first.pid
    r = _cs(*cmd[1:], "--on-existing", "resume")
    assert r.returncode == 0, r.stderr
    assert "taking over the lock" in r.stderr and f"pid {first.pid} " in r.stderr, r.stderr
    _check_index(out)
    kept, rejected = _kept_and_rejected(out)
    assert len(kept) + len(rejected) == n and len(set(kept + rejected)) == n


@pytest.mark.slow
def test_lock_is_released_when_a_run_fails(tmp_path, monkeypatch):
    from curastream.config import ImageRunConfig
    from curastream.engine.output import OutputDeleteError
    from curastream.engine.storage import Storage
    from curastream.images.pipeline import run_images

    photos = _photo_dir(tmp_path)
    out = tmp_path / "out"
    assert _cs("images", photos, "--output", out, "--images-per-tar", "4").returncode == 0
    victim = sorted(out.glob("images-*.tar"))[1].name
    real_remove = Storage.remove

    def remove(self, rel):
        if rel == victim:
            raise PermissionError(13, "Permission denied")  # an immutable file, a store without delete rights
        return real_remove(self, rel)

    monkeypatch.setattr(Storage, "remove", remove)
    cfg = ImageRunConfig(sources=[str(photos)], output=str(out), on_existing="overwrite", images_per_tar=100,
                         progress=False)
    with pytest.raises(OutputDeleteError, match=victim):
        run_images(cfg)
    assert (out / victim).exists()
    assert not (out / "_curastream" / "lock.json").exists()
    monkeypatch.undo()
    # the record of what is ours survived the failed overwrite: a retry finishes the job
    r = _cs("images", photos, "--output", out, "--images-per-tar", "100", "--on-existing", "overwrite")
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("images-*.tar"))) == 1
    _check_index(out)


@pytest.mark.skipif(shutil.which("chattr") is None, reason="no chattr")
def test_overwrite_whose_delete_fails_exits_non_zero_naming_the_file(tmp_path):
    photos = _photo_dir(tmp_path)
    out = tmp_path / "out"
    assert _cs("images", photos, "--output", out, "--images-per-tar", "4").returncode == 0
    victim = sorted(out.glob("images-*.tar"))[0]
    if subprocess.run(["chattr", "+i", str(victim)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    try:
        r = _cs("images", photos, "--output", out, "--images-per-tar", "100", "--on-existing", "overwrite")
    finally:
        subprocess.run(["chattr", "-i", str(victim)], capture_output=True)
    assert r.returncode != 0
    assert victim.name in r.stderr and "cannot delete" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _journal_with_videos(storage) -> None:
    from curastream.engine.ownership import Ownership

    own = Ownership(storage, "run1")
    storage.on_write = own.record
    storage.write_atomic("clips/a.mp4", b"a", group="day1/v1.mp4")
    storage.write_atomic("metas/v0/a.json", b"{}", group="day1/v1.mp4")
    storage.write_atomic("clips/b.mp4", b"b", group="v2.mp4")
    storage.write_atomic("_curastream/rejects.parquet", b"r")  # a run file: no video's
    storage.on_write = None
    own.close()


def _check_journal_with_videos(storage) -> None:
    from curastream.engine.ownership import Ownership

    again = Ownership(storage, "run2")  # what a resume reads back
    assert again.files_of({"day1/v1.mp4"}) == ["clips/a.mp4", "metas/v0/a.json"]
    assert again.files_of({"v2.mp4", "v3.mp4"}) == ["clips/b.mp4"]
    assert again.files_of({"v1.mp4"}) == []
    assert all(again.owns(r) for r in ("clips/a.mp4", "clips/b.mp4", "_curastream/rejects.parquet"))


def test_journal_names_the_video_each_file_was_written_for(tmp_path):
    """A resume finds what a killed run wrote for each video (to remove it before the video is
    done again); files of no video and journal lines of earlier versions (bare names) stay
    owned, attributed to none."""
    from curastream.engine.ownership import Ownership
    from curastream.engine.storage import Storage

    storage = Storage(str(tmp_path))
    _journal_with_videos(storage)
    _check_journal_with_videos(storage)
    old = tmp_path / "_curastream" / "journal" / "run0.jsonl"
    old.write_text('"clips/old.mp4"\n["clips/c.mp4", "v3.mp4"]\n["cut sh')  # last line cut by a kill
    again = Ownership(storage, "run2")
    assert again.owns("clips/old.mp4") and again.files_of({"v3.mp4"}) == ["clips/c.mp4"]
    assert "clips/old.mp4" not in again.files_of({"day1/v1.mp4", "v2.mp4", "v3.mp4"})


# -- object stores ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_url(request):
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import socket

    import s3fs

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, skip_instance_cache=True)
    fs.mkdir("safety")
    yield url, fs
    srv.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.slow
def test_s3_lock_refuses_a_live_holder_and_takes_over_a_silent_one(s3_url, monkeypatch):
    from curastream.engine import lock as lockmod
    from curastream.engine.output import OutputLockedError, OutputSession
    from curastream.engine.storage import Storage

    url, fs = s3_url
    opts = {"client_kwargs": {"endpoint_url": url}}
    monkeypatch.setattr(lockmod, "HEARTBEAT_S", 0.3)
    out = "s3://safety/lockcase"
    first = OutputSession(out, opts, "error", sources=[])
    try:
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()} "):
            OutputSession(out, opts, "resume", sources=[])
        # names committed on a store are journaled in batches: a heartbeat writes the segment
        first.ownership.record("clips/a.mp4")
        first.ownership.record("clips/b.mp4")
        time.sleep(1.0)
        segs = fs.find("safety/lockcase/_curastream/journal")
        assert segs and {"clips/a.mp4", "clips/b.mp4"} <= set(json.loads(fs.cat_file(segs[0])))
        held = json.loads(fs.cat_file("safety/lockcase/_curastream/lock.json"))
        assert held["heartbeat_unix"] > held["started_unix"]  # refreshed while running
    finally:
        first.close()
    assert not fs.exists("safety/lockcase/_curastream/lock.json")

    # a holder on another host: alive while its heartbeat is fresh, gone once it is old
    st = Storage(out, opts)
    other = {"host": "elsewhere", "pid": 1, "started_unix": time.time(), "heartbeat_unix": time.time(),
             "command": "curastream images x", "run_id": "feedfeedfeed"}
    st.fs.pipe_file(st.path("_curastream/lock.json"), json.dumps(other).encode())
    with pytest.raises(OutputLockedError, match="elsewhere"):
        OutputSession(out, opts, "resume", sources=[])
    other["heartbeat_unix"] = time.time() - lockmod.STALE_AFTER_S - 5
    st.fs.pipe_file(st.path("_curastream/lock.json"), json.dumps(other).encode())
    s = OutputSession(out, opts, "resume", sources=[])
    assert json.loads(fs.cat_file("safety/lockcase/_curastream/lock.json"))["pid"] == os.getpid()
    s.close()


@pytest.mark.slow
def test_s3_overwrite_keeps_foreign_objects(s3_url, tmp_path):
    from curastream.config import ImageRunConfig
    from curastream.images.pipeline import run_images

    url, fs = s3_url
    photos = _photo_dir(tmp_path)
    opts = {"client_kwargs": {"endpoint_url": url}}
    out = "s3://safety/imgs"

    def run(mode, per_tar):
        return run_images(ImageRunConfig(sources=[str(photos)], output=out, on_existing=mode, progress=False,
                                         images_per_tar=per_tar, storage_options=opts))

    run("error", 4)
    fs.invalidate_cache()
    first = {p.rsplit("/", 1)[1] for p in fs.find("safety/imgs")}
    control = [n for n in fs.find("safety/imgs") if "/lock.json" in n or "/journal/" in n]
    assert sum(n.endswith(".tar") for n in first) > 1 and not control
    fs.pipe_file("safety/imgs/README", b"theirs")
    run("overwrite", 100)
    fs.invalidate_cache()
    names = [p[len("safety/imgs/"):] for p in fs.find("safety/imgs")]
    assert fs.cat_file("safety/imgs/README") == b"theirs"
    assert sum(n.endswith(".tar") for n in names) == 1
    index = json.loads(fs.cat_file("safety/imgs/index.json"))
    assert {f["path"] for f in index["files"]} == set(names) - {"index.json", "README"}


@pytest.mark.slow
def test_s3_journal_names_the_video_each_file_was_written_for(s3_url):
    """The same record on an object store, where the journal is written as segments."""
    from curastream.engine.storage import Storage

    url, fs = s3_url
    storage = Storage("s3://safety/journal-groups", {"client_kwargs": {"endpoint_url": url}})
    _journal_with_videos(storage)
    _check_journal_with_videos(storage)
