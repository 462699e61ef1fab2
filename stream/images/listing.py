"""From what a user names (dirs, files, globs, URLs, tars, Parquet, a files-from list) to the
deterministic list of :class:`~curastream.images.inputs.ImageInput` that reading consumes:
walks local and remote trees, expands globs, opens containers to list their samples, and skips
what is not input (dot-names, directories holding curastream output).
"""

from __future__ import annotations

import collections
import glob as globmod
import logging
import os
import posixpath
import re
import stat
from typing import Callable, Iterable

import fsspec

from curastream.engine.names import printable
from curastream.engine.run_index import INDEX_NAME
from curastream.engine.lock import MARK_DIR as OUTPUT_MARK
from curastream.engine.storage import with_store_timeouts
from curastream.images.containers import NoImageColumn, list_parquet, list_tar
from curastream.writers.rejects import is_transient_error
from curastream.images.inputs import (
    IMAGE_EXTENSIONS,
    PARQUET_EXTENSIONS,
    TAR_EXTENSIONS,
    Candidate,
    ImageInput,
    finalise,
    is_remote,
    make_key,
    not_a_file,
    sha8,
    split_ext,
    with_suffix,
)

log = logging.getLogger(__name__)

_GLOB_MAGIC = re.compile(r"[*?[]")


