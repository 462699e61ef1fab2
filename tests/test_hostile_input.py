"""Bad and hostile input (issue 6): nothing crashes or hangs, every bad item is rejected with a
reason, good items in the same run are all written, and names from the input never steer an
output path outside the output directory.

Covers /work/shared/media/bad plus generated cases: truncation at random offsets and random
bytes (property-based, hypothesis), zero-byte files, wrong extensions, decompression bombs
(``--max-pixels``), videos with no video frames, absurd frame rates, the per-video time limit,
and hostile names (``../``, absolute paths, NUL, dots, very long and non-UTF-8 names) in file
names, WebDataset member names and Parquet key columns.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import MEDIA, report
from curastream import ImageFilters, ImageRunConfig, VideoRunConfig, run_images
from curastream.videos.pipeline import run_videos

FIGURES = {"bad_inputs": 0, "runs": 0}
HYPO = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _print_figures(request):
    yield
    report(request.config, f"\nhostile-input summary: {FIGURES['bad_inputs']} bad inputs tried in "
                           f"{FIGURES['runs']} runs, 0 crashes, 0 hangs")


# -- generated media ------------------------------------------------------------------------------
def _rgb(seed: int, w: int = 96, h: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = (rng.random((4, 5, 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC)).astype(np.int16)
    return np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def _jpeg(seed: int, progressive: bool = False, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(seed, **kw)).save(buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


def _png(seed: int, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(seed, **kw)).save(buf, "PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bomb(w: int, h: int) -> bytes:
    """A 100-byte PNG whose header claims w x h pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _jpeg_bomb() -> bytes:
    """A real JPEG whose SOF0 claims 65000 x 65000."""
    data = bytearray(_jpeg(3))
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, 65000, 65000)
    return bytes(data)


def _mp4(path: Path, seconds: float = 2.0, fps: int = 10, faststart: bool = True, seed: int = 0) -> Path:
    import av

    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=opts) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.options = {"preset": "ultrafast", "g": str(fps)}
        base = _rgb(seed, 160, 64)
        for i in range(int(seconds * fps)):
            frame = np.ascontiguousarray(base[:, 2 * i: 2 * i + 96]) if 2 * i + 96 <= 160 else base[:, -96:]
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _audio_only_mp4(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        s.layout = "mono"
        for i in range(8):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 8000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _fast_fps_mkv(path: Path) -> Path:
    """30 frames at 100000 fps (Matroska's millisecond clock makes it 1000): 0.03 s of video."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=100000)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8, np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _slow_fps_mkv(path: Path) -> Path:
    """Three frames 1000 s apart: a header that would turn into 3000 one-second clips."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(1, 1000))
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1000, 1)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 80, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1000, 1)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


