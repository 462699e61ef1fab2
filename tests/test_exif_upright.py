"""EXIF-rotated JPEGs are stored upright (SPEC section 1): the shard JPEG, read by plain PIL or
webdataset's default decoders (neither applies EXIF), shows the picture Pillow's
``exif_transpose`` shows for the source, at the Parquet's and the sidecar's width/height, with no
Orientation other than 1. A DCT-domain transform is used where libjpeg-turbo says it is perfect
for the image size; otherwise the image is re-encoded. Upright JPEGs still pass byte for byte."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from conftest import MEDIA
from curastream import ImageFilters, ImageRunConfig, run_images
from curastream.images import orient
from curastream.images.encode import needs_reencode, shard_jpeg
from curastream.images.probe import probe_image

ORIENTATION = 0x0112
needs_lossless = pytest.mark.skipif(not orient.lossless_available(), reason="turbojpeg wheel not installed")

# Which transforms libjpeg-turbo can do perfectly, from its documentation of jpegtran -perfect
# (transupp.c, jtransform_perfect_transform): a partial iMCU at the right edge blocks HFLIP and
# ROT270, one at the bottom blocks VFLIP and ROT90, either blocks ROT180 and TRANSVERSE;
# TRANSPOSE is always perfect. As EXIF orientations: 2 HFLIP, 3 ROT180, 4 VFLIP, 5 TRANSPOSE,
# 6 ROT90, 7 TRANSVERSE, 8 ROT270. The sizes below are 4:2:0 JPEGs, so the iMCU is 16x16.
SIZES = {  # (stored width, stored height) -> orientations with a perfect transform
    (256, 192): {2, 3, 4, 5, 6, 7, 8},
    (256, 189): {2, 5, 8},
    (253, 189): {5},
}


def _synthetic(w: int, h: int, orientation: int, seed: int) -> bytes:
    """A 4:2:0 JPEG whose picture tells every flip and turn apart (gradients, a bright corner,
    a checkerboard), tagged with ``orientation``."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    arr = np.stack([x * 255 // w, y * 255 // h, ((x // 32 + y // 32) % 2) * 200], -1).astype(np.int16)
    arr[: h // 4, : w // 3] = 255
    arr = np.clip(arr + rng.integers(-8, 9, arr.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "curastream-test"  # Make: other EXIF must survive the lossless path
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95, subsampling=2, exif=exif.tobytes())
    return buf.getvalue()


def _upright_reference(src: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(src)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.float64)


def _plain_pixels(jpeg: bytes) -> tuple[np.ndarray, int | None]:
    """Pixels as a reader that ignores EXIF sees them, and the Orientation tag (None if absent)."""
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"), dtype=np.float64), im.getexif().get(ORIENTATION)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _read_run(out: Path) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, dict]]:
    """Parquet rows (pandas), and the tar's JPEG and JSON members by key (tarfile)."""
    shards = sorted(out.glob("images-*.tar"))
    assert shards
    rows = pd.concat([pd.read_parquet(p.with_suffix(".parquet")) for p in shards], ignore_index=True)
    jpgs, sidecars = {}, {}
    for tar in shards:
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.rsplit(".", 1)
                data = tf.extractfile(m).read()
                if ext == "jpg":
                    jpgs[key] = data
                elif ext == "json":
                    sidecars[key] = json.loads(data)
    return rows, jpgs, sidecars


def _check_upright(src: bytes, stored: bytes, row, sidecar: dict, max_mad: float) -> None:
    ref = _upright_reference(src)
    got, tag = _plain_pixels(stored)
    assert tag in (None, 1), f"stored JPEG still carries Orientation={tag}"
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert (row["width"], row["height"]) == (got.shape[1], got.shape[0])
    assert (sidecar["width"], sidecar["height"]) == (got.shape[1], got.shape[0])
    assert _mad(got, ref) < max_mad


# -- synthetic: every orientation, sizes on and off the MCU grid --------------------------------------


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    src_dir = tmp_path_factory.mktemp("exif_src")
    sources = {}
    for (w, h) in SIZES:
        for o in range(1, 9):
            name = f"s{w}x{h}_o{o}"
            data = _synthetic(w, h, o, seed=w * 10 + o)
            (src_dir / f"{name}.jpg").write_bytes(data)
            sources[name] = data
    out = tmp_path_factory.mktemp("exif_out") / "out"
    run_images(ImageRunConfig(sources=[str(src_dir)], output=str(out), progress=False,
                              filters=ImageFilters(dedup=False)))
    rows, jpgs, sidecars = _read_run(out)
    rows["name"] = [Path(p).stem for p in rows["original_path"]]
    return sources, rows.set_index("name"), jpgs, sidecars


@pytest.mark.parametrize("size", list(SIZES), ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_stored_upright(synthetic_run, size, orientation):
    sources, rows, jpgs, sidecars = synthetic_run
    name = f"s{size[0]}x{size[1]}_o{orientation}"
    src, row = sources[name], rows.loc[name]
    stored = jpgs[row["image_id"]]
    assert row["exif_orientation"] == orientation
    if orientation == 1:  # upright already: the original bytes, untouched
        assert stored == src and bool(row["passthrough"])
        assert pd.isna(row["orientation_fix"])
        return
    assert not row["passthrough"]
    _check_upright(src, stored, row, sidecars[row["image_id"]], max_mad=4.0)
    # the stored picture is not the sideways/mirrored one (the check above could not tell apart
    # two orientations that happen to give the same size otherwise)
    with Image.open(io.BytesIO(src)) as im:
        as_stored = np.asarray(im.convert("RGB"), dtype=np.float64)
    if as_stored.shape == _plain_pixels(stored)[0].shape:
        assert _mad(_plain_pixels(stored)[0], as_stored) > 20
    lossless = orient.lossless_available() and orientation in SIZES[size]
    assert row["orientation_fix"] == ("lossless" if lossless else "reencode")
    if lossless:
        # no decode/encode round: the transform is exact up to IDCT rounding
        assert _mad(_plain_pixels(stored)[0], _upright_reference(src)) < 1.0
        with Image.open(io.BytesIO(stored)) as im:
            assert im.getexif().get(0x010F) == "curastream-test", "EXIF other than Orientation kept"


# -- real photos from shared/media -----------------------------------------------------------------

ROTATED = ["derived_rocket_exif_orientation6.jpg", "imageio_rommel.jpg"]  # Orientation=6 per MANIFEST
UPRIGHT = ["skimage_rocket.jpg", "mate_FreshFlower.jpg", "opencv_squirrel_cls.jpg"]


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    if not MEDIA.is_dir():
        pytest.skip("shared media absent")
    paths = [MEDIA / "images" / n for n in ROTATED + UPRIGHT]
    if not all(p.exists() for p in paths):
        pytest.skip("shared media lacks the photos this test reads")
    out = tmp_path_factory.mktemp("exif_media") / "out"
    run_images(ImageRunConfig(sources=[str(p) for p in paths], output=str(out), progress=False,
                              filters=ImageFilters(dedup=False)))
    rows, jpgs, sidecars = _read_run(out)
    rows["name"] = [Path(p).name for p in rows["original_path"]]
    return out, rows.set_index("name"), jpgs, sidecars


@pytest.mark.parametrize("name", ROTATED)
def test_rotated_photos_are_stored_upright(media_run, name):
    _, rows, jpgs, sidecars = media_run
    src = (MEDIA / "images" / name).read_bytes()
    row = rows.loc[name]
    assert row["exif_orientation"] == 6 and not row["passthrough"]
    stored = jpgs[row["image_id"]]
    _check_upright(src, stored, row, sidecars[row["image_id"]], max_mad=3.0)
    with Image.open(io.BytesIO(src)) as im:
        w, h = im.size
    assert (row["width"], row["height"]) == (h, w)  # turned a quarter


def test_rotated_photo_paths(media_run):
    """rommel is 3072x2304 at 4:2:2 (16x8 iMCU): ROT90 is perfect, so it turns losslessly; the
    rocket is 640x427 at 4:4:4, and 427 is no multiple of 8, so it is re-encoded."""
    _, rows, _, _ = media_run
    assert rows.loc["derived_rocket_exif_orientation6.jpg", "orientation_fix"] == "reencode"
    expected = "lossless" if orient.lossless_available() else "reencode"
    assert rows.loc["imageio_rommel.jpg", "orientation_fix"] == expected


@pytest.mark.parametrize("name", UPRIGHT)
def test_upright_photos_pass_through_byte_identical(media_run, name):
    _, rows, jpgs, _ = media_run
    row = rows.loc[name]
    assert jpgs[row["image_id"]] == (MEDIA / "images" / name).read_bytes()
    assert bool(row["passthrough"]) and pd.isna(row["orientation_fix"])


@pytest.mark.parametrize("decoder", ["pil", "rgb8"])
def test_webdataset_default_decoders_see_upright_pixels(media_run, decoder):
    wds = pytest.importorskip("webdataset")
    out, rows, _, _ = media_run
    by_key = rows.reset_index().set_index("image_id")
    urls = [str(p) for p in sorted(out.glob("images-*.tar"))]
    seen = set()
    for sample in wds.WebDataset(urls, shardshuffle=False).decode(decoder):
        row = by_key.loc[sample["__key__"]]
        img = sample["jpg"]
        arr = np.asarray(img.convert("RGB") if decoder == "pil" else img, dtype=np.float64)
        if decoder == "rgb8":
            assert img.dtype == np.uint8
        assert (arr.shape[1], arr.shape[0]) == (row["width"], row["height"])
        ref = _upright_reference((MEDIA / "images" / row["name"]).read_bytes())
        assert _mad(arr, ref) < 3.0, row["name"]
        seen.add(row["name"])
    assert seen == set(ROTATED + UPRIGHT)


# -- the two paths, one at a time -----------------------------------------------------------------


def _media_jpeg(name: str) -> bytes:
    p = MEDIA / "images" / name
    if not p.exists():
        pytest.skip(f"shared media not present: {p}")
    return p.read_bytes()


@needs_lossless
def test_lossless_turn_keeps_exif_and_resets_orientation():
    src = _media_jpeg("imageio_rommel.jpg")
    probe = probe_image(src)
    res = shard_jpeg(src, probe, needs_reencode(probe, src))
    assert res.orientation_fix == "lossless" and not res.passthrough
    with Image.open(io.BytesIO(src)) as a, Image.open(io.BytesIO(res.data)) as b:
        ea, eb = a.getexif(), b.getexif()
        assert b.size == (probe.width, probe.height) == (a.size[1], a.size[0])
        assert eb.get(ORIENTATION) == 1
        assert {k: v for k, v in ea.items() if k != ORIENTATION} == {k: v for k, v in eb.items() if k != ORIENTATION}
    # the result is itself a JPEG the pipeline would pass through (YCbCr, Huffman, upright)
    assert needs_reencode(probe_image(res.data), res.data) is None


def test_without_the_library_the_photo_is_re_encoded_upright(monkeypatch):
    src = _media_jpeg("imageio_rommel.jpg")
    monkeypatch.setattr(orient, "_tj", None)
    monkeypatch.setattr(orient, "_lib", None)
    probe = probe_image(src)
    res = shard_jpeg(src, probe, needs_reencode(probe, src))
    assert res.orientation_fix == "reencode" and not res.passthrough
    got, tag = _plain_pixels(res.data)
    assert tag is None
    assert _mad(got, _upright_reference(src)) < 3.0


@needs_lossless
@pytest.mark.parametrize("progressive", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_ctypes_turn_matches_the_wheel_binding(progressive):
    """The ctypes call (GIL released) and the wheel's own binding give the same bytes and refuse
    the same turns, in any order: a TurboJPEG 3 handle keeps a transform's options, so a
    progressive turn must not leak into the next image's."""
    tj = pytest.importorskip("turbojpeg")
    if orient._lib is None:
        pytest.skip("no libturbojpeg file to load through ctypes")
    cases = [(_media_jpeg(n), op) for n in ("imageio_rommel.jpg", "derived_rocket_exif_orientation6.jpg")
             for op in ("ROT90", "HFLIP", "TRANSPOSE", "ROT180")]
    for data, op in cases:
        for prog in (progressive, not progressive):
            try:
                want = tj.transform(data, op=getattr(tj.OP, op), perfect=True, progressive=prog)
            except RuntimeError:  # "Transform is not perfect"
                want = None
            assert orient._transform(data, op, prog) == want, (op, prog)


def _ticks_while(work) -> int:
    """How far a pure-Python counting thread gets while ``work()`` runs in this thread."""
    import threading

    done, ticks = threading.Event(), []

    def count():
        n = 0
        while not done.is_set():
            n += 1
        ticks.append(n)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        work()
    finally:
        done.set()
        counter.join()
    return ticks[0]


@needs_lossless
def test_turns_run_beside_other_threads():
    """The turn must not hold the GIL (through the wheel's binding it did, and stalled every
    decode thread). Against the binding as the reference: while the binding turns, a counting
    thread runs only in the gaps between calls; while the ctypes call turns, it runs throughout."""
    tj = pytest.importorskip("turbojpeg")
    if orient._lib is None:
        pytest.skip("no libturbojpeg file to load through ctypes")
    src = _media_jpeg("imageio_rommel.jpg")
    held = _ticks_while(lambda: [tj.transform(src, op=tj.OP.ROT90, perfect=True) for _ in range(4)])
    released = _ticks_while(lambda: [orient._transform(src, "ROT90", False) for _ in range(4)])
    assert released > 3 * held, (released, held)


def test_orientation_only_in_xmp_is_re_encoded():
    """Pillow (and so our probe) takes the orientation from XMP when EXIF has none; the lossless
    path has no EXIF tag to reset there and would leave the XMP to turn the pixels again."""
    arr = np.zeros((190, 256, 3), np.uint8)
    arr[:40, :60] = 255
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95, subsampling=2, xmp=xmp)
    src = buf.getvalue()
    probe = probe_image(src)
    if probe.exif_orientation != 6:
        pytest.skip("this Pillow does not read the orientation from XMP")
    res = shard_jpeg(src, probe, needs_reencode(probe, src))
    assert res.orientation_fix == "reencode"
    got, tag = _plain_pixels(res.data)
    assert tag in (None, 1) and got.shape == (256, 190, 3)
    assert _mad(got, _upright_reference(src)) < 3.0


def test_set_exif_orientation_refuses_a_file_without_the_tag():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG")
    assert orient.set_exif_orientation(buf.getvalue(), 1) is None
