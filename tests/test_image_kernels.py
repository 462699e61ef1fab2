"""Image score kernels and perceptual hashing against NumPy/OpenCV/SciPy references."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import media_path
from curastream.kernels import area_resize as ar
from curastream.kernels import image_scores as sc
from curastream.kernels.phash import (
    NearDuplicateIndex,
    area_matrix,
    dct_matrix,
    hamming,
    phash,
    resize_area,
)

PHOTOS = ("mate_Dune.jpg", "skimage_rocket.jpg", "opencv_fruits.jpg", "mate_Storm.jpg", "opencv_building.jpg")


def _read_rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(media_path("images", name)), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return np.ascontiguousarray(bgr[..., ::-1])


def _analysis(rgb: np.ndarray, size: int = 256) -> np.ndarray:
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def _skimage_rgb(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return getattr(data, name)()


def _flat(value: int, shape=(1, 32, 48)) -> np.ndarray:
    return np.full(shape + (3,), value, np.uint8)


# ---------------------------------------------------------------- luma


def test_luma_matches_bt601_formula():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = sc.luma(rgb)
    assert y.dtype == np.float32 and y.shape == (3, 17, 23)
    np.testing.assert_allclose(y, 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-3)
    assert sc.luma(_flat(255)).max() == pytest.approx(255.0, abs=1e-3)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.uint8), np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 4, 4, 4), np.uint8)],
)
def test_rgb_validation(bad):
    with pytest.raises(ValueError):
        sc.luma(bad)
    with pytest.raises(ValueError):
        sc.score_batch(bad)


@pytest.mark.parametrize("fn", [sc.sharpness, sc.contrast, sc.entropy, sc.exposure])
def test_luma_validation(fn):
    with pytest.raises(ValueError):
        fn(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError):
        fn(np.zeros((1, 8, 8), bool))


def test_sharpness_needs_an_interior():
    with pytest.raises(ValueError):
        sc.sharpness(np.zeros((1, 2, 8), np.float32))


# ---------------------------------------------------------------- known inputs


def test_flat_image_scores_zero():
    s = sc.score_batch(_flat(137))
    for name in ("sharpness", "contrast", "entropy", "colorfulness", "frac_dark", "frac_bright"):
        assert s[name][0] == 0.0, name
    assert s["mean_luma"][0] == pytest.approx(137.0, abs=1e-3)


def test_score_batch_shape_dtype_and_per_image_equivalence():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    rgb[1] = 90  # a flat image among noisy ones must not leak into its neighbours
    batch = sc.score_batch(rgb)
    assert tuple(batch) == sc.SCORE_NAMES
    for name, v in batch.items():
        assert v.shape == (5,) and v.dtype == np.float32, name
    for i in range(5):
        single = sc.score_batch(rgb[i : i + 1])
        for name in sc.SCORE_NAMES:
            assert single[name][0] == pytest.approx(batch[name][i], rel=1e-5, abs=1e-6), (name, i)


def test_checkerboard_sharpness_is_exact():
    # Every interior Laplacian is +-4*255, so its variance is (4*255)**2 exactly.
    yy, xx = np.mgrid[:16, :20]
    y = (((yy + xx) % 2) * 255).astype(np.float32)[None]
    assert sc.sharpness(y)[0] == pytest.approx(1020.0**2, rel=1e-6)


def test_sharpness_has_no_border_artefacts():
    # A linear ramp has a zero Laplacian everywhere; any padding would create edges at the border.
    yy, xx = np.mgrid[:32, :48]
    ramp = (2.0 * xx + 3.0 * yy).astype(np.float32)[None]
    assert sc.sharpness(ramp)[0] == pytest.approx(0.0, abs=1e-6)


def test_noise_is_sharper_than_its_blur():
    noise = np.random.default_rng(2).uniform(0, 255, (64, 64)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    s = sc.sharpness(np.stack([noise, blurred]))
    assert s[0] > 5000 and s[1] < s[0] / 20


@pytest.mark.parametrize("shape", [(1, 3, 3), (2, 31, 47), (3, 64, 64)])
def test_sharpness_matches_cv2_laplacian(shape):
    y = np.random.default_rng(3).uniform(0, 255, shape).astype(np.float32)
    ref = [cv2.Laplacian(img.astype(np.float64), cv2.CV_64F, ksize=1)[1:-1, 1:-1].var() for img in y]
    np.testing.assert_allclose(sc.sharpness(y), ref, rtol=1e-5)


def test_sharpness_matches_scipy_laplace():
    ndimage = pytest.importorskip("scipy.ndimage")
    y = np.random.default_rng(4).integers(0, 256, (2, 50, 40)).astype(np.uint8)
    ref = [ndimage.laplace(img.astype(np.float64))[1:-1, 1:-1].var() for img in y]
    np.testing.assert_allclose(sc.sharpness(y), ref, rtol=1e-5)


def _sharpness_drop(rgb: np.ndarray):
    y = sc.luma(_analysis(rgb)[None])[0]
    blurred = cv2.GaussianBlur(y, (0, 0), 1.5)
    return sc.sharpness(np.stack([y, blurred]))


def test_blurred_photo_is_less_sharp():
    sharp, blurred = _sharpness_drop(_read_rgb("mate_Dune.jpg"))
    assert blurred < 0.5 * sharp


def test_blurred_photo_is_less_sharp_without_media():
    sharp, blurred = _sharpness_drop(_skimage_rgb("astronaut"))
    assert blurred < 0.5 * sharp


def test_entropy_two_levels_is_one_bit():
    y = np.zeros((1, 10, 10), np.float32)
    y[0, :5] = 255
    assert sc.entropy(y)[0] == 1.0


def test_entropy_all_levels_is_eight_bits():
    y = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(1, 24, 32)
    assert sc.entropy(y)[0] == pytest.approx(8.0, abs=1e-6)


def test_entropy_batch_bins_do_not_mix():
    # Image 0 is all 255 and image 1 all 0: a wrong per-image offset would merge their bins.
    y = np.stack([np.full((8, 8), 255, np.uint8), np.zeros((8, 8), np.uint8)])
    np.testing.assert_array_equal(sc.entropy(y), [0.0, 0.0])


def test_exposure_known_counts():
    y = np.full((2, 10, 20), 128, np.float32)
    y[0].flat[:30] = 0
    y[0].flat[30:40] = 16  # on the dark threshold: counts as dark
    y[0].flat[40:45] = 17
    y[0].flat[45:95] = 239  # on the bright threshold: counts as bright
    y[0].flat[95:100] = 238
    y[1].flat[:200] = 255
    e = sc.exposure(y)
    np.testing.assert_allclose(e["frac_dark"], [40 / 200, 0.0])
    np.testing.assert_allclose(e["frac_bright"], [50 / 200, 1.0])
    np.testing.assert_allclose(e["mean_luma"], y.mean(axis=(1, 2), dtype=np.float64), rtol=1e-6)
    e2 = sc.exposure(y, dark=0, bright=255)
    np.testing.assert_allclose(e2["frac_dark"], [30 / 200, 0.0])
    np.testing.assert_allclose(e2["frac_bright"], [0.0, 1.0])
    with pytest.raises(ValueError):
        sc.exposure(y, dark=200, bright=100)


def test_contrast_is_luma_std():
    y = np.random.default_rng(5).uniform(0, 255, (3, 20, 30)).astype(np.float32)
    np.testing.assert_allclose(sc.contrast(y), y.astype(np.float64).std(axis=(1, 2)), rtol=1e-5)


def _colorfulness_ref(img: np.ndarray) -> float:
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())


def test_colorfulness_gray_and_saturated():
    gray = np.repeat(np.random.default_rng(6).integers(0, 256, (1, 16, 16, 1), dtype=np.uint8), 3, axis=-1)
    patches = np.zeros((1, 16, 16, 3), np.uint8)
    patches[0, :8, :8, 0] = 255
    patches[0, :8, 8:, 1] = 255
    patches[0, 8:, :8, 2] = 255
    patches[0, 8:, 8:, :2] = 255
    c = sc.colorfulness(np.concatenate([gray, patches]))
    assert c[0] == 0.0
    assert c[1] > 50


def test_colorfulness_matches_formula():
    rgb = np.random.default_rng(7).integers(0, 256, (3, 12, 9, 3), dtype=np.uint8)
    np.testing.assert_allclose(sc.colorfulness(rgb), [_colorfulness_ref(i) for i in rgb], rtol=1e-5)


def test_photo_scores_are_plausible():
    s = sc.score_batch(_analysis(_read_rgb("opencv_fruits.jpg"))[None])
    assert 50 < s["mean_luma"][0] < 200
    assert s["entropy"][0] > 6 and s["contrast"][0] > 20 and s["colorfulness"][0] > 30


def _reference_scores(rgb: np.ndarray, y: np.ndarray) -> dict:
    """The xp reference functions, which score_batch's fused OpenCV path must reproduce."""
    return {"sharpness": sc.sharpness_score(y), **sc.exposure(y), "contrast": sc.contrast(y),
            "colorfulness": sc.colorfulness(rgb), "entropy": sc.entropy(y)}


