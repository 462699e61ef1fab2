"""URL lists as image inputs: a Parquet, CSV/TSV or JSONL table with one image URL per row (the
LAION / img2dataset shape), optionally a caption column and other columns to keep.

Listing reads only the URL column, in batches, and makes one :class:`UrlInput` per row (key: the
zero-padded row index, identity: the URL). Reading streams the list again for the caption and the
kept columns, row-aligned, while downloads run concurrently on one aiohttp session in a
background event loop, a bounded window ahead of the consumer, yielding in list order. Every
failure becomes that row's reason ("http 404", "transient: timeout after 10 s", ...), never an
exception out of the run.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import fsspec

from curastream.engine.storage import with_store_timeouts
from curastream.images.inputs import ImageInput, is_remote
from curastream.writers.rejects import is_transient_error, transient_reason

# Rows per batch read from a list: one batch of URLs (tens of MB at most) is what listing and
# reading hold of the list at a time.
LIST_BATCH_ROWS = 65536
LIST_FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Statuses a server gives for a moment of trouble: tried again, and transient if they persist.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Content types that may well hold an image although they do not say so.
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "application/binary", "")
BACKOFF_S = 0.2
_CHUNK = 1 << 16


@dataclass(frozen=True)
class UrlInput(ImageInput):
    """One row of a URL list: ``source`` is the URL (the shards' ``original_path`` and what a
    resume skips by), ``row`` its index in ``url_list``."""

    row: int = 0
    url_list: str = ""


@dataclass(frozen=True)
class UrlOptions:
    url_col: str = "url"
    caption_col: str | None = None  # None: "caption" when the list has it
    extra_cols: tuple[str, ...] = ()
    timeout_s: float = 10.0  # to connect, and for each read
    retries: int = 2
    max_bytes: int = 50_000_000
    concurrency: int = 64
    storage_options: dict | None = None


def list_format(path: str) -> str:
    low = path.lower()
    for ext, fmt in LIST_FORMATS.items():
        if low.endswith(ext):
            return fmt
    raise ValueError(f"{path}: a URL list must be .parquet, .csv, .tsv or .jsonl")


def _open(path: str, storage_options: dict | None):
    if is_remote(path):
        return fsspec.open(path, "rb", **with_store_timeouts(path, storage_options)).open()
    return open(os.path.expanduser(path), "rb")


def list_schema(path: str, storage_options: dict | None = None):
    """The list's Arrow schema: the Parquet footer, or the types of a text list's first block
    (pyarrow fixes a streamed CSV's types there too)."""
    if list_format(path) == "parquet":
        import pyarrow.parquet as pq

        with _open(path, storage_options) as f:
            return pq.ParquetFile(f).schema_arrow
    batches = _batches(path, None, storage_options)
    try:
        for b in batches:
            return b.schema
    finally:
        batches.close()
    raise ValueError(f"{path}: the URL list is empty")


def _batches(path: str, columns: list[str] | None, storage_options: dict | None,
             text_cols: tuple[str, ...] = ()) -> Iterator:
    """The list as Arrow record batches of ``columns`` (None: all), a batch at a time;
    ``text_cols`` are read as strings whatever they look like ("123", "nan", "")."""
    import pyarrow as pa

    fmt = list_format(path)
    with _open(path, storage_options) as f:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(f).iter_batches(batch_size=LIST_BATCH_ROWS, columns=columns, use_threads=False)
            return
        if fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(
                f, read_options=pcsv.ReadOptions(block_size=8 << 20),
                parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(include_columns=columns, strings_can_be_null=False,
                                                    column_types={c: pa.string() for c in text_cols}))
        else:
            import pyarrow.json as pjson

            # a caption column all null in the first block must not freeze as type null
            reader = pjson.open_json(f, read_options=pjson.ReadOptions(block_size=8 << 20),
                                     parse_options=pjson.ParseOptions(
                                         explicit_schema=pa.schema([(c, pa.string()) for c in text_cols]),
                                         unexpected_field_behavior="infer"))
        for b in reader:
            if columns is not None:
                b = pa.RecordBatch.from_arrays([_column(b, c) for c in columns], names=columns)
            yield b


def _column(b, name: str):
    import pyarrow as pa

    i = b.schema.get_field_index(name)
    return b.column(i) if i >= 0 else pa.nulls(b.num_rows, pa.string())


def resolve_columns(path: str, opts: UrlOptions) -> tuple[str | None, list]:
    """(caption column or None, kept extra fields) of a list, checked against its schema."""
    schema = list_schema(path, opts.storage_options)
    names = schema.names
    if opts.url_col not in names:
        raise ValueError(f"{path}: no URL column {opts.url_col!r} (columns: {names}); choose one with --url-col")
    caption = opts.caption_col
    if caption is not None and caption not in names:
        raise ValueError(f"{path}: no caption column {caption!r} (columns: {names})")
    if caption is None and "caption" in names:
        caption = "caption"
    missing = [c for c in opts.extra_cols if c not in names]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} to save (columns: {names})")
    return caption, [schema.field(c) for c in opts.extra_cols if c not in (opts.url_col, caption)]


