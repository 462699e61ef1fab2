"""What to do with an output location that already has files: error, resume or overwrite.

Safety rules (every run, both media):

- The output may not be, contain or lie inside an input location: refused before anything is
  written (a mistyped ``--output photos`` must never put the photos in reach of an overwrite).
- One run per output (:mod:`curastream.engine.lock`).
- Overwrite and resume delete only what this tool wrote here (:mod:`curastream.engine.ownership`):
  owned files and our own temporaries. Other files are kept and named in one log line. A file
  we own that cannot be deleted stops the run with an error, never stale shards beside new ones.
  An output whose foreign files carry names a run writes as its record (``index.json``,
  ``_curastream/rejects.parquet``, ``summary.json``, ``run.json``) is refused: committing would
  replace them. A resume with other output-shaping settings is refused too
  (:mod:`curastream.engine.run_settings`). Resuming an output that has no record at all (an earlier version's interrupted run, a deleted index) is
  the user saying it is ours: its layout files are adopted and its temporaries removed, still
  nothing else deleted.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from typing import Iterable

from curastream.engine.lock import (  # noqa: F401
    JOURNAL_DIR, LOCK_REL, MARK_DIR, OutputError, OutputLock, OutputLockedError, is_control_file)
from curastream.engine.ownership import RUN_FILES, Ownership
from curastream.engine.run_index import INDEX_NAME
from curastream.engine.run_settings import check_resume_settings, write_settings
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

ON_EXISTING = ("error", "resume", "overwrite")
RESERVED_NAMES = (INDEX_NAME, *sorted(RUN_FILES))
_GLOB_MAGIC = re.compile(r"[*?[]")


class OutputExistsError(OutputError):
    pass


class OutputOverlapError(OutputError):
    pass


class OutputDeleteError(OutputError):
    pass


# -- inputs vs output ----------------------------------------------------------------------------
def _location(s: str) -> tuple[str, str]:
    """(scheme, normalised path) of an input or output; globs stand for their literal folder."""
    s = str(s)
    m = re.match(r"^(file|local)://", s, re.I)
    if m:
        s = s[m.end():]
    if "://" in s:
        proto, rest = s.split("://", 1)
        proto = proto.lower()
        proto = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}.get(proto, proto)
        parts = rest.split("/")
        for i, p in enumerate(parts):
            if _GLOB_MAGIC.search(p):
                parts = parts[:i]
                break
        rest = posixpath.normpath("/" + "/".join(parts)).strip("/")
        return proto, rest
    s = os.path.expanduser(s)
    if _GLOB_MAGIC.search(s):
        parts = s.split(os.sep)
        for i, p in enumerate(parts):
            if _GLOB_MAGIC.search(p):
                s = os.sep.join(parts[:i]) or os.sep
                break
    return "local", os.path.realpath(s)


def _within(inner: str, outer: str, sep: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(sep) + sep) or outer in ("", sep)


def check_not_overlapping(output: str, sources: Iterable[str]) -> None:
    """Refuse an output that is, contains or is inside an input location (exit 2, one line)."""
    o_scheme, o_path = _location(output)
    sep = os.sep if o_scheme == "local" else "/"
    for src in sources:
        if not src:
            continue
        s_scheme, s_path = _location(src)
        if s_scheme != o_scheme:
            continue
        if o_path == s_path or _within(o_path, s_path, sep):
            how = "is the input" if o_path == s_path else "is inside the input"
        elif _within(s_path, o_path, sep):
            how = "contains the input"
        else:
            continue
        raise OutputOverlapError(f"output {output} {how} {src}; choose an output outside every input")


# -- preparing -----------------------------------------------------------------------------------
def _ours_and_foreign(storage: Storage, own: Ownership) -> tuple[list[str], list[str]]:
    files = [r for r in storage.list_files() if not is_control_file(r)]
    ours = [r for r in files if own.is_deletable(r)]
    foreign = [r for r in files if not own.is_deletable(r)]
    return ours, foreign


def _note_foreign(storage: Storage, foreign: list[str], clash_ok: bool) -> None:
    # clash_ok: resuming an output with no record, the user says its rejects.parquet is ours
    if not foreign:
        return
    clash = [r for r in foreign if r in RESERVED_NAMES]
    if clash and not clash_ok:
        raise OutputExistsError(
            f"output {storage.url()} holds {', '.join(clash)} that curastream did not write; a run "
            "would replace it: move it away or choose another output")
    shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
    log.warning("output %s: keeping %d file(s) curastream did not write: %s", storage.url(), len(foreign), shown)


def prepare_output(storage: Storage, on_existing: str, own: Ownership) -> bool:
    """Make ``storage`` ready for a run (the lock is held). Returns True when resuming."""
    if on_existing not in ON_EXISTING:
        raise ValueError(f"on_existing must be one of {ON_EXISTING}, not {on_existing!r}")
    ours, foreign = _ours_and_foreign(storage, own)
    has_journal = bool(storage.list_files(JOURNAL_DIR))
    if not ours and not foreign and not has_journal:
        return False
    if on_existing == "error":
        if ours or has_journal:
            raise OutputExistsError(
                f"output {storage.url()} holds an earlier run; pass --on-existing resume to continue "
                "it or --on-existing overwrite to replace it (only files curastream wrote are removed)")
        raise OutputExistsError(
            f"output {storage.url()} is not empty and has no record of a curastream run; choose a new "
            "or empty folder (--on-existing resume continues an interrupted run whose record is lost)")
    if on_existing == "resume":
        foreign = [r for r in foreign if not own.claims(r)]
    _note_foreign(storage, foreign, clash_ok=on_existing == "resume" and not own.recorded)
    if on_existing == "overwrite":
        log.info("removing %d file(s) of an earlier run in %s", len(ours), storage.url())
        # index.json last but one, the journal last: a failure part-way leaves the record of what
        # is still ours, so a rerun can finish the job.
        for rel in sorted(ours, key=lambda r: r == INDEX_NAME):
            try:
                storage.remove(rel)
            except Exception as e:  # noqa: BLE001 - any failure: stop and say which file
                raise OutputDeleteError(
                    f"overwrite stopped: cannot delete {storage.url(rel)} ({type(e).__name__}: {e}); "
                    "nothing new was written") from e
        own.forget_all()
        return False
    temps = [r for r in ours if own.is_ours_temp(r)]
    for rel in temps:
        storage.delete(rel)
    if temps:
        log.info("resume: removed %d temporary file(s) left by an interrupted run", len(temps))
    # The index is the commit point of a *finished* run; a resumed run rewrites it at its end.
    if own.owns(INDEX_NAME) and storage.exists(INDEX_NAME):
        own.carry_index()
        storage.delete(INDEX_NAME)
    return True


class OutputSession:
    """The output of one run: overlap check, lock, ownership record, prepared output.

    Use as a context manager around the run; on exit the journal is flushed (and dropped when a
    finished index.json lists everything) and the lock is released, also on errors and Ctrl-C.
    """

    def __init__(self, output: str, storage_options: dict | None, on_existing: str,
                 sources: Iterable[str], storage: Storage | None = None, kind: str | None = None,
                 settings: dict | None = None):
        check_not_overlapping(output, list(sources))
        self.storage = storage or Storage(output, storage_options)
        self.lock = OutputLock(self.storage)
        self.lock.acquire()
        try:
            self.ownership = Ownership(self.storage, self.lock.run_id)
            self.lock.on_heartbeat.append(self.ownership.flush)
            if on_existing == "resume" and kind is not None and settings is not None:
                check_resume_settings(self.storage, kind, settings)  # before anything is deleted
            self.resuming = prepare_output(self.storage, on_existing, self.ownership)
            self.storage.on_write = self.ownership.record
            self.storage.owns = self.ownership.claims
            if kind is not None and settings is not None:
                write_settings(self.storage, kind, settings)
        except BaseException:
            self.lock.release()
            raise

    def __enter__(self) -> "OutputSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(finished=exc_type is None)

    def close(self, finished: bool = False) -> None:
        try:
            self.storage.on_write = None
            if finished:
                self.ownership.drop_journal_if_indexed()
            else:
                self.ownership.close()
        finally:
            self.lock.release()
