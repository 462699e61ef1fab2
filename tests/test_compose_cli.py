"""The CLI is a composition of the public stages (issue 19: one way to run, two faces).

``pipeline_for(cfg).build().config == cfg`` over every flag of both commands, over random valid
configs (hypothesis, API-only fields included), and for the stage list ``--print-pipeline``
prints, pasted back into Python. Then the CLI and the hand-written composed pipeline run on real
media and write the same bytes (read back with tarfile, pyarrow and PyAV).
"""

from __future__ import annotations

import dataclasses
import io
import re
import tarfile

import av
import curastream
import curastream.compose
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import media_path
from test_compose_api import run_twice
from curastream import (
    ClipTranscodingStage,
    ClipWriterStage,
    FilePartitioningStage,
    FixedStrideExtractorStage,
    ImageFilterStage,
    ImageReaderStage,
    ImageWriterStage,
    MotionFilterStage,
    Pipeline,
    VideoReader,
    pipeline_for,
)
from curastream.cli import images, main, videos
from curastream.config import ConfigError, ImageRunConfig, VideoRunConfig
from curastream.config_schema import settable_specs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".mpo"}
COMMANDS = {"images": (images, ImageRunConfig), "videos": (videos, VideoRunConfig)}


def embed(frames):  # plug-ins compare by identity: module-level, one object per run
    return frames.mean(axis=(0, 1, 2))


def caption(frames):
    return "a caption"


def cli_config(cmd: str, *args: str):
    """The config the command builds from this command line (what it then runs)."""
    command = COMMANDS[cmd][0]
    ctx = command.make_context(cmd, list(args))
    cfg, printing = command.build_config(ctx)
    assert not printing
    return cfg


def assert_round_trip(cfg) -> None:
    plan = pipeline_for(cfg).build()
    assert type(plan.config) is type(cfg)
    assert plan.config == cfg, _diff(plan.config, cfg)


def _diff(a, b) -> str:
    return "; ".join(f"{k}: {getattr(a, k)!r} != {getattr(b, k)!r}" for k in vars(b) if getattr(a, k) != getattr(b, k))


# -- every flag, one at a time and all together -----------------------------------------------------
# Values for the text options (names, paths, URLs, encoders); numbers and choices come from each
# field's own range and choices, so a new flag is covered without touching this file.
TEXT = {"output": "out dir", "files_from": "list.txt", "parquet_image_column": "jpg", "url_list": "urls.parquet",
        "url_col": "link", "caption_col": "alt", "ray_address": "10.0.0.1:6379", "emit_ipc": "/tmp/h1-none/r.arrow",
        "stats": "/tmp/h1-none/stats.json", "input_path": "/data/videos", "encoder": "libx265", "preset": "slow",
        "embedder_factory": "pkg.mod:embedder", "captioner_factory": "pkg.mod:captioner"}
LISTS = {"models": ["clip", "pkg.mod:factory"], "save_additional_columns": ["width", "height"],
         "caption_models": ["qwen", "m2"]}
# Settings that need another to be valid
NEEDS = {"max_nsfw": ["--model", "nsfw"], "generate_embeddings": ["--embedder", "pkg.mod:embedder"]}


