"""Object storage (issue 6): both pipelines read from / write to S3 through a real S3-compatible
server on loopback (moto's), survive its outage and injected request faults, and resume there.

- Images: input from ``s3://`` and output to ``s3://``, read back with s3fs + tarfile/pyarrow.
- Videos: output to ``s3://`` (ClipWriter goes through the same atomic Storage).
- The CLI reaches the server through ``AWS_ENDPOINT_URL`` (honoured by botocore >= 1.31), the
  API through ``storage_options={"client_kwargs": {"endpoint_url": ...}}``.
- Faults: the server is stopped mid-run (the CLI must exit non-zero with a one-line error, not
  hang), and single S3 requests are made to fail at seeded random points (``_call_s3`` wrapped).
  After every fault no final-named object is partial (tars read to the end, Parquet and JSON
  parse, MP4s decode) and ``--on-existing resume`` completes the output byte-identical to an
  uninterrupted S3 run into the same prefix.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import s3fs  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from conftest import report  # noqa: E402
from curastream import ImageFilters, ImageRunConfig, VideoRunConfig, run_images  # noqa: E402
from curastream.videos.pipeline import run_videos  # noqa: E402

# a moto S3 server per module and several runs through it: make test, not test-fast
pytestmark = pytest.mark.slow

BUCKET = "curastream-test"
SEED = int(os.environ.get("CURASTREAM_S3_SEED", "6"))
FIGURES = {"faults_injected": 0, "faults_failing_the_run": 0, "faults_absorbed": 0, "temps_left_by_faults": 0,
           "server_outages": 0, "resumes": 0, "items_lost": 0}
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# -- the server ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        deadline = time.monotonic() + 60  # hang guard: returns as soon as the port answers
        while time.monotonic() < deadline:  # wait until it accepts connections
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def options(self) -> dict:
        return {"client_kwargs": {"endpoint_url": self.url}}

    def fs(self) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.url}, skip_instance_cache=True)


@pytest.fixture(scope="module")
def s3(request):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)  # dummy credentials: botocore needs some
    srv = S3Server()
    srv.start()
    srv.fs().mkdir(BUCKET)
    yield srv
    srv.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    report(request.config, "\ns3 summary: " + ", ".join(f"{k}={v}" for k, v in FIGURES.items()))


def _cli_env(srv: S3Server, max_attempts: int | None = None) -> dict[str, str]:
    env = dict(os.environ, **CREDS, AWS_ENDPOINT_URL=srv.url)
    if max_attempts is not None:
        env["AWS_MAX_ATTEMPTS"] = str(max_attempts)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "curastream.cli", *args]


# -- reading the bucket ---------------------------------------------------------------------------
def _snapshot(srv: S3Server, prefix: str) -> dict[str, bytes]:
    fs = srv.fs()
    base = f"{BUCKET}/{prefix}"
    if not fs.exists(base):
        return {}
    paths = fs.find(base)
    return {p[len(base) + 1:]: fs.cat_file(p) for p in paths}


def _wipe(srv: S3Server, prefix: str) -> None:
    fs = srv.fs()
    if fs.exists(f"{BUCKET}/{prefix}"):
        fs.rm(f"{BUCKET}/{prefix}", recursive=True)


def _check_complete(objs: dict[str, bytes]) -> None:
    """Every object under a final name is whole: readable to its end by an independent reader."""
    import av

    for name, data in objs.items():
        if ".tmp-" in name.rsplit("/", 1)[-1]:
            continue  # a temporary: never a final name, removed by the resume
        if name.endswith(".tar"):
            assert len(data) % 512 == 0 and data[-1024:] == b"\0" * 1024, f"{name}: no end-of-archive"
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                for m in tf.getmembers():
                    assert len(tf.extractfile(m).read()) == m.size
        elif name.endswith(".parquet"):
            pq.read_table(io.BytesIO(data))
        elif name.endswith(".json"):
            json.loads(data)
        elif name.endswith(".mp4"):
            with av.open(io.BytesIO(data)) as c:
                assert next(iter(c.decode(video=0)), None) is not None, name
        else:
            raise AssertionError(f"unexpected object {name}")


def _assert_same_output(got: dict[str, bytes], want: dict[str, bytes], varying: set[str]) -> None:
    FIGURES["items_lost"] += len(set(want) - set(got))
    temps = [k for k in got if ".tmp-" in k]
    assert not temps, f"temporaries left: {temps}"
    assert sorted(got) == sorted(want), (sorted(set(got) - set(want))[:5], sorted(set(want) - set(got))[:5])
    for k in want:
        if k not in varying:
            assert got[k] == want[k], f"{k} differs from the uninterrupted run"
    g, w = json.loads(got["index.json"]), json.loads(want["index.json"])
    norm = lambda d: sorted((f["path"], f["bytes"], f["sha256"], f["rows"]) for f in d["files"]  # noqa: E731
                            if f["path"] not in varying)
    assert norm(g) == norm(w)
    listed = {f["path"] for f in g["files"]}
    assert listed == set(got) - {"index.json"}, "index.json lists exactly the objects under the prefix"


# -- inputs --------------------------------------------------------------------------------------
def _make_images(d: Path, n: int = 24) -> None:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for i in range(n):
        low = (rng.random((5, 6, 3)) * 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((160 + 4 * (i % 5), 120), Image.BICUBIC)).astype(np.int16)
        img = np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"img{i:03d}.{'png' if i % 5 == 4 else 'jpg'}", quality=90)
    (d / "broken.jpg").write_bytes((d / "img000.jpg").read_bytes()[:700])


@pytest.fixture(scope="module")
def image_inputs(s3, tmp_path_factory):
    d = tmp_path_factory.mktemp("s3imgs") / "src"
    _make_images(d)
    fs = s3.fs()
    for p in sorted(d.iterdir()):
        fs.put_file(str(p), f"{BUCKET}/in/{p.name}")
    return d


@pytest.fixture(scope="module")
def video_inputs(tmp_path_factory):
    from curastream.samples import make_sample_videos

    d = tmp_path_factory.mktemp("s3vids") / "src"
    make_sample_videos(d)
    (d / "pan_vp9.webm").unlink()  # keep the run short: four H.264 videos
    return d


def _img_cfg(s3: S3Server, out: str, **kw) -> ImageRunConfig:
    return ImageRunConfig(sources=[f"s3://{BUCKET}/in"], output=f"s3://{BUCKET}/{out}", images_per_tar=4,
                          batch_size=4, progress=False, storage_options=s3.options,
                          filters=ImageFilters(min_resolution=None), **kw)


def _vid_cfg(s3: S3Server, src: Path, out: str, **kw) -> VideoRunConfig:
    return VideoRunConfig(sources=[str(src)], output=f"s3://{BUCKET}/{out}", split="fixed", clip_len=1.0,
                          progress=False, storage_options=s3.options, max_workers=3, **kw)


@pytest.fixture(scope="module")
def image_reference(s3, image_inputs):
    run_images(_img_cfg(s3, "img"))
    ref = _snapshot(s3, "img")
    _wipe(s3, "img")
    return ref


@pytest.fixture(scope="module")
def video_reference(s3, video_inputs):
    run_videos(_vid_cfg(s3, video_inputs, "vid"))
    ref = _snapshot(s3, "vid")
    _wipe(s3, "vid")
    return ref


# -- plain runs -------------------------------------------------------------------------------------
def test_images_from_s3_to_s3_read_back(s3, image_inputs, image_reference, tmp_path):
    objs = image_reference
    _check_complete(objs)
    tars = sorted(k for k in objs if k.endswith(".tar"))
    assert len(tars) == 6 and all(k[:-4] + ".parquet" in objs for k in tars)
    keys, members = [], {}
    for t in tars:
        table = pq.read_table(io.BytesIO(objs[t[:-4] + ".parquet"]))
        assert set(table.column("tar_file").to_pylist()) == {f"s3://{BUCKET}/img/{t}"}
        keys += table.column("image_id").to_pylist()
        with tarfile.open(fileobj=io.BytesIO(objs[t])) as tf:
            members.update({m.name: tf.extractfile(m).read() for m in tf.getmembers()})
    assert sorted(keys) == sorted(p.stem for p in image_inputs.iterdir() if p.stem != "broken")
    rej = pq.read_table(io.BytesIO(objs["_curastream/rejects.parquet"])).to_pylist()
    assert [r["image_id"] for r in rej] == ["broken"] and rej[0]["source"] == f"s3://{BUCKET}/in/broken.jpg"
    # the same inputs from local disk give the same image bytes (JPEGs pass through untouched)
    run_images(ImageRunConfig(sources=[str(image_inputs)], output=str(tmp_path / "local"), images_per_tar=4,
                              batch_size=4, progress=False, filters=ImageFilters(min_resolution=None)))
    local = {}
    for t in sorted((tmp_path / "local").glob("*.tar")):
        with tarfile.open(t) as tf:
            local.update({m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".jpg")})
    assert local == {k: v for k, v in members.items() if k.endswith(".jpg")}
    index = json.loads(objs["index.json"])
    assert {f["path"] for f in index["files"]} == set(objs) - {"index.json"}


def test_videos_to_s3_read_back(s3, video_reference):
    objs = video_reference
    _check_complete(objs)
    metas = [json.loads(v) for k, v in objs.items() if k.startswith("metas/v0/")]
    clips = {k for k in objs if k.endswith(".mp4")}
    assert len(metas) >= 12 and len(clips) == len(metas)
    for m in metas:
        loc = m["clip_location"]
        assert loc.startswith(f"s3://{BUCKET}/vid/") and loc[len(f"s3://{BUCKET}/vid/"):] in clips
    assert {k for k in objs if k.startswith("processed_videos/")} == {
        f"processed_videos/{n}.json" for n in ("pan_fast.mp4", "pan_slow.mp4", "static.mp4", "three_shots.mp4")}


def test_api_resume_on_s3_is_a_no_op_when_done(s3, image_inputs, image_reference):
    run_images(_img_cfg(s3, "img"))
    run_images(_img_cfg(s3, "img", on_existing="resume"))
    FIGURES["resumes"] += 1
    _assert_same_output(_snapshot(s3, "img"), image_reference, varying={"index.json"})
    _wipe(s3, "img")


# -- server outage (the CLI, AWS_ENDPOINT_URL) --------------------------------------------------------
def _outage(s3: S3Server, cmd: list[str], prefix: str, after_objects: int) -> tuple[subprocess.CompletedProcess, bool]:
    """Start the CLI, stop the server once ``after_objects`` objects exist, wait for the CLI."""
    p = subprocess.Popen(cmd, env=_cli_env(s3, max_attempts=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fs = s3.fs()
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:
        fs.invalidate_cache()
        try:
            n = len(fs.find(f"{BUCKET}/{prefix}"))
        except FileNotFoundError:
            n = 0
        if n >= after_objects:
            break
        time.sleep(0.02)
    stopped = p.poll() is None
    if stopped:
        s3.stop()
        FIGURES["server_outages"] += 1
    try:
        out, err = p.communicate(timeout=120)
    finally:
        if s3.server is None:
            s3.start()
    return subprocess.CompletedProcess(cmd, p.returncode, out.decode(), err.decode()), stopped


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["images", "videos"])
def test_cli_server_outage_then_resume(s3, kind, image_inputs, video_inputs, image_reference, video_reference):
    if kind == "images":
        prefix, ref = "img", image_reference
        cmd = _cmd("images", f"s3://{BUCKET}/in", "--output", f"s3://{BUCKET}/{prefix}", "--images-per-tar", "4",
                   "--batch-size", "4", "--min-resolution", "0", "--no-progress")
        after = 5
    else:
        prefix, ref = "vid", video_reference
        cmd = _cmd("videos", str(video_inputs), "--output", f"s3://{BUCKET}/{prefix}", "--split", "fixed",
                   "--clip-len", "1", "--max-workers", "3", "--no-progress")
        after = 8
    # A dead endpoint must fail the run, not hang it: _outage's communicate(timeout=120) is the
    # hang guard, and the exit code and message say the run gave up by itself.
    r, stopped = _outage(s3, cmd, prefix, after)
    assert stopped, "the run finished before the outage: make the input bigger"
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "error: storage failed" in r.stderr, r.stderr
    assert "--on-existing resume" in r.stderr
    partial = _snapshot(s3, prefix)
    assert "index.json" not in partial
    _check_complete(partial)
    r2 = subprocess.run(cmd + ["--on-existing", "resume"], env=_cli_env(s3), capture_output=True, text=True,
                        timeout=300)
    FIGURES["resumes"] += 1
    assert r2.returncode == 0, r2.stderr
    got = _snapshot(s3, prefix)
    _assert_same_output(got, ref, varying={"index.json", "_curastream/summary.json"})
    _wipe(s3, prefix)


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_cli_short_outage_is_retried_transparently(s3, image_inputs, image_reference):
    """A blip shorter than botocore's retry budget (default: 5 attempts, exponential backoff)
    costs nothing: the run finishes and its output is the uninterrupted one."""
    cmd = _cmd("images", f"s3://{BUCKET}/in", "--output", f"s3://{BUCKET}/img", "--images-per-tar", "4",
               "--batch-size", "4", "--min-resolution", "0", "--no-progress")
    p = subprocess.Popen(cmd, env=_cli_env(s3), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fs = s3.fs()
    while p.poll() is None:
        fs.invalidate_cache()
        try:
            if len(fs.find(f"{BUCKET}/img")) >= 3:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    blipped = p.poll() is None
    if blipped:
        s3.stop()
        FIGURES["server_outages"] += 1
        time.sleep(0.3)
        s3.start()
    out, err = p.communicate(timeout=180)
    assert blipped, "the run finished before the blip"
    assert p.returncode == 0, err.decode()[-2000:]
    _assert_same_output(_snapshot(s3, "img"), image_reference, varying={"index.json"})
    _wipe(s3, "img")


# -- injected request faults ----------------------------------------------------------------------------
MUTATING = {"put_object", "copy_object", "delete_object", "delete_objects", "create_multipart_upload",
            "upload_part", "complete_multipart_upload"}


class _Faults:
    """Counts S3 requests by kind; fails the ``fail_at``-th mutating one (1-based)."""

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at
        self.mutating = 0
        self.failed: str | None = None


@pytest.fixture
def faults(monkeypatch):
    state = {"f": _Faults()}
    orig = s3fs.S3FileSystem._call_s3

    async def call(self, method, *args, **kwargs):
        f = state["f"]
        if method in MUTATING:
            f.mutating += 1
            if f.fail_at is not None and f.mutating == f.fail_at:
                f.failed = f"{method} {kwargs.get('Key')}"
                FIGURES["faults_injected"] += 1
                raise OSError(f"injected fault: {method} {kwargs.get('Key')}")
        return await orig(self, method, *args, **kwargs)

    from fsspec.asyn import sync_wrapper

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", call)
    # S3File's uploads go through the sync twin, made from the original coroutine at class creation
    monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", sync_wrapper(call))
    return state


def _fault_trials(s3, faults, run, prefix: str, ref: dict[str, bytes], varying: set[str], n: int, seed: int):
    faults["f"] = _Faults()
    run(None)  # count the mutating requests of a clean run
    total = faults["f"].mutating
    _wipe(s3, prefix)
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, total + 1), n))
    for at in points:
        faults["f"] = _Faults(fail_at=at)
        try:
            run(None)
            failed = False
        except Exception as e:  # noqa: BLE001 - the injected fault, however the pipeline wraps it
            assert "injected fault" in f"{e!r} {e.__cause__!r} {e.__context__!r}", repr(e)
            failed = True
        assert faults["f"].failed, f"request {at} of {total} was never made"
        FIGURES["faults_failing_the_run" if failed else "faults_absorbed"] += 1
        # a fault in a best-effort cleanup (removing a temporary) may be absorbed: then the run is whole
        after_fault = _snapshot(s3, prefix)
        _check_complete(after_fault)
        FIGURES["temps_left_by_faults"] += sum(".tmp-" in k for k in after_fault)
        faults["f"] = _Faults()
        run("resume")
        FIGURES["resumes"] += 1
        _assert_same_output(_snapshot(s3, prefix), ref, varying=varying)
        if not failed:
            assert ".tmp-" not in "".join(_snapshot(s3, prefix))
        _wipe(s3, prefix)
    return total


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_injected_faults_images(s3, faults, image_inputs, image_reference):
    def run(mode):
        run_images(_img_cfg(s3, "img", on_existing=mode or "error"))

    total = _fault_trials(s3, faults, run, "img", image_reference, {"index.json"}, n=5, seed=SEED + 1)
    assert total > 40  # 14 files: upload, copy, delete each


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_injected_faults_videos(s3, faults, video_inputs, video_reference):
    def run(mode):
        run_videos(_vid_cfg(s3, video_inputs, "vid", on_existing=mode or "error"))

    total = _fault_trials(s3, faults, run, "vid", video_reference, {"index.json", "_curastream/summary.json"}, n=5,
                          seed=SEED + 2)
    assert total > 100
