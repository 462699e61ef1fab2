"""One item's trouble stays that item's: transient read failures are retried (in the run, then on
resume), any exception in a stage is that item's reject, and degenerate sizes (a 2x2 video, a
3000x4 one with previews, a PNG header claiming 10^10 pixels) never end a run."""

from __future__ import annotations

import errno
import io
import json
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import simplejpeg
from PIL import Image

from curastream import ImageFilters, ImageRunConfig, VideoRunConfig, run_images, run_videos
from curastream.engine.storage import Storage
from curastream.images import pipeline as image_pipeline
from curastream.images import reading
from curastream.images import stages as image_stages
from curastream.images.inputs import ImageInput
from curastream.videos import analyze as video_analyze
from curastream.videos import stages as video_stages
from curastream.videos.clip_preview import WEBP_MAX_SIDE, make_preview
from curastream.writers.rejects import REJECTS_NAME, read_rejects

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "curastream")


# -- helpers -----------------------------------------------------------------------------------
def _jpeg(path: Path, seed: int, w: int = 80, h: int = 64) -> None:
    rng = np.random.default_rng(seed)
    path.write_bytes(simplejpeg.encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), quality=90))


def _photos(d: Path, n: int = 3) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        _jpeg(d / f"p{k}.jpg", k)
    return [f"p{k}" for k in range(n)]


def _written(out: Path) -> list[str]:
    """Keys of every image in the output's tars, duplicates kept."""
    keys = []
    for t in sorted(out.glob("images-*.tar")):
        with tarfile.open(t) as tf:
            keys += [m.name.rsplit(".", 1)[0] for m in tf.getmembers() if m.name.endswith(".jpg")]
    return keys


def _rejects(out: Path) -> dict[str, dict]:
    return {r["image_id"]: r for r in pq.read_table(out / REJECTS_NAME).to_pylist()}


class FlakyOpen:
    """Stands in for ``open`` inside reading.py: the first ``fails`` opens of a path whose name
    is in ``names`` raise EIO (a store that hiccups), the rest go through."""

    def __init__(self, names: set[str], fails: int, exc=None):
        self.names, self.fails, self.exc = names, fails, exc
        self.calls: dict[str, int] = {}

    def __call__(self, path, *a, **kw):
        name = Path(path).name
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.names and self.calls[name] <= self.fails:
            raise self.exc or OSError(errno.EIO, "Input/output error", str(path))
        return open(path, *a, **kw)


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(reading, "READ_BACKOFF_S", 0.01)


# -- transient read failures -------------------------------------------------------------------
def test_transient_read_is_retried_within_the_run(tmp_path, monkeypatch, quick_retries):
    keys = _photos(tmp_path / "in")
    flaky = FlakyOpen({"p1.jpg"}, fails=reading.READ_ATTEMPTS - 1)
    monkeypatch.setattr(reading, "open", flaky, raising=False)
    out = tmp_path / "out"
    # dedup off: with it, a run reads every input twice (images.dedup); this counts one pass
    stats = run_images(ImageRunConfig(sources=[str(tmp_path / "in")], output=str(out), filters=ImageFilters(dedup=False)))
    assert flaky.calls["p1.jpg"] == reading.READ_ATTEMPTS
    assert sorted(_written(out)) == keys
    assert _rejects(out) == {}
    assert stats.items_out == 3


def test_lasting_transient_failure_is_rejected_then_resumed(tmp_path, monkeypatch, quick_retries):
    keys = _photos(tmp_path / "in")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    out = tmp_path / "out"
    # dedup off: with it, a resume analyses every input again (images.dedup), done ones too
    cfg = dict(sources=[str(tmp_path / "in")], output=str(out), filters=ImageFilters(dedup=False))
    flaky = FlakyOpen({"p1.jpg"}, fails=10**6)
    monkeypatch.setattr(reading, "open", flaky, raising=False)
    run_images(ImageRunConfig(**cfg))
    rej = _rejects(out)
    assert rej["p1"]["stage"] == "read" and rej["p1"]["transient"] is True
    assert "Input/output error" in rej["p1"]["reason"]
    assert rej["bad"]["stage"] == "decode" and rej["bad"]["transient"] is False
    assert sorted(_written(out)) == ["p0", "p2"]

    # The store is back: a resume reads p1 (only), writes it, and its reject row is gone.
    healed = FlakyOpen(set(), fails=0)
    monkeypatch.setattr(reading, "open", healed, raising=False)
    run_images(ImageRunConfig(**cfg, on_existing="resume"))
    assert healed.calls == {"p1.jpg": 1}  # the corrupt file is a verdict, not read again
    assert sorted(_written(out)) == keys  # each exactly once across the shards
    rej = _rejects(out)
    assert set(rej) == {"bad"} and rej["bad"]["transient"] is False


