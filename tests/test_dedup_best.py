"""Near-duplicate removal keeps the best copy (images.dedup): resolution, then sharpness, then
file bytes, then the key - whatever the input order, batch size or worker count, and across a
resume. Copies are made from real photos with Pillow; outputs are read back with tarfile and
pyarrow."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import media_path
from curastream import ImageFilters, ImageRunConfig, run_images
from PIL import Image, ImageFilter

PHOTOS = ("opencv_building.jpg", "opencv_fruits.jpg", "opencv_leuvenA.jpg")
DISTANCE = 4


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _with_comment(jpeg: bytes, nbytes: int) -> bytes:
    """The same JPEG with a COM segment after SOI: identical pixels, more bytes."""
    body = b"x" * nbytes
    return jpeg[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


@pytest.fixture(scope="module")
def groups(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder of copies; names sort the worse copies first. Returns (folder, loser -> winner)."""
    src = tmp_path_factory.mktemp("dedup_src")
    expect: dict[str, str] = {}
    for n, name in enumerate(PHOTOS):
        data = media_path("images", name).read_bytes()
        im = Image.open(io.BytesIO(data)).convert("RGB")
        orig = f"p{n}_c_original"
        (src / f"{orig}.jpg").write_bytes(data)
        # blurred at full size, saved at q98 so it has MORE bytes than the original: only
        # sharpness can rank it below
        (src / f"p{n}_a_blurred.jpg").write_bytes(_jpeg(im.filter(ImageFilter.GaussianBlur(2)), 98))
        (src / f"p{n}_b_half.jpg").write_bytes(_jpeg(im.resize((im.width // 2, im.height // 2), Image.LANCZOS), 98))
        expect[f"p{n}_a_blurred"] = orig
        expect[f"p{n}_b_half"] = orig
    # resolution and sharpness tie (same pixels): the file with more bytes wins...
    im = Image.open(media_path("images", "skimage_rocket.jpg")).convert("RGB")
    q = _jpeg(im, 90)
    (src / "r_a_plain.jpg").write_bytes(q)
    (src / "r_b_commented.jpg").write_bytes(_with_comment(q, 5000))
    expect["r_a_plain"] = "r_b_commented"
    # ...and byte-identical copies fall to the key
    (src / "s_b_twin.jpg").write_bytes(q[:2] + b"\xff\xfe\x00\x05abc" + q[2:])
    (src / "s_a_twin.jpg").write_bytes(q[:2] + b"\xff\xfe\x00\x05abc" + q[2:])
    # s_* have fewer bytes than r_b_commented, so they are its duplicates too
    expect["s_a_twin"] = "r_b_commented"
    expect["s_b_twin"] = "r_b_commented"
    return src, expect


def _run(srcs, out: Path, **kw) -> None:
    kw.setdefault("progress", False)
    kw.setdefault("filters", ImageFilters(dedup_distance=DISTANCE))
    run_images(ImageRunConfig(sources=[str(s) for s in srcs], output=str(out), **kw))


def _kept(out: Path) -> dict[str, bytes]:
    """image_id -> image bytes, from the shards' Parquet and tar members."""
    kept: dict[str, bytes] = {}
    for tar_path in sorted(out.glob("images-*.tar")):
        ids = pq.read_table(tar_path.with_suffix(".parquet"), columns=["image_id", "member_name"]).to_pylist()
        with tarfile.open(tar_path) as tf:
            for row in ids:
                kept[row["image_id"]] = tf.extractfile(row["member_name"]).read()
    return kept


def _rejects(out: Path) -> dict[str, dict]:
    return {r["image_id"]: r for r in pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()}


def _check(out: Path, src: Path, expect: dict[str, str]) -> None:
    kept, rejects = _kept(out), _rejects(out)
    all_keys = {p.stem for p in src.iterdir()}
    winners = all_keys - set(expect)
    assert set(kept) == winners
    for key in winners:
        assert kept[key] == (src / f"{key}.jpg").read_bytes()  # the winner's own bytes
    assert set(rejects) == set(expect)
    for loser, winner in expect.items():
        r = rejects[loser]
        assert r["stage"] == "dedup"
        assert r["reason"] == f"near_duplicate: pHash within {DISTANCE} bits of {winner}"


def test_the_best_copy_is_kept(groups, tmp_path):
    src, expect = groups
    _run([src], tmp_path / "o")
    _check(tmp_path / "o", src, expect)


@pytest.mark.parametrize("batch_size,workers,order", [(1, 1, "reverse"), (3, 2, "shuffled"), (64, 2, "sorted")])
def test_same_result_whatever_the_order_batch_size_or_workers(groups, tmp_path, batch_size, workers, order):
    src, expect = groups
    files = sorted(src.iterdir())
    if order == "reverse":
        files = files[::-1]
    elif order == "shuffled":
        files = files[1::2] + files[::2]
    _run(files, tmp_path / "o", batch_size=batch_size, workers=workers)
    _check(tmp_path / "o", src, expect)


def test_an_interrupted_run_resumed_keeps_the_same_set(groups, tmp_path):
    src, expect = groups
    out = tmp_path / "o"
    _run([src], out, images_per_tar=1, batch_size=2)
    shards = sorted(out.glob("images-*.tar"))
    assert len(shards) >= 4
    # a crash after the first two shards: later shards, the rejects and the index are gone
    for tar_path in shards[2:]:
        tar_path.unlink()
        tar_path.with_suffix(".parquet").unlink()
    (out / "_curastream" / "rejects.parquet").unlink()
    (out / "index.json").unlink()
    _run([src], out, images_per_tar=1, batch_size=2, on_existing="resume")
    _check(out, src, expect)


def test_without_dedup_every_copy_is_kept(groups, tmp_path):
    src, _ = groups
    _run([src], tmp_path / "o", filters=ImageFilters(dedup=False))
    assert set(_kept(tmp_path / "o")) == {p.stem for p in src.iterdir()}