def list_url_inputs(path: str, opts: UrlOptions) -> list[UrlInput]:
    """One input per row with a URL (rows without one are skipped with a count in the log)."""
    import logging

    resolve_columns(path, opts)
    src = os.fspath(path)
    out: list[UrlInput] = []
    row = empty = 0
    for b in _batches(src, [opts.url_col], opts.storage_options, text_cols=(opts.url_col,)):
        for url in b.column(0).to_pylist():
            if url is None or not str(url).strip():
                empty += 1
            else:
                u = str(url).strip()
                out.append(UrlInput(f"{row:09d}", u, None, None, "url", row=row, url_list=src))
            row += 1
    if empty:
        logging.getLogger(__name__).warning("%s: %d row(s) without a URL skipped", src, empty)
    return out


# -- reading -------------------------------------------------------------------------------------


def _side_rows(run: list[UrlInput], columns: list[str], text_cols: tuple[str, ...],
               storage_options) -> Iterator[dict]:
    """The ``columns`` of each row of ``run`` (rows ascending), one list batch at a time."""
    if not columns:
        for _ in run:
            yield {}
        return
    i = 0
    start = 0
    for b in _batches(run[0].url_list, columns, storage_options, text_cols):
        end = start + b.num_rows
        if i < len(run) and run[i].row < end:
            cols = [b.column(j) for j in range(len(columns))]
            while i < len(run) and run[i].row < end:
                k = run[i].row - start
                yield {c: cols[j][k].as_py() for j, c in enumerate(columns)}
                i += 1
        start = end
        if i >= len(run):
            return
    for _ in run[i:]:
        yield {}


class _HttpError(Exception):
    def __init__(self, reason: str, retry: bool = False):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


