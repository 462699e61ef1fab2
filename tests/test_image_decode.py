"""Image probe/decode/encode on real media (shared/media/images, shared/media/bad) plus generated
edge cases. DALI tests skip when nvidia.dali does not import."""

from __future__ import annotations

import csv
import io
import pickle
import struct
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, JpegImagePlugin

from conftest import MEDIA, media_path
from curastream.images.cpu_decode import ANALYSIS_SIZE, decode_full_rgb
from curastream.images.decode import decode_for_analysis
from curastream.images.encode import encode_jpeg, needs_reencode
from curastream.images.jpeg import check_jpeg
from curastream.images.probe import ImageDecodeError, probe_image, sniff_format

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".mpo"}


def _listing(sub: str) -> list[str]:
    d = MEDIA / sub
    if not d.is_dir():
        return ["<media absent>"]  # media_path() skips it
    return sorted(p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_EXT)


def _manifest() -> dict[str, dict[str, str]]:
    path = MEDIA / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


MANIFEST = _manifest()
EXIF6 = {"derived_rocket_exif_orientation6.jpg", "imageio_rommel.jpg"}


def _read(*parts: str) -> bytes:
    return media_path(*parts).read_bytes()


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- real images


@pytest.mark.parametrize("name", _listing("images"))
def test_every_image_probes_and_decodes(name):
    data = _read("images", name)
    probe = probe_image(data)
    out = decode_for_analysis(data, probe)
    assert out.shape == (ANALYSIS_SIZE, ANALYSIS_SIZE, 3)
    assert out.dtype == np.uint8 and out.flags.c_contiguous

    row = MANIFEST.get(f"images/{name}")
    if row is not None and row["resolution"]:
        w, h = (int(v) for v in row["resolution"].split("x"))
        if name in EXIF6:
            w, h = h, w  # MANIFEST lists stored dims; probe reports upright dims
        assert (probe.width, probe.height) == (w, h)
    if name in EXIF6:
        assert probe.exif_orientation == 6


def test_exif6_full_decode_is_clockwise_rotation():
    data = _read("images", "derived_rocket_exif_orientation6.jpg")
    probe = probe_image(data)
    assert (probe.width, probe.height, probe.exif_orientation) == (427, 640, 6)
    raw = simplejpeg.decode_jpeg(data, colorspace="RGB")
    full = decode_full_rgb(data, probe)
    assert full.shape == (640, 427, 3)
    np.testing.assert_array_equal(full, np.rot90(raw, k=-1))
    # The derived file only gained an EXIF tag: its pixels are the original rocket's.
    orig = _read("images", "skimage_rocket.jpg")
    op = probe_image(orig)
    np.testing.assert_array_equal(full, np.rot90(decode_full_rgb(orig, op), k=-1))
    # Squash-then-rotate equals rotate-then-squash, so the analysis views line up exactly.
    np.testing.assert_array_equal(
        decode_for_analysis(data, probe), np.rot90(decode_for_analysis(orig, op), k=-1)
    )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_exif_orientations_match_pillow_exif_transpose(orientation):
    rng = np.random.default_rng(orientation)
    base = np.kron(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg_bytes(Image.fromarray(base), quality=95, subsampling=0, exif=exif.tobytes())
    probe = probe_image(data)
    assert probe.exif_orientation == orientation
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert (probe.width, probe.height) == (expected.shape[1], expected.shape[0])
    full = decode_full_rgb(data, probe)
    assert full.shape == expected.shape
    assert _mad(full, expected) < 0.5


@pytest.mark.parametrize(
    "name", ["go_video-005.gray.jpeg", "opencv_left01.jpg", "skimage_camera.png", "opencv_basketball1.png"]
)
def test_grayscale_comes_out_as_three_equal_channels(name):
    data = _read("images", name)
    probe = probe_image(data)
    assert probe.mode == "L"
    for arr in (decode_for_analysis(data, probe), decode_full_rgb(data, probe)):
        assert arr.ndim == 3 and arr.shape[2] == 3
        assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
    expected = "grayscale" if probe.format == "JPEG" else "not_jpeg"
    assert needs_reencode(probe, data) == expected


def test_rgba_png_is_composited_over_white():
    data = _read("images", "opencv_chicky_512.png")
    probe = probe_image(data)
    assert probe.mode == "RGBA"
    full = decode_full_rgb(data, probe)
    assert full.shape == (512, 512, 3) and full.dtype == np.uint8
    rgba = np.asarray(Image.open(io.BytesIO(data))).astype(np.float64)
    a = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] * a + 255.0 * (1.0 - a)
    assert np.abs(full - expected).max() <= 1.0
    assert decode_for_analysis(data, probe).shape == (ANALYSIS_SIZE, ANALYSIS_SIZE, 3)
    assert needs_reencode(probe, data) == "not_jpeg"


