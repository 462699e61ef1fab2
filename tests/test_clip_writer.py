"""ClipWriter: SPEC §2 layout, checked with independent readers (json, PyAV, pickle, pyarrow)."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import threading
import time
import uuid
from pathlib import Path

import av
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curastream.writers.clip_model import ClipChunk, ClipRecord, VideoRecord, chunk_uuid, span_uuid
from curastream.writers.clip_writer import ClipWriter, relative_video_path
from curastream.engine.storage import Storage

FPS = 10.0
N_FRAMES = 10
DIM = 8

META_KEYS = [
    "span_uuid", "source_video", "duration_span", "width_source", "height_source",
    "framerate_source", "clip_location", "width", "height", "framerate", "num_frames",
    "video_codec", "num_bytes", "motion_score", "aesthetic_score",
]
CHUNK_KEYS = [
    "video", "clip_chunk_index", "num_clips_filtered_by_motion", "num_clips_filtered_by_aesthetic",
    "num_clips_passed", "num_clips_transcoded", "num_clips_with_embeddings",
    "num_clips_with_caption", "num_clips_with_webp", "total_clip_duration", "max_clip_duration",
    "clips", "filtered_clips", "all_windows", "all_windows_enhanced_caption",
]
VIDEO_KEYS = [
    "video", "height", "width", "framerate", "num_frames", "duration", "video_codec",
    "pixel_format", "audio_format", "num_total_clips", "num_clip_chunks",
]


_MP4_CACHE: dict[int, bytes] = {}


def make_mp4(shade: int = 0) -> bytes:
    """A real 64x48 H.264 mp4 of N_FRAMES frames (cached: encoding is the slow part)."""
    if shade not in _MP4_CACHE:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as c:
            s = c.add_stream("libx264", rate=int(FPS))
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            for i in range(N_FRAMES):
                px = np.full((48, 64, 3), (shade * 37 + i * 20) % 256, np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(px, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        _MP4_CACHE[shade] = buf.getvalue()
    return _MP4_CACHE[shade]


def decoded_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as c:
        return sum(1 for _ in c.decode(video=0))


def embedding(uid: str) -> np.ndarray:
    rng = np.random.default_rng(int(uuid.UUID(uid)) % (2**32))
    return rng.standard_normal(DIM).astype(np.float32)


def make_clip(video_path: str, i: int, *, filtered_by=(), media=True, emb=True,
              preview=True, captions=True, algo="internvideo2") -> ClipRecord:
    start = i * 1.0
    c = ClipRecord.for_span(video_path, start, start + 1.0, FPS)
    if media:
        c.media = make_mp4(i % 3)
        c.width, c.height, c.framerate, c.num_frames, c.video_codec = 64, 48, FPS, N_FRAMES, "h264"
    c.motion_score = {"global_mean": 0.01 * (i + 1), "per_patch_min_256": 0.001}
    c.aesthetic_score = 0.5
    c.frame_scores = {"sharpness": 1.5, "mean_luma": np.float32(0.25)}
    c.filtered_by = list(filtered_by)
    if emb:
        c.embeddings = {algo: embedding(c.uuid)}
    # Curator's window of a clip this short: all of it, frames counted from the clip's first,
    # end inclusive; its preview is named after it.
    if preview:
        c.previews = {(0, N_FRAMES - 1): b"RIFF\x00\x00\x00\x00WEBPfake"}
    c.windows = [{"start_frame": 0, "end_frame": N_FRAMES - 1}]
    if captions:
        c.windows[0].update({"qwen_caption": f"clip {i}", "qwen_lm_enhanced_caption": f"clip {i}!",
                             "other_caption": "not emitted"})
    return c


def make_video(input_dir: Path, name: str = "sub/vid.mp4", num_total_clips=None) -> VideoRecord:
    return VideoRecord(path=str(input_dir / name), height=480, width=640, framerate=FPS,
                       num_frames=600, duration=60.0, video_codec="h264", pixel_format="yuv420p",
                       audio_format="aac", num_total_clips=num_total_clips)


@pytest.fixture
def dirs(tmp_path):
    root = Path(os.path.realpath(tmp_path))
    (root / "in").mkdir()
    return root / "in", root / "out"


def files_under(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def load_ordered(path) -> list:
    return list(json.loads(Path(path).read_text(), object_pairs_hook=lambda kv: kv))


def full_writer(inp, out, **kw) -> ClipWriter:
    args = dict(generate_embeddings=True, generate_previews=True, generate_captions=True,
                caption_models=["qwen"], enhanced_caption_models=["qwen_lm"], max_workers=2)
    args.update(kw)
    return ClipWriter(str(out), str(inp), **args)


# -- path helpers and validation --------------------------------------------------------------
def test_static_path_helpers():
    for out in ("/OUT", "/OUT/"):
        assert ClipWriter.get_output_path_clips(out) == "/OUT/clips"
        assert ClipWriter.get_output_path_clips(out, filtered=True) == "/OUT/filtered_clips"
        assert ClipWriter.get_output_path_previews(out) == "/OUT/previews"
        assert ClipWriter.get_output_path_metas(out, "v0") == "/OUT/metas/v0"
        assert ClipWriter.get_output_path_iv2_embd(out) == "/OUT/iv2_embd"
        assert ClipWriter.get_output_path_ce1_embd(out) == "/OUT/ce1_embd"
        assert ClipWriter.get_output_path_iv2_embd_parquet(out) == "/OUT/iv2_embd_parquet"
        assert ClipWriter.get_output_path_ce1_embd_parquet(out) == "/OUT/ce1_embd_parquet"
        assert ClipWriter.get_output_path_processed_videos(out) == "/OUT/processed_videos"
        assert ClipWriter.get_output_path_processed_clip_chunks(out) == "/OUT/processed_clip_chunks"
    assert ClipWriter.get_output_path_clips("s3://b/o/") == "s3://b/o/clips"


def test_constructor_validates_and_has_no_side_effects(dirs):
    inp, out = dirs
    with pytest.raises(ValueError, match="embedding_algorithm"):
        ClipWriter(str(out), str(inp), embedding_algorithm="clip")
    threads = threading.active_count()
    w = ClipWriter(str(out), str(inp))
    assert not out.exists() and threading.active_count() == threads
    w.commit()  # nothing written: still nothing on disk
    assert not out.exists()


def test_input_path_must_be_prefix(dirs, monkeypatch):
    inp, out = dirs
    assert relative_video_path("/data/videos/", "/data/videos/a/b.mp4") == "a/b.mp4"
    assert relative_video_path("s3://b/in", "s3://b/in/x.mp4") == "x.mp4"
    with pytest.raises(ValueError, match="prefix"):
        relative_video_path("/data/vid", "/data/videos/a.mp4")  # not at a separator
    # Relative input_path is resolved against the working directory first.
    monkeypatch.chdir(inp.parent)
    assert relative_video_path("in", str(inp / "v.mp4")) == "v.mp4"

    video = VideoRecord(path=str(inp.parent / "elsewhere" / "v.mp4"))
    w = ClipWriter(str(out), str(inp))
    with pytest.raises(ValueError, match="not under input_path"):
        w.write_chunk(ClipChunk(video.path, 0, [], 1), video)
    w.abort()
    assert not out.exists()


# -- the full layout --------------------------------------------------------------------------
def test_full_layout_and_formats(dirs):
    inp, out = dirs
    video = make_video(inp)
    vp = video.path
    chunk0 = [make_clip(vp, 0), make_clip(vp, 1, filtered_by=["motion"]), make_clip(vp, 2)]
    chunk1 = [make_clip(vp, 3, filtered_by=["aesthetic"]), make_clip(vp, 4)]
    with full_writer(inp, out) as w:
        w.write_chunk(ClipChunk(vp, 0, chunk0, 2), video)
        w.write_chunk(ClipChunk(vp, 1, chunk1, 2), video)
    clips = chunk0 + chunk1
    passed = [c for c in clips if not c.filtered_by]
    filtered = [c for c in clips if c.filtered_by]

    expected = set()
    expected |= {f"clips/{c.uuid}.mp4" for c in passed}
    expected |= {f"filtered_clips/{c.uuid}.mp4" for c in filtered}
    expected |= {f"previews/{c.uuid}/0_{N_FRAMES - 1}.webp" for c in passed}
    expected |= {f"metas/v0/{c.uuid}.json" for c in clips}
    expected |= {f"iv2_embd/{c.uuid}.pickle" for c in passed}
    expected |= {f"iv2_embd_parquet/{chunk_uuid(vp, i)}.parquet" for i in (0, 1)}
    expected |= {"processed_videos/sub/vid.mp4.json",
                 "processed_clip_chunks/sub/vid.mp4_0.json", "processed_clip_chunks/sub/vid.mp4_1.json"}
    assert files_under(out) == expected
    assert {c.path for c in w.storage.committed()} == expected

    # span_uuid formula, with SPEC's truncating frame numbers
    for c in clips:
        sf, ef = int(c.span[0] * FPS), int(c.span[1] * FPS)
        assert (c.start_frame, c.end_frame) == (sf, ef)
        assert c.uuid == str(uuid.uuid5(uuid.NAMESPACE_URL, f"{vp}_{sf}_{ef}")) == span_uuid(vp, sf, ef)

    for c in clips:
        path = out / "metas/v0" / f"{c.uuid}.json"
        text = path.read_text()
        meta = json.loads(text)
        assert text == json.dumps(meta, indent=4)  # 4-space indent, Curator's text form
        keys = [k for k, _ in load_ordered(path)]
        extras = ["frame_scores"] + (["filtered_by"] if c.filtered_by else [])
        assert keys == META_KEYS + extras + ["windows", "valid"]
        assert meta["span_uuid"] == c.uuid and meta["source_video"] == vp
        assert meta["duration_span"] == [c.span[0], c.span[1]]
        assert (meta["width_source"], meta["height_source"], meta["framerate_source"]) == (640, 480, FPS)
        assert (meta["width"], meta["height"], meta["num_frames"], meta["video_codec"]) == (64, 48, 10, "h264")
        assert meta["num_bytes"] == len(c.media)
        assert meta["motion_score"] == c.motion_score
        assert meta["frame_scores"] == {"sharpness": 1.5, "mean_luma": 0.25}
        # Only listed models are emitted, caption keys before enhanced ones.
        assert meta["windows"] == [{"start_frame": 0, "end_frame": 9, "qwen_caption": c.windows[0]["qwen_caption"],
                                    "qwen_lm_enhanced_caption": c.windows[0]["qwen_lm_enhanced_caption"]}]
        assert meta["valid"] is (not c.filtered_by)
        sub = "filtered_clips" if c.filtered_by else "clips"
        assert meta["clip_location"] == str(out / sub / f"{c.uuid}.mp4")
        assert decoded_frames(Path(meta["clip_location"]).read_bytes()) == N_FRAMES

    for c in passed:
        arr = pickle.loads((out / "iv2_embd" / f"{c.uuid}.pickle").read_bytes())
        assert arr.dtype == np.float16 and arr.shape == (1, DIM)
        np.testing.assert_allclose(arr[0], embedding(c.uuid), rtol=1e-3, atol=1e-3)
        assert (out / "previews" / c.uuid / f"0_{N_FRAMES - 1}.webp").read_bytes() == c.previews[(0, N_FRAMES - 1)]

    for i, chunk in enumerate((chunk0, chunk1)):
        t = pq.read_table(out / "iv2_embd_parquet" / f"{chunk_uuid(vp, i)}.parquet")
        assert t.schema.field("id").type == pa.string()
        assert t.schema.field("embedding").type == pa.list_(pa.float32())
        want = [c for c in chunk if not c.filtered_by]
        assert t.column("id").to_pylist() == [c.uuid for c in want]
        for row, c in zip(t.column("embedding").to_pylist(), want):
            np.testing.assert_array_equal(np.asarray(row, np.float32), embedding(c.uuid))

    ch0 = json.loads((out / "processed_clip_chunks/sub/vid.mp4_0.json").read_text())
    assert [k for k, _ in load_ordered(out / "processed_clip_chunks/sub/vid.mp4_0.json")][:len(CHUNK_KEYS)] == CHUNK_KEYS
    assert ch0["video"] == vp and ch0["clip_chunk_index"] == 0
    assert (ch0["num_clips_filtered_by_motion"], ch0["num_clips_filtered_by_aesthetic"]) == (1, 0)
    assert (ch0["num_clips_passed"], ch0["num_clips_transcoded"], ch0["num_clips_with_embeddings"]) == (2, 3, 2)
    assert (ch0["num_clips_with_caption"], ch0["num_clips_with_webp"]) == (2, 2)
    assert ch0["total_clip_duration"] == pytest.approx(3.0) and ch0["max_clip_duration"] == pytest.approx(1.0)
    assert ch0["clips"] == [chunk0[0].uuid, chunk0[2].uuid] and ch0["filtered_clips"] == [chunk0[1].uuid]
    assert ch0["all_windows"] == {chunk0[0].uuid: {"0_9": "clip 0"}, chunk0[2].uuid: {"0_9": "clip 2"}}
    assert ch0["all_windows_enhanced_caption"][chunk0[2].uuid] == {"0_9": "clip 2!"}
    ch1 = json.loads((out / "processed_clip_chunks/sub/vid.mp4_1.json").read_text())
    assert (ch1["num_clips_filtered_by_aesthetic"], ch1["num_clips_passed"]) == (1, 1)

    vid = load_ordered(out / "processed_videos/sub/vid.mp4.json")
    assert [k for k, _ in vid] == VIDEO_KEYS
    vid = dict(vid)
    assert vid["video"] == vp and vid["num_clip_chunks"] == 2 and vid["num_total_clips"] == 5
    assert (vid["height"], vid["width"], vid["video_codec"], vid["audio_format"]) == (480, 640, "h264", "aac")

    s = w.summary()
    assert (s["videos"], s["chunks"], s["clips"], s["clips_passed"], s["clips_filtered"]) == (1, 2, 5, 3, 2)
    assert s["files_by_dir"] == {"clips": 3, "filtered_clips": 2, "previews": 3, "metas/v0": 5,
                                 "iv2_embd": 3, "iv2_embd_parquet": 2, "processed_videos": 1,
                                 "processed_clip_chunks": 2}
    assert s["bytes_written"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def test_cosmos_embed1_dirs_and_subdirs(dirs):
    inp, out = dirs
    video = make_video(inp, "v.mp4")
    clips = [make_clip(video.path, i, algo="cosmos-embed1") for i in range(2)]
    clips.append(make_clip(video.path, 2, filtered_by=["motion"]))
    with full_writer(inp, out, embedding_algorithm="cosmos-embed1", clip_subdirs=True) as w:
        w.write_chunk(ClipChunk(video.path, 0, clips, 1), video)
    got = files_under(out)
    assert {f"clips/{c.uuid[:2]}/{c.uuid}.mp4" for c in clips[:2]} <= got
    assert f"filtered_clips/{clips[2].uuid[:2]}/{clips[2].uuid}.mp4" in got
    assert {f"ce1_embd/{c.uuid}.pickle" for c in clips[:2]} <= got
    assert f"ce1_embd_parquet/{chunk_uuid(video.path, 0)}.parquet" in got
    assert not any(p.startswith("iv2_") for p in got)
    for c in clips:
        loc = json.loads((out / "metas/v0" / f"{c.uuid}.json").read_text())["clip_location"]
        assert Path(loc).is_file() and Path(loc).parent.name == c.uuid[:2]


def test_dry_run_writes_only_processed_jsons(dirs):
    inp, out = dirs
    video = make_video(inp)
    clips = [make_clip(video.path, i) for i in range(3)]
    with full_writer(inp, out, dry_run=True) as w:
        w.write_chunk(ClipChunk(video.path, 0, clips, 1), video)
    assert files_under(out) == {"processed_videos/sub/vid.mp4.json", "processed_clip_chunks/sub/vid.mp4_0.json"}
    ch = json.loads((out / "processed_clip_chunks/sub/vid.mp4_0.json").read_text())
    assert ch["num_clips_passed"] == 3 and ch["num_clips_with_embeddings"] == 3
    assert ClipWriter.is_video_done(str(out), str(inp), video.path)


def test_missing_embedding_preview_and_no_upload(dirs, caplog):
    inp, out = dirs
    video = make_video(inp, "v.mp4")
    c = make_clip(video.path, 0, emb=False, preview=False)
    with caplog.at_level(logging.ERROR, logger="curastream.writers.clip_writer"):
        with full_writer(inp, out, upload_clips=False) as w:
            w.write_chunk(ClipChunk(video.path, 0, [c], 1), video)
    meta = json.loads((out / "metas/v0" / f"{c.uuid}.json").read_text())
    # Curator's errors: the list of what failed; the messages are ours, beside it
    assert meta["errors"] == ["embedding"] and "internvideo2" in meta["error_messages"]["embedding"]
    assert meta["valid"] is False
    # Curator records where the clip goes even when it is not uploaded
    assert meta["clip_location"] == str(out / "clips" / f"{c.uuid}.mp4")
    assert not Path(meta["clip_location"]).exists()
    assert not any(p.startswith(("clips/", "previews/", "iv2_")) for p in files_under(out))
    assert sum("no preview" in r.getMessage() for r in caplog.records) == 1
    assert sum("has no internvideo2 embedding" in r.getMessage() for r in caplog.records) == 1
    s = w.summary()
    assert (s["embeddings_missing"], s["previews_missing"], s["clips_with_errors"]) == (1, 1, 1)


def test_verbose_logs_each_file(dirs, caplog):
    inp, out = dirs
    video = make_video(inp, "v.mp4")
    with caplog.at_level(logging.INFO, logger="curastream.writers.clip_writer"):
        with full_writer(inp, out, verbose=True) as w:
            w.write_chunk(ClipChunk(video.path, 0, [make_clip(video.path, 0)], 1), video)
    logged = {r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("wrote ")}
    assert logged == {str(out / p) for p in files_under(out)}


# -- resume -----------------------------------------------------------------------------------
def test_is_video_done_resume_rule(dirs):
    inp, out = dirs
    video = make_video(inp)
    assert not ClipWriter.is_video_done(str(out), str(inp), video.path)
    with full_writer(inp, out) as w:
        for i in range(3):
            w.write_chunk(ClipChunk(video.path, i, [make_clip(video.path, i)], 3), video)
    assert ClipWriter.is_video_done(str(out), str(inp), video.path)
    (out / "processed_clip_chunks/sub/vid.mp4_1.json").unlink()
    assert not ClipWriter.is_video_done(str(out), str(inp), video.path)


def test_chunk_count_learned_late_and_out_of_order(dirs):
    inp, out = dirs
    video = make_video(inp)
    marker = out / "processed_videos/sub/vid.mp4.json"
    with full_writer(inp, out, max_workers=1) as w:
        w.write_chunk(ClipChunk(video.path, 1, [make_clip(video.path, 1)], None), video)
        w.write_chunk(ClipChunk(video.path, 0, [make_clip(video.path, 0)], None), video)
        with pytest.raises(ValueError, match="twice"):
            w.write_chunk(ClipChunk(video.path, 0, [], None), video)
        while w.pending:
            time.sleep(0.01)
        assert not marker.exists()  # count not known yet
        w.write_chunk(ClipChunk(video.path, 2, [make_clip(video.path, 2)], 3), video)
    assert json.loads(marker.read_text())["num_clip_chunks"] == 3
    assert ClipWriter.is_video_done(str(out), str(inp), video.path)


# -- concurrency, abort, errors ------------------------------------------------------------------
class SlowStorage(Storage):
    def __init__(self, root, delay=0.0, fail_on=None):
        super().__init__(root)
        self.delay = delay
        self.fail_on = fail_on
        self.threads: set[str] = set()
        self.max_pending = 0
        self.writer: ClipWriter | None = None

    def write_atomic(self, rel, data, rows=None, group=None):
        self.threads.add(threading.current_thread().name)
        if self.writer is not None:
            self.max_pending = max(self.max_pending, self.writer.pending)
        time.sleep(self.delay)
        if self.fail_on and self.fail_on in rel:
            with self.open_atomic(rel) as f:
                f.write(data[: len(data) // 2])
                raise OSError("disk full (test)")
        return super().write_atomic(rel, data, rows, group)


def test_writes_on_worker_threads_with_bounded_pending(dirs):
    inp, out = dirs
    st = SlowStorage(str(out), delay=0.01)
    w = full_writer(inp, out, max_workers=1, storage=st)
    st.writer = w
    assert w.max_pending_chunks == 2
    video = make_video(inp)
    seen = []
    t0 = time.perf_counter()
    with w:
        for i in range(6):
            w.write_chunk(ClipChunk(video.path, i, [make_clip(video.path, i)], 6), video)
            seen.append(w.pending)
        submit_s = time.perf_counter() - t0
    assert max(seen) <= 2 and st.max_pending <= 2
    assert threading.current_thread().name not in st.threads
    assert all(n.startswith("clip-writer") for n in st.threads)
    # Chunks are 6 files x 10 ms on one worker; with 2 pending at most, the 6th write_chunk
    # returns only after ~4 chunks are done: the caller was held back, not buffered ahead.
    assert submit_s > 0.15
    assert ClipWriter.is_video_done(str(out), str(inp), video.path)


def test_exception_inside_with_aborts_cleanly(dirs):
    inp, out = dirs
    st = SlowStorage(str(out), delay=0.02)
    video = make_video(inp)
    with pytest.raises(RuntimeError, match="pipeline broke"):
        with full_writer(inp, out, max_workers=2, storage=st) as w:
            for i in range(2):  # 2 of 3 chunks: the video is in flight
                clips = [make_clip(video.path, 3 * i + k) for k in range(3)]
                w.write_chunk(ClipChunk(video.path, i, clips, 3), video)
            raise RuntimeError("pipeline broke")
    after = files_under(out) if out.exists() else set()
    assert not any(".tmp-" in p for p in after)
    assert len(after) < 10  # of 6 clips x 5 files: queued writes were cancelled, not drained
    assert "processed_videos/sub/vid.mp4.json" not in after
    assert not ClipWriter.is_video_done(str(out), str(inp), video.path)
    time.sleep(0.1)
    assert (files_under(out) if out.exists() else set()) == after  # nothing still writing
    with pytest.raises(RuntimeError, match="closed"):
        w.write_chunk(ClipChunk(video.path, 2, [], 3), video)


def test_write_error_surfaces_and_chunk_not_marked(dirs):
    inp, out = dirs
    video = make_video(inp)
    bad = make_clip(video.path, 1)
    st = SlowStorage(str(out), fail_on=f"metas/v0/{bad.uuid}")
    w = full_writer(inp, out, storage=st)
    w.write_chunk(ClipChunk(video.path, 0, [make_clip(video.path, 0), bad], 1), video)
    with pytest.raises(OSError, match="disk full"):
        w.commit()
    got = files_under(out)
    assert not any(".tmp-" in p for p in got)
    assert f"metas/v0/{bad.uuid}.json" not in got
    assert not any(p.startswith("processed_") for p in got)
    assert not ClipWriter.is_video_done(str(out), str(inp), video.path)


# -- fsspec ------------------------------------------------------------------------------------
def test_memory_filesystem(dirs):
    inp, _ = dirs
    out = f"memory://clipwriter-{uuid.uuid4().hex[:8]}/out"
    video = make_video(inp)
    clips = [make_clip(video.path, 0), make_clip(video.path, 1, filtered_by=["motion"])]
    try:
        with full_writer(inp, out) as w:
            w.write_chunk(ClipChunk(video.path, 0, clips, 1), video)
        fs, root = fsspec.core.url_to_fs(out)
        rels = {p[len(root.rstrip("/")) + 1:] for p in fs.find(root)}
        assert f"clips/{clips[0].uuid}.mp4" in rels and f"filtered_clips/{clips[1].uuid}.mp4" in rels
        assert not any(".tmp-" in p for p in rels)
        meta = json.loads(fs.cat_file(f"{root}/metas/v0/{clips[0].uuid}.json"))
        assert meta["clip_location"].startswith("memory://")
        with fsspec.open(meta["clip_location"], "rb") as f:
            assert decoded_frames(f.read()) == N_FRAMES
        t = pq.read_table(io.BytesIO(fs.cat_file(f"{root}/iv2_embd_parquet/{chunk_uuid(video.path, 0)}.parquet")))
        assert t.column("id").to_pylist() == [clips[0].uuid]
        assert ClipWriter.is_video_done(out, str(inp), video.path)
    finally:
        fs, root = fsspec.core.url_to_fs(out)
        if fs.exists(root):
            fs.rm(root, recursive=True)


def test_split_video_records_cut_short_before_the_marker_are_redone_the_same(tmp_path):
    """The Ray driver writes a split video's records itself (``write_video_records``). Killed
    after some of them but before ``processed_videos``, the video must read as not done (so a
    resume redoes all its parts), and the records written again must be the same files with the
    same bytes: nothing half-finished is taken for finished, nothing differs on the redo."""
    from curastream.writers.clip_summary import ClipOutcome

    src = tmp_path / "in"
    src.mkdir()
    video_path = str(src / "long.mp4")
    video = VideoRecord(path=video_path, height=720, width=1280, framerate=24.0, num_frames=2400,
                        duration=100.0, video_codec="h264", pixel_format="yuv420p")
    clips = [ClipRecord.for_span(video_path, 10.0 * k, 10.0 * (k + 1), 24.0) for k in range(10)]
    outcomes = [ClipOutcome(c.uuid, k % 3 != 0, [] if k % 3 else ["motion"], 10.0, transcoded=True,
                            valid=k % 3 != 0) for k, c in enumerate(clips)]
    out = tmp_path / "out"

    class KilledAtTheMarker(Storage):
        def write_atomic(self, rel, data, **kw):
            if rel.startswith("processed_videos/"):
                raise KeyboardInterrupt("driver killed")  # what stops the driver: not an Exception
            return super().write_atomic(rel, data, **kw)

    first = ClipWriter(str(out), str(src), storage=KilledAtTheMarker(str(out)))
    with pytest.raises(KeyboardInterrupt):
        first.write_video_records(video, clips, outcomes, clips_per_chunk=4)
    first.abort()
    chunk_files = sorted(p.relative_to(out).as_posix() for p in (out / "processed_clip_chunks").rglob("*.json"))
    assert chunk_files == ["processed_clip_chunks/long.mp4_0.json", "processed_clip_chunks/long.mp4_1.json",
                           "processed_clip_chunks/long.mp4_2.json"]  # 10 clips in chunks of 4
    assert not (out / "processed_videos").exists()
    assert not ClipWriter.is_video_done(str(out), str(src), video_path)
    before = {rel: (out / rel).read_bytes() for rel in chunk_files}

    again = ClipWriter(str(out), str(src), storage=Storage(str(out)))
    again.write_video_records(video, clips, outcomes, clips_per_chunk=4)
    again.commit()
    assert ClipWriter.is_video_done(str(out), str(src), video_path)
    assert {rel: (out / rel).read_bytes() for rel in chunk_files} == before
    marker = json.loads((out / "processed_videos" / "long.mp4.json").read_bytes())
    assert marker["num_clip_chunks"] == 3
    docs = [json.loads(v) for v in before.values()]
    assert sorted(u for d in docs for u in d["clips"] + d["filtered_clips"]) == sorted(c.uuid for c in clips)
