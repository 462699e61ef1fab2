"""The CLI as generated from the config dataclasses: names, help, --config, --print-config,
validation messages, and replaying a run from its index.json."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import fields
from pathlib import Path

import click
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from conftest import media_path
from curastream.cli import images, main, videos
from curastream.config import ConfigError, ImageFilters, ImageRunConfig, VideoRunConfig

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

# Settable from Python only, by design (callables and credentials).
API_ONLY = {"ImageRunConfig": {"storage_options"}, "VideoRunConfig": {"embedder", "captioner", "storage_options"}}
COMMANDS = [(ImageRunConfig, images), (VideoRunConfig, videos)]
BY_NAME = {"images": images, "videos": videos}
NOT_FIELDS = {"config_file", "print_config", "help", "clip_mode_shorthand"}


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def _config_fields(cls) -> list[str]:
    names = []
    for f in fields(cls):
        names += [g.name for g in fields(ImageFilters)] if f.name == "filters" else [f.name]
    return names


def _options(cmd: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize("cls,cmd", COMMANDS)
def test_every_field_has_an_option_of_the_same_name(cls, cmd):
    opts = _options(cmd)
    for name in _config_fields(cls):
        if name in API_ONLY[cls.__name__]:
            assert name not in opts
        elif name == "sources":
            assert isinstance(opts[name], click.Argument)
        elif name == "verbose":  # the group's -v/--verbose
            assert "--verbose" in _options(main)["verbose"].opts
        else:
            assert name in opts, name
            assert "--" + name.replace("_", "-") in opts[name].opts, opts[name].opts
    assert set(opts) - NOT_FIELDS <= set(_config_fields(cls))


@pytest.mark.parametrize("cmd,groups", [
    ("images", ["Input", "Output", "Filter", "Performance"]),
    ("videos", ["Input", "Output", "Splitting", "Clip", "Filter", "Performance"]),
])
def test_help_is_grouped_and_every_option_has_help(cmd, groups):
    r = _cli(cmd, "--help")
    assert r.exit_code == 0
    heads = [ln[:-len(" options:")] for ln in r.output.splitlines() if ln.endswith(" options:")]
    assert heads == groups + ["Other"]
    for p in _options(BY_NAME[cmd]).values():
        if isinstance(p, click.Option):
            assert (p.help or "").strip(), p.name
            assert p.opts[0] in r.output


def _printed(*args: str) -> str:
    r = _cli(*args, "--print-config")
    assert r.exit_code == 0, r.output
    return r.stdout


def test_config_toml_and_yaml_set_the_run(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('sources = ["a", "b"]\noutput = "out"\nimages_per_tar = 7\nmin_brightness = 12.5\n'
                    'dedup = false\nmin_resolution = 0\n')
    got = tomllib.loads(_printed("images", "--config", str(toml)))
    assert got["sources"] == ["a", "b"] and got["output"] == "out" and got["images_per_tar"] == 7
    assert got["min_brightness"] == 12.5 and got["dedup"] is False and got["min_resolution"] == 0
    assert got["workers"] == ImageRunConfig(sources=[]).workers  # the rest keep their defaults

    yml = tmp_path / "run.yaml"
    yml.write_text("sources: [v.mp4]\noutput: out\nsplit: fixed\nclip_len: 2\ncaption_models: [m1, m2]\n"
                   "clip_mode: reencode\nvideo_time_limit: 30\n")
    got = yaml.safe_load(_printed("videos", "--config", str(yml)))  # YAML in, YAML out
    assert got["split"] == "fixed" and got["clip_len"] == 2.0 and got["caption_models"] == ["m1", "m2"]
    assert got["clip_mode"] == "reencode" and got["video_time_limit"] == 30.0 and got["sources"] == ["v.mp4"]


def test_flags_override_the_file(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('sources = ["a"]\noutput = "from-file"\nimages_per_tar = 7\nworkers = 3\ndedup = false\n')
    got = tomllib.loads(_printed("images", "new-src", "--config", str(toml), "-o", "flag-out",
                                 "--images-per-tar", "5", "--dedup"))
    assert got["sources"] == ["new-src"] and got["output"] == "flag-out"
    assert got["images_per_tar"] == 5 and got["dedup"] is True
    assert got["workers"] == 3  # not on the command line: the file's value

    toml.write_text('sources = ["v"]\noutput = "o"\nclip_mode = "reencode"\n')
    assert tomllib.loads(_printed("videos", "--config", str(toml), "--copy"))["clip_mode"] == "copy"


@pytest.mark.parametrize("cmd,args", [
    ("images", ["src", "-o", "out", "--min-resolution", "0", "--max-aspect", "2.5", "--min-sharpness", "20",
                "--no-sidecar-json", "--emit-ipc-bytes", "--no-progress", "--decoder", "pillow"]),
    ("videos", ["v1.mp4", "dir with space/", "-o", "s3://b/p", "--reencode", "--caption-models", "a b",
                "--caption-models", 'q"uote', "--video-time-limit", "0", "--min-duration", "1.5", "--crf", "30"]),
])
def test_print_config_round_trips(tmp_path, cmd, args):
    first = _printed(cmd, *args)
    for ext, load in ((".toml", tomllib.loads), (".yaml", yaml.safe_load)):
        saved = tmp_path / f"saved{ext}"
        saved.write_text(first if ext == ".toml" else yaml.safe_dump(tomllib.loads(first)))
        again = _printed(cmd, "--config", str(saved))
        assert load(again) == tomllib.loads(first)
    assert _printed(cmd, "--config", str(tmp_path / "saved.toml")) == first


def test_unknown_keys_name_the_closest_valid_one(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('min_resolutoin = 3\n')
    line = _error_line(_cli("images", "--config", str(f)))
    assert "unknown key 'min_resolutoin'" in line and "did you mean 'min_resolution'?" in line
    f.write_text('min_side = 3\n')  # the pre-rename name points at the new one
    assert "'min_resolution'" in _error_line(_cli("images", "--config", str(f)))
    f.write_text('storage_options = {key = "x"}\n')
    assert "Python API" in _error_line(_cli("images", "--config", str(f)))
    f.write_text('[filters]\ndedup = false\n')
    assert "unknown key 'filters'" in _error_line(_cli("images", "--config", str(f)))
    bad = tmp_path / "c.json"
    bad.write_text("{}")
    assert ".toml, .yaml or .yml" in _error_line(_cli("images", "--config", str(bad)))


@pytest.mark.parametrize("args,message", [
    (["images", "--dedup-distance", "-3"], "--dedup-distance must be an integer in 0..64, got -3"),
    (["images", "--min-sharpness", "-5"], "--min-sharpness must be a number >= 0, got -5"),
    (["images", "--min-resolution", "-1"], "--min-resolution must be an integer >= 1 (0 = off), got -1"),
    (["images", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["images", "--workers", "two"], "--workers must be an integer >= 1, got 'two'"),
    (["images", "--jpeg-quality", "101"], "--jpeg-quality must be an integer in 1..100, got 101"),
    (["images", "--decoder", "gif"], "--decoder must be one of auto, turbo, pillow, dali, got 'gif'"),
    (["images", "--max-frac-dark", "1.5"], "--max-frac-dark must be a number in 0..1, got 1.5"),
    (["videos", "--clip-len", "0"], "--clip-len must be a number > 0, got 0"),
    (["videos", "--crf", "99"], "--crf must be an integer in 0..63, got 99"),
    (["videos", "--split", "shots"], "--split must be one of scenes, fixed, transnetv2, got 'shots'"),
    (["videos", "--generate-embeddings"], "--generate-embeddings needs an embedding plug-in"),
    (["videos", "--clip-mode", "copy", "--reencode"], "--clip-mode says copy, but --reencode was given too"),
])
def test_bad_values_fail_in_one_line_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    line = _error_line(_cli(*args, "src", "-o", str(out)))
    assert line.startswith(f"error: {message}")
    assert not out.exists()


def test_values_from_a_file_are_checked_like_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("workers: 0\n")
    assert _error_line(_cli("images", "src", "-o", "o", "--config", str(f))) == \
        "error: --workers must be an integer >= 1, got 0"
    f.write_text("workers: '3'\n")  # a quoted number is a string: not silently converted
    assert "got '3'" in _error_line(_cli("images", "src", "-o", "o", "--config", str(f)))


def test_missing_input_and_output():
    assert "no input" in _error_line(_cli("images", "-o", "o"))
    assert "--output" in _error_line(_cli("videos", "v.mp4"))


def test_python_api_messages_name_the_field_and_the_flag():
    with pytest.raises(ConfigError) as e:
        ImageRunConfig(sources=["a"], filters=ImageFilters(dedup_distance=-3)).validate()
    assert str(e.value) == "filters.dedup_distance (--dedup-distance) must be an integer in 0..64, got -3"
    assert isinstance(e.value, ValueError)
    with pytest.raises(ConfigError, match=r"^min_clip_len \(--min-clip-len\) must be a number >= 0, got -1$"):
        VideoRunConfig(sources=["v"], min_clip_len=-1).validate()


def test_off_values_and_ints_canonicalise():
    f = ImageFilters(min_resolution=0, max_aspect=0, min_brightness=10)
    assert f.min_resolution is None and f.max_aspect is None
    assert isinstance(f.min_brightness, float)
    assert VideoRunConfig(sources=["v"], video_time_limit=0).video_time_limit is None


def test_shard_name_identity_keeps_the_pre_rename_keys():
    """Shard names hash writer_identity(); the keys are the filter names before the rename, so a
    rerun of the same input and settings names its shards as before."""
    filters = ImageRunConfig(sources=["a"], filters=ImageFilters(min_brightness=9.0)).writer_identity()["filters"]
    assert set(filters) == {"min_side", "max_aspect", "min_sharpness", "min_contrast", "min_entropy",
                            "min_colorfulness", "min_mean_luma", "max_mean_luma", "max_frac_dark", "max_frac_bright",
                            "dedup", "dedup_distance"}
    assert filters["min_side"] == 64 and filters["min_mean_luma"] == 9.0


def test_to_dict_leaves_out_plugins_and_credentials():
    cfg = VideoRunConfig(sources=["v"], embedder=len, captioner=str, storage_options={"key": "secret"})
    d = cfg.to_dict()
    assert not {"embedder", "captioner", "storage_options"} & set(d)
    assert "secret" not in json.dumps(d)


# -- replay: index.json's config fed back through --config gives the same shards ----------------
def _toml(d: dict) -> str:
    """A TOML writer independent of the package's: null has no TOML form and means 'default'."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(v)  # JSON strings and numbers are TOML strings and numbers
    return "".join(f"{k} = {val(v)}\n" for k, v in d.items() if v is not None)


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith("images-")}