def _assert_fused_matches_reference(rgb: np.ndarray, y: np.ndarray | None = None) -> None:
    y = sc.luma(rgb) if y is None else y
    fused, ref = sc.score_batch(rgb, y), _reference_scores(rgb, y)
    for name in sc.SCORE_NAMES:
        assert fused[name].dtype == np.float32, name
        np.testing.assert_allclose(fused[name], ref[name], rtol=2e-6, atol=1e-6, err_msg=name)


def test_fused_scores_match_the_reference_on_photos():
    photos = [_analysis(_read_rgb(name)) for name in PHOTOS]
    _assert_fused_matches_reference(np.stack(photos))


def test_fused_scores_match_the_reference_on_synthetic_batches():
    rng = np.random.default_rng(11)
    noise = rng.integers(0, 256, (4, 33, 47, 3), dtype=np.uint8)
    noise[1] = 200  # flat
    noise[2, ::2] = 0  # stripes: extreme Laplacian
    noise[3] = np.clip(noise[3], 10, 20)  # mostly dark, all around the threshold
    _assert_fused_matches_reference(noise)
    _assert_fused_matches_reference(np.zeros((1, 3, 3, 3), np.uint8))  # smallest with an interior
    # Non-contiguous views (a crop of a bigger batch) must read the right pixels.
    big = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    _assert_fused_matches_reference(big[:, 5:50, 7:60])


