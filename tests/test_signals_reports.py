"""Stopping by signal, closed IPC readers, special files and reports that must not mislead.

- SIGTERM / SIGHUP to the CLI stop the run as Ctrl-C does: exit 128+n within seconds, no
  temporaries under the output, no index.json; ``--on-existing resume`` then completes with
  every input exactly once.
- ``--emit-ipc - | head -c 100``: no traceback, the output is complete.
- A FIFO named on the command line or in --files-from, and a dangling symlink, are refused by
  stat with a reason that names them; the run goes on and ends.
- ``--stats`` is checked before any work; ``--stats -`` prints the JSON; ``--output FILE``
  fails with one line.
- An S3 endpoint that accepts and never answers fails the run in bounded time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

CLI = [sys.executable, "-m", "curastream.cli"]
MEDIA = Path(os.environ.get("CURASTREAM_MEDIA", "/work/shared/media"))


def _images(d: Path, n: int) -> Path:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(n):
        img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(img).save(d / f"img{i:04d}.jpg", quality=80)
    return d


def _image_args(src, out: Path, *extra: str) -> list[str]:
    srcs = [str(s) for s in (src if isinstance(src, (list, tuple)) else [src])]
    return CLI + ["images", *srcs, "--output", str(out), "--min-resolution", "0", "--no-progress", *extra]


def _ids(out: Path) -> list[str]:
    ids: list[str] = []
    for p in sorted(out.glob("images-*.parquet")):
        ids += pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()
    return ids


def _stop_mid_run(cmd: list[str], out: Path, sig: int) -> tuple[int, float, str]:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while p.poll() is None and not (out.exists() and any(out.glob("images-*.tar"))) and time.monotonic() - t0 < 60:
        time.sleep(0.005)
    time.sleep(0.2)
    assert p.poll() is None, "the run ended before the signal: make it longer"
    t_sig = time.monotonic()
    p.send_signal(sig)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError(f"no exit within 30 s of signal {sig}")
    dt = time.monotonic() - t_sig
    err = p.stderr.read().decode()
    p.stderr.close()
    return p.returncode, dt, err


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_exits_cleanly_and_resume_completes(tmp_path, sig, code):
    n = 1500
    src = _images(tmp_path / "imgs", n)
    out = tmp_path / "out"
    # small shards and batches: the run lasts seconds and commits many files along the way
    cmd = _image_args(src, out, "--images-per-tar", "3", "--batch-size", "2")
    rc, dt, err = _stop_mid_run(cmd, out, sig)
    assert rc == code, (rc, err)
    assert dt < 3.0, f"took {dt:.2f} s to stop"
    assert "Traceback" not in err, err
    assert f"interrupted by {signal.Signals(sig).name}" in err.strip().splitlines()[-1], err
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / "index.json").exists()
    partial = _ids(out)
    assert 0 < len(partial) < n

    done = subprocess.run(cmd + ["--on-existing", "resume"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    ids = _ids(out)
    assert len(ids) == n and len(set(ids)) == n
    assert (out / "index.json").exists()


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_emit_ipc_to_closed_reader_is_quiet_and_output_complete(tmp_path):
    n = 300
    src = _images(tmp_path / "imgs", n)
    out = tmp_path / "out"
    cmd = " ".join(f"'{a}'" for a in _image_args(src, out, "--images-per-tar", "10", "--emit-ipc", "-"))
    # a real `head` closes the pipe after 100 bytes, long before the run ends
    r = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} 2>'{tmp_path / 'err'}' | head -c 100 >/dev/null"],
                       timeout=100)
    err = (tmp_path / "err").read_text()
    assert r.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err
    assert (out / "index.json").exists()
    assert sorted(_ids(out)) == sorted(set(_ids(out))) and len(_ids(out)) == n


@pytest.mark.timeout(120)
def test_fifo_and_dangling_symlink_named_are_refused_with_reason(tmp_path):
    src = _images(tmp_path / "imgs", 3)
    os.mkfifo(src / "pipe.jpg")
    os.symlink("/nowhere/gone.jpg", src / "dangling.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{src / 'pipe.jpg'}\n{src / 'img0001.jpg'}\n")
    out = tmp_path / "out"
    cmd = _image_args([src / "pipe.jpg", src / "dangling.jpg", src / "img0000.jpg"], out,
                      "--files-from", str(listing))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # each is a reject row with its reason (named twice, the FIFO is one input), never opened
    rows = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    reasons = {os.path.basename(row["source"]): (row["stage"], row["reason"]) for row in rows}
    assert reasons == {"pipe.jpg": ("read", "not a regular file (FIFO)"),
                       "dangling.jpg": ("read", "dangling symlink -> /nowhere/gone.jpg")}, reasons
    assert len(_ids(out)) == 2

    # met in a walk: the FIFO was always skipped; the dangling link now says what it is
    out2 = tmp_path / "out2"
    r = subprocess.run(_image_args(src, out2), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "dangling symlink -> /nowhere/gone.jpg" in r.stderr
    assert len(_ids(out2)) == 3


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_video_fifo_and_dangling_symlink_rejected_with_reason(tmp_path):
    from curastream.samples import make_sample_videos

    vids = tmp_path / "vids"
    good = make_sample_videos(vids)[0].path
    os.mkfifo(vids / "pipe.mp4")
    os.symlink("/nowhere/gone.mp4", vids / "dangling.mp4")
    out = tmp_path / "out"
    r = subprocess.run(CLI + ["videos", str(vids / "pipe.mp4"), str(vids / "dangling.mp4"), str(good),
                              "--output", str(out), "--no-progress", "--split", "fixed", "--clip-len", "1"],
                       capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    reasons = {os.path.basename(row["source"]): row["reason"] for row in rows}
    assert reasons["pipe.mp4"].endswith("not a regular file (FIFO)"), reasons
    assert reasons["dangling.mp4"].endswith("dangling symlink -> /nowhere/gone.mp4"), reasons
    assert (out / "index.json").exists()


def test_stats_path_checked_before_work_and_dash_means_stdout(tmp_path):
    src = _images(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    (tmp_path / "afile").write_text("in the way")
    r = subprocess.run(_image_args(src, out, "--stats", str(tmp_path / "afile" / "sub" / "s.json")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: --stats cannot be written:") and "afile is a file" in r.stderr
    assert not out.exists()

    # a folder that does not exist yet is made (stats beside or inside --output are common)
    r = subprocess.run(_image_args(src, out, "--stats", str(tmp_path / "new" / "s.json")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "new" / "s.json").read_text())["items_in"] == 4

    shutil.rmtree(out)

    r = subprocess.run(_image_args(src, out, "--stats", "-"), capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["items_in"] == 4 and doc["kind"] == "images"
    assert not (tmp_path / "-").exists()
    assert "output:" in r.stderr  # the summary moved aside for the JSON


def test_output_naming_a_file_fails_in_one_line(tmp_path):
    src = _images(tmp_path / "imgs", 2)
    target = tmp_path / "afile"
    target.write_text("keep me")
    r = subprocess.run(_image_args(src, target), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: --output {target} is a file, not a folder"
    assert target.read_text() == "keep me"


class _SilentServer:
    """Accepts TCP connections and never answers: an endpoint that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hung_s3_endpoint_fails_in_bounded_time(tmp_path, monkeypatch):
    pytest.importorskip("s3fs")
    from curastream import ImageRunConfig, run_images
    from curastream.cli import _is_storage_error

    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    src = _images(tmp_path / "imgs", 2)
    srv = _SilentServer()
    try:
        opts = {"client_kwargs": {"endpoint_url": srv.url},
                "config_kwargs": {"connect_timeout": 1, "read_timeout": 1,
                                  "retries": {"total_max_attempts": 1}}}
        t0 = time.monotonic()
        with pytest.raises(Exception) as ei:
            run_images(ImageRunConfig(sources=[str(src)], output="s3://bucket/out", storage_options=opts,
                                      progress=False))
        dt = time.monotonic() - t0
    finally:
        srv.close()
    assert srv.conns, "the run never reached the endpoint"
    assert _is_storage_error(ei.value), repr(ei.value)
    assert "timeout" in f"{type(ei.value).__name__} {ei.value}".lower()
    assert dt < 30, f"took {dt:.1f} s"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_hung_s3_endpoint_cli_default_timeouts(tmp_path):
    pytest.importorskip("s3fs")
    src = _images(tmp_path / "imgs", 2)
    srv = _SilentServer()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=srv.url)
    try:
        t0 = time.monotonic()
        r = subprocess.run(_image_args(src, "s3://bucket/out"), capture_output=True, text=True, timeout=140, env=env)
        dt = time.monotonic() - t0
    finally:
        srv.close()
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: storage failed:"), r.stderr
    assert dt < 75, f"took {dt:.1f} s with the default timeouts"
