"""URL lists in (Parquet, CSV, JSONL), captions out (.txt members and a caption column).

A real HTTP server on loopback serves real photos and every failure a crawl meets: slow, 404,
500-then-200, redirects, truncated bodies, oversized bodies (with and without a length) and
HTML. Outputs are read back with tarfile, pyarrow and webdataset.
"""

from __future__ import annotations

import collections
import io
import json
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import media_path
from curastream.config import ImageFilters, ImageRunConfig
from curastream.images.pipeline import run_images
from curastream.images import url_inputs
from curastream.images.url_inputs import UrlOptions, list_url_inputs

# a loopback HTTP server and many downloads: make test, not test-fast
pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

CAP = 2_000_000  # bytes: the 3.2 MB phone photo is over it, everything else under
BIG = "forensics_IMG_20200827_231612.jpg"


class _Server:
    """Loopback server; ``hits`` counts requests per path."""

    def __init__(self, photos: dict[str, Path]):
        self.photos = {k: v.read_bytes() for k, v in photos.items()}
        self.hits: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _image(self, name: str, ctype: str | None = None, length: bool = True) -> None:
                data = server.photos[name]
                self.send_response(200)
                self.send_header("Content-Type", ctype or ("image/png" if name.endswith(".png") else "image/jpeg"))
                if length:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits[self.path] += 1
                kind, _, name = self.path.lstrip("/").partition("/")
                self.close_connection = True
                if kind == "img":
                    self._image(name)
                elif kind == "octet":
                    self._image(name, "application/octet-stream")
                elif kind == "flaky":  # 500 on the first request, the photo after
                    if server.hits[self.path] == 1:
                        self.send_error(500)
                    else:
                        self._image(name)
                elif kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", f"/img/{name}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif kind == "slow":
                    time.sleep(3)
                    self._image(name)
                elif kind == "truncated":
                    data = server.photos[name]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 3])
                elif kind == "nolength":  # body until close: only the streamed count can stop it
                    self._image(name, length=False)
                elif kind == "html":
                    body = b"<html><body>not found, have an ad</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client giving up mid-body (timeout, size cap) is what these tests do

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


GOOD = ["mate_FreshFlower.jpg", "opencv_building.jpg", "skimage_coins.png", "opencv_fruits.jpg",
        "mate_GreenMeadow.jpg", "opencv_squirrel_cls.jpg"]


@pytest.fixture
def server():
    names = GOOD + [BIG, "skimage_rocket.jpg"]
    s = _Server({n: media_path("images", n) for n in names})
    yield s
    s.close()


def _rows(base: str) -> list[dict]:
    """(url, caption, extras, expected reject reason or None) per row, in list order."""
    return [
        dict(url=f"{base}/img/{GOOD[0]}", caption="a pink flower", sim=0.31, n=1, lang="en", ok=None),
        dict(url=f"{base}/missing.jpg", caption="gone", sim=0.2, n=2, lang="en", ok="http 404"),
        dict(url=f"{base}/flaky/{GOOD[1]}", caption="a building, after a 500", sim=0.4, n=3, lang="fr", ok=None),
        dict(url=f"{base}/redirect/{GOOD[2]}", caption="coins via a redirect", sim=0.5, n=4, lang="de", ok=None),
        dict(url=f"{base}/slow/{GOOD[3]}", caption="too slow", sim=0.6, n=5, lang="en",
             ok="transient: timeout after 0.5 s"),
        dict(url=f"{base}/truncated/skimage_rocket.jpg", caption="cut short", sim=0.7, n=6, lang="en",
             ok="transient: truncated response"),
        dict(url=f"{base}/img/{BIG}", caption="12 megapixels", sim=0.8, n=7, lang="en", ok=f"too large: > {CAP} bytes"),
        dict(url=f"{base}/nolength/{BIG}", caption="no length header", sim=0.8, n=8, lang="en",
             ok=f"too large: > {CAP} bytes"),
        dict(url=f"{base}/html/x.jpg", caption="an ad page", sim=0.9, n=9, lang="en",
             ok="not an image: content-type text/html"),
        dict(url=f"{base}/octet/{GOOD[4]}", caption="h\u00e9llo, meadow \u2603", sim=1.0, n=10, lang="ja", ok=None),
        dict(url=f"{base}/img/{GOOD[5]}", caption=None, sim=1.1, n=11, lang="en", ok=None),
    ]