class _Lister:
    def __init__(self, storage_options: dict | None, parquet_image_column: str | None):
        self.storage_options = storage_options or {}
        self.parquet_image_column = parquet_image_column
        self.cands: list[Candidate] = []

    # -- entry points ------------------------------------------------------------------------
    def add_src(self, src: str, where: str = "") -> None:
        if is_remote(src):
            self._add_remote(src, where)
        else:
            self._add_local(_local_path(src), where)

    def _add_local(self, path: str, where: str) -> None:
        identity = os.path.normpath(path)
        if os.path.isdir(path):
            found = self._walk_local(path, path, identity)
            if not found:
                log.warning("no image inputs found under %s", printable(path))
        elif os.path.lexists(path):
            # A FIFO, device or dangling link named by the user is an input that gets its reject
            # row (the read stats it before any open: a FIFO would block), never a silent skip.
            self._add_explicit(os.path.abspath(path), os.path.basename(identity), identity,
                               _local_size(path), local=True)
        elif _GLOB_MAGIC.search(path):
            matches = globmod.glob(path, recursive=True)
            if not matches:
                raise FileNotFoundError(f"{where}no files match {printable(path)!r}")
            prefix = _glob_prefix(path, os.sep)
            root_id = os.path.normpath(prefix or ".")
            filter_ext = not _literal_ext(path)
            for m in sorted(matches):
                rel = os.path.relpath(m, prefix or ".")
                if os.path.isdir(m):
                    self._walk_local(m, prefix or ".", root_id)
                elif not filter_ext or _wanted_in_walk(m) or not_a_file(m):
                    self._add_explicit(os.path.abspath(m), rel, _join_id(root_id, rel),
                                       _local_size(m), local=True)
        else:
            raise FileNotFoundError(f"{where}input not found: {printable(path)}")

    def _add_remote(self, src: str, where: str) -> None:
        fs, path = fsspec.core.url_to_fs(src, **with_store_timeouts(src, self.storage_options))
        path = path.rstrip("/") or path
        identity = fs.unstrip_protocol(path)
        try:
            is_dir = fs.isdir(path)
        except Exception as e:  # noqa: BLE001 - classified below; anything else is re-raised
            # One unreachable URL (a host down, DNS failing) must not end the run: a name that
            # looks like an image becomes an input of unknown size, whose read fails with the
            # same error and is recorded as a transient reject, retried by --on-existing resume.
            if not (is_transient_error(e) and _wanted_in_walk(path)):
                raise
            log.warning("%scannot reach %s (%s: %s); it will be retried as a read", where, identity,
                        type(e).__name__, e)
            self._add_explicit(identity, posixpath.basename(path), identity, None, fs=fs, fspath=path)
            return
        if is_dir:
            if not self._walk_remote(fs, path, path, identity):
                log.warning("no image inputs found under %s", identity)
        elif fs.isfile(path):
            self._add_explicit(identity, posixpath.basename(path), identity,
                               fs.info(path).get("size"), fs=fs, fspath=path)
        elif _GLOB_MAGIC.search(path):
            matches = fs.glob(path, detail=True)
            if not matches:
                raise FileNotFoundError(f"{where}no files match {src!r}")
            prefix = _glob_prefix(path, "/").rstrip("/")
            root_id = fs.unstrip_protocol(prefix)
            filter_ext = not _literal_ext(path)
            for m, info in sorted(matches.items()):
                rel = m[len(prefix):].lstrip("/") if prefix else m
                if any(p.startswith(".") for p in rel.split("/")):
                    continue  # local glob never matches dot-names; be consistent
                if info.get("type") == "directory":
                    self._walk_remote(fs, m, prefix, root_id)
                elif not filter_ext or _wanted_in_walk(m):
                    self._add_explicit(fs.unstrip_protocol(m), rel, _join_id(root_id, rel),
                                       info.get("size"), fs=fs, fspath=m)
        else:
            raise FileNotFoundError(f"{where}input not found: {src}")

    # -- walks -------------------------------------------------------------------------------
    def _walk_local(self, top: str, root: str, root_id: str) -> int:
        """Add everything under ``top``; keys are paths relative to ``root``."""
        n0 = len(self.cands)
        seen_dirs: set[tuple[int, int]] = set()
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                st = os.stat(d)
                with os.scandir(d) as it:
                    entries = list(it)
            except OSError as e:
                log.warning("cannot list %s: %s", printable(d), e)
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue  # a symlink loop, or the same dir reached twice through links
            seen_dirs.add((st.st_dev, st.st_ino))
            names = {e.name for e in entries}
            if d != top and _is_our_output_dir(names, lambda n: os.path.join(d, n)):
                log.info("skipping %s: it holds curastream output", printable(d))
                continue
            for e in entries:
                # by identity only (_is_our_output_dir): a user's "x.tmp-1.jpg" is an input
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()  # follows symlinks
                except OSError:
                    is_dir = False
                if is_dir:
                    stack.append(e.path)
                    continue
                if not _wanted_in_walk(e.name):
                    continue
                try:
                    est = e.stat()
                    if not stat.S_ISREG(est.st_mode):
                        continue  # FIFOs and devices could block a reader forever
                    size: int | None = est.st_size
                except OSError:
                    why = not_a_file(e.path)
                    if why:
                        log.warning("skipping %s: %s", printable(e.path), why)
                        continue
                    size = None  # (a link loop, a permission): listed, so the read reports it
                rel = os.path.relpath(e.path, root)
                self._add_found(os.path.abspath(e.path), rel, _join_id(root_id, rel), size,
                                local=True)
        return len(self.cands) - n0

    def _walk_remote(self, fs, top: str, root: str, root_id: str) -> int:
        n0 = len(self.cands)
        found = fs.find(top, detail=True)
        by_dir: dict[str, set[str]] = collections.defaultdict(set)
        for p in found:
            by_dir[posixpath.dirname(p)].add(posixpath.basename(p))
        for d in list(by_dir):
            if posixpath.basename(d) == OUTPUT_MARK:  # a store has no folders: name the marker
                by_dir[posixpath.dirname(d)].add(OUTPUT_MARK)
        skip_dirs = sorted(
            d for d, names in by_dir.items()
            if d.rstrip("/") != top.rstrip("/")
            and _is_our_output_dir(names, lambda n, d=d: f"{d}/{n}", fs)
        )
        for p, info in sorted(found.items()):
            if info.get("type", "file") != "file":
                continue
            if any(p == s or p.startswith(s + "/") for s in skip_dirs):
                continue
            rel_top = p[len(top):].lstrip("/")
            if any(c.startswith(".") for c in rel_top.split("/")):
                continue
            name = posixpath.basename(p)
            if not _wanted_in_walk(name):
                continue
            rel = p[len(root):].lstrip("/") if root else p
            self._add_found(fs.unstrip_protocol(p), rel, _join_id(root_id, rel),
                            info.get("size"), fs=fs, fspath=p)
        return len(self.cands) - n0

    # -- one file ----------------------------------------------------------------------------
    def _add_explicit(self, source: str, name: str, identity: str, size: int | None, *,
                      local: bool = False, fs=None, fspath: str | None = None) -> None:
        """A file the user named: included whatever its extension (the decoder decides)."""
        self._add_file(source, name, identity, size, explicit=True, local=local, fs=fs, fspath=fspath)

    def _add_found(self, source: str, rel: str, identity: str, size: int | None, *,
                   local: bool = False, fs=None, fspath: str | None = None) -> None:
        self._add_file(source, rel, identity, size, explicit=False, local=local, fs=fs, fspath=fspath)

    def _add_file(self, source: str, name: str, identity: str, size: int | None, *, explicit: bool,
                  local: bool, fs, fspath: str | None) -> None:
        ext = split_ext(name)[1]
        if ext in TAR_EXTENSIONS or ext in PARQUET_EXTENSIONS:
            self._add_container(source, name, identity, ext, explicit=explicit, local=local, fs=fs,
                                fspath=fspath)
        else:
            key = make_key(name, strip_extension=True)
            self.cands.append(Candidate(key, source, None, size, "file", identity, key))

    def _add_container(self, source: str, name: str, identity: str, ext: str, *,
                       explicit: bool, local: bool, fs, fspath: str | None) -> None:
        group = make_key(name, strip_extension=True)

        def opener():
            return open(source, "rb") if local else fs.open(fspath, "rb")

        if ext in TAR_EXTENSIONS:
            samples = list_tar(opener, source)
            if samples is None:  # not readable as a tar at all: one row that will say why
                self.cands.append(Candidate(group, source, None, None, "wds", identity, group))
                return
            for pos, (member, wkey, size) in enumerate(samples):
                key = make_key(wkey)
                self.cands.append(Candidate(key, source, member, size, "wds", identity, group, pos))
            return
        try:
            column, keys = list_parquet(opener, self.parquet_image_column)
        except NoImageColumn as e:
            # Named: a usage error. Met in a walk: some other table (our own metadata files
            # have no image column), not an input.
            if explicit:
                raise ValueError(f"{printable(source)}: {e}") from None
            log.warning("skipping %s: %s", printable(source), e)
            return
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            log.warning("cannot read Parquet %s: %s", printable(source), e)
            self.cands.append(Candidate(group, source, None, None, "parquet", identity, group))
            return
        for row, kval in enumerate(keys):
            key = make_key(kval) if kval else with_suffix(group, f"{row:08d}")
            self.cands.append(Candidate(key, source, str(row), None, "parquet", identity, group, row,
                                        column))


