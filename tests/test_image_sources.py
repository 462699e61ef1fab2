"""Listing and reading image inputs: dirs, globs, lists, URLs, WebDataset tars, Parquet."""

from __future__ import annotations

import io
import os
import random
import re
import tarfile
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import media_path
from curastream.images.inputs import IMAGE_EXTENSIONS, MAX_KEY_LEN, ImageInput, make_key
from curastream.images.listing import list_image_inputs
from curastream.images.reading import read_batches

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,%d}$" % MAX_KEY_LEN)


def _img(fmt: str = "PNG", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, fmt)
    return buf.getvalue()


PNG = _img("PNG")
JPEG = _img("JPEG", (10, 120, 240))


def _write(path, data: bytes = PNG):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _keys(inputs):
    return [i.key for i in inputs]


def _check_keys(inputs):
    keys = _keys(inputs)
    assert all(KEY_RE.match(k) for k in keys), keys
    assert len({k.lower() for k in keys}) == len(keys), keys


def _all(inputs, **kw):
    return [x for b in read_batches(inputs, **kw) for x in b]


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


# -- directories, files, globs, lists ------------------------------------------------------


def test_dir_walk_skips_non_images_hidden_and_our_output(tmp_path):
    d = tmp_path / "data"
    _write(d / "a.png")
    _write(d / "sub" / "B.JPG", JPEG)
    _write(d / "sub" / "x.photo.jpeg", JPEG)
    _write(d / "notes.txt", b"hello")
    _write(d / "MANIFEST", b"a.png")
    _write(d / "meta.json", b"{}")
    _write(d / ".hidden.png")
    _write(d / ".cache" / "c.png")
    _write(d / "c.png.tmp-1234", PNG)
    out = d / "out"  # a previous run's output inside the input dir
    _write(out / "images-0123456789ab-000000.tar", b"not read")
    _write(out / "index.json", b'{"format": "curastream-index/1"}')
    _write(out / "previews" / "p.webp")
    ins = list_image_inputs([str(d)])
    assert _keys(ins) == ["a", "sub_B", "sub_x_photo"]
    assert {i.kind for i in ins} == {"file"}
    assert ins[0].source == str(d / "a.png") and ins[0].member is None
    assert ins[0].size == len(PNG)
    assert all(os.path.isabs(i.source) for i in ins)


def test_glob_explicit_odd_extension_and_missing(tmp_path):
    d = tmp_path / "g"
    _write(d / "one.png")
    _write(d / "deep" / "two.png")
    _write(d / "deep" / "skip.txt", b"x")
    _write(d / "blob.dat", JPEG)
    ins = list_image_inputs([str(d / "**" / "*.png")])
    assert _keys(ins) == ["deep_two", "one"]  # relative to the glob's literal prefix
    # A bare * filters extensions (no blob.dat, no skip.txt); a matched dir is walked.
    assert _keys(list_image_inputs([str(d / "*")])) == ["deep_two", "one"]
    # A file named explicitly is taken whatever its extension: the decoder sniffs bytes.
    odd = list_image_inputs([str(d / "blob.dat")])
    assert [(i.key, i.kind) for i in odd] == [("blob", "file")]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        list_image_inputs([str(d / "one.png"), str(d / "nope.png")])
    with pytest.raises(FileNotFoundError, match="no files match"):
        list_image_inputs([str(d / "*.webp")])


def test_files_from(tmp_path, monkeypatch):
    _write(tmp_path / "imgs" / "a.png")
    _write(tmp_path / "imgs" / "b.weird", JPEG)
    _write(tmp_path / "more" / "c.png")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my files\n\nimgs/a.png\n  imgs/b.weird  \n{tmp_path / 'more'}\n")
    monkeypatch.chdir(tmp_path)
    ins = list_image_inputs([], files_from=str(lst))
    assert _keys(ins) == ["a", "b", "c"]
    lst.write_text("imgs/a.png\nimgs/gone.png\n")
    with pytest.raises(FileNotFoundError, match=r"list\.txt:2: .*gone\.png"):
        list_image_inputs([], files_from=str(lst))


