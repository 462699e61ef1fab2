"""curastream.curator: imports without NeMo Curator, says so in one line, and its Curator-free core
(a worker's shards over a shared output) writes full shards, an index and rejects, and resumes.

The adapter class itself needs Curator: the last test runs scripts/curator_adapter_check.py with
the bench venv's python (Curator 1.4) when that venv exists.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from curastream.curator.image_shards import WorkerImageShards
from curastream.curator.output import SharedOutput, finalize_output, new_token
from curastream.engine.output import OutputExistsError
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
HAS_CURATOR = importlib.util.find_spec("nemo_curator") is not None


@pytest.mark.parametrize("stage", ["ImageWriterStage", "ClipWriterStage"])
def test_the_package_imports_without_curator_and_names_what_is_missing(stage):
    if HAS_CURATOR:
        pytest.skip("nemo_curator is importable here")
    import curastream.curator as cc

    with pytest.raises(ImportError) as e:
        getattr(cc, stage)
    msg = str(e.value)
    assert "\n" not in msg
    assert "nemo-curator" in msg and f"curastream.curator.{stage} " in msg
    assert isinstance(e.value, cc.CuratorMissingError)
    with pytest.raises(AttributeError):
        cc.NoSuchStage  # noqa: B018 - a typo is an AttributeError, not "install Curator"


def test_the_missing_curator_error_is_one_line_in_a_fresh_interpreter():
    if HAS_CURATOR:
        pytest.skip("nemo_curator is importable here")
    r = subprocess.run([sys.executable, "-c", "from curastream.curator import ImageWriterStage"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("curastream.curator.CuratorMissingError: curastream.curator.ImageWriterStage needs NeMo")


# -- the Curator-free core, fed Curator-shaped image objects ------------------------------------
def _images(media_dir: Path, count: int) -> list[np.ndarray]:
    files = sorted(p for p in (media_dir / "images").iterdir() if p.read_bytes()[:3] == b"\xff\xd8\xff")
    out = []
    for p in files:
        with Image.open(p) as im:
            im.thumbnail((96, 96))  # small: the test is about shards, not codecs
            out.append(np.asarray(im.convert("RGB")))
        if len(out) == count:
            break
    if len(out) < count:
        pytest.skip(f"need {count} JPEGs in shared media")
    return out


def _objects(pixels: list[np.ndarray], prefix: str) -> list[types.SimpleNamespace]:
    # the fields of Curator's ImageObject that a writer reads
    return [types.SimpleNamespace(image_path=f"/in/{prefix}_{i:06d}.jpg", image_id=f"{prefix}_{i:06d}",
                                  image_data=px, metadata={"n": i}, aesthetic_score=None, nsfw_score=0.25)
            for i, px in enumerate(pixels)]


def _worker(out: Path, token: str, on_existing: str = "error", per_tar: int = 4) -> WorkerImageShards:
    shared = SharedOutput(str(out), None, on_existing, token, "images", {"images_per_tar": per_tar})
    return WorkerImageShards(shared, per_tar, verbose=False, deterministic_name=True, remove_image_data=True,
                             sidecar_json=True, jpeg_quality=92)


def _tar_jpegs(out: Path) -> dict[str, dict[str, bytes]]:
    shards = {}
    for t in sorted(out.glob("images-*.tar")):
        with tarfile.open(t) as tf:
            shards[t.name] = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".jpg")}
    return shards


def test_two_workers_fill_every_tar_across_batches_and_index_the_run(media_dir, tmp_path):
    pixels = _images(media_dir, 12)
    out = tmp_path / "out"
    token = new_token()
    a, b = _worker(out, token), _worker(out, token)  # two workers of one pipeline.run()
    objs_a, objs_b = _objects(pixels[:7], "ta"), _objects(pixels[7:], "tb")
    objs_b.append(types.SimpleNamespace(image_path="/in/broken.jpg", image_id="broken", image_data=None,
                                        metadata={}, aesthetic_score=None, nsfw_score=None))
    committed = a.write(objs_a[:3]) + b.write(objs_b[:2])  # batches smaller than images_per_tar
    assert committed == []
    committed = a.write(objs_a[3:]) + b.write(objs_b[2:])
    assert all(o.image_data is None for o in objs_a)  # remove_image_data
    a.close()
    b.close()

    shards = _tar_jpegs(out)
    fills = sorted(len(v) for v in shards.values())
    assert fills == [1, 3, 4, 4]  # worker a: 7 = 4 + 3, worker b: 5 = 4 + 1; only the last of each short
    assert sorted(Path(p).name for p in committed if p.endswith(".tar")) == sorted(
        n for n, v in shards.items() if len(v) == 4)
    by_key = {m[:-4]: data for v in shards.values() for m, data in v.items()}
    assert sorted(by_key) == sorted([f"ta_{i:06d}" for i in range(7)] + [f"tb_{i:06d}" for i in range(5)])
    for i, px in enumerate(pixels):
        key = f"ta_{i:06d}" if i < 7 else f"tb_{i - 7:06d}"
        ref = io.BytesIO()
        Image.fromarray(px).save(ref, format="JPEG", quality=92)  # what Curator's writer stores
        assert by_key[key] == ref.getvalue()

    rows = [r for p in sorted(out.glob("images-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 12
    row = next(r for r in rows if r["image_id"] == "ta_000002")
    with Image.open(io.BytesIO(by_key["ta_000002"])) as im:
        assert (row["width"], row["height"]) == im.size
    assert json.loads(row["metadata"]) == {"n": 2}
    assert row["nsfw_score"] == pytest.approx(0.25) and row["aesthetic_score"] is None

    index = json.loads((out / "index.json").read_text())
    listed = {f["path"]: f["sha256"] for f in index["files"]}
    for p in out.glob("images-*"):
        assert listed[p.name] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert index["stats"]["images_written"] == 12 and index["stats"]["workers"] == 2
    rejects = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    assert [(r["image_id"], r["source"]) for r in rejects] == [("broken", "/in/broken.jpg")]
    assert not (out / "_curastream" / "journal").exists()  # the index is the record now


def test_a_new_run_resumes_refuses_or_overwrites_as_asked(media_dir, tmp_path):
    pixels = _images(media_dir, 6)
    out = tmp_path / "out"
    first = _worker(out, new_token())
    first.write(_objects(pixels[:5], "t"))  # one full shard committed, one image in the open shard
    before = {p.name: p.read_bytes() for p in out.glob("images-*") if p.suffix in (".tar", ".parquet")}
    assert len(before) == 2
    assert len(list(out.glob("images-*.tar.tmp-*"))) == 1  # killed here: no record, no index, a temporary

    with pytest.raises(OutputExistsError):
        _worker(out, new_token()).open()

    again = _worker(out, new_token(), on_existing="resume")
    again.write(_objects(pixels, "t"))  # the whole input again: only what is not committed is written
    again.close()
    assert again.written == 2
    assert list(out.glob("*.tmp-*")) == []
    jpegs = _tar_jpegs(out)
    keys = sorted(m for v in jpegs.values() for m in v)
    assert keys == [f"t_{i:06d}.jpg" for i in range(6)]  # each image exactly once
    for name, data in before.items():
        assert (out / name).read_bytes() == data
    index = json.loads((out / "index.json").read_text())
    assert {f["path"] for f in index["files"]} >= {p.name for p in out.glob("images-*")}

    (out / "notes.txt").write_text("mine")
    fresh = _worker(out, new_token(), on_existing="overwrite")
    fresh.write(_objects(pixels[:1], "u"))
    fresh.close()
    assert sorted(m for v in _tar_jpegs(out).values() for m in v) == ["u_000000.jpg"]
    assert (out / "notes.txt").read_text() == "mine"  # not ours: kept
    assert finalize_output(str(out))["stats"]["images_written"] == 1


@pytest.mark.slow
def test_the_check_script_passes_against_curator():
    if not BENCH_PYTHON.exists():
        pytest.skip(f"no Curator venv at {BENCH_PYTHON}")
    if subprocess.run([str(BENCH_PYTHON), "-c", "import nemo_curator, curastream"], capture_output=True).returncode:
        pytest.skip(f"{BENCH_PYTHON} lacks nemo_curator or curastream (pip install --no-deps -e .)")
    r = subprocess.run([str(BENCH_PYTHON), str(ROOT / "scripts" / "curator_adapter_check.py")],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PASS" in lines, r.stdout[-3000:]


# -- clips: Curator's Video / Clip fields, converted and written by our ClipWriter --------------
def _curator_video(video_path: Path, clip_bytes: bytes, webp: bytes):
    ns = types.SimpleNamespace

    def clip(i: int, motion: float, **kw):
        return ns(uuid=f"00000000-0000-4000-8000-00000000000{i}", source_video=str(video_path), span=(2.0 * i, 2.0 * i + 2),
                  buffer=clip_bytes, motion_score_global_mean=motion, motion_score_per_patch_min_256=0.5,
                  aesthetic_score=None, cosmos_embed1_embedding=None, errors={}, **kw)

    window = ns(start_frame=0, end_frame=47, caption={"qwen": "a ball"}, enhanced_caption={}, webp_bytes=webp)
    meta = ns(height=240, width=320, framerate=24.0, num_frames=240, duration=10.0, video_codec="h264",
              pixel_format="yuv420p", audio_codec=None)
    return ns(input_video=video_path, metadata=meta, clips=[clip(0, 0.01, windows=[window]), clip(1, 0.02, windows=[])],
              filtered_clips=[clip(2, 0.0, windows=[])], num_total_clips=3, num_clip_chunks=1, clip_chunk_index=0)


def test_a_curator_video_chunk_is_written_in_the_clip_layout(media_dir, tmp_path):
    from curastream.curator.clip_records import chunk_of
    from curastream.writers.clip_writer import ClipWriter

    src = media_dir / "videos" / "imageio_realshort.mp4"
    if not src.exists():
        pytest.skip(f"missing {src}")
    clip_bytes = src.read_bytes()
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buf, format="WEBP")
    video = _curator_video(src, clip_bytes, buf.getvalue())
    out = tmp_path / "out"
    writer = ClipWriter(str(out), str(src.parent), upload_clips=True, dry_run=False, generate_previews=True,
                        generate_captions=True, caption_models=["qwen"])
    writer.write_chunk(*chunk_of(video))
    writer.commit()

    uid = [c.uuid for c in video.clips]
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(f"{u}.mp4" for u in uid)
    assert (out / "clips" / f"{uid[0]}.mp4").read_bytes() == clip_bytes
    assert [p.name for p in (out / "filtered_clips").iterdir()] == [f"{video.filtered_clips[0].uuid}.mp4"]
    import av

    with av.open(str(out / "clips" / f"{uid[0]}.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    meta = json.loads((out / "metas" / "v0" / f"{uid[0]}.json").read_text())
    assert meta["span_uuid"] == uid[0] and meta["duration_span"] == [0.0, 2.0]
    assert meta["motion_score"] == {"global_mean": 0.01, "per_patch_min_256": 0.5}
    assert meta["windows"] == [{"start_frame": 0, "end_frame": 47, "qwen_caption": "a ball"}]
    assert meta["width_source"] == 320 and meta["valid"] is True
    assert (out / "previews" / uid[0] / "0_47.webp").read_bytes() == buf.getvalue()
    chunk = json.loads((out / "processed_clip_chunks" / f"{src.name}_0.json").read_text())
    assert chunk["num_clips_filtered_by_motion"] == 1 and chunk["num_clips_passed"] == 2
    assert chunk["filtered_clips"] == [video.filtered_clips[0].uuid]
    vdoc = json.loads((out / "processed_videos" / f"{src.name}.json").read_text())
    assert vdoc["num_clip_chunks"] == 1 and vdoc["num_total_clips"] == 3