def _local_path(src: str) -> str:
    if re.match(r"^(file|local)://", src, re.I):
        return fsspec.core.url_to_fs(src)[1]
    return os.path.expanduser(src)


def _local_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _join_id(root_id: str, rel: str) -> str:
    return f"{root_id.rstrip('/')}/{rel.replace(os.sep, '/')}"


def _glob_prefix(pattern: str, sep: str) -> str:
    """The literal directory part of a glob: keys of its matches are relative to it."""
    parts = pattern.split(sep)
    lit: list[str] = []
    for p in parts[:-1]:
        if _GLOB_MAGIC.search(p):
            break
        lit.append(p)
    return sep.join(lit) if lit != [""] else sep


def _literal_ext(pattern: str) -> bool:
    # "photos/*.dat" asks for .dat files; "photos/*" does not ask for MANIFEST.
    ext = split_ext(pattern.replace(os.sep, "/"))[1]
    return bool(ext) and not _GLOB_MAGIC.search(ext)


def _wanted_in_walk(name: str) -> bool:
    ext = split_ext(name.replace(os.sep, "/"))[1]
    return ext in IMAGE_EXTENSIONS or ext in TAR_EXTENSIONS or ext in PARQUET_EXTENSIONS


def _is_our_output_dir(names: set[str], full: Callable[[str], str], fs=None) -> bool:
    """Whether a directory met in a walk holds curastream output (so its shards are not inputs).

    By identity, never by file names (a user may name a photo anything): our ``_curastream/``
    marker (a run in progress or interrupted), or a curastream ``index.json`` (a finished run,
    also of earlier versions). An earlier run's output inside an input folder is not input.
    """
    if OUTPUT_MARK in names:
        return True
    if INDEX_NAME in names:
        try:
            if fs is None:
                with open(full(INDEX_NAME), "rb") as f:
                    head = f.read(4096)
            else:
                with fs.open(full(INDEX_NAME), "rb") as f:
                    head = f.read(4096)
        except OSError:
            return False
        return b"curastream-index" in head
    return False