def test_mpo_needs_reencode_and_decodes_first_frame():
    data = _read("images", "pillow_frozenpond.mpo")
    probe = probe_image(data)
    assert probe.format == "MPO" and probe.n_frames == 2
    assert needs_reencode(probe, data) == "mpo"
    full = decode_full_rgb(data, probe)
    with Image.open(io.BytesIO(data)) as im:
        first = np.asarray(im.convert("RGB"))
    assert full.shape == first.shape == (480, 640, 3)
    assert _mad(full, first) < 1.0


# An EXIF-rotated photo is no longer one of these: it is stored upright (test_exif_upright.py).
@pytest.mark.parametrize("name", ["skimage_rocket.jpg", "mate_FreshFlower.jpg"])
def test_clean_ycbcr_jpegs_pass_through(name):
    data = _read("images", name)
    probe = probe_image(data)
    assert needs_reencode(probe, data) is None
    if name == "mate_FreshFlower.jpg":
        assert probe.is_progressive


@pytest.mark.parametrize(
    "name",
    ["skimage_rocket.jpg", "opencv_squirrel_cls.jpg", "mate_FreshFlower.jpg", "forensics_IMG_1054.JPG",
     "plasma_EveningGlow_2560x1600.jpg", "imageio_rommel.jpg", "opencv_left01.jpg"],
)
def test_turbo_and_pillow_analysis_agree(name):
    data = _read("images", name)
    probe = probe_image(data)
    turbo = decode_for_analysis(data, probe, decoder="turbo")
    pil = decode_for_analysis(data, probe, decoder="pillow")
    assert _mad(turbo, pil) < 6.0
    assert np.array_equal(turbo, decode_for_analysis(data, probe, decoder="auto"))


def test_encode_jpeg_is_420_and_decodes_with_pillow():
    data = _read("images", "opencv_fruits.jpg")
    rgb = decode_full_rgb(data, probe_image(data))
    enc = encode_jpeg(rgb, quality=92)
    with Image.open(io.BytesIO(enc)) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (rgb.shape[1], rgb.shape[0])
        assert JpegImagePlugin.get_sampling(im) == 2
        back = np.asarray(im.convert("RGB"))
    assert _mad(back, rgb) < 3.0
    assert needs_reencode(probe_image(enc), enc) is None
    # Gray input must still produce an RGB (3-component) JPEG.
    gray = encode_jpeg(rgb[..., 0])
    with Image.open(io.BytesIO(gray)) as im:
        assert im.mode == "RGB"


# --------------------------------------------------------------------------- bad files

BAD_REASONS = {
    "go_video-001.progressive.truncated.jpeg": {"truncated"},
    "pillow_broken_data_stream.png": {"corrupt"},
    "pillow_junk_jpeg_header.jpg": {"corrupt"},
    "pillow_truncated_image.png": {"truncated"},
    "pillow_truncated_jpeg.jpg": {"truncated"},
}
SENSIBLE = {"truncated", "corrupt", "unsupported_format", "too_many_pixels", "empty"}


@pytest.mark.parametrize("name", _listing("bad"))
def test_bad_images_raise(name):
    data = _read("bad", name)
    if name == "forensics_empty.jpg":  # degenerate 161x1 but valid: later filters reject it
        probe = probe_image(data)
        assert (probe.width, probe.height) == (161, 1)
        assert decode_for_analysis(data, probe).shape == (ANALYSIS_SIZE, ANALYSIS_SIZE, 3)
        assert decode_full_rgb(data, probe).shape == (1, 161, 3)
        return
    allowed = BAD_REASONS.get(name, SENSIBLE)
    for decoder in ("auto", "pillow"):
        with pytest.raises(ImageDecodeError) as ei:
            decode_for_analysis(data, probe_image(data), decoder=decoder)
        assert ei.value.reason in allowed, (decoder, str(ei.value))
    with pytest.raises(ImageDecodeError):
        decode_full_rgb(data, probe_image(data))


