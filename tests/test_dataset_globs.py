"""The output is a dataset as users query it: every ``*.parquet`` at the root is a shard of one
schema (DuckDB, pyarrow.dataset), run files live in ``_curastream/``, the id is ``image_id``.
Outputs of earlier versions (root ``rejects.parquet`` with a ``key`` column) resume into the new
layout without losing their rejects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from curastream import ImageRunConfig, VideoRunConfig, run_images, run_videos


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from curastream.samples import make_sample_images

    d = tmp_path_factory.mktemp("photos")
    make_sample_images(d)  # includes a near-duplicate and a broken file
    return d


def _run(src: Path, out: Path, **kw):
    return run_images(ImageRunConfig(sources=[str(src)], output=str(out), progress=False, images_per_tar=3, **kw))


def _tar_keys(out: Path) -> list[str]:
    import tarfile

    keys = []
    for t in sorted(out.glob("*.tar")):
        with tarfile.open(t) as tf:
            keys += [m.name.rsplit(".", 1)[0] for m in tf.getmembers() if m.name.endswith(".jpg")]
    return keys


def test_every_root_parquet_is_a_shard_and_globs(photos, tmp_path):
    out = tmp_path / "out"
    _run(photos, out)
    rejects = pq.read_table(out / "_curastream" / "rejects.parquet")
    assert "image_id" in rejects.column_names and "key" not in rejects.column_names
    stages = set(rejects.column("stage").to_pylist())
    assert {"dedup", "decode"} <= stages or "dedup" in stages, stages  # something was rejected
    keys = _tar_keys(out)
    assert len(keys) >= 4

    con = duckdb.connect()
    rows = con.execute(f"SELECT image_id, width, height FROM '{out}/*.parquet' ORDER BY image_id").fetchall()
    assert sorted(r[0] for r in rows) == sorted(keys)  # no reject row, no null id
    assert all(r[0] is not None and r[1] > 0 and r[2] > 0 for r in rows)

    for dataset in (ds.dataset(sorted(str(p) for p in out.glob("*.parquet")), format="parquet"),
                    # the folder itself: tars are not Parquet, `_curastream/` is skipped by its `_`
                    ds.dataset(str(out), format="parquet", exclude_invalid_files=True)):
        assert sorted(dataset.to_table(columns=["image_id"]).column("image_id").to_pylist()) == sorted(keys)
    schemas = {pq.read_schema(p) for p in out.glob("*.parquet")}
    assert len(schemas) == 1


def test_emit_ipc_names_the_id_image_id(photos, tmp_path):
    out, ipc = tmp_path / "out", tmp_path / "rows.arrows"
    _run(photos, out, emit_ipc=str(ipc))
    with pa.OSFile(str(ipc), "rb") as f:
        t = pa.ipc.open_stream(f).read_all()
    assert "image_id" in t.column_names and "key" not in t.column_names
    written = [k for k, st in zip(t.column("image_id").to_pylist(), t.column("status").to_pylist()) if st == "ok"]
    assert sorted(written) == sorted(_tar_keys(out))


def test_output_of_an_earlier_version_resumes_into_the_new_layout(photos, tmp_path):
    """An interrupted run of 0.2 left ``rejects.parquet`` (column ``key``) at the root, listed in
    its index. Resuming keeps every reject, moves the file into ``_curastream/`` and leaves the
    root globbable."""
    out = tmp_path / "out"
    _run(photos, out)
    want_rejects = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    want_keys = sorted(_tar_keys(out))
    # rewrite it as 0.2 wrote it
    legacy = pq.read_table(out / "_curastream" / "rejects.parquet").rename_columns(
        ["key" if n == "image_id" else n for n in pq.read_schema(out / "_curastream" / "rejects.parquet").names])
    pq.write_table(legacy, out / "rejects.parquet")
    shutil.rmtree(out / "_curastream")
    index = json.loads((out / "index.json").read_text())
    for f in index["files"]:
        if f["path"] == "_curastream/rejects.parquet":
            f["path"] = "rejects.parquet"
    (out / "index.json").write_text(json.dumps(index))
    # the last shard never made it
    last = sorted(out.glob("*.tar"))[-1]
    last.unlink()
    last.with_suffix(".parquet").unlink()

    _run(photos, out, on_existing="resume")
    assert not (out / "rejects.parquet").exists()
    got = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    assert [(r["image_id"], r["stage"]) for r in got] == [(r["image_id"], r["stage"]) for r in want_rejects]
    assert sorted(_tar_keys(out)) == want_keys
    rows = duckdb.connect().execute(f"SELECT count(*) FROM '{out}/*.parquet'").fetchone()
    assert rows[0] == len(want_keys)


def test_foreign_root_rejects_parquet_is_kept_and_not_read(photos, tmp_path):
    """A user's own ``rejects.parquet`` at the root is not our record: kept, never read."""
    out = tmp_path / "out"
    _run(photos, out)
    pq.write_table(pa.table({"key": ["not-ours"], "source": ["x"], "stage": ["decode"], "reason": ["r"]}),
                   out / "rejects.parquet")
    _run(photos, out, on_existing="resume")
    assert pq.read_table(out / "rejects.parquet").column("key").to_pylist() == ["not-ours"]
    ids = pq.read_table(out / "_curastream" / "rejects.parquet").column("image_id").to_pylist()
    assert "not-ours" not in ids


@pytest.mark.slow
def test_clip_tree_keeps_run_files_apart(tmp_path):
    from curastream.samples import make_sample_videos

    vids = tmp_path / "vids"
    make_sample_videos(vids)
    (vids / "broken.mp4").write_bytes(b"\0" * 2048)
    out = tmp_path / "out"
    run_videos(VideoRunConfig(sources=[str(vids)], output=str(out), progress=False, dry_run=True))
    assert not list(out.glob("*.parquet"))
    assert sorted(p.name for p in (out / "_curastream").iterdir()) == ["rejects.parquet", "run.json", "summary.json"]
    rej = pq.read_table(out / "_curastream" / "rejects.parquet")
    assert rej.column_names == ["source", "stage", "reason", "transient"]
    assert [Path(s).name for s in rej.column("source").to_pylist()] == ["broken.mp4"]
    summary = json.loads((out / "_curastream" / "summary.json").read_text())
    assert summary["totals"]["videos_rejected"] == 1