def _read_files_from(files_from: str, storage_options: dict | None) -> list[tuple[str, str]]:
    if is_remote(files_from):
        with fsspec.open(files_from, "rb", **with_store_timeouts(files_from, storage_options)) as f:
            raw = f.read()
    else:
        path = _local_path(files_from)
        if not os.path.exists(path):
            raise FileNotFoundError(f"files_from list not found: {printable(files_from)}")
        with open(path, "rb") as f:
            raw = f.read()
    # surrogateescape: a list made by `find` may name files whose names are not UTF-8.
    text = raw.decode("utf-8", "surrogateescape")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((s, f"{printable(files_from)}:{n}: "))
    return out


def list_image_inputs(
    srcs: Iterable[str],
    storage_options: dict | None = None,
    files_from: str | None = None,
    parquet_image_column: str | None = None,
    url_list: str | None = None,
    url_options=None,
) -> list[ImageInput]:
    """Expand sources into a deterministic, duplicate-free list of inputs.

    ``srcs``: local dirs (walked recursively), files, globs (``dir/**/*.jpg``), fsspec URLs
    (``s3://``, ``memory://``, ``file://``), ``.tar`` WebDataset shards and ``.parquet`` files
    with a binary image column. ``files_from``: a text file (path or URL) naming one source per
    line; blank lines and lines starting with ``#`` are ignored, relative paths are relative to
    the current directory.

    In directory walks only image, tar and Parquet files are taken; dot-names, temporaries and
    directories holding curastream output are skipped. A file named explicitly is taken whatever
    its extension. A source that does not exist raises :class:`FileNotFoundError`.

    ``url_list``: a Parquet/CSV/TSV/JSONL table of image URLs (images.url_inputs), one input per
    row after the others, keyed by its zero-padded row index.
    """
    if isinstance(srcs, (str, os.PathLike)):
        srcs = [srcs]
    lister = _Lister(storage_options, parquet_image_column)
    entries = [(os.fspath(s), "") for s in srcs]
    if files_from:
        entries += _read_files_from(os.fspath(files_from), storage_options)
    for src, where in entries:
        lister.add_src(src, where)
    out = finalise(lister.cands)
    if url_list:
        out += _url_inputs(url_list, url_options, storage_options, {i.key.lower() for i in out})
    return out


def _url_inputs(url_list: str, url_options, storage_options, taken: set[str]) -> list[ImageInput]:
    import dataclasses

    from curastream.images.url_inputs import UrlOptions, list_url_inputs

    opts = url_options or UrlOptions(storage_options=storage_options)
    rows = list_url_inputs(url_list, opts)
    if not taken:
        return rows
    # a file named 000000007.jpg among the other sources: the row's key takes the URL's hash
    return [dataclasses.replace(r, key=with_suffix(r.key, sha8(r.source))) if r.key.lower() in taken else r
            for r in rows]
