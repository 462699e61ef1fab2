"""The image pipeline end to end: ImageWriterStage layout read back with independent readers."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import MEDIA
from curastream import ImageFilters, ImageRunConfig, run_images, stream_images
from curastream.engine.output import OutputExistsError
from curastream.writers.image_shards import _tarinfo, member_header

CURATOR_COLS = ["image_id", "tar_file", "member_name", "original_path", "metadata"]
SCORE_COLS = ["sharpness", "mean_luma", "frac_dark", "frac_bright", "contrast", "colorfulness", "entropy"]


def _run(srcs, out, **kw):
    kw.setdefault("progress", False)
    return run_images(ImageRunConfig(sources=[str(s) for s in srcs], output=str(out), **kw))


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("images-*.tar"))


def _all_rows(out: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p.with_suffix(".parquet")) for p in _shards(out)]
    return pd.concat(frames, ignore_index=True)


def _rejects(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "_curastream" / "rejects.parquet").to_pandas()


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    if not MEDIA.is_dir():
        pytest.skip("shared media absent")
    out = tmp_path_factory.mktemp("media") / "out"
    stats = _run([MEDIA / "images", MEDIA / "bad"], out, images_per_tar=8)
    return out, stats


def test_every_input_is_written_or_rejected_with_a_reason(media_run):
    out, stats = media_run
    good = sorted(p.name for p in (MEDIA / "images").iterdir())
    bad_images = sorted(p.name for p in (MEDIA / "bad").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = _all_rows(out)
    rej = _rejects(out)
    written = sorted(Path(p).name for p in rows["original_path"])
    rejected = sorted(Path(p).name for p in rej["source"])
    assert written == good, "every good photo lands in a shard"
    assert rejected == bad_images, "every bad image is rejected"
    assert rej["reason"].str.len().min() > 3 and rej["stage"].isin(["read", "decode", "filter"]).all()
    assert (rej.set_index(rej["source"].map(lambda s: Path(s).name))).loc["forensics_empty.jpg", "stage"] == "filter"
    assert stats.items_in == len(good) + len(bad_images)
    assert stats.items_out == len(good) and stats.items_rejected == len(bad_images)


def test_tar_members_follow_spec(media_run):
    out, _ = media_run
    shards = _shards(out)
    counts = []
    for tar_path in shards:
        with tarfile.open(tar_path) as tf:
            members = tf.getmembers()
            for m in members:
                assert m.mode == 0o644 and m.mtime == 0 and m.uid == 0 and m.gid == 0
                assert m.uname == "" and m.gname == ""
                key, ext = m.name.split(".", 1)
                assert ext in ("jpg", "json") and "/" not in key
            jpgs = [m for m in members if m.name.endswith(".jpg")]
            counts.append(len(jpgs))
            for m in jpgs:
                im = Image.open(io.BytesIO(tf.extractfile(m).read()))
                im.load()
                assert im.format == "JPEG" and im.mode == "RGB", m.name
        name = tar_path.stem
        assert name.startswith("images-") and len(name.split("-")[1]) == 12
    # packed full across batches: only the last shard may be short
    assert all(c == 8 for c in counts[:-1]) and 0 < counts[-1] <= 8
    assert [int(p.stem.rsplit("-", 1)[1]) for p in shards] == list(range(len(shards)))


def _tarfile_copy(tar_path: Path) -> bytes:
    """The same members rewritten by tarfile itself, as the writer once did."""
    buf = io.BytesIO()
    with tarfile.open(tar_path) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(_tarinfo(m.name, m.size), io.BytesIO(src.extractfile(m).read()))
    return buf.getvalue()


def test_shards_are_byte_identical_to_what_tarfile_writes(media_run):
    out, _ = media_run
    for tar_path in _shards(out):
        assert tar_path.read_bytes() == _tarfile_copy(tar_path), tar_path.name


@pytest.mark.parametrize("name", ["a.jpg", "x" * 96 + ".jpg", "x" * 97 + ".jpg", "caf\u00e9.jpg",
                                  "k\udcff.jpg", "dir/sub/name.json", ""])
def test_member_header_is_tarfiles(name):
    # The fast path (ASCII, <= 100 bytes) and the PAX-record fallback both match tarfile.
    for size in (0, 1, 511, 512, 513, 8**11 - 1, 8**11):
        ref = _tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        assert member_header(name, size) == ref, (name, size)


def test_parquet_has_curator_and_typed_columns(media_run):
    out, _ = media_run
    for tar_path in _shards(out):
        t = pq.read_table(tar_path.with_suffix(".parquet"))
        assert t.column_names[:5] == CURATOR_COLS
        for c in CURATOR_COLS:
            assert t.schema.field(c).type == pa.string()
        assert t.schema.field("width").type == pa.int32() and t.schema.field("height").type == pa.int32()
        for c in SCORE_COLS:
            assert t.schema.field(c).type == pa.float32()
            assert t.column(c).null_count == 0
        with tarfile.open(tar_path) as tf:
            jpg_members = [m.name for m in tf.getmembers() if m.name.endswith(".jpg")]
        assert t.column("member_name").to_pylist() == jpg_members, "same row order as the tar"
        assert set(t.column("tar_file").to_pylist()) == {str(tar_path)}
        for m in t.column("metadata").to_pylist():
            json.loads(m)
        df = pd.read_parquet(tar_path.with_suffix(".parquet"))
        assert len(df) == t.num_rows


def test_pixels_and_orientation(media_run):
    out, _ = media_run
    rows = _all_rows(out).set_index("image_id")
    by_name = {Path(p).name: k for k, p in rows["original_path"].items()}

    def member_bytes(name):
        key = by_name[name]
        with tarfile.open(rows.loc[key, "tar_file"]) as tf:
            return tf.extractfile(rows.loc[key, "member_name"]).read()

    # an unchanged RGB JPEG is written byte for byte
    orig = (MEDIA / "images" / "mate_Dune.jpg").read_bytes()
    assert member_bytes("mate_Dune.jpg") == orig
    assert bool(rows.loc[by_name["mate_Dune.jpg"], "passthrough"])
    # grayscale JPEG comes out RGB (re-encoded)
    gray = Image.open(io.BytesIO(member_bytes("opencv_left01.jpg")))
    assert gray.mode == "RGB" and not rows.loc[by_name["opencv_left01.jpg"], "passthrough"]
    # EXIF-rotated input: upright dims recorded; if passed through, orientation is kept
    k = by_name["derived_rocket_exif_orientation6.jpg"]
    assert (rows.loc[k, "width"], rows.loc[k, "height"]) == (427, 640)
    im = Image.open(io.BytesIO(member_bytes("derived_rocket_exif_orientation6.jpg")))
    from PIL import ImageOps

    assert ImageOps.exif_transpose(im).size == (427, 640)
    # RGBA PNG becomes an RGB JPEG of the same size
    im = Image.open(io.BytesIO(member_bytes("opencv_chicky_512.png")))
    assert im.mode == "RGB" and im.size == (512, 512)


def test_webdataset_reads_the_shards(media_run):
    wds = pytest.importorskip("webdataset")
    out, _ = media_run
    urls = [str(p) for p in _shards(out)]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    rows = _all_rows(out)
    assert [s["__key__"] for s in samples] == rows["image_id"].tolist()
    for s in samples[:5]:
        assert set(k for k in s if not k.startswith("__")) == {"jpg", "json"}
        meta = json.loads(s["json"])
        assert meta["image_id"] == s["__key__"]


def test_same_run_twice_is_byte_identical(media_run, tmp_path):
    out, _ = media_run

    def digest(d: Path):
        return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(d.rglob("*")) if p.is_file() and p.name != "index.json"}

    before = digest(out)
    # tar_file holds the absolute output path (as Curator's does), so rerun into the same place
    _run([MEDIA / "images", MEDIA / "bad"], out, images_per_tar=8, on_existing="overwrite", workers=1, batch_size=5)
    assert digest(out) == before
    # tars do not depend on the location at all
    out2 = tmp_path / "elsewhere"
    _run([MEDIA / "images", MEDIA / "bad"], out2, images_per_tar=8)
    assert {k: v for k, v in digest(out2).items() if k.endswith(".tar")} == \
        {k: v for k, v in before.items() if k.endswith(".tar")}


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != "index.json"}


def test_index_json_lists_every_file(media_run):
    out, _ = media_run
    doc = json.loads((out / "index.json").read_text())
    listed = {f["path"]: f for f in doc["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"index.json"}
    assert set(listed) == on_disk
    for name, f in listed.items():
        assert f["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert sum(f["rows"] for n, f in listed.items() if n.endswith(".tar")) == len(_all_rows(out))


# -- generated data (no shared media needed) --------------------------------------------------------
@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    from curastream.samples import make_sample_images

    d = tmp_path_factory.mktemp("samples")
    make_sample_images(d)
    return d


def test_near_duplicates_are_recorded(sample_dir, tmp_path):
    out = tmp_path / "o"
    _run([sample_dir], out, images_per_tar=3, batch_size=2)
    rej = _rejects(out)
    dup = rej[rej["stage"] == "dedup"]
    assert dup["image_id"].tolist() == ["astronaut_small_copy"]
    assert dup["duplicate_of"].tolist() == ["astronaut"]
    assert "broken" in rej["image_id"].tolist()
    counts = [len(pq.read_table(p.with_suffix(".parquet"))) for p in _shards(out)]
    assert all(c == 3 for c in counts[:-1])


def test_threshold_filters_record_reasons(sample_dir, tmp_path):
    out = tmp_path / "o"
    stats = _run([sample_dir], out, filters=ImageFilters(min_sharpness=1e9, dedup=False))
    rej = _rejects(out)
    assert (rej["reason"].str.startswith("min_sharpness")).sum() == stats.items_in - 1  # all but the broken one
    assert not _shards(out)


def test_existing_output_is_an_error_by_default_and_resume_completes(sample_dir, tmp_path):
    out = tmp_path / "o"
    _run([sample_dir], out, images_per_tar=2)
    with pytest.raises(OutputExistsError):
        _run([sample_dir], out, images_per_tar=2)
    full = _files(out)
    # simulate a crash: last shard and the index gone, a temp file and an orphan tar left behind
    shards = _shards(out)
    shards[-1].unlink()
    shards[-1].with_suffix(".parquet").unlink()
    shards[-2].with_suffix(".parquet").unlink()  # tar committed, parquet not: must be rebuilt
    (out / "index.json").unlink()
    (out / f"{shards[-1].name}.tmp-999-deadbeef").write_bytes(b"partial")
    _run([sample_dir], out, images_per_tar=2, on_existing="resume")
    assert _files(out) == full
    assert (out / "index.json").exists()


def test_wds_and_parquet_inputs_keep_keys_and_metadata(sample_dir, tmp_path):
    wds = pytest.importorskip("webdataset")
    src = tmp_path / "in.tar"
    jpgs = [p for p in sorted(sample_dir.glob("*.jpg")) if p.stem not in ("broken", "astronaut_small_copy")][:3]
    with wds.TarWriter(str(src)) as tw:
        for i, p in enumerate(jpgs):
            tw.write({"__key__": f"sample{i:03d}", "jpg": p.read_bytes(), "txt": f"caption {i}"})
    table = pa.table({"key": ["pq_a", "pq_b"], "image": [jpgs[0].read_bytes(), jpgs[1].read_bytes()],
                      "label": [1, 2]})
    pq.write_table(table, tmp_path / "in.parquet")
    out = tmp_path / "o"
    _run([src, tmp_path / "in.parquet"], out, filters=ImageFilters(dedup=False))
    rows = _all_rows(out).set_index("image_id")
    assert {"sample000", "sample001", "sample002", "pq_a", "pq_b"} <= set(rows.index)
    assert json.loads(rows.loc["sample001", "metadata"])["txt"] == "caption 1"
    assert json.loads(rows.loc["pq_b", "metadata"])["label"] == 2


def test_stream_images_yields_scored_batches_without_writing(sample_dir):
    paths = sorted(sample_dir.glob("*.jpg"))
    batches = list(stream_images(paths))
    t = pa.Table.from_batches(batches)
    assert t.num_rows == len(paths)
    ok = t.filter(pa.compute.equal(t.column("status"), "ok"))
    assert ok.num_rows == len(paths) - 2  # broken.jpg and the near-duplicate
    assert all(v is not None and v > 0 for v in ok.column("sharpness").to_pylist())
    assert "data" not in t.column_names


def test_cli_emit_ipc_and_stats(sample_dir, tmp_path):
    exe = Path(sys.executable).with_name("curastream")
    out, ipc, stats = tmp_path / "o", tmp_path / "r.arrows", tmp_path / "stats.json"
    r = subprocess.run([str(exe), "images", str(sample_dir), "--output", str(out), "--emit-ipc", str(ipc),
                        "--stats", str(stats), "--images-per-tar", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "written" in r.stdout and "bottleneck" in r.stdout
    code = ("import pyarrow.ipc as i, sys; t = i.open_stream(open(sys.argv[1], 'rb')).read_all();"
            "print(t.num_rows, sorted(set(t.column('status').to_pylist())), t.column_names.count('tar_file'))")
    rr = subprocess.run([sys.executable, "-c", code, str(ipc)], capture_output=True, text=True, check=True)
    n, _, rest = rr.stdout.partition(" ")
    assert int(n) == len(list(sample_dir.iterdir()))
    assert "'ok'" in rest and "'rejected'" in rest
    doc = json.loads(stats.read_text())
    names = [s["name"] for s in doc["stages"]]
    # dedup is on: the analysis pass (decode, score), then the write pass (images.dedup)
    assert names == ["decode", "score", "analysed", "filter", "encode", "write"]
    assert all(0 <= s["utilisation"] <= 1.5 for s in doc["stages"]) and doc["bottleneck"] in names
    assert len(doc["queues"]) == 2 + 5


def test_dali_cpu_decoder_gives_the_same_shard_rows(sample_dir, tmp_path):
    pytest.importorskip("nvidia.dali")
    a, b = tmp_path / "a", tmp_path / "b"
    _run([sample_dir], a, filters=ImageFilters(dedup=False))
    _run([sample_dir], b, decoder="dali", device="cpu", filters=ImageFilters(dedup=False))
    ra, rb = _all_rows(a), _all_rows(b)
    assert ra["image_id"].tolist() == rb["image_id"].tolist()
    # different resamplers, same picture: scores agree loosely
    np.testing.assert_allclose(ra["mean_luma"], rb["mean_luma"], rtol=0.05, atol=2)