def test_order_is_deterministic_and_duplicates_collapse(tmp_path):
    names = [f"n{i:02d}.png" for i in range(12)]
    for n in names:
        _write(tmp_path / "d" / n)
    _write(tmp_path / "e" / "z.jpg", JPEG)
    srcs = [str(tmp_path / "d"), str(tmp_path / "e"), str(tmp_path / "d" / "n03.png"),
            str(tmp_path / "e" / "z.jpg")]
    first = list_image_inputs(srcs)
    for seed in range(3):
        shuffled = srcs[:]
        random.Random(seed).shuffle(shuffled)
        assert list_image_inputs(shuffled) == first
    assert _keys(first) == sorted(_keys(first))
    assert len(first) == 13  # n03 and z given twice, listed once
    assert len({i.source for i in first}) == 13


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,expected",
    [
        ("sub/a.photo.jpg", "sub_a_photo"),
        ("../../etc/passwd.jpg", "etc_passwd"),
        ("/abs/path/x.png", "abs_path_x"),
        ("a b.jpg", "a_b"),
        ("nul\x00byte.jpg", "nulbyte"),
        ("caf\u00e9.png", "caf_"),
        ("dir.v1\\win.jpg", "dir_v1_win"),
    ],
)
def test_make_key_sanitises(name, expected):
    assert make_key(name, strip_extension=True) == expected


def test_make_key_edges():
    assert make_key("v1.0/s001") == "v1_0_s001"  # a sample key: nothing is an extension
    empty = make_key("../.")
    assert KEY_RE.match(empty) and empty.startswith("_")
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    ka, kb = make_key(long_a), make_key(long_b)
    assert len(ka) == MAX_KEY_LEN and ka != kb and KEY_RE.match(ka)
    assert make_key("\udcff\udcfe.jpg", strip_extension=True) == "__"  # surrogateescape bytes


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_make_key_always_safe(name):
    assert KEY_RE.match(make_key(name))
    assert KEY_RE.match(make_key(name, strip_extension=True))


def test_collisions_all_get_hash_suffix(tmp_path):
    d = tmp_path / "c"
    _write(d / "a.jpg", JPEG)
    _write(d / "a.png")
    _write(d / "a b.png")
    _write(d / "a_b.png")
    _write(d / "A_B.jpg", JPEG)  # clashes case-insensitively
    _write(d / "solo.png")
    ins = list_image_inputs([str(d)])
    _check_keys(ins)
    by_src = {os.path.basename(i.source): i.key for i in ins}
    assert by_src["solo.png"] == "solo"
    for n in ("a.jpg", "a.png"):
        assert re.fullmatch(r"a_[0-9a-f]{8}", by_src[n])
    for n in ("a b.png", "a_b.png", "A_B.jpg"):
        assert re.fullmatch(r"[aA]_[bB]_[0-9a-f]{8}", by_src[n])
    # Suffixes come from where inputs came from, not from the order they were met in.
    assert list_image_inputs([str(d / "a.png"), str(d / "a.jpg")]) == list_image_inputs(
        [str(d / "a.jpg"), str(d / "a.png")]
    )


def test_two_roots_with_same_relative_names(tmp_path):
    for r in ("r1", "r2"):
        _write(tmp_path / r / "s" / "img.png")
    ins = list_image_inputs([str(tmp_path / "r1"), str(tmp_path / "r2")])
    _check_keys(ins)
    assert len(ins) == 2 and all(k.startswith("s_img_") for k in _keys(ins))
    assert list_image_inputs([str(tmp_path / "r2"), str(tmp_path / "r1")]) == ins


