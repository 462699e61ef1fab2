"""The composed API (curastream.compose): the seed documents' code, user stages, build checks.

Outputs are read back with tarfile, pyarrow, PIL, PyAV and webdataset; the composed form of
the CLI's run is held byte-equal to run_images / run_videos.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

import curastream
from curastream import (ClipTranscodingStage, ClipWriterStage, FilePartitioningStage, FixedStrideExtractorStage, ImageFilterStage,
                        ImageNSFWFilterStage, ImageReaderStage, ImageWriterStage, MissingPluginError, MotionFilterStage, Pipeline,
                        PipelineError, ProcessingStage, UserStageError, VideoReader, register_embedder)
from curastream.config import ImageFilters, ImageRunConfig, VideoRunConfig
from curastream.samples import make_sample_images

from conftest import media_path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".mpo"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("samples")
    make_sample_images(d)
    return d


@pytest.fixture(autouse=True)
def _no_plugins():
    yield
    register_embedder("internvideo2", None)


def dataset_files(out: Path) -> dict[str, bytes]:
    """Every file of the dataset, by relative path; the run files that hold timings are left out
    (index.json, run.json, summary.json: wall times and settings, not data)."""
    skip = {"index.json", "_curastream/run.json", "_curastream/summary.json"}
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).as_posix() not in skip}


def run_twice(tmp_path: Path, first, second) -> tuple[dict, dict]:
    """Both runs write to the same path (the output's URL is inside the files), one after the other."""
    out = tmp_path / "out"
    first(str(out))
    a = dataset_files(out)
    shutil.rmtree(out)
    second(str(out))
    return a, dataset_files(out)


def shard_members(out: Path) -> tuple[list[str], pa.Table]:
    tars = sorted(out.glob("images-*.tar"))
    names = []
    for t in tars:
        with tarfile.open(t) as tf:
            names += tf.getnames()
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("images-*.parquet"))])
    return names, table


# -- images: the seed ------------------------------------------------------------------------------
SEED_IMAGE_SNIPPET = '''
pipeline.add_stage(ImageWriterStage(
    output_dir="/output/curated_images",    # Output directory for tar files and metadata
    images_per_tar=1000,                    # Number of images per tar file
    remove_image_data=True,                 # Remove image data from memory after writing
    verbose=True,                           # Enable progress logging
))
'''


def test_the_seed_image_writer_snippet_builds_and_runs_on_real_photos(tmp_path):
    pipeline = Pipeline(name="image_curation", description="Curate images")
    exec(SEED_IMAGE_SNIPPET, {"ImageWriterStage": ImageWriterStage, "pipeline": pipeline})
    assert not Path("/output/curated_images").exists()  # constructing a stage writes nothing

    photos = media_path("images")
    inputs = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    out = tmp_path / "curated_images"
    pipeline = Pipeline(name="image_curation", description="Curate images")
    pipeline.add_stage(FilePartitioningStage(file_paths=str(photos)))
    pipeline.add_stage(ImageReaderStage(dali_batch_size=8, num_threads=2, num_gpus_per_worker=0.25))
    pipeline.add_stage(ImageWriterStage(output_dir=str(out), images_per_tar=1000, remove_image_data=True,
                                        verbose=True))
    stats = pipeline.run()

    names, table = shard_members(out)
    rejected = pq.read_table(out / "_curastream" / "rejects.parquet")
    # a reader -> writer pipeline filters nothing: every photo is written or rejected as unreadable
    assert table.num_rows + rejected.num_rows == len(inputs) == stats.items_in
    assert set(rejected.column("stage").to_pylist()) <= {"read", "decode", "encode"}
    assert len(list(out.glob("images-*.tar"))) == 1  # under 1000 images: one shard
    jpgs = [n for n in names if n.endswith(".jpg")]
    assert jpgs == table.column("member_name").to_pylist()
    with tarfile.open(next(out.glob("images-*.tar"))) as tf:
        for name in jpgs:
            im = Image.open(io.BytesIO(tf.extractfile(name).read()))
            assert im.format == "JPEG"
            im.load()
    # every photo given is in a shard or in the rejects, once
    written = table.column("original_path").to_pylist()
    assert sorted(written + rejected.column("source").to_pylist()) == sorted(map(str, inputs))


