"""The sharpness score's scale on real photos (kernels.image_scores.sharpness_score): a blurred
copy scores lower, a q10 re-encode is not rewarded for its blocks, a 2x downscaled copy scores
about the same, and the README's threshold drops what the README says. Scores come from the
pipeline (stream_images), the copies from Pillow."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from conftest import MEDIA, ROOT, media_path
from curastream import ImageFilters, ImageRunConfig, stream_images
from curastream.kernels import image_scores as sc
from PIL import Image, ImageFilter, ImageOps

# JPEG photos of several sizes, 512 px or more a side (a 2x copy still fills the 256 px view).
PHOTOS = ("opencv_fruits.jpg", "opencv_building.jpg", "mate_GreenMeadow.jpg", "opencv_aloeL.jpg",
          "plasma_ColorfulCups_2560x1600.jpg", "skimage_retina.jpg")
# README: --min-sharpness 600 keeps every photo in shared/media/images and drops at least a
# quarter of their copies blurred by 2 analysis pixels (README "Scores and filters").
README_MIN_SHARPNESS = 600


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _blurred(im: Image.Image) -> Image.Image:
    # sigma of 2 pixels of the 256 px analysis view, whatever the source size
    return im.filter(ImageFilter.GaussianBlur(min(im.size) / 128))


def _scores(items: list[tuple[str, bytes]], **filters) -> dict[str, dict]:
    cfg = ImageRunConfig(sources=["<test>"], filters=ImageFilters(dedup=False, min_resolution=None, **filters))
    rows = [r for b in stream_images(items, cfg) for r in b.to_pylist()]
    return {r["image_id"] if "image_id" in r else r["key"]: r for r in rows}


def _upright(data: bytes) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


@pytest.fixture(scope="module")
def copies() -> dict[str, dict]:
    items = []
    for name in PHOTOS:
        data = media_path("images", name).read_bytes()
        im = _upright(data)
        items += [(f"orig/{name}", data), (f"q10/{name}", _jpeg(im, 10)), (f"blur/{name}", _jpeg(_blurred(im), 95)),
                  (f"half/{name}", _jpeg(im.resize((im.width // 2, im.height // 2), Image.LANCZOS), 95))]
    return _scores(items)


def _ratio(copies, kind: str, name: str) -> float:
    return copies[f"{kind}/{name}"]["sharpness"] / copies[f"orig/{name}"]["sharpness"]


@pytest.mark.parametrize("name", PHOTOS)
def test_a_blurred_copy_scores_lower(copies, name):
    assert _ratio(copies, "blur", name) < 0.75


@pytest.mark.parametrize("name", PHOTOS)
def test_a_q10_reencode_is_not_rewarded_for_its_blocks(copies, name):
    # The 256 px score gave q10 copies up to 1.4x their original. The thumbnail score cannot see
    # the detail q10 loses inside 8x8 blocks of a large photo, so it is held to "about equal".
    assert _ratio(copies, "q10", name) < 1.10


@pytest.mark.parametrize("name", PHOTOS)
def test_a_2x_downscaled_copy_scores_within_10_percent(copies, name):
    assert 0.9 < _ratio(copies, "half", name) < 1.1


def test_the_thumbnail_is_the_4x4_block_mean_of_the_analysis_view():
    y = np.random.default_rng(5).uniform(0, 255, (2, 256, 256)).astype(np.float32)
    f = 256 // sc.SHARPNESS_SIZE
    want = y.astype(np.float64).reshape(2, sc.SHARPNESS_SIZE, f, sc.SHARPNESS_SIZE, f).mean(axis=(2, 4))
    np.testing.assert_allclose(sc.thumbnail(y), want, rtol=1e-5, atol=1e-3)
    ref = [cv2.Laplacian(t, cv2.CV_64F, ksize=1)[1:-1, 1:-1].var() for t in want]
    np.testing.assert_allclose(sc.sharpness_score(y), ref, rtol=1e-4)
    rgb = np.random.default_rng(6).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    ref = [cv2.Laplacian(t, cv2.CV_64F, ksize=1)[1:-1, 1:-1].var()
           for t in sc.luma(rgb).astype(np.float64).reshape(2, 64, 4, 64, 4).mean(axis=(2, 4))]
    np.testing.assert_allclose(sc.score_batch(rgb)["sharpness"], ref, rtol=1e-4)


def test_small_images_are_not_enlarged():
    y = np.random.default_rng(7).uniform(0, 255, (1, 40, 300)).astype(np.float32)
    assert sc.thumbnail(y).shape == (1, 40, 64)


@pytest.mark.slow
def test_the_readme_threshold_drops_what_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    assert f"--min-sharpness {README_MIN_SHARPNESS}" in readme
    assert "--min-sharpness 20" not in readme
    if not (MEDIA / "images").is_dir():
        pytest.skip("shared media absent")
    items = []
    for p in sorted((MEDIA / "images").iterdir()):
        data = p.read_bytes()
        items += [(f"orig/{p.name}", data), (f"blur/{p.name}", _jpeg(_blurred(_upright(data)), 95))]
    rows = _scores(items, min_sharpness=README_MIN_SHARPNESS)
    dropped = {k for k, r in rows.items() if r["status"] != "ok"}
    for k in dropped:
        assert rows[k]["reject_reason"].startswith("min_sharpness"), rows[k]["reject_reason"]
    photos = [k for k in rows if k.startswith("orig/")]
    assert len(photos) == 32
    assert not dropped & set(photos), "every real photo is kept"
    assert len(dropped) >= len(photos) / 4, "at least a quarter of the blurred copies are dropped"


def test_the_xp_path_cupy_runs_agrees_with_the_opencv_path(monkeypatch):
    """Without OpenCV, score_batch takes the xp code CuPy runs (matrix area resize)."""
    rgb = np.stack([np.asarray(Image.open(media_path("images", name)).convert("RGB").resize((256, 256), Image.BOX))
                    for name in PHOTOS[:3]])
    fused = sc.score_batch(rgb)["sharpness"]
    monkeypatch.setattr(sc, "cv2", None)
    np.testing.assert_allclose(sc.score_batch(rgb)["sharpness"], fused, rtol=1e-4)


GRAYSCALE = {"go_video-005.gray.jpeg", "opencv_basketball1.png", "opencv_left01.jpg", "skimage_camera.png",
             "skimage_coins.png"}  # per shared/media/MANIFEST


@pytest.mark.parametrize("flag,filters,dropped", [
    ("--min-colorfulness 5", {"min_colorfulness": 5}, GRAYSCALE),
    ("--min-contrast 25", {"min_contrast": 25}, {"skimage_hubble_deep_field.jpg"}),
])
def test_the_readme_filter_examples_drop_what_they_say(flag, filters, dropped):
    assert f"`{flag}`" in (ROOT / "README.md").read_text()
    if not (MEDIA / "images").is_dir():
        pytest.skip("shared media absent")
    rows = _scores([(p.name, p.read_bytes()) for p in sorted((MEDIA / "images").iterdir())], **filters)
    assert {k for k, r in rows.items() if r["status"] != "ok"} == dropped