def test_not_found_is_not_retried(tmp_path, monkeypatch, quick_retries):
    _photos(tmp_path / "in")
    flaky = FlakyOpen({"p0.jpg"}, fails=10**6, exc=FileNotFoundError(errno.ENOENT, "gone"))
    monkeypatch.setattr(reading, "open", flaky, raising=False)
    out = tmp_path / "out"
    # dedup off: with it, a run reads every input twice (images.dedup); this counts one pass
    run_images(ImageRunConfig(sources=[str(tmp_path / "in")], output=str(out), filters=ImageFilters(dedup=False)))
    assert flaky.calls["p0.jpg"] == 1
    assert _rejects(out)["p0"]["transient"] is False


def test_rejects_file_without_transient_column_still_reads(tmp_path):
    old = pa.table({"key": ["a"], "source": ["/x/a.jpg"], "source_member": pa.array([None], pa.string()),
                    "stage": ["decode"], "reason": ["corrupt: x"], "duplicate_of": pa.array([None], pa.string())})
    (tmp_path / REJECTS_NAME).parent.mkdir()
    pq.write_table(old, tmp_path / REJECTS_NAME)
    rows = read_rejects(Storage(str(tmp_path)))
    assert rows == [{"image_id": "a", "source": "/x/a.jpg", "source_member": None, "stage": "decode",
                     "reason": "corrupt: x", "duplicate_of": None, "transient": False}]


def test_unreachable_urls_are_transient_rejects(tmp_path, monkeypatch, quick_retries):
    keys = _photos(tmp_path / "in", 2)
    urls = {"closed": "http://127.0.0.1:9/x.jpg", "nohost": "http://nonexistent.invalid/x.jpg"}
    inputs = [ImageInput(k, str(tmp_path / "in" / f"{k}.jpg"), None, None, "file") for k in keys]
    inputs += [ImageInput(k, u, None, None, "file") for k, u in urls.items()]
    # Listing is bypassed (it stats each URL); this is what the reading and the run do with them.
    monkeypatch.setattr(image_pipeline, "list_image_inputs", lambda *a, **kw: list(inputs))
    out = tmp_path / "out"
    stats = run_images(ImageRunConfig(sources=["unused"], output=str(out)))
    assert sorted(_written(out)) == keys
    rej = _rejects(out)
    assert set(rej) == set(urls)
    for k in urls:
        assert rej[k]["stage"] == "read" and rej[k]["transient"] is True, rej[k]
        assert "Connect" in rej[k]["reason"] or "resolve" in rej[k]["reason"].lower(), rej[k]
    assert stats.items_out == 2


# -- exceptions inside stages ------------------------------------------------------------------
def test_unexpected_decode_error_is_that_images_reject(tmp_path, monkeypatch):
    keys = _photos(tmp_path / "in")
    real = image_stages.decode_for_analysis
    bad_len = (tmp_path / "in" / "p1.jpg").stat().st_size

    def decode(data, *a, **kw):
        if len(data) == bad_len:
            raise MemoryError()
        return real(data, *a, **kw)

    monkeypatch.setattr(image_stages, "decode_for_analysis", decode)
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(tmp_path / "in")], output=str(out)))
    assert sorted(_written(out)) == [k for k in keys if k != "p1"]
    r = _rejects(out)["p1"]
    assert r["stage"] == "decode" and "MemoryError" in r["reason"] and r["transient"] is False


def test_score_failure_falls_back_to_rows_and_rejects_the_culprit(tmp_path, monkeypatch):
    keys = _photos(tmp_path / "in")
    Image.new("RGB", (80, 64), (0, 0, 0)).save(tmp_path / "in" / "black.png")
    real = image_stages.score_batch

    def score(stack, y):
        if any(int(np.asarray(f).max()) == 0 for f in stack):
            raise FloatingPointError("kernel cannot score a flat frame")
        return real(stack, y)

    monkeypatch.setattr(image_stages, "score_batch", score)
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(tmp_path / "in")], output=str(out)))
    assert sorted(_written(out)) == keys
    r = _rejects(out)["black"]
    assert r["stage"] == "score" and "FloatingPointError: kernel cannot score" in r["reason"]
    # the survivors were scored: their Parquet rows carry scores
    t = pq.read_table(next(out.glob("images-*.parquet")))
    assert t.num_rows == 3 and None not in t.column("sharpness").to_pylist()