def test_fused_exposure_thresholds_are_inclusive():
    # Luma exactly at the thresholds counts, the float32 neighbours outside do not.
    below = lambda v: np.nextafter(np.float32(v), np.float32(-1))
    above = lambda v: np.nextafter(np.float32(v), np.float32(300))
    row = np.array([sc.DARK, above(sc.DARK), below(sc.BRIGHT), sc.BRIGHT, 128, 0], np.float32)
    y = np.tile(row, (1, 6, 1))
    s = sc.score_batch(np.zeros((1, 6, 6, 3), np.uint8), y)
    assert s["frac_dark"][0] == pytest.approx(2 / 6)  # DARK and 0
    assert s["frac_bright"][0] == pytest.approx(1 / 6)  # BRIGHT only
    _assert_fused_matches_reference(np.zeros((1, 6, 6, 3), np.uint8), y)


def test_fused_scores_reject_a_luma_of_the_wrong_shape():
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError):
        sc.score_batch(rgb, np.zeros((2, 8, 9), np.float32))
    with pytest.raises(ValueError):
        sc.score_batch(np.zeros((1, 2, 8, 3), np.uint8))  # no interior for the Laplacian


# ---------------------------------------------------------------- area resize


def _exact_area_mean(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Independent reference with Python fractions: the mean of the covered area, half up."""
    from fractions import Fraction

    h, w, c = img.shape
    out = np.zeros((out_h, out_w, c), np.uint8)
    for i in range(out_h):
        for j in range(out_w):
            y0, y1 = Fraction(i * h, out_h), Fraction((i + 1) * h, out_h)
            x0, x1 = Fraction(j * w, out_w), Fraction((j + 1) * w, out_w)
            acc = [Fraction(0)] * c
            for y in range(int(y0), min(h, -int(-y1 // 1))):
                wy = min(y1, y + 1) - max(y0, y)
                for x in range(int(x0), min(w, -int(-x1 // 1))):
                    wxy = wy * (min(x1, x + 1) - max(x0, x))
                    for ch in range(c):
                        acc[ch] += wxy * int(img[y, x, ch])
            for ch in range(c):
                mean = acc[ch] / ((y1 - y0) * (x1 - x0))
                out[i, j, ch] = int(mean + Fraction(1, 2))  # floor(mean + 1/2): halves up
    return out


def test_c_area_kernel_is_built():
    # setup.py builds it with optional=True, so a failed compile would only show up as a slow run.
    assert ar.HAVE_C_KERNEL, "kernels/area_resize.c was not compiled into curastream.kernels._area_resize"


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), c=st.integers(1, 4), data=st.data())
def test_area_resize_is_the_exact_area_mean(h, w, c, data):
    oh, ow = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    img = np.random.default_rng(h * 1000 + w * 10 + c).integers(0, 256, (h, w, c), dtype=np.uint8)
    want = _exact_area_mean(img, oh, ow)
    np.testing.assert_array_equal(ar.area_resize_reference(img, oh, ow), want)
    np.testing.assert_array_equal(ar.area_resize(img, oh, ow), want)


@pytest.mark.parametrize("shape", [(400, 640, 3), (1411, 1411, 3), (301, 257, 3), (256, 999, 1), (5000, 300, 3),
                                   (70000, 260, 1)])  # tall: vertical sums past float32's exact range
def test_area_resize_kernel_matches_reference_on_large_images(shape):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(ar.area_resize(img, 256, 256), ar.area_resize_reference(img, 256, 256))


def test_area_resize_matches_opencv_but_rounds_halves_up():
    photo = _read_rgb("mate_Storm.jpg")  # 1920x1280: factors 7.5 x 5
    ours = ar.area_resize(photo, 256, 256).astype(int)
    cv = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(ours - cv).max() <= 1 and (ours != cv).mean() < 1e-3
    two = np.array([[[0], [1]]], np.uint8)  # mean 0.5
    assert ar.area_resize(two, 1, 1)[0, 0, 0] == 1
    assert ar.area_resize(two[..., 0], 1, 1)[0, 0] == 1  # 2-D in, 2-D out


def test_area_resize_rejects_enlarging_and_other_dtypes():
    with pytest.raises(ValueError):
        ar.area_resize(np.zeros((10, 10, 3), np.uint8), 11, 5)
    with pytest.raises(ValueError):
        ar.area_resize(np.zeros((10, 10, 3), np.float32), 5, 5)


def test_area_resize_reads_non_contiguous_views():
    img = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    view = img[::-1, 5:70]
    np.testing.assert_array_equal(ar.area_resize(view, 20, 30), ar.area_resize_reference(np.ascontiguousarray(view), 20, 30))


# ---------------------------------------------------------------- pHash building blocks


def test_dct_matrix_is_orthonormal_dct2():
    d = dct_matrix().astype(np.float64)
    np.testing.assert_allclose(d @ d.T, np.eye(32), atol=1e-6)
    fft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(8).normal(size=(32, 32))
    np.testing.assert_allclose(d @ x @ d.T, fft.dctn(x, norm="ortho"), atol=1e-4)


def test_area_resize_exact_on_multiples_of_32():
    y = np.random.default_rng(9).uniform(0, 255, (2, 256, 64)).astype(np.float32)
    ref = y.reshape(2, 32, 8, 32, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(resize_area(y), ref, rtol=1e-5)


@pytest.mark.parametrize("n_in", [7, 32, 45, 100, 257])
def test_area_matrix_is_a_partition_of_unity(n_in):
    m = area_matrix(n_in)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    # Each input pixel contributes in total its share of the output: nothing dropped or doubled.
    np.testing.assert_allclose(m.sum(axis=0), 32 / n_in, rtol=1e-5)


def test_phash_bits_against_independent_reference():
    fft = pytest.importorskip("scipy.fft")
    y = np.random.default_rng(10).uniform(0, 255, (3, 64, 96)).astype(np.float32)
    got = phash(y)
    assert got.dtype == np.uint64 and got.shape == (3,)
    for img, h in zip(y, got):
        small = img.astype(np.float64).reshape(32, 2, 32, 3).mean(axis=(1, 3))
        block = fft.dctn(small, norm="ortho")[:8, :8].ravel()
        bits = block > np.median(block[1:])
        assert int(h) == int("".join("1" if b else "0" for b in bits), 2)


def test_phash_accepts_uint8_and_32x32():
    y = np.random.default_rng(11).integers(0, 256, (2, 32, 32), dtype=np.uint8)
    np.testing.assert_array_equal(phash(y), phash(y.astype(np.float32)))
    with pytest.raises(ValueError):
        phash(np.zeros((32, 32), np.float32))


# ---------------------------------------------------------------- pHash on photos


def _photo_hash(rgb: np.ndarray) -> int:
    return int(phash(sc.luma(rgb[None]))[0])


def _degraded(rgb: np.ndarray) -> np.ndarray:
    half = cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(half, quality=60, colorspace="RGB"), colorspace="RGB")


@pytest.mark.parametrize("name", PHOTOS[:3])
def test_phash_survives_resize_and_jpeg(name):
    rgb = _read_rgb(name)
    assert hamming(_photo_hash(rgb), _photo_hash(_degraded(rgb))) <= 6
    # The pipeline hashes 256x256 analysis luma; it must agree with the full-size hash.
    assert hamming(_photo_hash(rgb), _photo_hash(_analysis(rgb))) <= 6


def test_phash_separates_different_photos():
    hashes = [_photo_hash(_read_rgb(n)) for n in PHOTOS]
    for a, b in itertools.combinations(hashes, 2):
        assert hamming(a, b) >= 16


def test_phash_without_media():
    astro, coffee = _skimage_rgb("astronaut"), _skimage_rgb("coffee")
    assert hamming(_photo_hash(astro), _photo_hash(_degraded(astro))) <= 6
    assert hamming(_photo_hash(astro), _photo_hash(coffee)) >= 16


# ---------------------------------------------------------------- Hamming + index


def test_hamming_matches_bin_count():
    rng = np.random.default_rng(12)
    a = rng.integers(0, 2**63, 500, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 500, dtype=np.uint64)
    b = rng.integers(0, 2**63, 500, dtype=np.uint64) * np.uint64(2)
    got = hamming(a, b)
    assert got.shape == (500,)
    assert got.tolist() == [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]
    assert hamming(2**64 - 1, 0) == 64 and hamming(5, 5) == 0
    assert hamming(a[:, None], b[None, :4]).shape == (500, 4)


def _brute_find(entries, h, d):
    return next((v for g, v in entries if bin(g ^ h).count("1") <= d), None)


def _flip(rng, h: int, k: int) -> int:
    for bit in rng.choice(64, size=k, replace=False):
        h ^= 1 << int(bit)
    return h


@pytest.mark.parametrize("d", [0, 1, 3, 4, 8, 12])
def test_index_matches_brute_force_with_planted_duplicates(d):
    rng = np.random.default_rng(100 + d)
    index, entries = NearDuplicateIndex(max_distance=d), []
    bases = [int(x) for x in rng.integers(0, 2**64, 150, dtype=np.uint64)]
    for i, base in enumerate(bases):
        # Later entries are often near earlier ones, so "first added wins" is exercised.
        h = _flip(rng, bases[rng.integers(0, i)], int(rng.integers(0, d + 3))) if i and rng.random() < 0.4 else base
        index.add(h, i)
        entries.append((h, i))
    assert len(index) == len(entries)
    queries = [_flip(rng, h, int(rng.integers(0, d + 3))) for h, _ in entries]
    queries += [int(x) for x in rng.integers(0, 2**64, 50, dtype=np.uint64)]
    hits = 0
    for q in queries:
        want = _brute_find(entries, q, d)
        assert index.find(q) == want
        hits += want is not None
    assert hits >= len(entries) // 4  # the planted duplicates really were found


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(0, 10),
    base=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=12),
    flips=st.lists(st.tuples(st.integers(0, 11), st.lists(st.integers(0, 63), max_size=12)), max_size=20),
)
def test_index_matches_brute_force_hypothesis(d, base, flips):
    hashes = list(base)
    for src, bits in flips:
        h = hashes[src % len(hashes)]
        for bit in bits:
            h ^= 1 << bit
        hashes.append(h)
    index = NearDuplicateIndex(d)
    entries = []
    for i, h in enumerate(hashes[: len(base) + len(flips) // 2]):
        index.add(h, i)
        entries.append((h, i))
    for q in hashes:
        assert index.find(q) == _brute_find(entries, q, d)


def test_index_returns_first_added():
    index = NearDuplicateIndex(max_distance=2)
    assert index.find(0) is None and len(index) == 0
    index.add(0b111, "first")
    index.add(0b110, "second")
    assert index.find(0b110) == "first"
    assert index.find(np.uint64(0b100)) == "first"
    assert index.find(0b111000) is None
    exact = NearDuplicateIndex(max_distance=0)
    exact.add(0b111, "a")
    exact.add(0b110, "b")
    assert exact.find(0b110) == "b"


@pytest.mark.parametrize("bad", [-1, 64, 2.5])
def test_index_rejects_bad_distance(bad):
    with pytest.raises(ValueError):
        NearDuplicateIndex(max_distance=bad)


def test_index_rejects_out_of_range_hash():
    index = NearDuplicateIndex()
    with pytest.raises(ValueError):
        index.add(-1, "x")
    with pytest.raises(ValueError):
        index.find(1 << 64)
