"""The CLI explains itself: every option documented and range-checked by flag name, ``-`` is
stdout for every output path, a missing fsspec backend is one line, the streaming API takes what
the runs take, empty and all-rejected runs say so, reject reasons read once, and log lines pass
the progress bar instead of tearing it."""

from __future__ import annotations

import fcntl
import importlib.util
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import media_path
from curastream import ImageFilters, ImageRunConfig, VideoRunConfig, stream_images, stream_videos
from curastream.cli import images, main, videos
from curastream.config import ConfigError
from curastream.engine.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING ")]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def _photos(folder: Path, n: int = 3) -> list[Path]:
    """Small distinct JPEGs (gradients with a shifted square, so none is a near-duplicate)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = Image.linear_gradient("L").resize((160, 120)).convert("RGB")
        img.paste((40 * i, 255 - 60 * i, 90), (10 + 30 * i, 10 + 20 * i, 60 + 30 * i, 50 + 20 * i))
        img.paste((255, 255, 255), (100 - 25 * i, 70, 150 - 25 * i, 110))
        p = folder / f"photo{i}.jpg"
        img.save(p, quality=90)
        out.append(p)
    return out


def _all_commands(cmd: click.Command, path: str = "curastream"):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _all_commands(sub, f"{path} {name}")


# -- help ----------------------------------------------------------------------------------------
def test_every_option_of_every_command_has_help():
    seen = 0
    ctx = click.Context(main)
    for path, cmd in _all_commands(main):
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert (p.help or "").strip(), f"{path} {p.opts[0]} has no help"
            else:  # arguments are listed with their help in the grouped --help
                assert p.get_help_record(ctx)[1].strip(), f"{path} {p.name} has no help"
            seen += 1
    assert seen > 60  # images + videos + demo + the group: the walk really went through them


@pytest.mark.parametrize("cmd,expected", [
    ("images", {"Input": ["--files-from"], "Filter": ["--min-contrast", "--min-entropy", "--dedup-distance"],
                "Performance": ["--batch-size", "--workers"], "Output": ["--stats", "--emit-ipc"]}),
    ("videos", {"Input": ["--input-path"], "Splitting": ["--clip-len"], "Clip": ["--crf"],
                "Filter": ["--motion-filter"], "Performance": ["--max-workers"], "Output": ["--stats"]}),
])
def test_help_sections_hold_the_options_of_their_group(cmd, expected):
    out = _cli(cmd, "--help").output
    sections = dict(re.findall(r"^(\w+) options:\n(.*?)(?=^\w+ options:|\Z)", out, re.S | re.M))
    for title, flags in expected.items():
        for flag in flags:
            assert re.search(rf"^\s+{flag}\b", sections[title], re.M), (title, flag)
    assert "--help" in sections["Other"]


# -- ranges --------------------------------------------------------------------------------------
def _numeric_options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option) and p.metavar in ("INTEGER", "NUMBER")]


@pytest.mark.parametrize("cmd", [images, videos], ids=["images", "videos"])
def test_every_numeric_option_rejects_an_out_of_range_value_by_flag(cmd, tmp_path):
    opts = _numeric_options(cmd)
    assert len(opts) >= 8
    for p in opts:
        flag = p.opts[0]
        # no setting here means anything at minus a billion: a flag that takes it has no range
        line = _error_line(_cli(cmd.name, "src", "-o", str(tmp_path / "out"), flag, "-1000000000"))
        assert line.startswith(f"error: {flag} must be "), line
        assert re.search(r"(>=?|in) -?\d", line), line  # the allowed range is in the message
        assert line.endswith("got -1000000000"), line
    assert not (tmp_path / "out").exists()


def test_values_from_the_api_and_files_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"^filters\.min_sharpness \(--min-sharpness\) must be a number >= 0, got -5$"):
        ImageRunConfig(sources=["a"], filters=ImageFilters(min_sharpness=-5)).validate()
    with pytest.raises(ConfigError, match=r"^batch_size \(--batch-size\) must be an integer >= 1, got 0$"):
        ImageRunConfig(sources=["a"], batch_size=0).validate()
    f = tmp_path / "c.toml"
    f.write_text("min_resolution = -1\n")
    assert _error_line(_cli("images", "a", "-o", "o", "--config", str(f))) == \
        "error: --min-resolution must be an integer >= 1 (0 = off), got -1"


# -- "-" is stdout -------------------------------------------------------------------------------
def _run_in(tmp_path, monkeypatch, *args):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    r = _cli(*args)
    assert r.exit_code == 0, r.output
    assert os.listdir(work) == [], "a file named '-' (or anything else) was written into the cwd"
    return r


@pytest.fixture
def photo_dir(tmp_path):
    d = tmp_path / "photos"
    _photos(d)
    return d


@pytest.fixture
def one_video(tmp_path):
    from videogen import render_pan

    d = tmp_path / "vids"
    d.mkdir()
    render_pan(d / "pan.mp4", speed=(6, 0), size=(192, 144), seconds=3.0)
    return d


def test_dash_is_stdout_for_stats_and_ipc_on_images(tmp_path, monkeypatch, photo_dir):
    r = _run_in(tmp_path, monkeypatch, "images", str(photo_dir), "-o", str(tmp_path / "o1"), "--stats", "-")
    assert json.loads(r.stdout)["items_out"] == 3
    r = _run_in(tmp_path / "o1", monkeypatch, "images", str(photo_dir), "-o", str(tmp_path / "o2"), "--emit-ipc", "-")
    table = pa.ipc.open_stream(io.BytesIO(r.stdout_bytes)).read_all()
    assert sorted(table.column("image_id").to_pylist()) == ["photo0", "photo1", "photo2"]
    assert "images: 3 in" in r.stderr  # the summary moved out of the way of the records


def test_dash_is_stdout_for_stats_and_ipc_on_videos(tmp_path, monkeypatch, one_video):
    r = _run_in(tmp_path, monkeypatch, "videos", str(one_video), "-o", str(tmp_path / "o1"), "--stats", "-")
    assert json.loads(r.stdout)["items_in"] == 1
    r = _run_in(tmp_path / "o1", monkeypatch, "videos", str(one_video), "-o", str(tmp_path / "o2"),
                "--emit-ipc", "-")
    assert pa.ipc.open_stream(io.BytesIO(r.stdout_bytes)).read_all().num_rows >= 1


def test_output_dash_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--output must be a folder or URL" in _error_line(_cli("images", "x", "-o", "-"))
    assert not (tmp_path / "-").exists()


# -- fsspec backends -----------------------------------------------------------------------------
@pytest.mark.parametrize("args,package", [
    (["images", "SRC", "-o", "gs://bucket/out"], "gcsfs"),
    (["images", "gs://bucket/photos", "-o", "OUT"], "gcsfs"),
    (["images", "SRC", "-o", "OUT", "--stats", "az://c/stats.json"], "adlfs"),
    (["videos", "az://container/v.mp4", "-o", "OUT"], "adlfs"),
    (["videos", "SRC", "-o", "OUT", "--emit-ipc", "gs://b/r.arrow"], "gcsfs"),
])
def test_a_missing_fsspec_backend_is_one_line_naming_the_package(tmp_path, photo_dir, args, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    args = [str(photo_dir) if a == "SRC" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    line = _error_line(_cli(*args))
    assert f"pip install {package}" in line, line
    assert not (tmp_path / "out").exists()


def test_a_missing_backend_met_mid_listing_is_one_line(tmp_path):
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    lst = tmp_path / "list.txt"
    lst.write_text("gs://bucket/a.jpg\n")
    assert "gcsfs" in _error_line(_cli("images", "--files-from", str(lst), "-o", str(tmp_path / "out")))


# -- streaming API takes what the runs take -------------------------------------------------------
def test_stream_images_takes_folders_globs_and_validates(tmp_path, photo_dir):
    (photo_dir / "sub").mkdir()
    _photos(tmp_path / "more", 4)[3].rename(photo_dir / "sub" / "deeper.jpg")
    rows = pa.Table.from_batches(list(stream_images([str(photo_dir)]))).to_pylist()
    assert sorted(r["image_id"] for r in rows) == ["photo0", "photo1", "photo2", "sub_deeper"]  # keys: path below the folder
    assert all(r["status"] == "ok" and r["width"] == 160 for r in rows)
    globbed = pa.Table.from_batches(list(stream_images(str(photo_dir / "photo*.jpg"))))
    assert globbed.num_rows == 3
    # the config's own sources, like run_images
    assert pa.Table.from_batches(list(stream_images(cfg=ImageRunConfig(sources=[str(photo_dir)])))).num_rows == 4
    with pytest.raises(ConfigError, match=r"^workers \(--workers\)"):
        stream_images([str(photo_dir)], ImageRunConfig(sources=[], workers=0))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        stream_images([str(empty)])


def test_stream_images_mixes_paths_and_bytes(photo_dir):
    data = (photo_dir / "photo1.jpg").read_bytes()
    rows = pa.Table.from_batches(list(stream_images(iter([data, str(photo_dir / "photo0.jpg"), data])))).to_pylist()
    assert [r["image_id"] for r in rows] == ["item000000000", "photo0", "item000000002"]
    assert rows[0]["sharpness"] == rows[2]["sharpness"] != rows[1]["sharpness"]


def test_stream_videos_takes_folders_and_validates(tmp_path, one_video):
    batches = list(stream_videos([str(one_video)]))
    assert batches and sum(b.num_rows for b in batches) >= 1
    with pytest.raises(ConfigError, match=r"^clip_len \(--clip-len\)"):
        stream_videos(str(one_video), VideoRunConfig(sources=[], clip_len=0))
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("not a video")
    with pytest.raises(FileNotFoundError, match="no videos found"):
        stream_videos([str(tmp_path / "none")])


# -- empty and all-rejected runs -------------------------------------------------------------------
@pytest.mark.parametrize("cmd,what", [("images", "images"), ("videos", "videos")])
def test_no_inputs_is_an_error_and_writes_nothing(tmp_path, cmd, what):
    (tmp_path / "empty").mkdir()
    r = _cli(cmd, str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert r.exit_code == 2, r.output
    # the image listing also warns about each empty folder, on the line before
    assert r.stderr.splitlines()[-1] == f"error: no {what} found in {tmp_path / 'empty'}"
    assert not (tmp_path / "out").exists()


def test_all_rejected_warns_and_exits_0(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    good = _photos(tmp_path / "src", 2)
    for p in good:  # cut short: unreadable images, not a failed run
        (bad / p.name).write_bytes(p.read_bytes()[:300])
    (bad / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200)
    r = _cli("images", str(bad), "-o", str(tmp_path / "oi"), "--no-progress")
    assert r.exit_code == 0, r.output
    assert "warning: all 2 images were rejected" in r.stderr
    r = _cli("videos", str(bad / "clip.mp4"), "-o", str(tmp_path / "ov"), "--no-progress")
    assert r.exit_code == 0, r.output
    assert "warning: all 1 videos were rejected" in r.stderr


# -- reject reasons read once ----------------------------------------------------------------------
def _rejects(out: Path) -> list[dict]:
    found = sorted(out.rglob("rejects.parquet"))
    assert len(found) == 1, found
    return pq.read_table(found[0]).to_pylist()


def _assert_said_once(reason: str, source: str) -> None:
    parts = [p.strip() for p in reason.split(": ")]
    for a, b in zip(parts, parts[1:]):
        assert a != b, f"repeated prefix {a!r} in {reason!r}"
    assert source not in reason, f"the source column already names it: {reason!r}"


def test_reject_reasons_of_real_broken_files_say_each_prefix_once(tmp_path, media_dir):
    bad = media_dir / "bad"
    r = _cli("images", str(bad), "-o", str(tmp_path / "oi"), "--no-progress")
    assert r.exit_code == 0, r.output
    rows = _rejects(tmp_path / "oi")
    assert len(rows) >= 5
    by_file = {Path(x["source"]).name: x["reason"] for x in rows}
    # what the files are, from the media MANIFEST
    assert by_file["pillow_truncated_jpeg.jpg"].startswith("truncated: ")
    assert by_file["pillow_broken_data_stream.png"].startswith("corrupt: ")
    for x in rows:
        _assert_said_once(x["reason"], x["source"])
    vids = [str(bad / n) for n in ("derived_nasa_13013_no_moov.mp4", "derived_cityCC0_truncated40pct.mpg")]
    r = _cli("videos", *vids, "-o", str(tmp_path / "ov"), "--no-progress")
    assert r.exit_code == 0, r.output
    rows = _rejects(tmp_path / "ov")
    assert any("moov atom not found" in x["reason"] for x in rows)
    for x in rows:
        _assert_said_once(x["reason"], x["source"])


# -- progress ----------------------------------------------------------------------------------------
def test_progress_follows_bytes_not_items(capsys):
    p = Progress(4, "img", enabled=True, every_s=0, sizes=[100, 100, 100, 9700])
    p.update(3)  # three small files of four: 3% of the bytes, not 75% of the work
    assert p.fraction == pytest.approx(0.03)
    assert p.eta_s(3.0) == pytest.approx(97.0)
    line = capsys.readouterr().err.strip()
    assert line.startswith("[curastream] 3/4 img") and "3% of bytes" in line
    assert p.line(3.0) == "3/4 img (1.0/s), 3% of bytes, ETA 1m37s"
    unknown = Progress(2, "video", enabled=True, every_s=0, sizes=[None, 500])  # unknown: mean of known
    unknown.update(1)
    assert unknown.fraction == pytest.approx(0.5)
    assert Progress(2, "img", enabled=False, sizes=[None, None]).fraction == 0.0  # items then


def test_log_lines_pass_the_progress_bar_on_a_terminal(tmp_path):
    """On a real terminal (a pty), a WARNING logged mid-run starts its own line: it is not
    appended to the bar's text. The bar counts bytes and shows the item count beside them."""
    webm = media_path("bad", "moviepy_no_duration.webm")  # the sink warns about its header mid-run
    leader, follower = pty.openpty()
    # a pty starts 0 columns wide, where tqdm draws nothing
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "curastream.cli", "videos", str(webm), "-o", str(tmp_path / "o"),
                             "--progress"], stdin=follower, stdout=follower, stderr=follower, env=env, cwd=tmp_path)
    os.close(follower)
    out = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    assert proc.wait(timeout=30) == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    segments = [s.strip(" ") for s in re.split(r"[\r\n]", text)]
    warned = [s for s in segments if "no duration" in s]
    assert warned and all(s.startswith("WARNING ") for s in warned), warned
    bars = [s for s in segments if re.search(r"\d/1 video\]$", s)]
    assert bars and all(re.search(r"B/s, \d/1 video\]$", s) for s in bars), bars  # a bytes bar, items beside
    assert bars[-1].startswith("100%")


def test_settings_both_media_take_are_one_definition():
    """A setting images and videos both take has one default, one check and one help text
    (issue 11: the two configs had drifted); only the inputs and models differ by medium."""
    from dataclasses import fields

    from curastream.config import ImageRunConfig, VideoRunConfig

    img = {f.name: f for f in fields(ImageRunConfig)}
    vid = {f.name: f for f in fields(VideoRunConfig)}
    both = sorted(set(img) & set(vid) - {"sources", "models"})
    assert {"output", "on_existing", "runner", "storage_options", "stats"} <= set(both)
    drift = [n for n in both if (img[n].default, img[n].metadata) != (vid[n].default, vid[n].metadata)]
    assert drift == []