def test_the_composed_cli_run_equals_run_images_byte_for_byte(tmp_path, samples):
    def composed(out):
        p = Pipeline(name="cli", description="reader -> default filters -> writer")
        p.add_stage(FilePartitioningStage(file_paths=str(samples)))
        p.add_stage(ImageReaderStage())
        p.add_stage(ImageFilterStage())
        p.add_stage(ImageWriterStage(output_dir=out, images_per_tar=4, remove_image_data=True, verbose=True))
        p.run()

    a, b = run_twice(tmp_path, composed, lambda out: curastream.run_images(ImageRunConfig(
        sources=[str(samples)], output=out, images_per_tar=4, remove_image_data=True, verbose=True)))
    assert len([n for n in a if n.endswith(".tar")]) >= 2  # more than one shard compared
    assert "_curastream/rejects.parquet" in a
    assert a == b


def test_a_reader_writer_pipeline_equals_run_images_without_filters(tmp_path, samples):
    def composed(out):
        p = Pipeline(name="plain")
        p.add_stage(FilePartitioningStage(file_paths=str(samples)))
        p.add_stage(ImageReaderStage())
        p.add_stage(ImageWriterStage(output_dir=out))
        p.run()

    off = ImageFilters(min_resolution=None, max_aspect=None, dedup=False)
    a, b = run_twice(tmp_path, composed, lambda out: curastream.run_images(ImageRunConfig(
        sources=[str(samples)], output=out, filters=off)))
    assert a == b
    written = pq.read_table(io.BytesIO(next(v for k, v in a.items() if k.startswith("images-") and k.endswith(".parquet"))))
    rejected = pq.read_table(io.BytesIO(a["_curastream/rejects.parquet"]))
    # nothing is filtered: only an unreadable sample is left out
    assert set(rejected.column("stage").to_pylist()) <= {"read", "decode"}
    assert written.num_rows + rejected.num_rows == len([p for p in samples.iterdir() if p.suffix.lower() in IMAGE_EXTS])


# -- images: user stages ---------------------------------------------------------------------------
def _pil_reads(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except OSError:
        return False


class MeanRed(ProcessingStage):
    """A NumPy scorer on the input bytes: the mean of the red channel, upright."""

    name = "mean_red"
    inputs = ("data",)
    outputs = {"mean_red": pa.float32()}

    def __init__(self):
        self.opened = self.closed = 0

    def setup(self):
        self.opened += 1

    def teardown(self):
        self.closed += 1

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        reds = [float(np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(d))).convert("RGB"))[..., 0].mean())
                for d in batch.column("data").to_pylist()]
        return batch.append_column("mean_red", pa.array(reds, pa.float64()))


class DropByName(ProcessingStage):
    """A filter: keeps the rows whose key does not start with ``prefix``."""

    name = "drop_c"
    inputs = ("image_id",)
    outputs = {}

    def process(self, batch):
        keys = batch.column("image_id").to_pylist()
        return batch.filter(pa.array([not k.startswith("c") for k in keys]))


def test_user_stages_score_and_filter_and_their_columns_land_in_the_shards(tmp_path, samples):
    scorer = MeanRed()
    out = tmp_path / "out"
    p = Pipeline(name="custom", description="score, filter, write")
    p.add_stage(FilePartitioningStage(file_paths=str(samples)))
    p.add_stage(ImageReaderStage())
    p.add_stage(DropByName())
    p.add_stage(scorer)
    p.add_stage(ImageWriterStage(output_dir=str(out)))
    p.run()

    inputs = {q.stem: q for q in samples.iterdir() if q.suffix.lower() in IMAGE_EXTS}
    _, table = shard_members(out)
    kept = set(table.column("image_id").to_pylist())
    assert kept == {k for k, q in inputs.items() if not k.startswith("c") and _pil_reads(q)}
    rejects = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    assert {r["image_id"] for r in rejects if r["stage"] == "drop_c"} == {k for k in inputs if k.startswith("c")}
    assert table.schema.field("mean_red").type == pa.float32()
    for key, red in zip(table.column("image_id").to_pylist(), table.column("mean_red").to_pylist()):
        with Image.open(inputs[key]) as im:
            expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[..., 0].mean()
        assert red == pytest.approx(expected, rel=1e-6)
    # and in each sample's JSON (WebDataset), read with webdataset
    import webdataset as wds

    tar = next(out.glob("images-*.tar"))
    docs = {s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(str(tar), shardshuffle=False)}
    assert set(docs) == kept
    assert all(d["mean_red"] == pytest.approx(r, abs=1e-5)
               for d, r in zip((docs[k] for k in table.column("image_id").to_pylist()), table.column("mean_red").to_pylist()))
    assert (scorer.opened, scorer.closed) == (1, 1)


