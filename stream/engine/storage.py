"""Output storage over fsspec with atomic commit.

Every file a run produces goes through :class:`Storage`: it is written under a temporary
name beside its final one and renamed into place only after it is complete (and fsynced,
where the filesystem has fsync). A crash therefore leaves either the final file, whole, or a
``*.tmp-*`` file that a resume deletes (engine/output.py, only temporaries it owns); never a half-written
file under a final name. On object stores a rename is copy+delete, which still never exposes
a partial object under the final key.

Every commit is recorded (path, bytes, sha256, rows) so the run's ``index.json`` can list them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import os
import posixpath
import threading
import uuid
from dataclasses import asdict, dataclass
from typing import IO, Callable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

TEMP_MARK = ".tmp-"


@dataclass(frozen=True)
class CommittedFile:
    path: str  # relative to the storage root, posix separators
    bytes: int
    sha256: str
    rows: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _HashingWriter(io.RawIOBase):
    """Counts and hashes bytes on their way to the real file, so no second read is needed."""

    def __init__(self, raw: IO[bytes], sync_every: int | None = None):
        self._raw = raw
        self.sha = hashlib.sha256()
        self.nbytes = 0
        self._sync_every = sync_every
        self._synced_at = 0
        self._syncing = None  # the background sync in flight, if any

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        mv = memoryview(b)
        self._raw.write(mv)
        self.sha.update(mv)
        self.nbytes += len(mv)
        if (self._sync_every is not None and self.nbytes - self._synced_at >= self._sync_every
                and (self._syncing is None or self._syncing.done())):
            # The commit must fsync the whole file. Syncing as it grows, on another thread, moves
            # that disk wait from the end of the run (0.26-0.36 s for a 300 MB shard, with every
            # core idle: a virtual disk flushes its host cache only then) to while the decoders
            # still have work, without the writer waiting: the fdatasync it used to do inline
            # here took 0.3-0.4 s of its time per 600 photos.
            self._raw.flush()
            self._syncing = _sync_in_background(self._raw.fileno())
            self._synced_at = self.nbytes
        return len(mv)

    def tell(self) -> int:
        return self.nbytes


_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


_syncer: concurrent.futures.ThreadPoolExecutor | None = None
_syncer_lock = threading.Lock()


def _sync_in_background(fd: int) -> concurrent.futures.Future:
    """fdatasync a duplicate of ``fd`` on the one syncer thread: the duplicate keeps the file
    open even if the writer closes (or drops) it first."""
    global _syncer
    with _syncer_lock:
        if _syncer is None:
            _syncer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="curastream-fsync")
    dup = os.dup(fd)

    def sync() -> None:
        try:
            _fdatasync(dup)
        finally:
            os.close(dup)

    return _syncer.submit(sync)


SYNC_EVERY_BYTES = 32 << 20


def is_temp_name(name: str) -> bool:
    return TEMP_MARK in posixpath.basename(name)


# botocore's own defaults (60 s connect and read, retried inside each of s3fs's 5 tries) let an
# endpoint that accepts and never answers hold a run silent for minutes. These bound a hung
# endpoint to about 5 x 3 x 3 s = 45 s. botocore keeps 3 attempts because s3fs does not retry a
# refused connection itself: with 1, a store down for 0.3 s ended the run (tests/test_s3.py,
# short outage). Settings given in storage_options["config_kwargs"] win, key by key.
S3_TIMEOUT_DEFAULTS = {"connect_timeout": 3, "read_timeout": 3, "retries": {"total_max_attempts": 3}}


def with_store_timeouts(url: str, storage_options: dict | None) -> dict:
    """``storage_options`` for ``url`` with the object-store timeout defaults filled in."""
    opts = dict(storage_options or {})
    proto = url.split("://", 1)[0].lower() if "://" in url else ""
    if proto in ("s3", "s3a"):
        opts["config_kwargs"] = {**S3_TIMEOUT_DEFAULTS, **(opts.get("config_kwargs") or {})}
    return opts


class MissingBackendError(ImportError):
    """A URL whose fsspec filesystem lives in a package that is not installed."""

    def __init__(self, url: str, protocol: str, package: str):
        self.url, self.protocol, self.package = url, protocol, package
        super().__init__(f"{url}: {protocol}:// needs the {package} package (pip install {package})")


def _backend_package(protocol: str, err: ImportError) -> str:
    """The pip name of what ``protocol`` needs. fsspec's registry names each backend's class
    (gcsfs.GCSFileSystem, adlfs.AzureBlobFileSystem); its own classes (http) need others,
    which only its error text names."""
    import re

    from fsspec.registry import known_implementations

    top = known_implementations.get(protocol, {}).get("class", "").split(".")[0]
    if top and top != "fsspec":
        return top
    named = re.findall(r'"([A-Za-z0-9_.-]+)"', str(err))
    return " ".join(named) or top or protocol


def require_backend(url: str) -> None:
    """Raise :class:`MissingBackendError` when ``url`` names a filesystem whose package is not
    installed: before any work, instead of a traceback from deep inside fsspec mid-run."""
    protocol, _ = fsspec.core.split_protocol(str(url))
    if not protocol:
        return
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        raise MissingBackendError(str(url), protocol, _backend_package(protocol, e)) from None


class Storage:
    """A directory (local path or fsspec URL) that files are committed into atomically."""

    def __init__(self, root: str, storage_options: dict | None = None):
        require_backend(root)
        self.fs, path = fsspec.core.url_to_fs(str(root), **with_store_timeouts(str(root), storage_options))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            path = os.path.abspath(path)
        self.root = path.rstrip("/") or "/"
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self._lock = threading.Lock()
        self._committed: dict[str, CommittedFile] = {}
        # Set by the run harness: told each final name (and the key of the item it belongs to,
        # if any) before its temporary exists, so a kill at any point leaves nothing of ours
        # that the ownership record does not name.
        self.on_write: Callable[[str, str | None], None] | None = None
        # Whether a file already here was written by this tool (set with the ownership record);
        # without one, nothing found is ours to delete.
        self.owns: Callable[[str], bool] = _owns_nothing

    # -- naming --------------------------------------------------------------------------
    def path(self, rel: str = "") -> str:
        """Filesystem path of ``rel`` (what fsspec calls a path: no protocol)."""
        rel = _check_rel(rel)
        return self.root if not rel else f"{self.root}/{rel}"

    def url(self, rel: str = "") -> str:
        """Full location of ``rel`` as a user would pass it back to a tool."""
        p = self.path(rel)
        return p if self.is_local else f"{self.protocol}://{p}"

    # -- reading -------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        p = self.path(rel)
        self._forget_listings(p)
        return self.fs.exists(p)

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def list_files(self, rel: str = "") -> list[str]:
        """All files under ``rel``, recursively, as paths relative to the root."""
        base = self.path(rel)
        self._forget_listings(base)
        if not self.fs.exists(base):
            return []
        out = []
        for p in self.fs.find(base):
            out.append(posixpath.relpath(p.replace(os.sep, "/"), self.root.replace(os.sep, "/")))
        return sorted(out)

    def _forget_listings(self, p: str) -> None:
        # Object-store filesystems are cached per process and cache directory listings: another
        # process (or a resumed run in this one) may have changed the store since. Only what the
        # store says now counts.
        if not self.is_local:
            with contextlib.suppress(Exception):
                self.fs.invalidate_cache(p)

    def is_empty(self) -> bool:
        return not self.list_files()

    # -- writing -------------------------------------------------------------------------
    def makedirs(self, rel: str = "") -> None:
        if self.is_local:
            os.makedirs(self.path(rel), exist_ok=True)
        # object stores have no directories

    @contextlib.contextmanager
    def open_atomic(self, rel: str, rows: int | None = None, group: str | None = None) -> Iterator[IO[bytes]]:
        """Yield a writable binary file; on clean exit it appears at ``rel``, whole.

        On an exception the temporary file is removed and the final name is untouched.
        ``group``: the key of the item the file is written for (engine/ownership.py).
        """
        final = self.path(rel)
        parent = posixpath.dirname(final)
        tmp = _temp_name(final)
        if self.on_write is not None:
            self.on_write(_check_rel(rel), group)
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            raw = open(tmp, "wb")
        else:
            raw = self.fs.open(tmp, "wb")
        hw = _HashingWriter(raw, sync_every=SYNC_EVERY_BYTES if self.is_local else None)
        ok = False
        try:
            yield hw
            ok = True
        finally:
            try:
                if ok and self.is_local:
                    raw.flush()
                    os.fsync(raw.fileno())
                raw.close()
            except BaseException:
                ok = False
                raise
            finally:
                if not ok:
                    self._remove_quietly(tmp)
        self._rename(tmp, final)
        self._record(CommittedFile(_check_rel(rel), hw.nbytes, hw.sha.hexdigest(), rows))

    def write_atomic(self, rel: str, data: bytes, rows: int | None = None, group: str | None = None) -> CommittedFile:
        with self.open_atomic(rel, rows=rows, group=group) as f:
            f.write(data)
        return self._committed[_check_rel(rel)]

    def _rename(self, tmp: str, final: str) -> None:
        if self.is_local:
            os.replace(tmp, final)
            # The rename itself must survive a power cut, not just the bytes.
            with contextlib.suppress(OSError):
                fd = os.open(os.path.dirname(final), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            self.fs.mv(tmp, final)

    def _remove_quietly(self, p: str) -> None:
        with contextlib.suppress(Exception):
            if self.is_local:
                os.remove(p)
            else:
                self.fs.rm(p)

    def delete(self, rel: str) -> None:
        self._remove_quietly(self.path(rel))
        with self._lock:
            self._committed.pop(_check_rel(rel), None)

    def remove(self, rel: str) -> None:
        """Delete ``rel``; a failure raises (an overwrite must not leave stale files beside new ones)."""
        p = self.path(rel)
        if self.is_local:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
        else:
            self.fs.rm(p)
        with self._lock:
            self._committed.pop(_check_rel(rel), None)

    def remove_temps(self) -> list[str]:
        """Delete temporaries left by an interrupted run; returns what was removed."""
        removed = [r for r in self.list_files() if is_temp_name(r)]
        for r in removed:
            self._remove_quietly(self.path(r))
        return removed

    def clear(self) -> None:
        """Remove everything under the root. Not for runs: an output may hold files that are
        not ours, and overwrite removes only owned ones (engine/output.py)."""
        for r in self.list_files():
            self._remove_quietly(self.path(r))
        with self._lock:
            self._committed.clear()

    # -- bookkeeping -----------------------------------------------------------------------
    def _record(self, cf: CommittedFile) -> None:
        with self._lock:
            self._committed[cf.path] = cf

    def adopt(self, rel: str, rows: int | None = None) -> CommittedFile:
        """Record a file committed by an earlier (interrupted) run so the index lists it."""
        data = self.read_bytes(rel)
        cf = CommittedFile(_check_rel(rel), len(data), hashlib.sha256(data).hexdigest(), rows)
        self._record(cf)
        return cf

    def set_rows(self, rel: str, rows: int) -> None:
        rel = _check_rel(rel)
        with self._lock:
            cf = self._committed[rel]
            self._committed[rel] = CommittedFile(cf.path, cf.bytes, cf.sha256, rows)

    def committed(self) -> list[CommittedFile]:
        with self._lock:
            return sorted(self._committed.values(), key=lambda c: c.path)


def _owns_nothing(rel: str) -> bool:
    return False


NAME_MAX = 255  # bytes in one path component (ext4, xfs, APFS...)


def _temp_name(final: str) -> str:
    """A unique temporary name beside ``final``. When ``final``'s own name is already near the
    file-name limit, the temporary gets a hash of it instead, so a name that fits can always
    be committed."""
    parent, base = posixpath.split(final)
    suffix = f"{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if len((base + suffix).encode("utf-8", "surrogateescape")) > NAME_MAX:
        base = hashlib.sha256(base.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"{parent}/{base}{suffix}" if parent else f"{base}{suffix}"


def _check_rel(rel: str) -> str:
    """Relative output paths are built by us, but keys come from user data: refuse escapes."""
    if os.sep != "/":  # on POSIX a backslash is an ordinary character of a file name
        rel = rel.replace(os.sep, "/")
    rel = rel.strip("/")
    if not rel:
        return ""
    parts = rel.split("/")
    if any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise ValueError(f"unsafe output path {rel!r}")
    return rel