def test_encode_failure_is_that_images_reject(tmp_path, monkeypatch):
    keys = _photos(tmp_path / "in")
    Image.fromarray(np.random.default_rng(9).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(
        tmp_path / "in" / "needs_reencode.png")

    def boom(*a, **kw):
        raise RuntimeError("encoder fell over")

    import curastream.images.encode as image_encode

    monkeypatch.setattr(image_encode, "encode_jpeg", boom)
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(tmp_path / "in")], output=str(out)))
    assert sorted(_written(out)) == keys  # JPEGs pass through untouched
    r = _rejects(out)["needs_reencode"]
    assert r["stage"] == "encode" and "RuntimeError: encoder fell over" in r["reason"]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_png_header_bomb_with_raised_max_pixels_is_rejected(tmp_path):
    keys = _photos(tmp_path / "in", 2)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (tmp_path / "in" / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b""))
    out = tmp_path / "out"
    r = subprocess.run([CLI, "images", str(tmp_path / "in"), "--output", str(out), "--max-pixels", str(10**11)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    assert sorted(_written(out)) == keys
    rej = _rejects(out)["bomb"]
    assert rej["stage"] == "decode" and "100000x100000" in rej["reason"], rej


# -- videos ------------------------------------------------------------------------------------
def _video(path: Path, w: int, h: int, frames: int = 48, fps: int = 24) -> None:
    # mpeg4 takes odd and tiny sizes that libx264 refuses
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for k in range(frames):
            a = np.random.default_rng(k).integers(0, 255, (h, w, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _video_rejects(out: Path) -> dict[str, dict]:
    return {Path(r["source"]).name: r for r in pq.read_table(out / REJECTS_NAME).to_pylist()}


def _processed(out: Path) -> set[str]:
    return {p.name for p in (out / "processed_videos").rglob("*.json")}


def test_degenerate_videos_through_the_cli(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _video(src / "tiny.mp4", 2, 2)
    _video(src / "wide.mp4", 3000, 4)
    _video(src / "ok.mp4", 64, 48)
    out = tmp_path / "out"
    # noise clips are all intra frames: no motion vectors, so the motion filter would drop them
    # (Curator's -1) and previews are made for passing clips only
    r = subprocess.run([CLI, "videos", str(src), "--output", str(out), "--previews", "--no-motion-filter"],
                       capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr
    rej = _video_rejects(out)
    assert set(rej) == {"tiny.mp4"}
    assert rej["tiny.mp4"]["stage"] == "probe" and "2x2" in rej["tiny.mp4"]["reason"]
    assert _processed(out) == {"ok.mp4.json", "wide.mp4.json"}
    previews = list((out / "previews").rglob("*.webp"))
    assert len(previews) >= 2
    sizes = {Image.open(p).size for p in previews}
    assert all(w <= WEBP_MAX_SIDE and h <= WEBP_MAX_SIDE for w, h in sizes), sizes
    assert any(w == WEBP_MAX_SIDE for w, _ in sizes), sizes  # the wide one, scaled to fit


def test_make_preview_fits_webp_limits():
    for shape in ((4, 3000), (3000, 4), (240, 320)):
        data = make_preview([np.full((*shape, 3), 128, np.uint8)] * 2, fps_in=1.0)
        w, h = Image.open(io.BytesIO(data)).size
        assert 1 <= w <= WEBP_MAX_SIDE and 1 <= h <= WEBP_MAX_SIDE
        assert abs(w / h - shape[1] / shape[0]) / (shape[1] / shape[0]) < 0.5 or min(w, h) == 1


@pytest.mark.parametrize("where", ["analyze", "clips"])
def test_exception_in_a_video_stage_is_that_videos_reject(tmp_path, monkeypatch, where):
    src = tmp_path / "in"
    src.mkdir()
    _video(src / "a.mp4", 64, 48)
    _video(src / "b.mp4", 64, 48)
    if where == "analyze":
        real = video_analyze.iter_analysis_frames

        def frames(path, *a, **kw):
            if path.endswith("a.mp4"):
                raise KeyError("decoder state lost")
            return real(path, *a, **kw)

        monkeypatch.setattr(video_analyze, "iter_analysis_frames", frames)
    else:
        real_video = video_stages.ClipStage._video

        def clips(self, b, i):
            if b.values("video")[i].endswith("a.mp4"):
                raise ZeroDivisionError("no spans")
            return real_video(self, b, i)

        monkeypatch.setattr(video_stages.ClipStage, "_video", clips)
    out = tmp_path / "out"
    stats = run_videos(VideoRunConfig(sources=[str(src)], output=str(out)))
    rej = _video_rejects(out)
    assert set(rej) == {"a.mp4"}
    exc = "KeyError" if where == "analyze" else "ZeroDivisionError"
    assert rej["a.mp4"]["stage"] == where and exc in rej["a.mp4"]["reason"]
    assert _processed(out) == {"b.mp4.json"}
    assert stats.items_out == 1
    summary = json.loads((out / "_curastream" / "summary.json").read_text())
    assert summary["totals"]["videos_rejected"] == 1


def test_transient_video_probe_failure_is_retried_then_resumed(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    _video(src / "a.mp4", 64, 48)
    _video(src / "b.mp4", 64, 48)
    monkeypatch.setattr(video_stages, "PROBE_BACKOFF_S", 0.01)
    real = video_stages.probe
    calls: dict[str, int] = {}
    fail_first = {"n": video_stages.PROBE_ATTEMPTS - 1}

    def probe(path):
        name = Path(path).name
        calls[name] = calls.get(name, 0) + 1
        if name == "a.mp4" and calls[name] <= fail_first["n"]:
            raise OSError(errno.EIO, "Input/output error", path)
        return real(path)

    monkeypatch.setattr(video_stages, "probe", probe)
    out = tmp_path / "out"
    cfg = dict(sources=[str(src)], output=str(out), split="fixed", clip_len=1)
    run_videos(VideoRunConfig(**cfg))  # hiccups within the attempts: written in this run
    assert calls["a.mp4"] == video_stages.PROBE_ATTEMPTS
    assert _processed(out) == {"a.mp4.json", "b.mp4.json"} and _video_rejects(out) == {}

    out2 = tmp_path / "out2"
    cfg2 = dict(cfg, output=str(out2))
    calls.clear()
    fail_first["n"] = 10**6  # down for the whole run
    run_videos(VideoRunConfig(**cfg2))
    rej = _video_rejects(out2)
    assert set(rej) == {"a.mp4"} and rej["a.mp4"]["transient"] is True and rej["a.mp4"]["stage"] == "probe"
    assert _processed(out2) == {"b.mp4.json"}
    calls.clear()
    fail_first["n"] = 0  # back
    run_videos(VideoRunConfig(**cfg2, on_existing="resume"))
    assert calls == {"a.mp4": 1}
    assert _processed(out2) == {"a.mp4.json", "b.mp4.json"} and _video_rejects(out2) == {}
    # the resumed output holds the same clips as the run that never failed
    # (passing or filtered: noise clips have no motion vectors to pass the motion filter)
    def clip_names(d):
        return sorted(p.name for sub in ("clips", "filtered_clips") for p in (d / sub).rglob("*.mp4"))

    assert len(clip_names(out)) >= 2
    assert clip_names(out2) == clip_names(out)


@pytest.mark.slow
def test_unreachable_urls_in_files_from_are_transient_rejects_and_the_run_goes_on(tmp_path):
    """A closed loopback port and a host that does not resolve, listed beside real photos: the
    CLI writes the photos, exits 0, and records both URLs as transient rejects."""
    keys = _photos(tmp_path / "in")
    listing = tmp_path / "list.txt"
    urls = ["http://127.0.0.1:9/x.jpg", "http://nonexistent.invalid/y.jpg"]
    listing.write_text("\n".join([*(str(tmp_path / "in" / f"{k}.jpg") for k in keys), *urls]) + "\n")
    out = tmp_path / "out"
    r = subprocess.run([CLI, "images", "--files-from", str(listing), "-o", str(out), "--min-resolution", "0"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(_written(out)) == sorted(keys)
    rejected = {r["source"]: r for r in pq.read_table(out / REJECTS_NAME).to_pylist()}
    assert set(rejected) == set(urls)
    assert all(r["transient"] and r["stage"] == "read" for r in rejected.values()), rejected