class FailsOnce(ProcessingStage):
    """Adds the key's length. With ``crash_in``: on its third batch it waits until a shard is
    committed there, then raises (a crash in the middle of a run, after some output is final)."""

    name = "key_len"
    inputs = ("image_id",)
    outputs = {"key_len": pa.int32()}

    def __init__(self, crash_in: Path | None = None):
        self.crash_in = crash_in
        self.calls = 0

    def process(self, batch):
        self.calls += 1
        if self.crash_in is not None and self.calls == 3:
            deadline = time.monotonic() + 20
            while not list(self.crash_in.glob("images-*.parquet")) and time.monotonic() < deadline:
                time.sleep(0.05)
            raise RuntimeError("crash in the middle of the run")
        keys = batch.column("image_id").to_pylist()
        return batch.append_column("key_len", pa.array([len(k) for k in keys], pa.int32()))


def test_a_composed_run_cut_short_resumes_to_the_clean_run_byte_for_byte(tmp_path, samples):
    keys = sorted(q.stem for q in samples.iterdir() if q.suffix.lower() in IMAGE_EXTS)

    def pipeline(out, stage, on_existing="error"):
        return Pipeline(stages=[FilePartitioningStage(file_paths=str(samples)), ImageReaderStage(dali_batch_size=2),
                                stage, ImageWriterStage(output_dir=out, images_per_tar=2, on_existing=on_existing)])

    def interrupted_then_resumed(out):
        with pytest.raises(RuntimeError, match="crash in the middle"):
            pipeline(out, FailsOnce(crash_in=Path(out))).run()
        # How many shards were final before the crash depends on thread timing (the wait above
        # is a best effort): the resume must give the clean run's bytes either way.
        committed = len(list(Path(out).glob("images-*.parquet")))
        stats = pipeline(out, FailsOnce(), on_existing="resume").run()
        assert stats.extra["resumed_skipped"] < len(keys)
        assert (stats.extra["resumed_skipped"] > 0) == (committed > 0)

    a, b = run_twice(tmp_path, interrupted_then_resumed, lambda out: pipeline(out, FailsOnce()).run())
    assert a == b
    table = pa.concat_tables([pq.read_table(io.BytesIO(v)) for k, v in sorted(a.items())
                              if k.startswith("images-") and k.endswith(".parquet")])
    assert table.column("key_len").to_pylist() == [len(k) for k in table.column("image_id").to_pylist()]


def test_the_nsfw_stage_composes_as_run_images_models(tmp_path, samples):
    pytest.importorskip("onnxruntime", reason="needs curastream[models]")

    def composed(out):
        Pipeline(stages=[FilePartitioningStage(file_paths=str(samples)), ImageReaderStage(), ImageFilterStage(),
                         ImageNSFWFilterStage(score_threshold=0.5), ImageWriterStage(output_dir=out)]).run()

    a, b = run_twice(tmp_path, composed, lambda out: curastream.run_images(ImageRunConfig(
        sources=[str(samples)], output=out, models=["nsfw"], max_nsfw=0.5)))
    assert a == b
    shard = pq.read_table(io.BytesIO(next(v for k, v in a.items() if k.startswith("images-") and k.endswith(".parquet"))))
    scores = shard.column("nsfw_score").to_pylist()
    assert scores and all(s is not None and 0.0 <= s <= 0.5 for s in scores)


def test_a_stage_reading_a_column_no_earlier_stage_makes_is_refused_when_built(tmp_path, samples):
    class NeedsAesthetic(ProcessingStage):
        name = "needs_aesthetic"
        inputs = ("aesthetic_score",)
        outputs = {"x": pa.float32()}

        def process(self, batch):
            return batch

    p = Pipeline(name="bad")
    p.add_stage(FilePartitioningStage(file_paths=str(samples)))
    p.add_stage(ImageReaderStage())
    p.add_stage(NeedsAesthetic())
    p.add_stage(ImageWriterStage(output_dir=str(tmp_path / "out")))
    with pytest.raises(PipelineError, match=r"needs_aesthetic.*reads \['aesthetic_score'\]"):
        p.build()
    assert not (tmp_path / "out").exists()


