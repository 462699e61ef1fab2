"""`curastream export`: a clip tree and an image output made by the real pipelines, exported and
read back with what users use (tarfile, the webdataset package into a torch DataLoader, HF
datasets, pyarrow, PyAV). Expected values come from the source trees themselves (metas JSON,
pickles, source tars and Parquet, filtered with pyarrow.compute), never from the exporter."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import media_path
from curastream import ImageFilters, ImageRunConfig, VideoRunConfig, run_images
from curastream.engine.output import OutputExistsError, OutputOverlapError
from curastream.export import ExportConfig, run_export
from curastream.samples import make_sample_videos
from curastream.videos.pipeline import run_videos

IMAGES = ("opencv_squirrel_cls.jpg", "skimage_chelsea.png", "opencv_fruits.jpg", "opencv_building.jpg",
          "skimage_coffee.png", "opencv_leuvenA.jpg", "skimage_hubble_deep_field.jpg")


def _embed(frames) -> np.ndarray:
    return np.linspace(0, 1, 16, dtype=np.float32) * len(frames)


def _caption(frames) -> str:
    return f"a clip of {len(frames)} sampled frames"


@pytest.fixture(scope="module")
def clip_tree(tmp_path_factory) -> Path:
    videos = make_sample_videos(tmp_path_factory.mktemp("videos"))
    out = tmp_path_factory.mktemp("clips") / "tree"
    run_videos(VideoRunConfig(sources=[str(v.path) for v in videos if v.path.suffix == ".mp4"], output=str(out),
                              progress=False, generate_embeddings=True, embedder=_embed, captioner=_caption))
    return out


@pytest.fixture(scope="module")
def image_out(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("imgsrc")
    for name in IMAGES:
        (src / name).write_bytes(media_path("images", name).read_bytes())
    out = tmp_path_factory.mktemp("imgs") / "shards"
    run_images(ImageRunConfig(sources=[str(src)], output=str(out), progress=False, images_per_tar=3,
                              filters=ImageFilters(dedup=False, min_resolution=None)))
    return out


def _tars(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


def _members(tar: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def _samples(folder: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar in _tars(folder):
        for name, data in _members(tar):
            key, ext = name.split(".", 1)
            out.setdefault(key, {})[ext] = data
    return out


def _metas(tree: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (tree / "metas" / "v0").glob("*.json")}


def _passed(tree: Path) -> set[str]:
    return {p.stem for p in (tree / "clips").glob("*.mp4")}


# -- clip tree -> WebDataset ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_wds(clip_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wds") / "clips"
    run_export(ExportConfig(source=str(clip_tree), output=str(out), per_shard=2))
    return out


def test_clip_samples_carry_media_metas_captions_embeddings(clip_tree, clip_wds):
    samples = _samples(clip_wds)
    passed = _passed(clip_tree)
    assert passed and set(samples) == passed  # filtered clips stay out by default
    metas = _metas(clip_tree)
    for key, s in samples.items():
        assert set(s) == {"mp4", "json", "txt", "npy"}
        assert s["mp4"] == (clip_tree / "clips" / f"{key}.mp4").read_bytes()
        assert s["json"] == (clip_tree / "metas" / "v0" / f"{key}.json").read_bytes()
        caps = [v for w in metas[key]["windows"] for k, v in w.items() if k.endswith("_caption")]
        assert caps and s["txt"].decode() == "\n".join(caps)
        stored = pickle.loads((clip_tree / "iv2_embd" / f"{key}.pickle").read_bytes())
        vec = np.load(io.BytesIO(s["npy"]))
        assert vec.dtype == np.float16 and np.array_equal(vec, stored.reshape(-1))
        with av.open(io.BytesIO(s["mp4"])) as c:
            assert sum(1 for _ in c.decode(video=0)) == metas[key]["num_frames"]


def test_clip_shards_count_order_and_index(clip_tree, clip_wds):
    tars = _tars(clip_wds)
    assert len(tars) == math.ceil(len(_passed(clip_tree)) / 2)
    for tar in tars:
        rows = pq.read_table(tar.with_suffix(".parquet")).to_pylist()
        names = [n for n, _ in _members(tar)]
        assert [r["member_name"] for r in rows] == [n for n in names if n.endswith(".mp4")]
        assert all(r["tar_file"] == str(tar) for r in rows)
        assert len(rows) <= 2
    index = json.loads((clip_wds / "index.json").read_text())
    listed = {f["path"]: f for f in index["files"]}
    for p in tars + [t.with_suffix(".parquet") for t in tars]:
        assert listed[p.name]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_include_filtered(clip_tree, tmp_path):
    filtered = {p.stem for p in (clip_tree / "filtered_clips").glob("*.mp4")}
    assert filtered, "the sample static video should be filtered by motion"
    run_export(ExportConfig(source=str(clip_tree), output=str(tmp_path / "o"), include_filtered=True))
    assert set(_samples(tmp_path / "o")) == _passed(clip_tree) | filtered


def test_webdataset_into_torch_dataloader(clip_wds):
    torch = pytest.importorskip("torch")
    wds = pytest.importorskip("webdataset")

    def first_frame(sample):
        with av.open(io.BytesIO(sample["mp4"])) as c:
            frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
        # webdataset's default decoders: .txt -> str, .json -> dict, .npy -> ndarray; .mp4 stays bytes
        assert sample["json"]["span_uuid"] == sample["__key__"]
        return torch.from_numpy(frame), sample["txt"], torch.from_numpy(sample["npy"].astype(np.float32))

    urls = [str(t) for t in _tars(clip_wds)]
    ds = wds.WebDataset(urls, shardshuffle=False).decode().map(first_frame)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
    seen = 0
    for frames, texts, vecs in loader:
        assert frames.shape[1:] == (240, 320, 3) and frames.dtype == torch.uint8
        assert vecs.shape[1:] == (16,)
        assert all(t.startswith("a clip of") for t in texts)
        seen += frames.shape[0]
    assert seen == sum(len(pq.read_table(t.with_suffix(".parquet"))) for t in _tars(clip_wds))


def test_hf_datasets_load_webdataset(clip_wds, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = datasets.load_dataset("webdataset", data_files={"train": [str(t) for t in _tars(clip_wds)]},
                               split="train", cache_dir=str(tmp_path / "hf"))
    keys = [json.loads(m)["span_uuid"] if isinstance(m, (str, bytes)) else m["span_uuid"] for m in ds["json"]]
    assert sorted(keys) == sorted(_samples(clip_wds))
    assert all(isinstance(t, str) and t.startswith("a clip of") for t in ds["txt"])


# -- clip tree -> Parquet index ------------------------------------------------------------------


def test_clip_parquet_index(clip_tree, tmp_path):
    run_export(ExportConfig(source=str(clip_tree), output=str(tmp_path / "p"), format="parquet"))
    assert not list((tmp_path / "p").glob("*.tar"))
    t = pq.ParquetDataset(sorted(str(p) for p in (tmp_path / "p").glob("*.parquet"))).read()
    metas = _metas(clip_tree)
    assert set(t.column("span_uuid").to_pylist()) == _passed(clip_tree)
    for r in t.to_pylist():
        m = metas[r["span_uuid"]]
        assert [r["start_s"], r["end_s"]] == m["duration_span"]
        assert Path(r["clip_location"]).read_bytes()[:12] == (clip_tree / "clips" / f"{r['span_uuid']}.mp4").read_bytes()[:12]
        assert r["sharpness"] == pytest.approx(m["frame_scores"]["sharpness"], rel=1e-6)
        assert r["captions"] == [_caption_of(m)]
        stored = pickle.loads((clip_tree / "iv2_embd" / f"{r['span_uuid']}.pickle").read_bytes())
        assert np.array_equal(np.array(r["embedding"], np.float32), stored.reshape(-1).astype(np.float32))


def _caption_of(meta: dict) -> str:
    (w,) = meta["windows"]
    return next(v for k, v in w.items() if k.endswith("_caption"))


# -- image output: re-shard and filter -----------------------------------------------------------


def _source_rows(image_out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(image_out.glob("images-*.parquet"))])


def test_image_reshard_with_where(image_out, tmp_path):
    src = _source_rows(image_out)
    cut = float(np.median(src.column("sharpness").to_numpy()))
    want = src.filter(pc.and_(pc.greater(src["sharpness"], cut), pc.greater(src["width"], 500)))
    assert 0 < want.num_rows < src.num_rows
    out = tmp_path / "re"
    run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=2,
                            where=f"sharpness > {cut!r} and width > 500"))
    originals = _samples(image_out)
    got_order = [n.split(".", 1)[0] for t in _tars(out) for n, _ in _members(t) if not n.endswith(".json")]
    assert got_order == want.column("image_id").to_pylist()  # source order kept
    assert len(_tars(out)) == math.ceil(want.num_rows / 2)
    for key, s in _samples(out).items():
        assert s == originals[key]  # image and sidecar bytes unchanged
    rows = pa.concat_tables([pq.read_table(t.with_suffix(".parquet")) for t in _tars(out)])
    assert rows.column("sharpness").to_pylist() == want.column("sharpness").to_pylist()
    # the re-sharded output is itself an image output that can be exported again
    again = tmp_path / "again"
    run_export(ExportConfig(source=str(out), output=str(again), format="parquet"))
    assert pq.ParquetDataset([str(p) for p in again.glob("*.parquet")]).read().num_rows == want.num_rows


def test_max_shard_bytes_cuts_by_size(image_out, tmp_path):
    sizes = []
    for t in _tars(image_out):
        per_key: dict[str, int] = {}
        for name, data in _members(t):
            per_key[name.split(".", 1)[0]] = per_key.get(name.split(".", 1)[0], 0) + len(data)
        sizes += list(per_key.values())
    limit = max(sizes) + 10  # every sample fits alone, few fit together
    shards, cur = 0, None
    for s in sizes:  # greedy cut, counted independently
        if cur is None or cur + s > limit:
            shards, cur = shards + 1, 0
        cur += s
    run_export(ExportConfig(source=str(image_out), output=str(tmp_path / "b"), max_shard_bytes=limit, per_shard=100))
    tars = _tars(tmp_path / "b")
    assert len(tars) == shards > 1
    for t in tars:
        assert sum(len(d) for _, d in _members(t)) <= limit


def test_where_errors_name_the_columns(image_out, tmp_path):
    with pytest.raises(ValueError, match="no_such_column.*columns: .*sharpness"):
        run_export(ExportConfig(source=str(image_out), output=str(tmp_path / "x"), where="no_such_column > 1"))
    # the condition reads the index only, never the machine's files
    with pytest.raises(ValueError):
        run_export(ExportConfig(source=str(image_out), output=str(tmp_path / "y"),
                                where="(select count(*) from read_text('/etc/hostname')) > 0"))


# -- resume and output safety --------------------------------------------------------------------


class _Stop(KeyboardInterrupt):
    pass


def _files(folder: Path) -> dict[str, object]:
    """Tars by their bytes; Parquets by their rows, with tar_file (an absolute path, which names
    the output folder) cut to its file name."""
    out: dict[str, object] = {}
    for p in folder.iterdir():
        if p.suffix == ".tar":
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.suffix == ".parquet":
            rows = pq.read_table(p).to_pylist()
            for r in rows:
                if r.get("tar_file"):
                    r["tar_file"] = Path(r["tar_file"]).name
            out[p.name] = rows
    return out


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_interrupted_export_resumes_to_the_same_files(image_out, tmp_path, fmt):
    clean = tmp_path / "clean"
    run_export(ExportConfig(source=str(image_out), output=str(clean), per_shard=2, format=fmt))
    out = tmp_path / "cut"
    calls = []

    def stop_after_two(info):
        calls.append(info)
        if len(calls) == 2:
            raise _Stop()

    with pytest.raises(_Stop):
        run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=2, format=fmt), on_shard=stop_after_two)
    assert not (out / "index.json").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    with pytest.raises(OutputExistsError):
        run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=2, format=fmt))
    stats = run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=2, format=fmt,
                                    on_existing="resume"))
    assert stats["resumed_skipped"] == 4
    assert _files(out) == _files(clean)
    index = json.loads((out / "index.json").read_text())
    assert {f["path"] for f in index["files"] if f["path"].endswith((".tar", ".parquet"))} == set(_files(clean))


def test_resume_with_other_settings_is_refused(image_out, tmp_path):
    out = tmp_path / "o"
    run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=2))
    with pytest.raises(Exception, match="per_shard"):
        run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=3, on_existing="resume"))


def test_output_inside_the_source_is_refused(image_out):
    with pytest.raises(OutputOverlapError):
        run_export(ExportConfig(source=str(image_out), output=str(image_out / "export")))
    assert not (image_out / "export").exists()


def test_overwrite_keeps_foreign_files(image_out, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        run_export(ExportConfig(source=str(image_out), output=str(out)))
    run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=3, on_existing="overwrite"))
    first = _files(out)
    run_export(ExportConfig(source=str(image_out), output=str(out), per_shard=7, on_existing="overwrite"))
    assert (out / "notes.txt").read_text() == "mine"
    assert not set(first) & set(_files(out))  # the earlier shards are gone, not left beside the new


def test_cli(image_out, clip_tree, tmp_path):
    from curastream.cli import main

    r = CliRunner().invoke(main, ["export", str(image_out), "-o", str(tmp_path / "c"), "--where", "width > 500",
                                  "--per-shard", "2", "--max-shard-bytes", "64M"])
    assert r.exit_code == 0, r.output
    want = _source_rows(image_out).filter(pc.greater(_source_rows(image_out)["width"], 500)).num_rows
    assert f"{want} of {len(IMAGES)} images exported" in r.output
    bad = CliRunner().invoke(main, ["export", str(clip_tree), "-o", str(tmp_path / "d"), "--where", "nope > 1"])
    assert bad.exit_code == 2 and "nope" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(main, ["export", str(empty), "-o", str(tmp_path / "e")])
    assert none.exit_code == 2 and "nothing to export" in none.output