def _curastream(*args: str) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "curastream")
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_index_json_config_replays_the_run(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("mate_Dune.jpg", "opencv_fruits.jpg", "opencv_building.jpg", "imageio_kodim03.png",
                 "go_video-005.gray.jpeg"):
        (src / name).write_bytes(media_path("images", name).read_bytes())
    first, second = tmp_path / "first", tmp_path / "second"
    _curastream("images", str(src), "-o", str(first), "--images-per-tar", "2", "--min-sharpness", "1",
                "--max-aspect", "0", "--no-sidecar-json", "--jpeg-quality", "80", "--no-progress")

    config = json.loads((first / "index.json").read_text())["config"]
    replay = tmp_path / "replay.toml"
    replay.write_text(_toml(config))
    _curastream("images", "--config", str(replay), "-o", str(second))

    a, b = _shards(first), _shards(second)
    assert sorted(a) == sorted(b) and len(a) >= 4  # same names: images-<hash>-NNNNNN.{tar,parquet}
    for name in a:
        if name.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(a[name])) as ta, tarfile.open(fileobj=io.BytesIO(b[name])) as tb:
                ma = [(m.name, ta.extractfile(m).read()) for m in ta.getmembers()]
                mb = [(m.name, tb.extractfile(m).read()) for m in tb.getmembers()]
            assert ma == mb and ma
            assert not any(n.endswith(".json") for n, _ in ma)  # --no-sidecar-json was replayed
        else:
            ra = pq.read_table(io.BytesIO(a[name])).to_pylist()
            rb = pq.read_table(io.BytesIO(b[name])).to_pylist()
            assert len(ra) == len(rb) > 0
            for x, y in zip(ra, rb):
                assert Path(x.pop("tar_file")).name == Path(y.pop("tar_file")).name  # a path into each output
                assert x == y
    replayed = json.loads((second / "index.json").read_text())["config"]
    assert {**replayed, "output": None} == {**config, "output": None}


@pytest.mark.slow
def test_demo_curates_its_samples_into_readable_datasets(tmp_path):
    """`make demo` is one of the README's two commands: it must leave a dataset a new user can read."""
    import av

    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "curastream", "demo", "--output", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "WARNING" not in r.stderr, r.stderr  # a first run should not start with warnings
    tars = sorted((out / "images").glob("images-*.tar"))
    assert tars
    n = 0
    for t in tars:
        with tarfile.open(t) as tf:
            jpgs = [m for m in tf.getmembers() if m.name.endswith(".jpg")]
        assert pq.read_table(t.with_suffix(".parquet")).num_rows == len(jpgs)
        n += len(jpgs)
    assert n >= 5
    clips = sorted((out / "videos" / "clips").rglob("*.mp4"))
    assert clips
    with av.open(str(clips[0])) as c:
        assert sum(1 for _ in c.decode(video=0)) > 0