def test_hostile_file_names(tmp_path):
    d = tmp_path / "h"
    d.mkdir()
    raw = os.fsencode(str(d))
    for b in (b"\xff\xfe.jpg", b"\xfe\xff.jpg", b"ok.v2.png", b"sp ace.png", ("y" * 240 + ".png").encode()):
        with open(os.path.join(raw, b), "wb") as f:
            f.write(PNG)
    ins = list_image_inputs([str(d)])
    _check_keys(ins)
    assert len(ins) == 5
    assert "ok_v2" in _keys(ins) and "sp_ace" in _keys(ins)
    loaded = _all(ins)
    assert all(x.error is None and x.data == PNG for x in loaded)


# -- WebDataset tars -------------------------------------------------------------------------


def test_wds_tar_written_by_webdataset(tmp_path):
    import webdataset as wds

    path = tmp_path / "shard-000.tar"
    with wds.TarWriter(str(path)) as w:
        for i in range(3):
            w.write({"__key__": f"s{i:03d}", "jpg": JPEG, "txt": f"caption {i}",
                     "json": {"i": i}, "cls": str(i)})
    ins = list_image_inputs([str(path)])
    assert [(i.key, i.member, i.kind) for i in ins] == [
        (f"s{i:03d}", f"s{i:03d}", "wds") for i in range(3)
    ]
    assert all(i.size == len(JPEG) for i in ins)
    got = _all(ins, batch_size=2)
    assert [x.data for x in got] == [JPEG] * 3
    assert got[1].metadata == {"txt": "caption 1", "json": {"i": 1}, "cls": "1"}


def test_wds_tar_side_members_and_dotted_dirs(tmp_path):
    path = tmp_path / "hand.tar"
    with tarfile.open(path, "w") as tf:
        _tar_add(tf, "v1.0/s001.jpg", JPEG)
        _tar_add(tf, "v1.0/s001.txt", "h\u00e9llo".encode())
        _tar_add(tf, "v1.0/s001.json", b'{"w": 4}')
        _tar_add(tf, "v1.0/s001.bin", b"\xff\x00\xfe")
        _tar_add(tf, "v1.0/s002.seg.png", PNG)  # ext "seg.png": an image
        _tar_add(tf, "v1.0/s002.cls", b"3")
        _tar_add(tf, "v1.0/._s002.jpg", b"AppleDouble junk")
        _tar_add(tf, "v1.0/s003.txt", b"no image here")
        _tar_add(tf, "v1.0/s004.png", PNG)
        _tar_add(tf, "v1.0/s004.jpg", JPEG)  # a second image: only named in metadata
    ins = list_image_inputs([str(path)])
    assert _keys(ins) == ["v1_0_s001", "v1_0_s002", "v1_0_s003", "v1_0_s004"]
    assert ins[0].member == "v1.0/s001"
    got = _all(ins)
    assert got[0].data == JPEG and got[0].error is None
    assert got[0].metadata == {"txt": "h\u00e9llo", "json": {"w": 4}, "bin_b64": "/wD+"}
    assert got[1].data == PNG and got[1].metadata == {"cls": "3"}
    assert got[2].data is None and got[2].error == "no image member in sample"
    assert got[2].metadata == {"txt": "no image here"}
    assert got[3].data == PNG and got[3].metadata == {"skipped_members": ["jpg"]}


def test_truncated_tar_gives_error_rows(tmp_path):
    path = tmp_path / "cut.tar"
    big = os.urandom(20000)
    with tarfile.open(path, "w") as tf:
        _tar_add(tf, "a.jpg", JPEG)
        _tar_add(tf, "b.jpg", big)
        _tar_add(tf, "c.jpg", big)
    data = path.read_bytes()
    path.write_bytes(data[: 512 + 1024 + 512 + 5000])  # cut inside b's data
    ins = list_image_inputs([str(path)])
    assert _keys(ins)[:2] == ["a", "b"]
    got = _all(ins)
    assert got[0].error is None and got[0].data == JPEG
    assert all(x.error and "tar" in x.error for x in got[1:])
    # A file that is not a tar at all: one error row, not a crash.
    junk = _write(tmp_path / "junk.tar", b"\x00garbage" * 10)
    bad = list_image_inputs([str(junk)])
    assert len(bad) == 1 and bad[0].member is None
    (row,) = _all(bad)
    assert row.data is None and "tar" in row.error