class Downloader:
    """An aiohttp session on an event loop of its own thread; :meth:`submit` returns a
    ``concurrent.futures.Future`` of ``(bytes, None)`` or ``(None, reason)``."""

    def __init__(self, opts: UrlOptions):
        self.opts = opts
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="url-download", daemon=True)
        self._thread.start()
        self._session = None
        self._sem: asyncio.Semaphore | None = None

    def submit(self, url: str):
        return asyncio.run_coroutine_threadsafe(self._fetch(url), self.loop)

    def close(self) -> None:
        async def shutdown():
            if self._session is not None:
                await self._session.close()
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self.loop.close()

    async def _session_get(self):
        import aiohttp

        if self._session is None:
            t = self.opts.timeout_s
            self._sem = asyncio.Semaphore(self.opts.concurrency)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t),
                connector=aiohttp.TCPConnector(limit=self.opts.concurrency, ttl_dns_cache=300),
            )
        return self._session

    async def _fetch(self, url: str) -> tuple[bytes | None, str | None]:
        session = await self._session_get()
        delay = BACKOFF_S
        for attempt in range(self.opts.retries + 1):
            last = attempt == self.opts.retries
            try:
                async with self._sem:  # type: ignore[union-attr]
                    return await self._get_once(session, url), None
            except _HttpError as e:
                if not e.retry:
                    return None, e.reason
                if last:
                    return None, transient_reason(e.reason)
            except Exception as e:  # noqa: BLE001 - each failure is this URL's reason
                why = self._reason(e)
                if not is_transient_error(e):
                    return None, why
                if last:
                    return None, transient_reason(why)
            # the slot is free while waiting: a flaky host must not hold up the others
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_once(self, session, url: str) -> bytes:
        cap = self.opts.max_bytes
        async with session.get(url, allow_redirects=True, max_redirects=10) as resp:
            if resp.status >= 400:
                raise _HttpError(f"http {resp.status}", retry=resp.status in RETRY_STATUSES)
            ctype = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if not (ctype.startswith("image/") or ctype in _GENERIC_TYPES):
                raise _HttpError(f"not an image: content-type {ctype}")
            if resp.content_length is not None and resp.content_length > cap:
                raise _HttpError(f"too large: > {cap} bytes (content-length {resp.content_length})")
            buf = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                buf += chunk
                if len(buf) > cap:
                    raise _HttpError(f"too large: > {cap} bytes")
            return bytes(buf)

    def _reason(self, e: BaseException) -> str:
        import aiohttp

        if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
            return f"timeout after {self.opts.timeout_s:g} s"
        if isinstance(e, aiohttp.TooManyRedirects):
            return "too many redirects"
        if isinstance(e, aiohttp.ClientPayloadError):
            return f"truncated response: {_one_line(e)}"
        if isinstance(e, aiohttp.InvalidURL):
            return f"invalid URL: {_one_line(e)}"
        if isinstance(e, aiohttp.ClientConnectorError):
            return f"cannot connect: {_one_line(e)}"
        return f"download failed: {type(e).__name__}: {_one_line(e)}"


def _one_line(e: BaseException) -> str:
    return re.sub(r"\s+", " ", str(e)).strip()


def read_url_rows(run: list[UrlInput], opts: UrlOptions) -> Iterator[tuple[UrlInput, bytes | None, dict,
                                                                          str | None, str | None]]:
    """``(input, bytes, kept columns, caption, error)`` per input of ``run``, in order.

    Downloads run up to ``2 * concurrency`` inputs ahead of the consumer, so a slow URL delays
    its own row but not the fetching of those behind it; memory is that window of images."""
    # Rows of one pass must ascend (listing makes them so); a hand-made list gets more passes.
    cut = next((n for n in range(1, len(run)) if run[n].row <= run[n - 1].row), len(run))
    if cut < len(run):
        yield from read_url_rows(run[:cut], opts)
        yield from read_url_rows(run[cut:], opts)
        return
    caption_col, extra = resolve_columns(run[0].url_list, opts)
    columns = ([caption_col] if caption_col else []) + [f.name for f in extra]
    side = _side_rows(run, columns, (caption_col,) if caption_col else (), opts.storage_options)
    dl = Downloader(opts)
    ahead = 2 * opts.concurrency
    window: collections.deque = collections.deque()
    try:
        n = 0
        while n < len(run) or window:
            while n < len(run) and len(window) < ahead:
                window.append((run[n], dl.submit(run[n].source)))
                n += 1
            inp, fut = window.popleft()
            data, err = fut.result()
            cols = next(side, {})
            caption = cols.pop(caption_col, None) if caption_col else None
            yield inp, data, cols, None if caption is None else str(caption), err
    finally:
        for _, fut in window:
            fut.cancel()
        dl.close()
        side.close()


def url_column_fields(path: str | None, opts: UrlOptions) -> list:
    """The kept columns that become typed shard columns: scalars of the list's own types."""
    import pyarrow as pa

    if not path:
        return []
    _, extra = resolve_columns(path, opts)
    scalar = (pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating, pa.types.is_string,
              pa.types.is_large_string)
    return [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
            for f in extra if any(t(f.type) for t in scalar)]


def options_from(cfg: Any) -> UrlOptions:
    return UrlOptions(
        url_col=cfg.url_col, caption_col=cfg.caption_col,
        extra_cols=tuple(c.strip() for v in cfg.save_additional_columns for c in v.split(",") if c.strip()),
        timeout_s=cfg.download_timeout, retries=cfg.download_retries, max_bytes=cfg.max_download_bytes,
        concurrency=cfg.download_concurrency, storage_options=cfg.storage_options)