def _number(s, v):
    o = s.opt
    lo = o.min if o.min is not None else 0
    hi = o.max if o.max is not None else lo + 100
    x = lo + (hi - lo) / 4 if s.base is float else int(lo + (hi - lo) // 3) or 1
    if v == x:
        x = x + 1 if o.max is None or x + 1 <= o.max else x - 1
    return str(x)


def flag_args(s) -> list[str]:
    """A command line that sets ``s`` to a value other than its default."""
    o, d = s.opt, s.default
    if s.base is bool:
        return [*NEEDS.get(s.name, []), *([s.flag] if o.flag or not d else [f"--no-{s.flag[2:]}"])]
    if o.choices:
        return [s.flag, next(c for c in reversed(o.choices) if c != d)]
    if s.base is list:
        return [a for v in LISTS[s.name] for a in (s.flag, v)]
    if s.base in (int, float):
        return [*NEEDS.get(s.name, []), s.flag, _number(s, d)]
    return [*NEEDS.get(s.name, []), s.flag, TEXT[s.name]]


def all_flag_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for cmd, (_, cls) in COMMANDS.items():
        specs = [s for s in settable_specs(cls) if s.opt.scope == "command"]
        base = ["src one", "src/two", "-o", "out"]
        lines += [(cmd, base + flag_args(s)) for s in specs]
        # off values stand for None
        lines += [(cmd, base + [s.flag, str(s.opt.off)]) for s in specs if s.opt.off is not None]
        everything = [a for s in specs if s.name != "stats" for a in flag_args(s)]  # stats: not with emit_ipc "-"
        lines.append((cmd, base + everything))
    lines += [
        ("images", ["-o", "out", "--url-list", "urls.csv", "--caption-col", "txt", "--save-additional-columns",
                    "a,b"]),
        ("images", ["a", "--files-from", "more.txt", "-o", "out", "--model", "nsfw", "--model", "clip",
                    "--max-nsfw", "0.2", "--resize", "224", "--resize-mode", "center_crop"]),
        ("images", ["a", "-o", "out", "--model", "clip", "--model", "nsfw", "--model", "nsfw"]),
        ("images", ["a", "-o", "out", "--runner", "ray", "--device", "gpu", "--gpus-per-task", "0.25"]),
        ("videos", ["v.mp4", "-o", "out", "--split", "fixed", "--stride", "10", "--clip-len", "10"]),
        ("videos", ["v.mp4", "-o", "out", "--split", "transnetv2", "--min-clip-len", "3", "--max-clip-len", "8"]),
        ("videos", ["v.mp4", "-o", "out", "--split", "scenes", "--stride", "3", "--no-motion-filter",
                    "--motion-global-mean-threshold", "0.1", "--motion-method", "frames"]),
        ("videos", ["v.mp4", "-o", "out", "--generate-embeddings", "--embedder", "p.m:e", "--embedding-algorithm",
                    "cosmos-embed1", "--captioner", "p.m:c", "--caption-models", "a", "--caption-models", "b"]),
        ("videos", ["v.mp4", "-o", "out", "--embedder", "p.m:e", "--captioner", "p.m:c"]),  # configured, unused
        ("videos", ["v.mp4", "-o", "out", "--caption-models", "only-named", "--model", "nsfw", "--min-duration",
                    "2", "--previews", "--dry-run", "--clip-subdirs", "--no-audio", "--reencode"]),
    ]
    return lines


@pytest.mark.parametrize("cmd,args", all_flag_lines(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_every_command_line_is_a_pipeline_that_builds_its_config(cmd, args):
    assert_round_trip(cli_config(cmd, *args))


def test_the_flag_lines_set_every_field():
    """The lines above differ from the defaults in every setting (so none is left untested)."""
    for cmd, (_, cls) in COMMANDS.items():
        default = cli_config(cmd, "src", "-o", "out")
        changed = set()
        for c, args in all_flag_lines():
            if c == cmd:
                cfg = cli_config(cmd, *args)
                changed |= {s.name for s in settable_specs(cls) if _get(cfg, s.path) != _get(default, s.path)}
        unset = {s.name for s in settable_specs(cls) if s.opt.scope == "command"} - changed
        assert not unset, unset


def _get(obj, path):
    for p in path:
        obj = getattr(obj, p)
    return obj


# -- random valid configs, the Python API's fields included -------------------------------------------
POOLS = {
    "sources": st.lists(st.sampled_from(["a.jpg", "dir with space/", "memory://bucket/in", "v.mp4"]), max_size=3),
    "output": st.sampled_from([None, "out", "memory://bucket/out", "/tmp/h1-none/out"]),
    "stats": st.sampled_from([None, "-", "/tmp/h1-none/stats.json"]),
    "emit_ipc": st.sampled_from([None, "-", "/tmp/h1-none/r.arrow"]),
    "encoder": st.sampled_from(["libx264", "libx265", "libvpx-vp9"]),
    "models": st.lists(st.sampled_from(["nsfw", "clip", "pkg.mod:factory"]), max_size=3),
    "caption_models": st.lists(st.sampled_from(["qwen", "m2", "m3"]), max_size=3),
    "save_additional_columns": st.lists(st.sampled_from(["a", "b"]), max_size=2),
    "gpus_per_task": st.sampled_from([0.25, 0.5, 1.0, 2.0]),  # Ray: a fraction of one GPU or whole GPUs
}


def _values(s):
    if s.name in POOLS:
        return POOLS[s.name]
    o = s.opt
    if s.base is bool:
        v = st.booleans()
    elif o.choices:
        v = st.sampled_from(o.choices)
    elif s.base is int:
        lo = int(o.min or 0) + (1 if o.above else 0)
        v = st.integers(lo, int(o.max) if o.max is not None else lo + 10_000)
    elif s.base is float:
        v = st.floats(min_value=o.min or 0.0, max_value=o.max if o.max is not None else 1e4, exclude_min=o.above,
                      allow_nan=False, allow_infinity=False)
    else:
        v = st.sampled_from([TEXT.get(s.name, "x"), "other"])
    return st.none() | v if s.nullable else v


def configs(cls):
    flat = st.fixed_dictionaries({s.name: _values(s) for s in settable_specs(cls)})
    api = {"storage_options": st.sampled_from([None, {}, {"anon": True}])}
    if cls is VideoRunConfig:
        api |= {"embedder": st.sampled_from([None, embed]), "captioner": st.sampled_from([None, caption])}

    def make(values):
        from curastream.config_schema import from_flat

        flat_values, api_values = values
        cfg = from_flat(cls, flat_values)
        for k, v in api_values.items():
            setattr(cfg, k, v)
        try:
            cfg.validate()
        except ConfigError:
            return None
        return cfg

    return st.tuples(flat, st.fixed_dictionaries(api)).map(make).filter(lambda c: c is not None)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(configs(ImageRunConfig))
def test_random_image_configs_round_trip(cfg):
    assert_round_trip(cfg)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(configs(VideoRunConfig))
def test_random_video_configs_round_trip(cfg):
    assert_round_trip(cfg)


# -- --print-pipeline: the stage list, pasted into Python, is the command ------------------------------
def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def pasted(printed: str) -> Pipeline:
    """The printed stages as a user copies them: each line's call, evaluated with curastream's names."""
    names = {n: getattr(curastream, n) for n in curastream.compose.__all__}
    calls = [m.group(1) for m in re.finditer(r"^\s+\d+\. (.*)$", printed, re.MULTILINE)]
    return Pipeline(stages=[eval(c, names) for c in calls])


@pytest.mark.parametrize("cmd,args", [
    ("images", ["photos", "-o", "out", "--images-per-tar", "5", "--min-sharpness", "30", "--no-dedup",
                "--model", "nsfw", "--max-nsfw", "0.3", "--encode-format", "webp", "--workers", "3"]),
    ("images", ["-o", "out", "--url-list", "u.csv", "--download-retries", "0", "--runner", "ray"]),
    ("videos", ["v.mp4", "-o", "out", "--split", "fixed", "--clip-len", "4", "--copy", "--no-motion-filter",
                "--max-duration", "9", "--caption-models", "a", "--crf", "30", "--analysis-short-side", "96"]),
    ("videos", ["v.mp4", "-o", "out", "--split", "transnetv2", "--generate-embeddings", "--embedder", "p.m:e"]),
])
def test_print_pipeline_shows_stages_that_paste_into_python_as_the_same_run(cmd, args):
    r = _cli(cmd, *args, "--print-pipeline")
    assert r.exit_code == 0, r.output
    stages = pasted(r.output)
    assert [type(s).__name__ for s in stages.stages][-1] == ("ImageWriterStage" if cmd == "images"
                                                              else "ClipWriterStage")
    assert stages.build().config == cli_config(cmd, *args)


def test_print_pipeline_is_listed_in_help_and_writes_nothing(tmp_path):
    r = _cli("images", "--help")
    assert "--print-pipeline" in r.output
    out = tmp_path / "never"
    r = _cli("images", str(tmp_path), "-o", str(out), "--print-pipeline")
    assert r.exit_code == 0 and "ImageFilterStage()" in r.output
    assert not out.exists()


# -- the same bytes on real media -------------------------------------------------------------------
# run_twice: the composed-vs-direct comparison helpers of tests/test_compose_api.py


def _tar_members(files: dict[str, bytes]) -> dict[str, bytes]:
    got = {}
    for name in sorted(n for n in files if n.endswith(".tar")):
        with tarfile.open(fileobj=io.BytesIO(files[name])) as tf:
            got |= {f"{name}/{m.name}": tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    return got


def _tables(files: dict[str, bytes]) -> dict[str, list]:
    return {n: pq.read_table(io.BytesIO(b)).to_pylist() for n, b in files.items() if n.endswith(".parquet")}


def test_the_cli_and_the_hand_written_pipeline_write_the_same_image_shards(tmp_path):
    photos = media_path("images")

    def cli(out):
        r = _cli("images", str(photos), "-o", out, "--images-per-tar", "8", "--min-sharpness", "1000",
                 "--max-aspect", "2.5", "--dedup-distance", "6", "--no-sidecar-json", "--resize", "160",
                 "--resize-mode", "keep_ratio", "--workers", "2", "--no-progress")
        assert r.exit_code == 0, r.output

    def composed(out):
        Pipeline(name="photos", stages=[
            FilePartitioningStage(file_paths=str(photos)),
            ImageReaderStage(num_threads=2),
            ImageFilterStage(min_sharpness=1000, max_aspect=2.5, dedup_distance=6),
            ImageWriterStage(output_dir=out, images_per_tar=8, sidecar_json=False, resize=160,
                             resize_mode="keep_ratio", progress=False),
        ]).run()

    a, b = run_twice(tmp_path, cli, composed)
    members_a, members_b = _tar_members(a), _tar_members(b)
    tables_a, tables_b = _tables(a), _tables(b)
    assert members_a == members_b and tables_a == tables_b
    assert a == b  # and every other file of the dataset (rejects) too

    shards = [n for n in a if n.endswith(".tar")]
    rows = [r for n, t in tables_a.items() if n.startswith("images-") for r in t]
    rejects = tables_a["_curastream/rejects.parquet"]
    inputs = [p for p in photos.iterdir() if p.suffix.lower() in IMAGE_EXTS]
    assert len(shards) >= 2 and 0 < len(rows) < len(inputs)  # several shards, and the filters took some
    assert len(rows) + len(rejects) == len(inputs)
    assert not any(m.endswith(".json") for m in members_a)  # --no-sidecar-json
    for name, data in members_a.items():
        if name.endswith(".jpg"):
            with Image.open(io.BytesIO(data)) as im:
                assert min(im.size) == 160  # keep_ratio: the shorter side at the training size


def test_the_cli_and_the_hand_written_pipeline_write_the_same_clips(tmp_path):
    video = media_path("videos", "nodeopencv_motion.mov")  # 8 s, a keyframe a second: copy cuts land on spans

    def cli(out):
        r = _cli("videos", str(video), "-o", out, "--split", "fixed", "--clip-len", "2", "--copy",
                 "--no-motion-filter", "--no-progress")
        assert r.exit_code == 0, r.output

    def composed(out):
        Pipeline(name="clips", stages=[
            VideoReader(input_video_path=str(video)),
            FixedStrideExtractorStage(clip_len_s=2.0),
            ClipTranscodingStage(clip_mode="copy"),
            MotionFilterStage(score_only=True),
            ClipWriterStage(output_path=out, progress=False),
        ]).run()

    # Stream copy: the default smart cut re-encodes clip edges with bytes that differ from run to
    # run (run_videos against itself too), which would hide what this test compares.
    a, b = run_twice(tmp_path, cli, composed)
    assert _tables(a) == _tables(b)
    assert a == b
    clips = sorted(n for n in a if n.startswith("clips/") and n.endswith(".mp4"))
    assert len(clips) == 4
    for name in clips:
        with av.open(io.BytesIO(a[name])) as c:
            s = c.streams.video[0]
            frames = sum(1 for _ in c.decode(s))
        assert abs(frames / float(s.average_rate) - 2.0) < 0.15


def test_a_ray_run_takes_only_the_clis_stages(tmp_path):
    """Ray tasks run run_images' own stages: a composition that changes them is refused when
    built, before anything is read, instead of failing on the cluster."""
    from curastream import PipelineError

    reader = ImageReaderStage(runner="ray")
    writer = ImageWriterStage(output_dir=str(tmp_path / "o"))
    with pytest.raises(PipelineError, match="runner='ray'"):
        Pipeline(stages=[FilePartitioningStage(file_paths=str(tmp_path)), reader, writer]).build()  # no filter stage
    plan = Pipeline(stages=[FilePartitioningStage(file_paths=str(tmp_path)), reader, ImageFilterStage(), writer]).build()
    assert plan.config.runner == "ray"
    assert not (tmp_path / "o").exists()


def test_encoders_in_this_ffmpeg_build_reach_the_run_as_given(caplog):
    """h264_nvenc is in PyAV's FFmpeg: a GPU user's --encoder h264_nvenc must not turn into
    libx264 on the way through the composition. Only an encoder the build lacks (Curator's
    CPU default libopenh264) becomes libx264, with a warning naming it."""
    from curastream.compose.from_config import pipeline_for

    cfg = VideoRunConfig(sources=["/data/v"], output="/tmp/o", encoder="h264_nvenc")
    assert pipeline_for(cfg).build().config.encoder == "h264_nvenc"
    with caplog.at_level("WARNING"):
        built = pipeline_for(dataclasses.replace(cfg, encoder="libopenh264")).build().config
    assert built.encoder == "libx264" and "libopenh264" in caplog.text