def test_a_stage_may_read_what_an_earlier_user_stage_makes_but_not_a_later_one(tmp_path, samples):
    class UsesRed(ProcessingStage):
        name = "uses_red"
        inputs = ("mean_red",)
        outputs = {"red_bucket": pa.int32()}

        def process(self, batch):
            return batch

    def build(*middle):
        p = Pipeline(name="order")
        p.add_stage(FilePartitioningStage(file_paths=str(samples)))
        p.add_stage(ImageReaderStage())
        for st in middle:
            p.add_stage(st)
        p.add_stage(ImageWriterStage(output_dir=str(tmp_path / "out")))
        return p.build()

    build(MeanRed(), UsesRed())
    with pytest.raises(PipelineError, match="mean_red"):
        build(UsesRed(), MeanRed())


def test_outputs_that_shadow_a_built_in_column_are_refused(tmp_path, samples):
    class Shadow(ProcessingStage):
        name = "shadow"
        inputs = ("image_id",)
        outputs = {"sharpness": pa.float32()}

        def process(self, batch):
            return batch

    p = Pipeline(stages=[FilePartitioningStage(file_paths=str(samples)), ImageReaderStage(), Shadow(),
                         ImageWriterStage(output_dir=str(tmp_path / "out"))])
    with pytest.raises(PipelineError, match=r"shadow.*\['sharpness'\]"):
        p.build()


def test_a_stage_that_breaks_its_contract_at_run_time_fails_the_run_naming_it(tmp_path, samples):
    class Undeclared(ProcessingStage):
        name = "undeclared"
        inputs = ("image_id",)
        outputs = {"a": pa.float32()}

        def process(self, batch):
            n = batch.num_rows
            return batch.append_column("a", pa.array([1.0] * n)).append_column("b", pa.array([2.0] * n))

    out = tmp_path / "out"
    p = Pipeline(stages=[FilePartitioningStage(file_paths=str(samples)), ImageReaderStage(), Undeclared(),
                         ImageWriterStage(output_dir=str(out))])
    with pytest.raises(UserStageError, match=r"undeclared.*\['b'\]"):
        p.run()
    assert not list(out.glob("images-*"))  # nothing half-written is left as a shard


def test_wrongly_ordered_pipelines_are_refused(tmp_path, samples):
    w = ImageWriterStage(output_dir=str(tmp_path / "o"))
    with pytest.raises(PipelineError, match="last stage"):
        Pipeline(stages=[FilePartitioningStage(file_paths=str(samples)), w, ImageReaderStage()]).build()
    with pytest.raises(PipelineError, match="mixes image and video"):
        Pipeline(stages=[VideoReader(input_video_path=str(samples)), ImageReaderStage(), w]).build()
    with pytest.raises(PipelineError, match="instance"):
        Pipeline().add_stage(ImageReaderStage)


# -- videos: the seed ------------------------------------------------------------------------------
SEED_CLIP_SNIPPET = '''
pipeline.add_stage(
    ClipWriterStage(
        output_path=OUT_DIR,
        input_path=VIDEO_DIR,
        upload_clips=True,
        dry_run=False,
        generate_embeddings=True,
        generate_previews=False,
        generate_captions=False,
        embedding_algorithm="internvideo2",  # or "cosmos-embed1"
        caption_models=["qwen"],
        enhanced_caption_models=["qwen_lm"],
        verbose=True,
    )
)
'''