# --------------------------------------------------------------------------- generated cases


def test_random_and_empty_bytes():
    rng = np.random.default_rng(1)
    with pytest.raises(ImageDecodeError) as ei:
        probe_image(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert ei.value.reason == "unsupported_format"
    for empty in (b"", bytearray()):
        with pytest.raises(ImageDecodeError) as ei:
            probe_image(empty)
        assert ei.value.reason == "empty"
    # A JPEG signature followed by garbage is a JPEG with a broken header, not an unknown format.
    with pytest.raises(ImageDecodeError) as ei:
        probe_image(b"\xff\xd8\xff" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    assert ei.value.reason in {"corrupt", "truncated"}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_png_bomb_rejected_from_header():
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError) as ei:
            probe_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ei.value.reason == "too_many_pixels"
    # Header only: nothing 30 GB-sized was allocated. Counted (Python and NumPy allocations), not
    # timed: a loaded machine can make even a header read take half a second.
    assert peak < 16 << 20, peak
    # The limit is per call.
    small = _png_bytes(Image.new("RGB", (100, 100)))
    with pytest.raises(ImageDecodeError) as ei:
        probe_image(small, max_pixels=9_999)
    assert ei.value.reason == "too_many_pixels"
    assert probe_image(small, max_pixels=10_000).width == 100


def test_jpeg_bomb_rejected_from_sof():
    data = bytearray(_read("images", "skimage_rocket.jpg"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 60_000, 60_000)
    with pytest.raises(ImageDecodeError) as ei:
        probe_image(bytes(data))
    assert ei.value.reason == "too_many_pixels"


def test_16bit_png_scales_not_clips():
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16)  # 0..65535
    data = _png_bytes(Image.fromarray(np.tile(ramp, (8, 1))))
    probe = probe_image(data)
    assert probe.mode.startswith("I")
    full = decode_full_rgb(data, probe)
    np.testing.assert_array_equal(full[0, :, 0], np.arange(256, dtype=np.uint8))
    assert np.array_equal(full[..., 0], full[..., 1]) and np.array_equal(full[..., 0], full[..., 2])
    fine = np.linspace(0, 65535, 1000).round().astype(np.uint16)
    data = _png_bytes(Image.fromarray(np.tile(fine, (4, 1))))
    row = decode_full_rgb(data, probe_image(data))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)
    assert np.abs(row - np.linspace(0, 255, 1000)).max() <= 0.5 + 1e-9
    assert needs_reencode(probe, data) == "not_jpeg"
    assert decode_for_analysis(data, probe_image(data)).shape == (ANALYSIS_SIZE, ANALYSIS_SIZE, 3)


def test_cmyk_jpeg():
    yy, xx = np.mgrid[0:96, 0:128]
    cmyk = np.stack([xx * 2, yy * 2, 255 - xx * 2, np.full_like(xx, 30)], axis=-1).astype(np.uint8)
    data = _jpeg_bytes(Image.fromarray(cmyk, "CMYK"), quality=95)
    probe = probe_image(data)
    assert probe.mode == "CMYK" and needs_reencode(probe, data) == "cmyk"
    with Image.open(io.BytesIO(data)) as im:
        ref = np.asarray(im.convert("RGB"))
    full = decode_full_rgb(data, probe)
    assert full.shape == (96, 128, 3) and _mad(full, ref) < 2.0
    auto = decode_for_analysis(data, probe)
    pil = decode_for_analysis(data, probe, decoder="pillow")
    assert _mad(auto, pil) < 3.0


def test_palette_png_with_transparency():
    pal = Image.new("P", (20, 10))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    px = np.zeros((10, 20), np.uint8)
    px[:, 10:] = 1
    pal.frombytes(px.tobytes())
    data = _png_bytes(pal, transparency=1)
    probe = probe_image(data)
    assert probe.mode == "P"
    full = decode_full_rgb(data, probe)
    assert (full[:, :10] == [255, 0, 0]).all()
    assert (full[:, 10:] == [255, 255, 255]).all()  # transparent index -> white


