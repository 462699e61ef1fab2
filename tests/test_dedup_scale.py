"""Dedup at scale. The decision (images.near_groups behind images.dedup.decide) gives exactly the
groups of the plain rule, computed here the slow way: every input, best first, against every
kept one. Pass 1's results kept in the output (images.dedup_facts) spare a resume its decodes,
and the resumed output equals a single run's, read back with tarfile and pyarrow."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import media_path
from curastream import ImageFilters, ImageRunConfig, run_images
from curastream.images.dedup import DedupFacts, decide
from curastream.images.near_groups import (
    _greedy,
    _near_pairs,
    _pairwise,
    band_layout,
    winners,
)
from PIL import Image


def reference(facts: list[DedupFacts], distance: int) -> dict[str, str]:
    """The rule, pairwise: sort by (more pixels, sharper, more bytes, smaller key); an input
    within ``distance`` bits of a kept one loses to the first such kept one."""
    ordered = sorted(facts, key=lambda f: (-f.pixels, -f.sharpness, -f.nbytes, f.key))
    kept: list[DedupFacts] = []
    loses_to: dict[str, str] = {}
    for f in ordered:
        for k in kept:
            if (f.phash ^ k.phash).bit_count() <= distance:
                loses_to[f.key] = k.key
                break
        else:
            kept.append(f)
    return loses_to


def hashes(rng: np.random.Generator, n: int, kind: str) -> list[int]:
    if kind == "random":
        return [int(x) for x in rng.integers(0, 2**64, n, dtype=np.uint64)]
    # clustered: a few centres, members 0..6 bits away, so groups chain and overlap; some
    # members repeat a hash exactly
    centres = rng.integers(0, 2**64, max(1, n // 40), dtype=np.uint64)
    out = []
    for _ in range(n):
        h = int(centres[rng.integers(0, centres.size)])
        for bit in rng.choice(64, size=rng.integers(0, 7), replace=False):
            h ^= 1 << int(bit)
        out.append(h)
    return out


def facts_for(rng: np.random.Generator, hs: list[int]) -> list[DedupFacts]:
    # few distinct pixel counts, sharpness and sizes, so ties reach the key
    return [DedupFacts(f"k{i:05d}", h, int(rng.choice([100, 200, 300])), float(rng.choice([1.0, 2.5])),
                       int(rng.integers(0, 4))) for i, h in enumerate(hs)]


@pytest.mark.parametrize("distance", [0, 1, 4, 8, 12])
@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_groups_as_the_pairwise_rule_whatever_the_order(distance, kind, seed):
    rng = np.random.default_rng(seed)
    facts = facts_for(rng, hashes(rng, 1000, kind))
    expect = reference(facts, distance)
    if kind == "clustered" and distance >= 4:
        assert expect, "the clustered input must have near-duplicates to be a test"
    plan = decide(facts, distance)
    assert plan.duplicate_of == expect
    assert plan.planned == len(facts)
    shuffled = list(facts)
    random.Random(seed).shuffle(shuffled)
    assert decide(shuffled, distance).duplicate_of == expect
    assert decide(reversed(facts), distance).duplicate_of == expect


@pytest.mark.parametrize("distance", [0, 2, 4, 8, 12, 20])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_banding_and_pairwise_paths_agree_with_the_rule(distance, kind):
    """Both search paths, each forced, on the same distinct hashes (best first = index order)."""
    rng = np.random.default_rng(distance)
    u = np.array(list(dict.fromkeys(hashes(rng, 1200, kind))), dtype=np.uint64)
    facts = [DedupFacts(f"k{i:05d}", int(h), 1, 0.0, len(u) - i) for i, h in enumerate(u)]  # rank = index
    expect = reference(facts, distance)
    want = np.array([int(expect[f"k{i:05d}"][1:]) if f"k{i:05d}" in expect else -1 for i in range(len(u))])
    banded = _greedy(len(u), _near_pairs(u, distance, band_layout(distance)))
    assert (banded == want).all()
    assert (_pairwise(u, distance) == want).all()
    assert (winners(u, distance) == want).all()


def test_identical_hashes_follow_their_best_copy():
    # a chain: A kept; B (4 bits from A) loses to A; C (4 bits from B, 8 from A) is kept; many
    # exact copies of B and C follow
    a, b, c = 0, 0b1111, 0b11111111
    facts = [DedupFacts("a", a, 10, 0, 0), DedupFacts("b", b, 9, 0, 0), DedupFacts("c", c, 8, 0, 0)]
    facts += [DedupFacts(f"b{i}", b, 5, 0, 0) for i in range(50)] + [DedupFacts(f"c{i}", c, 5, 0, 0) for i in range(50)]
    plan = decide(facts, 4)
    assert plan.duplicate_of == {"b": "a", **{f"b{i}": "a" for i in range(50)}, **{f"c{i}": "c" for i in range(50)}}


def test_extreme_distances():
    rng = np.random.default_rng(7)
    facts = facts_for(rng, hashes(rng, 300, "random") + [0, 2**64 - 1])
    best = min(facts, key=lambda f: f.rank).key
    # 64 bits apart is the most there is: one copy survives
    assert decide(facts, 64).duplicate_of == {f.key: best for f in facts if f.key != best}
    assert decide(facts, 63).duplicate_of == reference(facts, 63)
    assert decide([], 4).duplicate_of == {}


@pytest.mark.slow
def test_a_large_input_is_decided_fast():
    """300k inputs with near copies: the old per-input walk took ~20 s here; seconds now."""
    import time

    rng = np.random.default_rng(3)
    n = 300_000
    base = rng.integers(0, 2**64, n, dtype=np.uint64)
    h = base.copy()
    h[n // 2:] = base[: n - n // 2] ^ np.uint64(0b101)  # every second half input 2 bits from one of the first
    facts = [DedupFacts(f"k{i:06d}", int(x), 1, 0.0, n - i) for i, x in enumerate(h)]
    t = time.perf_counter()
    plan = decide(facts, 4)
    elapsed = time.perf_counter() - t
    assert plan.duplicate_of == {f"k{i:06d}": f"k{i - n // 2:06d}" for i in range(n // 2, n)}
    assert elapsed < 15, elapsed


# -- pass 1's results kept for a resume (images.dedup_facts) ------------------------------------

FIRST = ("opencv_building.jpg", "opencv_fruits.jpg", "opencv_leuvenA.jpg", "skimage_chelsea.png")
LATER = ("opencv_aloeL.jpg", "skimage_coffee.png")


def _half(name: str) -> bytes:
    im = Image.open(media_path("images", name)).convert("RGB")
    buf = io.BytesIO()
    im.resize((im.width // 2, im.height // 2), Image.LANCZOS).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory) -> tuple[Path, Path]:
    """``a``: photos, one half-size copy, a file that is no image. ``b``, arriving later: new
    photos and half-size copies of ``a``'s photos (worse copies: a resume cannot take back a
    written one, so only losers may arrive late for the result to match a single run)."""
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    for name in FIRST:
        (a / name).write_bytes(media_path("images", name).read_bytes())
    (a / "a_half_building.jpg").write_bytes(_half(FIRST[0]))
    (a / "a_not_an_image.jpg").write_bytes(b"\xff\xd8 not a jpeg at all" * 10)
    for name in LATER:
        (b / name).write_bytes(media_path("images", name).read_bytes())
    (b / "b_half_fruits.jpg").write_bytes(_half(FIRST[1]))
    (b / "b_half_chelsea.jpg").write_bytes(_half(FIRST[3]))
    return a, b


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """sha1 of every image pass 1 decodes (pass 2 takes pass 1's values and decodes none)."""
    from curastream.images import stages

    seen: list[str] = []
    real = stages.decode_for_analysis

    def counting(data, *a, **kw):
        seen.append(hashlib.sha1(bytes(data)).hexdigest())
        return real(data, *a, **kw)

    monkeypatch.setattr(stages, "decode_for_analysis", counting)
    return seen


def _sha(folder: Path, skip_not_images: bool = True) -> set[str]:
    return {hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if not (skip_not_images and "not_an_image" in p.name)}


def _images(srcs, out: Path, **kw) -> None:
    kw.setdefault("filters", ImageFilters(dedup_distance=6))
    run_images(ImageRunConfig(sources=[str(s) for s in srcs], output=str(out), progress=False, images_per_tar=2, **kw))


def _dataset(out: Path) -> tuple[dict, dict, dict]:
    """(image_id -> tar member bytes, image_id -> Parquet row without where it lies, image_id ->
    reject), read with tarfile and pyarrow."""
    members, rows = {}, {}
    for tar_path in sorted(out.glob("images-*.tar")):
        for r in pq.read_table(tar_path.with_suffix(".parquet")).to_pylist():
            with tarfile.open(tar_path) as tf:
                members[r["image_id"]] = tf.extractfile(r["member_name"]).read()
            rows[r["image_id"]] = {k: v for k, v in r.items() if k not in ("tar_file", "member_name")}
    rejects = {r["image_id"]: (r["stage"], r["reason"], r["duplicate_of"])
               for r in pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()}
    return members, rows, rejects


def test_a_resume_with_more_inputs_decodes_only_the_new_ones(two_batches, tmp_path, decodes):
    a, b = two_batches
    _images([a], tmp_path / "o")
    assert set(decodes) == _sha(a)
    assert (tmp_path / "o" / "_curastream" / "dedup_facts.parquet").is_file()
    decodes.clear()
    _images([a, b], tmp_path / "o", on_existing="resume")
    assert sorted(decodes) == sorted(_sha(b))  # each new one once, none of a's again
    decodes.clear()
    _images([a, b], tmp_path / "fresh")
    assert sorted(decodes) == sorted(_sha(a) | _sha(b))
    resumed, fresh = _dataset(tmp_path / "o"), _dataset(tmp_path / "fresh")
    assert resumed == fresh
    members, _, rejects = fresh
    # the data set is what the test means it to be: every half copy lost to its original
    assert set(members) == {n.rsplit(".", 1)[0] for n in FIRST + LATER}
    assert {k for k, r in rejects.items() if r[0] == "dedup"} == {"a_half_building", "b_half_fruits",
                                                                   "b_half_chelsea"}


@pytest.mark.slow
def test_changed_inputs_and_other_decoders_are_analysed_again(two_batches, tmp_path, decodes):
    """(A resume with nothing left to write runs no pass 1 at all: each step brings new inputs.)"""
    a, b = two_batches
    src, c = tmp_path / "src", tmp_path / "c"
    src.mkdir()
    c.mkdir()
    for p in a.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    (c / "opencv_squirrel_cls.jpg").write_bytes(media_path("images", "opencv_squirrel_cls.jpg").read_bytes())
    _images([src], tmp_path / "o")
    changed = src / "a_half_building.jpg"
    changed.write_bytes(_half(FIRST[2]))  # other bytes under the same name
    decodes.clear()
    _images([src, b], tmp_path / "o", on_existing="resume")
    assert sorted(decodes) == sorted(_sha(b) | {hashlib.sha1(changed.read_bytes()).hexdigest()})
    decodes.clear()
    # another decoder may round otherwise: no saved result is used
    _images([src, b, c], tmp_path / "o", on_existing="resume", decoder="pillow")
    assert sorted(decodes) == sorted(_sha(src) | _sha(b) | _sha(c))


def test_an_interrupted_run_resumed_decodes_nothing_again(two_batches, tmp_path, decodes):
    a, b = two_batches
    out = tmp_path / "o"
    _images([a, b], out)
    shards = sorted(out.glob("images-*.tar"))
    assert len(shards) >= 3
    for tar_path in shards[1:]:  # a crash after the first shard
        tar_path.unlink()
        tar_path.with_suffix(".parquet").unlink()
    (out / "_curastream" / "rejects.parquet").unlink()
    (out / "index.json").unlink()
    decodes.clear()
    _images([a, b], out, on_existing="resume")
    assert decodes == []
    _images([a, b], tmp_path / "fresh")
    assert _dataset(out) == _dataset(tmp_path / "fresh")
    # once more, nothing left to do: the file stays, and the new index lists it as it is
    (out / "index.json").unlink()
    _images([a, b], out, on_existing="resume")
    facts = out / "_curastream" / "dedup_facts.parquet"
    listed = {f["path"]: f for f in json.loads((out / "index.json").read_text())["files"]}
    assert listed[facts.relative_to(out).as_posix()]["sha256"] == hashlib.sha256(facts.read_bytes()).hexdigest()
    assert pq.read_table(facts).num_rows == len(list(a.iterdir())) + len(list(b.iterdir()))


def test_keys_that_only_differ_in_trailing_nuls_tie_break_as_python_compares():
    # the streaming API takes any key; NumPy's text type would call "a" and "a\x00" equal
    facts = [DedupFacts("a\x00", 5, 1, 0.0, 0), DedupFacts("a", 5, 1, 0.0, 0), DedupFacts("b", 6, 1, 0.0, 0)]
    assert decide(facts, 2).duplicate_of == reference(facts, 2) == {"a\x00": "a", "b": "a"}
