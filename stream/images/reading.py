"""From a list of inputs to their bytes: :func:`read_batches` streams plain files, tar samples
and Parquet rows as batches of :class:`LoadedImage`, reading each container in one sequential
pass, turning every failure into a per-input error instead of an exception, and carrying a
sample's side members or a row's scalar columns along as metadata.
"""

from __future__ import annotations

import tarfile
import threading
import time
from typing import Any, Callable, Iterator

import fsspec

from curastream.engine.storage import with_store_timeouts
from curastream.images.containers import SampleIds, TAR_ERRORS, image_field, is_image_ext, wds_split
from curastream.images.inputs import ImageInput, is_remote, not_a_file
from curastream.images.read_errors import (
    NotAFileError,
    _guarded,
    _os_error,
    _parquet_error,
    _parquet_open_error,
    _tar_error,
    _tar_open_error,
)
from curastream.images.samples import LoadedImage, _caption, _checked, _json_safe, _plain, _sample
from curastream.writers.rejects import is_transient_error

# Tar side members bigger than this are not copied into metadata (an embedding or a mask would
# bloat every output row); their extension is listed under "skipped_members" instead.
SIDE_MEMBER_LIMIT = 1 << 20
# Stream mode reads through tarfile's Python-level buffer in chunks of this size. The default
# (10 KiB) is ~50 reads per photo; much larger is slower again, because every small header read
# re-slices the whole buffer. Reading 600 photos: 10 KiB 0.27 CPU-s, 64 KiB 0.21, 1 MiB 0.24.
TAR_READ_BUFSIZE = 64 << 10
# A read that fails transiently (see is_transient_error) is tried READ_ATTEMPTS times in all,
# sleeping READ_BACKOFF_S, then twice that, ... in between. The sleeps of a whole run share
# READ_RETRY_BUDGET_S: with the store down for good, 10k inputs must not each wait their full
# backoff; once it is spent, failures are recorded at once (transient: a resume retries them).
READ_ATTEMPTS = 3
READ_BACKOFF_S = 0.2
READ_RETRY_BUDGET_S = 20.0