@pytest.mark.parametrize(
    "fmt,mode", [("WEBP", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("PNG", "1"), ("PNG", "LA")]
)
def test_other_formats_and_modes(fmt, mode):
    data0 = _read("images", "skimage_chelsea.png")
    im = Image.open(io.BytesIO(data0)).convert("RGB").resize((120, 80))
    im = im.convert(mode) if mode not in ("RGB",) else im
    buf = io.BytesIO()
    im.save(buf, fmt)
    data = buf.getvalue()
    assert sniff_format(data) == fmt
    probe = probe_image(data)
    assert probe.format == fmt and (probe.width, probe.height) == (120, 80)
    assert decode_for_analysis(data, probe).shape == (ANALYSIS_SIZE, ANALYSIS_SIZE, 3)
    assert decode_full_rgb(data, probe).shape == (80, 120, 3)
    assert needs_reencode(probe, data) == "not_jpeg"


@pytest.mark.parametrize("name", ["mate_Storm.jpg", "mate_GreenMeadow.jpg"])  # baseline, progressive
def test_truncated_jpeg_at_random_offsets(name):
    data = _read("images", name)
    rng = np.random.default_rng(7)
    for cut in rng.integers(len(data) // 10, len(data) - 16, 4):
        head = data[: int(cut)]
        probe = probe_image(head)  # header intact: probe cannot know yet
        for decoder in ("auto", "pillow"):
            with pytest.raises(ImageDecodeError) as ei:
                decode_for_analysis(head, probe, decoder=decoder)
            assert ei.value.reason == "truncated"
        # Cut and patched with an EOI so libjpeg sees a "complete" file.
        patched = head + b"\xff\xd9"
        with pytest.raises(ImageDecodeError) as ei:
            decode_for_analysis(patched, probe)
        assert ei.value.reason in {"truncated", "corrupt"}


@pytest.mark.parametrize("name", _listing("images"))
def test_a_shared_jpeg_check_changes_nothing(name):
    data = _read("images", name)
    probe = probe_image(data)
    if probe.format not in ("JPEG", "MPO"):
        return
    jpeg = check_jpeg(data)
    assert data[jpeg.end - 2 : jpeg.end] == b"\xff\xd9"
    np.testing.assert_array_equal(decode_for_analysis(data, probe, jpeg=jpeg), decode_for_analysis(data, probe))
    assert needs_reencode(probe, data, jpeg=jpeg) == needs_reencode(probe, data)


def test_check_jpeg_finds_the_first_image_and_refuses_missing_scans():
    data = _read("images", "mate_GreenMeadow.jpg")  # progressive
    assert check_jpeg(data + b"\xff\xd8junk\xff\xd9").end == check_jpeg(data).end == len(data)
    with pytest.raises(ImageDecodeError) as ei:
        check_jpeg(data[: len(data) // 2] + b"\xff\xd9")
    assert ei.value.reason in {"truncated", "corrupt"}


def test_c_marker_search_is_built():
    from curastream.images import jpeg

    assert jpeg._find_marker is not jpeg._find_marker_re, "stream/images/jpeg_markers.c was not compiled"


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.sampled_from([b"\xff", b"\x00", b"\xd9", b"\xd0", b"\xd7", b"\xd8", b"\xc4", b"a"]),
                     max_size=40).map(b"".join), start=st.integers(-2, 45))
def test_c_marker_search_agrees_with_the_regular_expressions(data, start):
    from curastream.images._jpeg_markers import find_marker
    from curastream.images.jpeg import _find_marker_re

    for kind in (0, 1):
        assert find_marker(data, start, kind) == _find_marker_re(data, max(start, 0), kind), (data, start, kind)


@pytest.mark.parametrize("name", _listing("images"))
def test_c_marker_search_on_photos(name):
    from curastream.images._jpeg_markers import find_marker
    from curastream.images.jpeg import _find_marker_re

    data = _read("images", name)
    for start in range(0, len(data), max(1, len(data) // 7)):
        for kind in (0, 1):
            assert find_marker(data, start, kind) == _find_marker_re(data, start, kind)


def test_sniff_format_uses_magic_not_extension():
    assert sniff_format(_read("images", "skimage_camera.png")) == "PNG"
    assert sniff_format(_read("images", "pillow_frozenpond.mpo")) == "JPEG"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "HEIF"
    assert sniff_format(b"BM hello, not a bitmap at all") is None
    assert sniff_format(b"") is None
    with pytest.raises(ImageDecodeError) as ei:
        probe_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    assert ei.value.reason == "unsupported_format"


def test_error_pickles_with_reason():
    err = pickle.loads(pickle.dumps(ImageDecodeError("truncated", "cut short")))
    assert isinstance(err, ValueError) and err.reason == "truncated" and "cut short" in str(err)


def test_unknown_decoder_rejected():
    data = _read("images", "skimage_rocket.jpg")
    with pytest.raises(ValueError):
        decode_for_analysis(data, probe_image(data), decoder="nvjpeg")


# --------------------------------------------------------------------------- DALI (CPU)


@pytest.fixture(scope="module")
def dali_decode():
    pytest.importorskip("nvidia.dali")
    from curastream.images import dali as dali_decode

    if not dali_decode.dali_available():
        pytest.skip("nvidia.dali does not import")
    return dali_decode


DALI_GOOD = ["skimage_rocket.jpg", "derived_rocket_exif_orientation6.jpg", "opencv_left01.jpg",
             "mate_FreshFlower.jpg"]


def test_dali_batch_isolates_bad_image(dali_decode):
    datas = [_read("images", n) for n in DALI_GOOD]
    datas.insert(2, _read("bad", "pillow_truncated_jpeg.jpg"))
    pipe = dali_decode.make_decode_pipeline(batch_size=8, num_threads=2)
    out = dali_decode.dali_decode_batch(pipe, datas)
    assert len(out) == 5 and isinstance(out[2], ImageDecodeError)
    for data, arr in zip(datas[:2] + datas[3:], out[:2] + out[3:]):
        assert isinstance(arr, np.ndarray) and arr.shape == (ANALYSIS_SIZE, ANALYSIS_SIZE, 3)
        assert _mad(arr, decode_for_analysis(data, probe_image(data))) < 4.0


def test_dali_batch_recovers_from_failed_batch(dali_decode):
    # Without the header pre-check the bad file reaches DALI, kills the batch and the pipeline;
    # the retry must rebuild it and still return the four good images.
    datas = [_read("images", n) for n in DALI_GOOD] + [_read("bad", "pillow_truncated_jpeg.jpg")]
    pipe = dali_decode.make_decode_pipeline(batch_size=8, num_threads=1)
    out = dali_decode.dali_decode_batch(pipe, datas, prevalidate=False)
    assert [isinstance(o, np.ndarray) for o in out] == [True, True, True, True, False]
    assert isinstance(out[4], ImageDecodeError) and pipe.rebuilds >= 1
    # The rebuilt pipeline keeps working.
    again = dali_decode.dali_decode_batch(pipe, datas[:2])
    assert all(isinstance(o, np.ndarray) for o in again)
    assert decode_for_analysis(datas[0], probe_image(datas[0]), decoder="dali").shape == (256, 256, 3)


def test_dali_decoder_without_dali_fails_in_one_line(monkeypatch):
    # DALI is the [gpu] extra: without it, choosing its decoder must say so before any work.
    from curastream.images import dali

    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # makes `import nvidia.dali` fail
    dali.dali_available.cache_clear()
    try:
        for call in (dali.require_dali, lambda: dali.make_decode_pipeline(batch_size=1, num_threads=1)):
            with pytest.raises(ValueError) as ei:
                call()
            assert str(ei.value) == "the DALI decoder needs NVIDIA DALI: pip install 'curastream[gpu]'"
        data = _read("images", DALI_GOOD[0])
        # A size no earlier test decoded at: decode_one keeps a pipeline per size and thread.
        with pytest.raises(ValueError, match=r"needs NVIDIA DALI.*curastream\[gpu\]"):
            decode_for_analysis(data, probe_image(data), size=ANALYSIS_SIZE // 8, decoder="dali")
    finally:
        dali.dali_available.cache_clear()