def _write_list(rows: list[dict], path: Path, fmt: str, url_col="url", caption_col="caption") -> None:
    t = pa.table({url_col: [r["url"] for r in rows], caption_col: [r["caption"] for r in rows],
                  "similarity": [r["sim"] for r in rows], "n": [r["n"] for r in rows],
                  "lang": [r["lang"] for r in rows], "tags": [["a", "b"]] * len(rows)})
    if fmt == "parquet":
        pq.write_table(t, path, row_group_size=4)
    elif fmt == "csv":
        pcsv.write_csv(t.drop(["tags"]), path)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for r in t.to_pylist():
                f.write(json.dumps(r) + "\n")


def _cfg(lst: Path, out: Path, **kw) -> ImageRunConfig:
    base = dict(sources=[], url_list=str(lst), output=str(out), download_timeout=0.5, download_retries=2,
                max_download_bytes=CAP, download_concurrency=8, images_per_tar=4,
                filters=ImageFilters(dedup=False), progress=False)
    base.update(kw)
    return ImageRunConfig(**base)


def _read_output(out: Path):
    tars = sorted(out.glob("images-*.tar"))
    members: dict[str, bytes] = {}
    for t in tars:
        with tarfile.open(t) as tf:
            for m in tf.getmembers():
                members[m.name] = tf.extractfile(m).read()
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("images-*.parquet"))])
    rejects = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    return tars, members, table, rejects


def _check_run(server: _Server, rows: list[dict], out: Path, with_tags: bool, csv: bool = False) -> None:
    tars, members, table, rejects = _read_output(out)
    good = [(i, r) for i, r in enumerate(rows) if r["ok"] is None]
    by_key = {r["image_id"]: r for r in table.to_pylist()}
    assert sorted(by_key) == [f"{i:09d}" for i, _ in good]
    for i, r in good:
        key = f"{i:09d}"
        row = by_key[key]
        assert row["original_path"] == r["url"]
        # CSV has no null: an empty cell is an empty caption
        caption = (r["caption"] or "") if csv else r["caption"]
        assert row["caption"] == caption
        assert row["n"] == r["n"] and row["lang"] == r["lang"]
        assert row["similarity"] == pytest.approx(r["sim"])
        if caption is None:
            assert f"{key}.txt" not in members
        else:
            assert members[f"{key}.txt"].decode("utf-8") == caption
        # the stored image is the served photo: same pixels size as the original
        name = r["url"].rsplit("/", 1)[1]
        with Image.open(io.BytesIO(members[f"{key}.jpg"])) as im:
            assert im.size == Image.open(io.BytesIO(server.photos[name])).size
        meta = json.loads(row["metadata"])
        assert meta["lang"] == r["lang"]
        if with_tags:
            assert meta["tags"] == ["a", "b"]  # not a scalar: metadata only
    assert table.schema.field("n").type == pa.int64()
    assert table.schema.field("similarity").type == pa.float64()
    assert table.schema.field("caption").type == pa.string()
    assert "tags" not in table.schema.names
    got = {r["source"]: r for r in rejects}
    for i, r in enumerate(rows):
        if r["ok"] is not None:
            rej = got[r["url"]]
            assert rej["image_id"] == f"{i:09d}"
            assert rej["stage"] == "read"
            assert rej["reason"].startswith(r["ok"]), rej["reason"]
            assert rej["transient"] == r["ok"].startswith("transient: ")
    assert len(rejects) == len(rows) - len(good)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_url_list_to_shards(tmp_path, server, fmt):
    rows = _rows(server.base)
    lst = tmp_path / f"urls.{fmt}"
    _write_list(rows, lst, fmt)
    out = tmp_path / "out"
    run_images(_cfg(lst, out, save_additional_columns=["similarity,n", "lang", *(["tags"] if fmt != "csv" else [])]))
    _check_run(server, rows, out, with_tags=fmt != "csv", csv=fmt == "csv")
    # 500 then 200: the retry got it, with exactly one more request
    assert server.hits[f"/flaky/{GOOD[1]}"] == 2
    # a 404 is a verdict: never asked again; a timeout is asked 1 + retries times
    assert server.hits["/missing.jpg"] == 1
    assert server.hits[f"/slow/{GOOD[3]}"] == 3