# -- Parquet ----------------------------------------------------------------------------------


def test_parquet_batches_and_metadata(tmp_path):
    n = 7
    table = pa.table({
        "image": pa.array([_img("PNG", (i, 0, 0)) for i in range(n)], pa.binary()),
        "caption": [f"cap {i}" for i in range(n)],
        "score": [i / 2 for i in range(n - 1)] + [float("nan")],
        "tags": [[str(i)] for i in range(n)],  # nested: not passed through
    })
    path = tmp_path / "part-0.parquet"
    pq.write_table(table, path, row_group_size=3)
    ins = list_image_inputs([str(path)])
    assert _keys(ins) == [f"part-0_{i:08d}" for i in range(n)]
    assert {i.kind for i in ins} == {"parquet"}
    batches = list(read_batches(ins, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    got = [x for b in batches for x in b]
    assert [x.data for x in got] == table.column("image").to_pylist()
    assert got[2].metadata == {"caption": "cap 2", "score": 1.0}
    assert got[6].metadata["score"] is None  # NaN is not JSON
    # A subset (one worker's share) reads only what it holds.
    some = _all([ins[1], ins[5]])
    assert [x.data for x in some] == [table.column("image")[1].as_py(), table.column("image")[5].as_py()]


def test_parquet_key_column_and_column_choice(tmp_path):
    t = pa.table({"key": ["x.1", "x/2"], "jpg": [JPEG, JPEG], "thumb": [PNG, PNG]})
    path = tmp_path / "k.parquet"
    pq.write_table(t, path)
    ins = list_image_inputs([str(path)])  # "jpg" wins over another binary column by its name
    assert _keys(ins) == ["x_1", "x_2"]
    got = _all(ins)
    assert got[0].data == JPEG and got[0].metadata == {"key": "x.1"}
    assert {i.column for i in ins} == {"jpg"}
    # The chosen column travels with the inputs: reading needs no second hint.
    thumbs = _all(list_image_inputs([str(path)], parquet_image_column="thumb"))
    assert [x.data for x in thumbs] == [PNG, PNG]
    assert thumbs[0].metadata == {"key": "x.1"}  # the other binary column is not metadata
    plain = tmp_path / "nobin.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    with pytest.raises(ValueError, match="no binary image column"):
        list_image_inputs([str(plain)])
    # Met in a directory walk, a table without images is not an input.
    assert _keys(list_image_inputs([str(tmp_path)])) == ["x_1", "x_2"]


# -- fsspec, reading, resume ---------------------------------------------------------------------


def test_memory_fsspec_dir():
    root = f"memory://curastream-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        for name, data in {"a.png": PNG, "s/b.jpg": JPEG, "s/.h.png": PNG, "readme.txt": b"x"}.items():
            with fsspec.open(f"{root}/{name}", "wb") as f:
                f.write(data)
        ins = list_image_inputs([root + "/"])
        assert _keys(ins) == ["a", "s_b"]
        assert all(i.source.startswith("memory://") for i in ins)
        assert ins[1].size == len(JPEG)
        got = _all(ins)
        assert [x.data for x in got] == [PNG, JPEG]
        assert [x.data for x in _all(ins, batch_size=1)] == [PNG, JPEG]
        assert _keys(list_image_inputs([f"{root}/s/*.jpg"])) == ["b"]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            _tar_add(tf, "t1.png", PNG)
            _tar_add(tf, "t1.txt", b"remote")
        with fsspec.open(f"{root}/shards/s0.tar", "wb") as f:
            f.write(buf.getvalue())
        (t1,) = _all(list_image_inputs([f"{root}/shards"]))
        assert t1.data == PNG and t1.metadata == {"txt": "remote"} and t1.input.kind == "wds"
        with pytest.raises(FileNotFoundError, match="nothing.png"):
            list_image_inputs([f"{root}/nothing.png"])
        # A file that vanishes between listing and reading is an error row.
        fs.rm(fs._strip_protocol(f"{root}/a.png"))
        got = _all(ins)
        assert got[0].error and "vanished" in got[0].error and got[1].data == JPEG
    finally:
        fs.rm(fs._strip_protocol(root), recursive=True)


def test_read_errors_and_skip_keys(tmp_path):
    d = tmp_path / "r"
    for i in range(5):
        _write(d / f"i{i}.png", _img("PNG", (i, i, i)))
    _write(d / "empty.png", b"")
    ins = list_image_inputs([str(d)])
    (d / "i2.png").unlink()
    got = _all(ins, batch_size=4)
    by = {x.input.key: x for x in got}
    assert [x.input.key for x in got] == _keys(ins)  # input order, errors in place
    assert "vanished" in by["i2"].error and by["i2"].data is None
    assert by["empty"].error == "empty file (0 bytes)"
    assert by["i0"].error is None and by["i0"].data == _img("PNG", (0, 0, 0))
    batches = list(read_batches(ins, batch_size=2, skip_keys={"i0", "i3", "empty"}))
    assert [[x.input.key for x in b] for b in batches] == [["i1", "i2"], ["i4"]]
    with pytest.raises(ValueError):
        next(read_batches(ins, batch_size=0))


def test_the_last_inputs_come_in_quarter_batches(tmp_path):
    d = tmp_path / "tail"
    for i in range(21):
        _write(d / f"t{i:02d}.png")
    ins = list_image_inputs([str(d)])
    sizes = lambda **kw: [len(b) for b in read_batches(ins, batch_size=8, **kw)]
    assert sizes() == [8, 8, 5]
    assert sizes(tail=8) == [8, 8, 2, 2, 1]  # full batches while more than 8 are left
    assert sizes(tail=100) == [2] * 10 + [1]
    keys = [x.input.key for b in read_batches(ins, batch_size=8, tail=8) for x in b]
    assert keys == _keys(ins)


def test_mixed_sources_keep_containers_contiguous(tmp_path):
    d = tmp_path / "mix"
    _write(d / "m.png")
    with tarfile.open(d / "shard.tar", "w") as tf:
        for k in ("z1", "a1", "k1"):  # tar order, not key order
            _tar_add(tf, f"{k}.jpg", JPEG)
    ins = list_image_inputs([str(d)])
    assert [(i.key, i.kind) for i in ins] == [("m", "file"), ("z1", "wds"), ("a1", "wds"), ("k1", "wds")]
    got = _all(ins, batch_size=3)
    assert [x.data for x in got] == [PNG, JPEG, JPEG, JPEG]
    # A hand-ordered list that disagrees with the tar still reads (more passes, same result).
    rev = list(reversed(ins))
    assert [x.input.key for x in _all(rev)] == [i.key for i in rev]
    assert all(x.error is None for x in _all(rev))
    ghost = ImageInput("ghost", ins[1].source, "ghost", None, "wds")
    assert _all([ghost])[0].error == "sample not found in tar"


def test_extensions_case_insensitive(tmp_path):
    assert ".jpg" in IMAGE_EXTENSIONS and ".mpo" in IMAGE_EXTENSIONS
    _write(tmp_path / "u" / "X.JPEG", JPEG)
    _write(tmp_path / "u" / "y.PnG")
    assert _keys(list_image_inputs([str(tmp_path / "u")])) == ["X", "y"]


def test_shared_media_images():
    d = media_path("images")
    ins = list_image_inputs([str(d)])
    names = [n for n in os.listdir(d) if not n.startswith(".")]
    assert len(ins) == len(names) >= 30
    _check_keys(ins)
    assert list_image_inputs([str(d)]) == ins
    assert {i.key for i in ins} >= {"forensics_IMG_1054", "go_video-005_gray", "pillow_frozenpond"}