# -- runs and readers ------------------------------------------------------------------------------
def _images(srcs, out: Path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("filters", ImageFilters(min_resolution=None, dedup=False))
    FIGURES["runs"] += 1
    return run_images(ImageRunConfig(sources=[str(s) for s in srcs], output=str(out), **kw))


def _videos(srcs, out: Path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("split", "fixed")
    kw.setdefault("clip_len", 1.0)
    kw.setdefault("max_workers", 2)
    FIGURES["runs"] += 1
    return run_videos(VideoRunConfig(sources=[str(s) for s in srcs], output=str(out), **kw))


def _kept(out: Path) -> dict[str, dict]:
    rows = {}
    for p in sorted(out.glob("images-*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["image_id"] not in rows, f"{r['image_id']} written twice"
            rows[r["image_id"]] = r
    return rows


def _rejects(out: Path) -> dict[str, dict]:
    return {r["image_id"]: r for r in pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()}


def _tar_members(out: Path) -> dict[str, bytes]:
    members = {}
    for p in sorted(out.glob("images-*.tar")):
        with tarfile.open(p) as tf:
            for m in tf.getmembers():
                members[m.name] = tf.extractfile(m).read()
    return members


def _assert_safe_member(name: str) -> None:
    assert name and "/" not in name and "\\" not in name and "\x00" not in name, name
    assert not name.startswith((".", "/")) and ".." not in name, name
    assert name.count(".") == 1, name  # key.ext: WebDataset splits at the first dot


def _video_reject_reasons(out: Path) -> dict[str, tuple[str, str]]:
    rows = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    return {os.path.basename(r["source"]): (r["stage"], r["reason"]) for r in rows}


def _processed(out: Path) -> set[str]:
    d = out / "processed_videos"
    return {p.relative_to(d).as_posix()[: -len(".json")] for p in d.rglob("*.json")} if d.is_dir() else set()


def _all_clips_open(out: Path) -> int:
    import av

    n = 0
    for d in ("clips", "filtered_clips"):
        for p in (out / d).rglob("*.mp4") if (out / d).is_dir() else ():
            with av.open(str(p)) as c:
                assert c.streams.video and sum(1 for _ in c.decode(video=0)) > 0, p
            n += 1
    return n


def _no_temps(out: Path) -> None:
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


# -- shared bad media ------------------------------------------------------------------------------
def test_shared_bad_images_are_rejected_and_good_ones_written(tmp_path):
    if not (MEDIA / "bad").is_dir():
        pytest.skip("shared media absent")
    src = tmp_path / "src"
    src.mkdir()
    bad = [p for p in (MEDIA / "bad").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    for p in bad:
        shutil.copyfile(p, src / p.name)
    for name in ("go_video-005.gray.jpeg", "opencv_left01.jpg", "skimage_coins.png"):
        shutil.copyfile(MEDIA / "images" / name, src / name)
    out = tmp_path / "out"
    _images([src], out, filters=ImageFilters(dedup=False))  # default min side: the 1-pixel file is filtered
    FIGURES["bad_inputs"] += len(bad)
    kept, rej = _kept(out), _rejects(out)
    assert sorted(kept) == sorted(["go_video-005_gray", "opencv_left01", "skimage_coins"])
    assert len(rej) == len(bad) and all(len(r["reason"]) > 5 and r["stage"] for r in rej.values())
    _no_temps(out)


def test_shared_bad_videos_are_rejected_or_salvaged(tmp_path):
    if not (MEDIA / "bad").is_dir():
        pytest.skip("shared media absent")
    bad = sorted(p for p in (MEDIA / "bad").iterdir()
                 if p.suffix.lower() in (".mp4", ".mpg", ".webm") or p.name == "pillow_truncated_jpeg.jpg")
    good = _mp4(tmp_path / "good.mp4")
    out = tmp_path / "out"
    stats = _videos([good, *bad], out)
    FIGURES["bad_inputs"] += len(bad)
    rej = _video_reject_reasons(out)
    assert rej["derived_nasa_13013_no_moov.mp4"][1].endswith("moov atom not found (unfinished or truncated MP4: no index)")
    assert "still image" in rej["pillow_truncated_jpeg.jpg"][1]
    # A cut-short MPEG-PS and a WebM without duration still hold video: salvaged, or rejected with a reason.
    done = _processed(out)
    assert "good.mp4" in {Path(d).name for d in done}
    for p in bad:
        assert (p.name in rej) != any(Path(d).name == p.name for d in done), p.name
    assert stats.items_in == len(bad) + 1
    assert _all_clips_open(out) > 0
    _no_temps(out)


# -- generated bad images ----------------------------------------------------------------------------
def test_generated_bad_images(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = {"good_a": _jpeg(1), "good_b": _png(2)}
    (src / "good_a.jpg").write_bytes(good["good_a"])
    (src / "good_b.png").write_bytes(good["good_b"])
    # a PNG named .jpg and a JPEG named .png are images: the content decides, not the name
    (src / "png_named.jpg").write_bytes(_png(3))
    (src / "jpeg_named.png").write_bytes(_jpeg(4))
    bad = {
        "zero": ("zero.jpg", b""),
        "zero_png": ("zero_png.png", b""),
        "random_jpg": ("random_jpg.jpg", np.random.default_rng(1).bytes(4000)),
        "random_webp": ("random_webp.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 " + np.random.default_rng(2).bytes(500)),
        "text": ("text.jpg", b"this is not an image\n" * 20),
        "bomb_png": ("bomb_png.png", _png_bomb(100_000, 100_000)),
        "bomb_jpeg": ("bomb_jpeg.jpg", _jpeg_bomb()),
        "tiny_header": ("tiny_header.jpg", b"\xff\xd8\xff"),
        "png_sig_only": ("png_sig_only.png", b"\x89PNG\r\n\x1a\n"),
        "mp4_named": ("mp4_named.jpg", _mp4(tmp_path / "v.mp4", seconds=0.5).read_bytes()),
        "gif_junk": ("gif_junk.gif", b"GIF89a" + b"\xff" * 50),
        "tiff_junk": ("tiff_junk.tif", b"II*\x00" + b"\x00" * 40),
    }
    for name, data in bad.values():
        (src / name).write_bytes(data)
    out = tmp_path / "out"
    _images([src], out)
    FIGURES["bad_inputs"] += len(bad)
    kept, rej = _kept(out), _rejects(out)
    assert sorted(kept) == sorted([*good, "png_named", "jpeg_named"])
    assert sorted(rej) == sorted(bad)
    assert rej["bomb_png"]["reason"].startswith("too_many_pixels") and rej["bomb_jpeg"]["reason"].startswith(
        "too_many_pixels")
    assert all(r["reason"] for r in rej.values())
    members = _tar_members(out)
    for k in kept:  # every written image is a real, complete JPEG
        Image.open(io.BytesIO(members[f"{k}.jpg"])).load()
    _no_temps(out)


def test_max_pixels_is_configurable_from_the_cli(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.jpg").write_bytes(_jpeg(1, w=64, h=64))  # 4096 px
    (src / "large.jpg").write_bytes(_jpeg(2, w=200, h=100))  # 20000 px
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "curastream.cli", "images", str(src), "--output", str(out),
                        "--max-pixels", "10000", "--min-resolution", "0", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    FIGURES["runs"] += 1
    FIGURES["bad_inputs"] += 1
    assert r.returncode == 0, r.stderr
    assert list(_kept(out)) == ["small"]
    assert _rejects(out)["large"]["reason"].startswith("too_many_pixels")


# -- property-based: truncation and random bytes ----------------------------------------------------------
SOURCES = {"jpeg": lambda: _jpeg(11), "progressive": lambda: _jpeg(12, progressive=True), "png": lambda: _png(13)}
_CACHE: dict[str, bytes] = {}


def _source(kind: str) -> bytes:
    if kind not in _CACHE:
        _CACHE[kind] = SOURCES[kind]()
    return _CACHE[kind]


def _strictly_decodable(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not a complete image"
        return False


def _check_hostile_image_run(files: dict[str, bytes]) -> None:
    """Run one good image plus ``files``; the good one is written, each hostile one either
    rejected with a reason or written only if an independent strict decoder reads it whole."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "src"
        src.mkdir()
        good = _source("jpeg")
        (src / "good.jpg").write_bytes(good)
        for name, data in files.items():
            (src / name).write_bytes(data)
        out = Path(d) / "out"
        _images([src], out)
        FIGURES["bad_inputs"] += len(files)
        kept, rej = _kept(out), _rejects(out)
        members = _tar_members(out)
        assert members["good.jpg"] == good, "a clean JPEG passes through unchanged"
        for name, data in files.items():
            key = name.rsplit(".", 1)[0]
            assert (key in kept) != (key in rej), f"{name}: written {key in kept}, rejected {key in rej}"
            if key in rej:
                assert rej[key]["stage"] in ("read", "decode") and len(rej[key]["reason"]) > 5
            else:
                assert _strictly_decodable(data), f"{name} was written but is not a complete image"
                Image.open(io.BytesIO(members[f"{key}.jpg"])).load()
        _no_temps(out)


@pytest.mark.slow
@settings(max_examples=40, **HYPO)
@given(kind=st.sampled_from(sorted(SOURCES)), cuts=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1,
                                                              max_size=3))
def test_truncated_images_property(kind, cuts):
    data = _source(kind)
    ext = "png" if kind == "png" else "jpg"
    files = {f"cut{i}_{int(c * len(data))}.{ext}": data[: int(c * len(data))] for i, c in enumerate(cuts)}
    _check_hostile_image_run(files)


@pytest.mark.slow
@settings(max_examples=40, **HYPO)
@given(blobs=st.lists(st.tuples(st.sampled_from(["jpg", "png", "webp", "tif", "bmp", "gif", "jpeg"]),
                                st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP",
                                                 b"II*\0", b"BM", b"GIF89a"]),
                                st.binary(min_size=0, max_size=2000)), min_size=1, max_size=4))
def test_random_bytes_with_image_extensions_property(blobs):
    files = {f"blob{i}.{ext}": magic + body for i, (ext, magic, body) in enumerate(blobs)}
    _check_hostile_image_run(files)


# -- videos -----------------------------------------------------------------------------------------------
def test_generated_bad_videos(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _mp4(src / "good.mp4", seconds=2.0)
    bad = {
        "zero.mp4": b"",
        "random.mp4": np.random.default_rng(5).bytes(5000),
        "random.mkv": b"\x1aE\xdf\xa3" + np.random.default_rng(6).bytes(3000),
        "jpeg_named.mp4": _jpeg(7),
        "png_named.webm": _png(8),
        "header_only.mp4": _mp4(tmp_path / "full.mp4", faststart=False).read_bytes()[:600],
        "text.avi": b"RIFF not really an avi\n" * 10,
    }
    for name, data in bad.items():
        (src / name).write_bytes(data)
    _audio_only_mp4(src / "audio_only.mp4")
    _slow_fps_mkv(src / "slow_fps.mkv")
    _fast_fps_mkv(src / "fast_fps.mkv")  # odd but valid: processed, too short for a clip
    bad_names = sorted([*bad, "audio_only.mp4", "slow_fps.mkv"])
    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=64x48:r=25",
                        "-frames:v", "0", "-c:v", "mpeg4", str(src / "zero_frames.mp4")], check=True, timeout=60)
        bad_names.append("zero_frames.mp4")
    out = tmp_path / "out"
    t0 = time.monotonic()
    stats = _videos([src], out)
    FIGURES["bad_inputs"] += len(bad_names)
    assert time.monotonic() - t0 < 60
    rej = _video_reject_reasons(out)
    assert sorted(rej) == sorted(bad_names)
    assert all(stage in ("read", "probe", "decode") and len(reason) > 5 for stage, reason in rej.values())
    assert "no video stream" in rej["audio_only.mp4"][1]
    assert "frame rate" in rej["slow_fps.mkv"][1]
    assert "still image" in rej["jpeg_named.mp4"][1]
    assert "empty file" in rej["zero.mp4"][1]
    assert _processed(out) == {"good.mp4", "fast_fps.mkv"}
    assert json.loads((out / "processed_videos" / "fast_fps.mkv.json").read_bytes())["num_total_clips"] == 0
    assert _all_clips_open(out) == 2
    assert stats.items_in == len(bad_names) + 2 and stats.items_rejected == len(bad_names)
    summary = json.loads((out / "_curastream" / "summary.json").read_bytes())
    assert summary["totals"]["videos_rejected"] == len(bad_names)
    _no_temps(out)


_VIDEOS: dict[str, Path] = {}


def _test_videos() -> dict[str, Path]:
    """A 3 s faststart MP4 to cut (its index survives any cut past the header) and a good one."""
    if not _VIDEOS:
        d = Path(tempfile.mkdtemp(prefix="curastream-hostile-"))
        _VIDEOS["src"] = _mp4(d / "src.mp4", seconds=3.0, seed=9)
        _VIDEOS["good"] = _mp4(d / "good.mp4", seconds=1.0, seed=10)
    return _VIDEOS


@pytest.mark.slow
@settings(max_examples=15, **HYPO)
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
# Cuts that once ended the whole run: PyAV gave the stream no codec context (AttributeError).
@example(cut=0.0198)
@example(cut=0.0239)
def test_truncated_video_property(cut):
    vids = _test_videos()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "src"
        src.mkdir()
        full = vids["src"].read_bytes()
        (src / "cut.mp4").write_bytes(full[: int(cut * len(full))])
        shutil.copyfile(vids["good"], src / "good.mp4")
        out = Path(d) / "out"
        _videos([src], out)
        FIGURES["bad_inputs"] += 1
        rej, done = _video_reject_reasons(out), _processed(out)
        assert "good.mp4" in done
        assert ("cut.mp4" in rej) != ("cut.mp4" in done)
        if "cut.mp4" in rej:
            assert len(rej["cut.mp4"][1]) > 5
        _all_clips_open(out)
        _no_temps(out)


def test_video_time_limit_rejects_and_the_run_goes_on(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = []
    for name in ("pyscenedetect_testvideo.mp4", "moviepy_fire2.mp4"):
        if (MEDIA / "videos" / name).exists():
            shutil.copyfile(MEDIA / "videos" / name, src / name)
            names.append(name)
    if not names:
        _mp4(src / "gen.mp4", seconds=8.0)
        names.append("gen.mp4")
    (src / "junk.mp4").write_bytes(b"junk" * 100)
    out = tmp_path / "out"
    stats = _videos([src], out, video_time_limit=0.005)
    FIGURES["bad_inputs"] += len(names) + 1
    rej = _video_reject_reasons(out)
    assert sorted(rej) == sorted(names + ["junk.mp4"])
    import re

    import av

    for n in names:
        stage, reason = rej[n]
        assert stage == "decode" and "time limit" in reason, reason
        # The limit cut the decode short: counted in frames, not in seconds, which load stretches.
        with av.open(str(src / n)) as c:
            total = c.streams.video[0].frames or sum(1 for _ in c.decode(video=0))
        done = re.search(r"after (\d+) frames", reason)
        assert done and int(done.group(1)) < total, (reason, total)
    assert stats.rejected_by_reason.get("decode:time_limit") == len(names)
    assert (out / "index.json").exists() and (out / "_curastream" / "summary.json").exists()


# -- hostile names ----------------------------------------------------------------------------------------
def _snapshot(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*")}


def _hostile_image_inputs(src: Path) -> int:
    """Write inputs with hostile names; returns how many are inputs (dot-names are hidden files,
    skipped like every walk skips them: "..jpg", "...jpg", "..sub/", the tar's "dir/.hidden.jpg")."""
    src.mkdir()
    data = {i: _jpeg(100 + i) for i in range(45)}
    n = iter(range(45))
    files = ["..jpg", "...jpg", "a..b.jpg", " .jpg", "new\nline.jpg", "back\\slash.jpg", "n" * 240 + ".jpg",
             "-rf.jpg", "index.json.jpg"]
    for name in files:
        (src / name).write_bytes(data[next(n)])
    (src / os.fsdecode(b"\xff\xfe.jpg")).write_bytes(data[next(n)])
    (src / os.fsdecode(b"caf\xe9.jpg")).write_bytes(data[next(n)])
    (src / "..sub").mkdir()
    (src / "..sub" / "x.jpg").write_bytes(data[next(n)])
    (src / "deep" / "a.b").mkdir(parents=True)
    (src / "deep" / "a.b" / "c.jpg").write_bytes(data[next(n)])
    members = ["../evil.jpg", "/abs/path.jpg", "./dot.jpg", "a/../../b.jpg", "x" * 3000 + ".jpg",
               os.fsdecode(b"\xfe\xff") + ".jpg", "c:\\win\\x.jpg", "..\\..\\up.jpg", "dir/.hidden.jpg", "ok.jpg",
               # long names go into PAX records, which carry NUL bytes through
               "p" * 120 + "\x00evil.jpg", "q" * 120 + "/../\x00x.jpg"]
    with tarfile.open(src / "hostile.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        for name in members:
            d = data[next(n)]
            ti = tarfile.TarInfo(name)
            ti.size = len(d)
            tf.addfile(ti, io.BytesIO(d))
    keys = ["../../etc/passwd", "/abs", "a\x00b", "....", "", None, "k" * 5000, "\u202eevil", "a/b/c", "%2e%2e/x"]
    pq.write_table(pa.table({"key": keys, "image": [data[next(n)] for _ in keys]}), src / "hostile.parquet")
    hidden = 4
    return len(files) + 4 + len(members) + len(keys) - hidden


def test_hostile_names_in_images_stay_inside_and_deterministic(tmp_path):
    n_inputs = _hostile_image_inputs(tmp_path / "src")
    before = _snapshot(tmp_path)
    outs = [tmp_path / "out1", tmp_path / "out2"]
    for out in outs:
        _images([tmp_path / "src"], out)
    FIGURES["bad_inputs"] += n_inputs
    after = _snapshot(tmp_path)
    new = {p for p in after - before if not p.startswith(("out1", "out2"))}
    assert not new, f"written outside the output dir: {sorted(new)[:5]}"
    names = []
    for out in outs:
        for p in out.rglob("*"):
            assert os.path.realpath(p).startswith(str(out.resolve()) + os.sep)
        names.append(sorted(p.relative_to(out).as_posix() for p in out.rglob("*")))
        members = _tar_members(out)
        for m in members:
            _assert_safe_member(m)
        kept, rej = _kept(out), _rejects(out)
        assert len(kept) + len(rej) == n_inputs, "every input accounted for"
        assert not rej, {k: r["reason"] for k, r in rej.items()}
        assert len({k.lower() for k in kept}) == len(kept), "keys unique, case-insensitively"
    assert names[0] == names[1]
    m1, m2 = _tar_members(outs[0]), _tar_members(outs[1])
    assert sorted(m1) == sorted(m2) and all(m1[k] == m2[k] for k in m1 if k.endswith(".jpg"))


def test_hostile_names_in_videos(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    clip = _mp4(tmp_path / "base.mp4", seconds=1.0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(clip, outside / "linked.mp4")
    ok_names = ["a..b c.mp4", "new\nline.mp4", "y" * 230 + ".mp4", "-rf.mp4", "back\\slash.mp4"]
    for name in ok_names:
        shutil.copyfile(clip, src / name)
    (src / "link.mp4").symlink_to(outside / "linked.mp4")
    ok_names.append("link.mp4")
    rejected = {"z" * 250 + ".mp4": "name too long", os.fsdecode(b"\xff\xfe.mp4"): "not valid UTF-8"}
    for name in rejected:
        shutil.copyfile(clip, src / name)
    before = _snapshot(tmp_path)
    outs = [tmp_path / "out1", tmp_path / "out2"]
    for out in outs:
        _videos([src], out)
    FIGURES["bad_inputs"] += len(ok_names) + len(rejected)
    new = {p for p in _snapshot(tmp_path) - before if not p.startswith(("out1", "out2"))}
    assert not new, f"written outside the output dir: {sorted(new)[:5]}"
    listings = []
    for out in outs:
        for p in out.rglob("*"):
            assert os.path.realpath(p).startswith(str(out.resolve()) + os.sep) or p.is_symlink()
        assert _processed(out) == set(ok_names)
        rej = _video_reject_reasons(out)
        assert len(rej) == len(rejected)
        for name, why in rejected.items():
            key = os.fsencode(name).decode("utf-8", "backslashreplace")
            assert why in rej[key][1]
        json.loads((out / "_curastream" / "summary.json").read_bytes())
        listings.append(sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                               if p.name not in ("index.json", "summary.json")))
        _no_temps(out)
    assert listings[0] == listings[1]