def test_shards_load_with_webdataset(tmp_path, server):
    wds = pytest.importorskip("webdataset")
    rows = _rows(server.base)
    lst = tmp_path / "urls.parquet"
    _write_list(rows, lst, "parquet")
    out = tmp_path / "out"
    run_images(_cfg(lst, out))
    urls = [str(p) for p in sorted(out.glob("images-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    caps = {s["__key__"]: s["txt"].decode() for s in samples if "txt" in s}
    want = {f"{i:09d}": r["caption"] for i, r in enumerate(rows) if r["ok"] is None and r["caption"] is not None}
    assert caps == want


def test_no_retry_leaves_500_a_transient_reject(tmp_path, server):
    rows = [dict(url=f"{server.base}/flaky/{GOOD[0]}", caption="x", sim=0.0, n=0, lang="en"),
            dict(url=f"{server.base}/img/{GOOD[1]}", caption="y", sim=0.0, n=0, lang="en")]
    lst = tmp_path / "u.parquet"
    _write_list(rows, lst, "parquet")
    out = tmp_path / "out"
    run_images(_cfg(lst, out, download_retries=0))
    rej = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    assert [(r["image_id"], r["reason"], r["transient"]) for r in rej] == [("000000000", "transient: http 500", True)]
    assert server.hits[f"/flaky/{GOOD[0]}"] == 1


def test_resume_retries_only_transient_rejects(tmp_path, server):
    rows = _rows(server.base)
    lst = tmp_path / "urls.parquet"
    _write_list(rows, lst, "parquet")
    out = tmp_path / "out"
    keep = ["similarity", "n", "lang"]
    run_images(_cfg(lst, out, save_additional_columns=keep))
    before = collections.Counter(server.hits)
    run_images(_cfg(lst, out, on_existing="resume", save_additional_columns=keep))
    again = {p: server.hits[p] - before[p] for p in server.hits if server.hits[p] > before[p]}
    # written rows and verdicts (404, too large, HTML) are done; timeouts and truncations are retried
    assert set(again) == {f"/slow/{GOOD[3]}", "/truncated/skimage_rocket.jpg"}
    _check_run(server, rows, out, with_tags=False)


def test_caption_column_names_and_missing_column(tmp_path, server):
    rows = _rows(server.base)[:1]
    lst = tmp_path / "u.csv"
    _write_list(rows, lst, "csv", url_col="link", caption_col="text")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no URL column 'url'"):
        run_images(_cfg(lst, out))
    run_images(_cfg(lst, out, url_col="link", caption_col="text"))
    _, members, table, _ = _read_output(out)
    assert table.column("caption").to_pylist() == ["a pink flower"]
    assert members["000000000.txt"] == b"a pink flower"


def test_cli_url_list(tmp_path, server):
    from click.testing import CliRunner

    from curastream.cli import main

    rows = [r for r in _rows(server.base) if r["ok"] is None]
    lst = tmp_path / "u.tsv"
    lst.write_text("url\tcaption\n" + "".join(f"{r['url']}\t{r['caption'] or ''}\n" for r in rows))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["images", "--url-list", str(lst), "-o", str(out), "--no-dedup",
                                    "--download-timeout", "5", "--no-progress"])
    assert res.exit_code == 0, res.output
    _, members, table, rejects = _read_output(out)
    assert table.num_rows == len(rows) and not rejects
    # an empty CSV cell is an empty caption, not a missing one
    assert table.column("caption").to_pylist() == [r["caption"] or "" for r in rows]


def test_wds_txt_member_becomes_caption(tmp_path):
    photo = media_path("images", "opencv_fruits.jpg").read_bytes()
    photo2 = media_path("images", "opencv_building.jpg").read_bytes()
    src = tmp_path / "in.tar"
    with tarfile.open(src, "w") as tf:
        for name, data in [("s0.jpg", photo), ("s0.txt", "fruit on a table".encode()),
                           ("s0.json", b'{"score": 3}'), ("s1.jpg", photo2)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(src)], output=str(out), progress=False))
    _, members, table, _ = _read_output(out)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert rows["s0"]["caption"] == "fruit on a table" and rows["s1"]["caption"] is None
    assert members["s0.txt"] == b"fruit on a table" and "s1.txt" not in members
    assert json.loads(rows["s0"]["metadata"])["json"] == {"score": 3}


def test_list_reader_streams_in_batches(tmp_path, monkeypatch):
    n = 200_000
    lst = tmp_path / "big.parquet"
    urls = pa.array([f"http://127.0.0.1:9/{i:07d}/{'x' * 80}.jpg" for i in range(n)])
    pq.write_table(pa.table({"url": urls, "caption": urls}), lst, row_group_size=20_000)
    whole = pq.read_table(lst).nbytes
    monkeypatch.setattr(url_inputs, "LIST_BATCH_ROWS", 10_000)
    peak = 0
    sizes = []
    real = url_inputs._batches

    def watched(*a, **kw):
        nonlocal peak
        for b in real(*a, **kw):
            sizes.append(b.num_rows)
            peak = max(peak, pa.total_allocated_bytes())
            yield b

    monkeypatch.setattr(url_inputs, "_batches", watched)
    base = pa.total_allocated_bytes()
    got = list_url_inputs(str(lst), UrlOptions())
    assert len(got) == n and got[-1].key == f"{n - 1:09d}" and got[-1].row == n - 1
    assert max(sizes) <= 10_000 and sum(sizes) == n
    # Arrow never holds more than a small part of the list: a batch plus a row group's pages
    assert peak - base < whole / 4, (peak - base, whole)