class _Reader:
    def __init__(self, storage_options: dict | None, batch_size: int):
        self.storage_options = storage_options or {}
        self.batch_size = batch_size
        self._fs: dict[str, Any] = {}
        self._retry_left = READ_RETRY_BUDGET_S
        self._retry_lock = threading.Lock()

    def retrying(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, tried again after a transient failure while attempts and budget last."""
        delay = READ_BACKOFF_S
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - re-raised unless worth another try
                if attempt == READ_ATTEMPTS or not is_transient_error(e):
                    raise
                with self._retry_lock:
                    if self._retry_left < delay:
                        raise
                    self._retry_left -= delay
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def fs_path(self, url: str):
        proto = url.split("://", 1)[0]
        if proto not in self._fs:
            self._fs[proto] = fsspec.core.url_to_fs(url, **with_store_timeouts(url, self.storage_options))[0]
        fs = self._fs[proto]
        return fs, fs._strip_protocol(url)

    def opener(self, inp: ImageInput) -> Callable:
        if is_remote(inp.source):
            fs, p = self.fs_path(inp.source)
            return lambda: fs.open(p, "rb")
        return lambda: open(inp.source, "rb")

    # -- plain files -------------------------------------------------------------------------
    def files(self, run: list[ImageInput]) -> Iterator[LoadedImage]:
        if not is_remote(run[0].source):
            for inp in run:
                try:
                    data = self.retrying(lambda: _read_local(inp.source))
                except NotAFileError as e:
                    yield LoadedImage(inp, None, {}, str(e))
                    continue
                except OSError as e:
                    yield LoadedImage(inp, None, {}, _os_error(e))
                    continue
                yield _checked(inp, data)
            return
        # Remote: one concurrent fetch per batch (s3fs/gcsfs run these in parallel).
        fs, _ = self.fs_path(run[0].source)
        paths = [self.fs_path(i.source)[1] for i in run]
        try:
            got = fs.cat(paths, on_error="return")
        except Exception as e:  # noqa: BLE001 - turned into per-input errors
            got = {p: e for p in paths}
        if not isinstance(got, dict):  # a single path comes back as bytes
            got = {paths[0]: got}
        for inp, p in zip(run, paths):
            v = got.get(p, FileNotFoundError(p))
            if isinstance(v, BaseException) and is_transient_error(v):
                # the batch fetch already was the first attempt
                try:
                    v = self.retrying(lambda: fs.cat_file(p))
                except Exception as e:  # noqa: BLE001 - becomes this input's error
                    v = e
            if isinstance(v, BaseException):
                yield LoadedImage(inp, None, {}, _os_error(v))
            else:
                yield _checked(inp, bytes(v))

    # -- WebDataset tars ---------------------------------------------------------------------
    def wds(self, run: list[ImageInput]) -> Iterator[LoadedImage]:
        placeholders = [i for i in run if i.member is None]
        for inp in placeholders:
            yield LoadedImage(inp, None, {}, _tar_open_error(self.opener(inp)))
        pending = [i for i in run if i.member is not None]
        # A local file can be read member by member with one exact read each; stream mode
        # (needed where seeking means another request) copies every photo through tarfile's
        # chunk buffer three times: 600 photos, source thread 0.46 -> 0.29-0.35 CPU-s.
        mode = "r|*" if pending and is_remote(pending[0].source) else "r:*"
        i = 0
        while i < len(pending):
            start, seen, failed = i, set(), None
            try:
                with self.opener(pending[0])() as f, tarfile.open(fileobj=f, mode=mode, bufsize=TAR_READ_BUFSIZE) as tf:
                    ids = SampleIds()
                    cur: tuple[ImageInput, list] | None = None
                    for ti in tf:
                        if not ti.isreg():
                            continue
                        split = wds_split(ti.name)
                        if split is None:
                            continue
                        sid = ids.feed(split[0])
                        if sid is not None:
                            seen.add(sid)
                            if cur is not None:
                                yield _sample(*cur)
                                i += 1
                                cur = None
                            if i < len(pending) and pending[i].member == sid:
                                cur = (pending[i], [])
                        if cur is not None:
                            ext = split[1]
                            if is_image_ext(ext) or ti.size <= SIDE_MEMBER_LIMIT:
                                cur[1].append((ext, tf.extractfile(ti).read(), ti.size))
                            else:
                                cur[1].append((ext, None, ti.size))
                        tf.members = []  # streaming: nothing to keep
                    if cur is not None:
                        yield _sample(*cur)
                        i += 1
            except TAR_ERRORS as e:
                failed = e
            if failed is not None:
                reason = _tar_error(failed)
                for inp in pending[i:]:
                    yield LoadedImage(inp, None, {}, reason)
                return
            # Samples not met in this pass: either absent, or listed out of tar order (then
            # another pass picks them up; a list made by list_image_inputs never needs one).
            while i < len(pending) and pending[i].member not in seen:
                yield LoadedImage(pending[i], None, {}, "sample not found in tar")
                i += 1
            if i == start and i < len(pending):  # pragma: no cover - guards against looping
                yield LoadedImage(pending[i], None, {}, "sample not found in tar")
                i += 1

    # -- Parquet -----------------------------------------------------------------------------
    def parquet(self, run: list[ImageInput], image_column: str | None) -> Iterator[LoadedImage]:
        sub: list[ImageInput] = []
        for inp in run:
            if inp.member is None:
                yield from self._parquet_rows(sub, image_column)
                sub = []
                yield LoadedImage(inp, None, {}, _parquet_open_error(self.opener(inp)))
                continue
            # Rows must ascend within one pass; a hand-made list out of order gets more passes.
            if sub and int(inp.member) <= int(sub[-1].member):
                yield from self._parquet_rows(sub, image_column)
                sub = []
            sub.append(inp)
        yield from self._parquet_rows(sub, image_column)

    def _parquet_rows(self, run: list[ImageInput], image_column: str | None) -> Iterator[LoadedImage]:
        if not run:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        i = 0
        try:
            with self.opener(run[0])() as f:
                pf = pq.ParquetFile(f)
                schema = pf.schema_arrow
                img = image_field(schema, run[0].column or image_column)
                meta_cols = [fl.name for fl in schema if fl.name != img and _is_scalar(fl.type, pa)]
                starts, acc = [], 0
                for rg in range(pf.metadata.num_row_groups):
                    starts.append(acc)
                    acc += pf.metadata.row_group(rg).num_rows
                rows = [int(x.member) for x in run]
                groups = sorted({_row_group_of(starts, r) for r in rows if 0 <= r < acc})
                # Only row groups holding wanted rows are read, batch by batch, so memory is
                # one batch (plus the reader's page buffer), not the file.
                for rg in groups:
                    row = starts[rg]
                    for b in pf.iter_batches(batch_size=self.batch_size, row_groups=[rg],
                                             columns=[img, *meta_cols], use_threads=False):
                        while i < len(run) and rows[i] < row:  # out of range
                            yield LoadedImage(run[i], None, {}, "row not in Parquet file")
                            i += 1
                        end = row + b.num_rows
                        col = b.column(0)
                        if pa.types.is_struct(col.type):
                            col = col.field("bytes")
                        while i < len(run) and rows[i] < end:
                            k = rows[i] - row
                            data = col[k].as_py()
                            meta = {name: _json_safe(b.column(j + 1)[k].as_py())
                                    for j, name in enumerate(meta_cols)}
                            if data is None:
                                yield LoadedImage(run[i], None, meta, "null image value", _caption(meta, "caption"))
                            else:
                                yield _checked(run[i], bytes(data), meta, _caption(meta, "caption"))
                            i += 1
                        row = end
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            for inp in run[i:]:
                yield LoadedImage(inp, None, {}, _parquet_error(e))
            return
        for inp in run[i:]:
            yield LoadedImage(inp, None, {}, "row not in Parquet file")


def _row_group_of(starts: list[int], row: int) -> int:
    import bisect

    return bisect.bisect_right(starts, row) - 1


def _is_scalar(t, pa) -> bool:
    return not (pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t) or pa.types.is_null(t))


def _url_rows(run: list[ImageInput], url_options) -> Iterator[LoadedImage]:
    from curastream.images.url_inputs import UrlOptions, read_url_rows

    for inp, data, cols, caption, err in read_url_rows(run, url_options or UrlOptions()):
        meta = {k: _plain(v) for k, v in cols.items()}
        if err is not None:
            yield LoadedImage(inp, None, meta, err, caption)
        else:
            yield _checked(inp, data, meta, caption)


def _read_local(path: str) -> bytes:
    why = not_a_file(path)
    if why:
        raise NotAFileError(why)
    with open(path, "rb") as f:
        return f.read()


def read_batches(
    inputs: list[ImageInput],
    batch_size: int = 32,
    storage_options: dict | None = None,
    skip_keys: set[str] | frozenset[str] = frozenset(),
    parquet_image_column: str | None = None,
    tail: int = 0,
    url_options=None,
) -> Iterator[list[LoadedImage]]:
    """Yield the inputs' bytes in input order, in lists of up to ``batch_size``; the last
    ``tail`` inputs come in lists of a quarter of that, so that a stage with several workers
    keeps them all busy to the end instead of one worker finishing the last big batch alone.

    A failure to read one input becomes a :class:`LoadedImage` with ``error`` set and the
    stream goes on. Inputs whose key is in ``skip_keys`` are not read (resume). Each tar or
    Parquet file is read in one sequential pass per run of consecutive inputs from it.
    ``parquet_image_column`` only matters for hand-made inputs without ``column`` set.
    ``url_options`` (:class:`~curastream.images.url_inputs.UrlOptions`): how URL-list rows
    (kind ``"url"``) are downloaded; each run of them from one list is one streamed pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    reader = _Reader(storage_options, batch_size)
    todo = [i for i in inputs if i.key not in skip_keys] if skip_keys else list(inputs)

    def items() -> Iterator[LoadedImage]:
        n = 0
        while n < len(todo):
            first = todo[n]
            end = n + 1
            if first.kind == "file":
                # Remote files are fetched together, at most up to the end of the batch being
                # filled (every input yields exactly one item, so that is n % batch_size), which
                # keeps bytes in memory within one batch. Local files are read one by one.
                remote = is_remote(first.source)
                proto = first.source.split("://", 1)[0] if remote else None
                room = batch_size - n % batch_size
                while (end < len(todo) and todo[end].kind == "file" and end - n < room
                       and is_remote(todo[end].source) == remote
                       and (not remote or todo[end].source.split("://", 1)[0] == proto)):
                    end += 1
                yield from _guarded(todo[n:end], reader.files(todo[n:end]))
            else:
                # a URL list's rows each have their own source (the URL): they group by list
                unit = (lambda i: getattr(i, "url_list", None)) if first.kind == "url" else (lambda i: (i.source, i.column))
                while end < len(todo) and todo[end].kind == first.kind and unit(todo[end]) == unit(first):
                    end += 1
                if first.kind == "wds":
                    yield from _guarded(todo[n:end], reader.wds(todo[n:end]))
                elif first.kind == "parquet":
                    yield from _guarded(todo[n:end], reader.parquet(todo[n:end], parquet_image_column))
                elif first.kind == "url":
                    yield from _guarded(todo[n:end], _url_rows(todo[n:end], url_options))
                else:
                    for inp in todo[n:end]:
                        yield LoadedImage(inp, None, {}, f"unknown input kind {inp.kind!r}")
            n = end

    small = max(1, batch_size // 4)
    batch: list[LoadedImage] = []
    left = len(todo)
    for item in items():
        batch.append(item)
        if len(batch) >= (batch_size if left > tail else small):
            left -= len(batch)
            yield batch
            batch = []
    if batch:
        yield batch