def fixed_clip_count(path: Path, clip_len: float = 4.0, min_len: float = 2.0) -> int:
    """Curator's fixed stride over the video stream's duration (read with PyAV): whole clips,
    and a remainder kept when it is at least ``min_len``."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        dur = float(s.duration * s.time_base)
    starts = np.arange(0.0, dur, clip_len)
    return int(sum(min(dur, t + clip_len) - t >= min_len for t in starts))


def _video_pipeline(videos: list[Path], out: Path, video_dir: Path) -> Pipeline:
    pipeline = Pipeline(name="video_splitting", description="Split videos into clips")
    pipeline.add_stage(VideoReader(input_video_path=[str(v) for v in videos], verbose=False))
    pipeline.add_stage(FixedStrideExtractorStage(clip_len_s=4.0, clip_stride_s=4.0, min_clip_length_s=2.0))
    pipeline.add_stage(MotionFilterStage(score_only=True))
    exec(SEED_CLIP_SNIPPET, {"ClipWriterStage": ClipWriterStage, "pipeline": pipeline, "OUT_DIR": str(out),
                             "VIDEO_DIR": str(video_dir)})
    return pipeline


def test_the_seed_clip_writer_needs_its_embedder_and_says_so_in_one_line(tmp_path):
    video = media_path("videos", "jsonize_iphone_rotated.mov")
    out = tmp_path / "outputs"
    with pytest.raises(MissingPluginError) as e:
        _video_pipeline([video], out, video.parent).run()
    msg = str(e.value)
    assert "\n" not in msg and "internvideo2" in msg and "register_embedder" in msg
    assert not out.exists()


def test_the_seed_clip_writer_snippet_runs_with_a_registered_embedder(tmp_path):
    videos = [media_path("videos", "torchcodec_nasa_13013.mp4"), media_path("videos", "jsonize_iphone_rotated.mov")]
    seen_frames = []

    def embed(frames):
        seen_frames.append(frames.shape)
        return np.concatenate([frames.mean(axis=(0, 1, 2)), frames.std(axis=(0, 1, 2))])

    register_embedder("internvideo2", embed)
    OUT = tmp_path / "outputs"
    _video_pipeline(videos, OUT, videos[0].parent).run()

    clips_dir = Path(ClipWriterStage.get_output_path_clips(str(OUT)))
    assert clips_dir == OUT / "clips"
    metas = [json.loads(p.read_text()) for p in Path(ClipWriterStage.get_output_path_metas(str(OUT), "v0")).glob("*.json")]
    assert len(metas) == sum(map(fixed_clip_count, videos)) >= 3
    assert {m["source_video"] for m in metas} == {str(v) for v in videos}
    for m in metas:
        with av.open(str(clips_dir / f"{m['span_uuid']}.mp4")) as c:
            s = c.streams.video[0]
            n = sum(1 for _ in c.decode(s))
        assert n > 0 and abs(n / float(s.average_rate) - (m["duration_span"][1] - m["duration_span"][0])) < 0.15
    emb = pq.read_table(next(Path(ClipWriterStage.get_output_path_iv2_embd_parquet(str(OUT))).glob("*.parquet")))
    ids = emb.column("id").to_pylist()
    assert set(ids) <= {m["span_uuid"] for m in metas} and ids
    assert all(len(v) == 6 for v in emb.column("embedding").to_pylist())
    for uid, row in zip(ids, emb.column("embedding").to_pylist()):
        vec = pickle.loads((Path(ClipWriterStage.get_output_path_iv2_embd(str(OUT))) / f"{uid}.pickle").read_bytes())
        # the pickle (float16, as Curator stores it) and the Parquet agree
        np.testing.assert_allclose(np.asarray(vec, np.float32).reshape(-1), row, rtol=2e-3)
    assert seen_frames and all(len(s) == 4 and s[-1] == 3 for s in seen_frames)
    assert not list(OUT.rglob("*.webp"))  # generate_previews=False
    assert not any("qwen_caption" in w for m in metas for w in m.get("windows", []))  # generate_captions=False


def test_the_composed_video_run_equals_run_videos_byte_for_byte(tmp_path):
    video = media_path("videos", "nodeopencv_motion.mov")  # a keyframe a second: copy cuts on the spans

    def composed(out):
        p = Pipeline(name="cli", description="the CLI's video run, composed")
        p.add_stage(VideoReader(input_video_path=str(video)))
        p.add_stage(FixedStrideExtractorStage(clip_len_s=4.0, clip_stride_s=4.0, min_clip_length_s=2.0))
        p.add_stage(ClipTranscodingStage(clip_mode="copy"))
        p.add_stage(MotionFilterStage())
        p.add_stage(ClipWriterStage(output_path=out, input_path=str(video.parent)))
        p.run()

    # Stream copy: the default smart cut re-encodes clip edges with bytes that vary from run to
    # run (run_videos against itself differs too), which would hide what this test compares.
    a, b = run_twice(tmp_path, composed, lambda out: curastream.run_videos(VideoRunConfig(
        sources=[str(video)], output=out, input_path=str(video.parent), split="fixed", clip_len=4.0,
        min_clip_len=2.0, clip_mode="copy")))
    assert sum(k.endswith(".mp4") for k in a) == fixed_clip_count(video) >= 2
    assert a == b


def test_user_stages_are_refused_in_video_pipelines_when_built(tmp_path):
    p = Pipeline(stages=[VideoReader(input_video_path=str(tmp_path)), MeanRed(),
                         ClipWriterStage(output_path=str(tmp_path / "o"))])
    with pytest.raises(PipelineError, match="mean_red"):
        p.build()


def test_the_package_exports_every_compose_name():
    import curastream.compose as compose

    for name in compose.__all__:
        assert getattr(curastream, name) is getattr(compose, name)