def test_dedup_on_downloads_twice_and_drops_the_copy(tmp_path, server):
    # Two URLs serving the same photo: dedup's two passes (images.dedup) fetch each URL twice,
    # and the second URL's image is rejected as a near-duplicate of the first.
    rows = [dict(url=f"{server.base}/img/{GOOD[0]}", caption="first", sim=0.0, n=0, lang="en"),
            dict(url=f"{server.base}/octet/{GOOD[0]}", caption="copy", sim=0.0, n=0, lang="en"),
            dict(url=f"{server.base}/img/{GOOD[1]}", caption="other", sim=0.0, n=0, lang="en")]
    lst = tmp_path / "u.parquet"
    _write_list(rows, lst, "parquet")
    out = tmp_path / "out"
    run_images(_cfg(lst, out, filters=ImageFilters(dedup=True)))
    _, members, table, rejects = _read_output(out)
    assert table.column("image_id").to_pylist() == ["000000000", "000000002"]
    assert table.column("caption").to_pylist() == ["first", "other"]
    assert [(r["image_id"], r["duplicate_of"]) for r in rejects] == [("000000001", "000000000")]
    assert server.hits[f"/img/{GOOD[0]}"] == 2 and server.hits[f"/octet/{GOOD[0]}"] == 2


def test_url_list_beside_positional_sources(tmp_path, server):
    # A local photo named like a row key: both are written, the row's key takes a hash suffix.
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "000000000.jpg").write_bytes(media_path("images", GOOD[3]).read_bytes())
    rows = [dict(url=f"{server.base}/img/{GOOD[0]}", caption="from the web", sim=0.0, n=0, lang="en")]
    lst = tmp_path / "u.parquet"
    _write_list(rows, lst, "parquet")
    out = tmp_path / "out"
    run_images(_cfg(lst, out, sources=[str(photos)]))
    _, members, table, rejects = _read_output(out)
    got = {r["original_path"]: r for r in table.to_pylist()}
    assert set(got) == {str(photos / "000000000.jpg"), rows[0]["url"]} and not rejects
    assert got[str(photos / "000000000.jpg")]["image_id"] == "000000000"
    assert got[str(photos / "000000000.jpg")]["caption"] is None
    web = got[rows[0]["url"]]
    assert web["image_id"].startswith("000000000_") and web["caption"] == "from the web"
    assert members[f"{web['image_id']}.txt"] == b"from the web"


def test_parquet_image_input_caption_column(tmp_path):
    photos = [media_path("images", n).read_bytes() for n in GOOD[:2]]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": ["a", "b"], "image": photos, "caption": ["first photo", None]}), src)
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(src)], output=str(out), progress=False))
    _, members, table, _ = _read_output(out)
    assert dict(zip(table.column("image_id").to_pylist(), table.column("caption").to_pylist())) == \
        {"a": "first photo", "b": None}
    assert members["a.txt"] == b"first photo" and "b.txt" not in members


def test_url_parquet_to_resized_shards_with_captions(tmp_path, server):
    """The issue's end to end: a URL Parquet from loopback becomes training-size shards with
    captions, and the bad URLs are rejects with their reasons."""
    rows = _rows(server.base)
    lst = tmp_path / "urls.parquet"
    _write_list(rows, lst, "parquet")
    out = tmp_path / "out"
    run_images(_cfg(lst, out, resize=128, resize_mode="center_crop"))
    want_ok = {f"{i:09d}": r for i, r in enumerate(rows) if r["ok"] is None}
    got = {}
    for t in sorted(out.glob("images-*.tar")):
        with tarfile.open(t) as tf:
            for m in tf.getmembers():
                got[m.name] = tf.extractfile(m).read()
    for key, r in want_ok.items():
        with Image.open(io.BytesIO(got[f"{key}.jpg"])) as im:
            assert im.size == (128, 128), (key, im.size)
        if r["caption"] is not None:
            assert got[f"{key}.txt"].decode() == r["caption"]
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("images-*.parquet"))])
    assert set(table.column("width").to_pylist()) == {128} and set(table.column("height").to_pylist()) == {128}
    assert all(w > 128 for w in table.column("original_width").to_pylist())
    rej = {r["image_id"]: r["reason"] for r in pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()}
    for i, r in enumerate(rows):
        if r["ok"] is not None:
            assert rej[f"{i:09d}"].startswith(r["ok"]), (i, rej.get(f"{i:09d}"), r["ok"])
