"""Training-size images (--resize, --resize-mode) and output formats (--encode-format), read back
with PIL from the tars. Expected sizes come from img2dataset's documented rules, written out
here on their own: keep_ratio scales the shorter side to N, center_crop then cuts N x N from the
middle, border scales the longer side to N and pads with white to N x N; scaled sides round to
the nearest integer (albumentations' smallest/longest_max_size)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from conftest import media_path
from curastream import ImageFilters, ImageRunConfig, run_images

# odd sizes, a 90-degree EXIF turn, a 12 Mpx photo (DCT-scaled decode), a PNG and a gray JPEG
NAMES = ("imageio_rommel.jpg", "skimage_chelsea.png", "opencv_squirrel_cls.jpg",
         "forensics_IMG_20200827_231612.jpg", "opencv_left01.jpg")
N = 200


def expected_size(w: int, h: int, n: int, mode: str) -> tuple[int, int]:
    if mode == "no":
        return w, h
    if mode == "keep_ratio":
        short = min(w, h)
        return round(w * n / short), round(h * n / short)
    return n, n  # center_crop and border both end square


def _upright_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).size


def _run(tmp_path: Path, **kw) -> tuple[pd.DataFrame, dict[str, bytes], list[str]]:
    src = tmp_path / "src"
    src.mkdir()
    for name in NAMES:
        (src / name).write_bytes(media_path("images", name).read_bytes())
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(src)], output=str(out), progress=False,
                              filters=ImageFilters(dedup=False, min_resolution=None), **kw))
    rows = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("images-*.parquet"))], ignore_index=True)
    members: dict[str, bytes] = {}
    for tar in sorted(out.glob("images-*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                members[m.name] = tf.extractfile(m).read()
    rows["name"] = [Path(p).name for p in rows["original_path"]]
    return rows.set_index("name"), members, sorted(members)


@pytest.mark.parametrize("mode", ["keep_ratio", "center_crop", "border", pytest.param("no", marks=pytest.mark.slow)])
def test_each_mode_stores_the_documented_geometry(tmp_path, mode):
    rows, members, _ = _run(tmp_path, resize=N, resize_mode=mode, encode_format="png")
    assert sorted(rows.index) == sorted(NAMES)
    for name in NAMES:
        ow, oh = _upright_size(media_path("images", name))
        row = rows.loc[name]
        assert (row["original_width"], row["original_height"]) == (ow, oh), name
        want = expected_size(ow, oh, N, mode)
        assert row["member_name"].endswith(".png")
        with Image.open(io.BytesIO(members[row["member_name"]])) as im:
            assert im.format == "PNG"
            assert im.size == want, (name, mode)
        assert (row["width"], row["height"]) == want, name


def test_border_pads_with_white_around_the_scaled_picture(tmp_path):
    # chelsea is 451x300: longer side -> 200 gives 200x133, 67 rows of padding split 33 / 34
    rows, members, _ = _run(tmp_path, resize=N, resize_mode="border", encode_format="png")
    px = np.asarray(Image.open(io.BytesIO(members[rows.loc["skimage_chelsea.png", "member_name"]])).convert("RGB"))
    sh = round(300 * N / 451)
    top = (N - sh) // 2
    assert (px[:top] == 255).all() and (px[top + sh:] == 255).all()
    with Image.open(media_path("images", "skimage_chelsea.png")) as im:
        ref = np.asarray(im.convert("RGB").resize((N, sh), Image.Resampling.BOX), dtype=np.int16)
    # an independent area resize of the same picture: only rounding separates them
    assert np.abs(px[top:top + sh].astype(np.int16) - ref).mean() < 3.0


def test_center_crop_cuts_the_middle(tmp_path):
    rows, members, _ = _run(tmp_path, resize=N, resize_mode="center_crop", encode_format="png")
    px = np.asarray(Image.open(io.BytesIO(members[rows.loc["skimage_chelsea.png", "member_name"]])).convert("RGB"))
    sw = round(451 * N / 300)
    left = (sw - N) // 2
    with Image.open(media_path("images", "skimage_chelsea.png")) as im:
        ref = np.asarray(im.convert("RGB").resize((sw, N), Image.Resampling.BOX), dtype=np.int16)[:, left:left + N]
    assert np.abs(px.astype(np.int16) - ref).mean() < 3.0
    # the crop is centred: shifted by a tenth of the width it no longer matches
    off = np.asarray(Image.open(media_path("images", "skimage_chelsea.png")).convert("RGB").resize(
        (sw, N), Image.Resampling.BOX), dtype=np.int16)[:, :N]
    assert np.abs(px.astype(np.int16) - off).mean() > 3 * np.abs(px.astype(np.int16) - ref).mean()


def test_rotated_photo_is_resized_upright(tmp_path):
    # rommel is stored 3072x2304 with EXIF Orientation 6: upright it is portrait
    rows, members, _ = _run(tmp_path, resize=N, resize_mode="keep_ratio", encode_format="jpg")
    row = rows.loc["imageio_rommel.jpg"]
    with Image.open(io.BytesIO(members[row["member_name"]])) as im:
        assert im.getexif().get(0x0112, 1) == 1
        assert im.size == (N, round(3072 * N / 2304))
    assert row["orientation_fix"] == "reencode"
    # the upright reference, downsized the same way, matches; the unrotated one cannot (other shape)
    with Image.open(media_path("images", "imageio_rommel.jpg")) as im:
        upright = ImageOps.exif_transpose(im).convert("RGB")
    ref = np.asarray(upright.resize((N, round(3072 * N / 2304)), Image.Resampling.BOX), dtype=np.int16)
    got = np.asarray(Image.open(io.BytesIO(members[row["member_name"]])).convert("RGB"), dtype=np.int16)
    assert np.abs(got - ref).mean() < 6.0


@pytest.mark.parametrize("fmt,pil_format,quality", [("webp", "WEBP", 80), ("jpg", "JPEG", 80), ("png", "PNG", None)])
def test_formats_read_back_with_pil(tmp_path, fmt, pil_format, quality):
    rows, members, names = _run(tmp_path, resize=128, resize_mode="keep_ratio", encode_format=fmt,
                                encode_quality=quality)
    images = [n for n in names if not n.endswith(".json")]
    assert len(images) == len(NAMES)
    assert all(n.endswith(f".{fmt}") for n in images)
    assert set(rows["member_name"]) == set(images)
    for n in images:
        with Image.open(io.BytesIO(members[n])) as im:
            assert im.format == pil_format
            assert im.mode == "RGB"
            im.load()


@pytest.mark.slow
def test_webp_without_resize_keeps_the_original_size(tmp_path):
    rows, members, _ = _run(tmp_path, encode_format="webp")
    for name in NAMES:
        ow, oh = _upright_size(media_path("images", name))
        row = rows.loc[name]
        assert (row["width"], row["height"], row["original_width"], row["original_height"]) == (ow, oh, ow, oh)
        with Image.open(io.BytesIO(members[row["member_name"]])) as im:
            assert im.format == "WEBP" and im.size == (ow, oh)
        assert not row["passthrough"]


def test_original_stays_the_default(tmp_path):
    rows, members, _ = _run(tmp_path)
    row = rows.loc["opencv_squirrel_cls.jpg"]  # an upright baseline RGB JPEG: passes through
    assert row["member_name"].endswith(".jpg")
    assert members[row["member_name"]] == media_path("images", "opencv_squirrel_cls.jpg").read_bytes()
    assert bool(row["passthrough"])
    assert (row["width"], row["height"], row["original_width"], row["original_height"]) == (535, 426, 535, 426)


def test_resize_changes_the_shard_names(tmp_path):
    # a resized dataset must not resume into (or be mistaken for) the full-size one
    a = ImageRunConfig(sources=["x"]).writer_identity()
    b = ImageRunConfig(sources=["x"], resize=256, resize_mode="center_crop").writer_identity()
    c = ImageRunConfig(sources=["x"], encode_format="webp").writer_identity()
    assert len({repr(sorted(d.items())) for d in (a, b, c)}) == 3
    assert "resize" not in a and "encode_format" not in a


def test_large_jpeg_decodes_at_a_reduced_dct_scale():
    from curastream.images.cpu_decode import decode_at_least
    from curastream.images.probe import probe_image

    data = media_path("images", "forensics_IMG_20200827_231612.jpg").read_bytes()  # 4000x3000
    probe = probe_image(data)
    arr = decode_at_least(data, probe, 267, 200)
    # libjpeg scales by M/8; 1/8 of 4000x3000 is 500x375, the smallest scale covering 267x200
    assert arr.shape == (375, 500, 3)
    arr = decode_at_least(data, probe, 1200, 900)  # needs 3/8: 1500x1125
    assert arr.shape == (1125, 1500, 3)


def test_config_lists_match_the_modules():
    from curastream import config
    from curastream.images.encode import ENCODE_FORMATS
    from curastream.images.resize import RESIZE_MODES

    assert config._RESIZE_MODES == RESIZE_MODES
    assert config._ENCODE_FORMATS == ENCODE_FORMATS


def test_cli_flags(tmp_path):
    from click.testing import CliRunner

    from curastream.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(media_path("images", "opencv_squirrel_cls.jpg").read_bytes())
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["images", str(src), "-o", str(out), "--resize", "64", "--resize-mode",
                                  "center_crop", "--encode-format", "webp", "--encode-quality", "70", "--no-progress"])
    assert r.exit_code == 0, r.output
    with tarfile.open(next(out.glob("*.tar"))) as tf:
        data = tf.extractfile("a.webp").read()
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    bad = CliRunner().invoke(main, ["images", str(src), "-o", str(tmp_path / "o2"), "--resize-mode", "squash"])
    assert bad.exit_code == 2
