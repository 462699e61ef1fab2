"""One run per output: ``_curastream/lock.json`` names the run that holds the output.

Two runs writing one output lose each other's rejects and index, and a resume would delete the
temporaries of a run still writing. The lock says who holds the output (host, pid, start time,
command) so the second run can be refused with a name, not a corrupted dataset.

A lock whose holder is gone is taken over: on the same host, when its pid is no longer alive; from
another host (or a store several hosts share), when its heartbeat, which the holder rewrites every
``HEARTBEAT_S`` while it runs, is older than ``STALE_AFTER_S``.

Local files are created with O_EXCL, so two starts cannot both win. Object stores have no
exclusive create here: the lock is written, then read back after a pause, and the run that reads
someone else's id backs off; two starts within that pause on one prefix can still both proceed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Callable

from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

# The run's own folder. It holds the run files users read (rejects, summary: kept apart so that
# every ``*.parquet`` at the root is a shard, and pyarrow.dataset skips ``_``-prefixed names) and,
# while a run is in progress, its control files (lock, ownership journal).
MARK_DIR = "_curastream"
LOCK_REL = f"{MARK_DIR}/lock.json"
JOURNAL_DIR = f"{MARK_DIR}/journal"

HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0
_VERIFY_PAUSE_S = 0.3


def is_control_file(rel: str) -> bool:
    """The lock, its half-written rewrites and the journal: the run's machinery, never data."""
    return rel == LOCK_REL or rel.startswith(JOURNAL_DIR + "/") or rel.startswith(f"{MARK_DIR}/lock.json.new-")


_active: set[str] = set()  # run ids of the locks this process holds now


class OutputError(RuntimeError):
    """The output cannot be used as asked; the message is one line for the user."""


class OutputLockedError(OutputError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return False
    return True


def describe(held: dict) -> str:
    started = held.get("started_unix")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    cmd = held.get("command") or "?"
    return f"pid {held.get('pid', '?')} on {held.get('host', '?')}, started {when}: {cmd}"


class OutputLock:
    def __init__(self, storage: Storage, command: str | None = None):
        self.storage = storage
        now = time.time()
        self.run_id = uuid.uuid4().hex[:12]
        self.info = {
            "host": socket.gethostname(), "pid": os.getpid(), "started_unix": round(now, 3),
            "heartbeat_unix": round(now, 3), "command": command or " ".join(sys.argv),
            "run_id": self.run_id,
        }
        self.held = False
        self.on_heartbeat: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- io ----------------------------------------------------------------------------------
    def _path(self) -> str:
        return self.storage.path(LOCK_REL)

    def _data(self) -> bytes:
        return (json.dumps(self.info) + "\n").encode()

    def _read(self) -> dict | None:
        st = self.storage
        try:
            if st.is_local:
                with open(self._path(), "rb") as f:
                    raw = f.read()
            else:
                st._forget_listings(self._path())
                raw = st.fs.cat_file(self._path())
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            return doc if isinstance(doc, dict) else {}
        except ValueError:
            return {}  # being written by its holder, or damaged

    def _age(self) -> float:
        with contextlib.suppress(Exception):
            if self.storage.is_local:
                return time.time() - os.stat(self._path()).st_mtime
            info = self.storage.fs.info(self._path())
            m = info.get("LastModified") or info.get("mtime")
            if hasattr(m, "timestamp"):
                return time.time() - m.timestamp()
            if isinstance(m, (int, float)):
                return time.time() - m
        return 0.0

    def _create_exclusive(self) -> bool:
        p = self._path()
        if self.storage.is_local:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._data())
                f.flush()
                os.fsync(f.fileno())
            return True
        if self._read() is not None:
            return False
        self._write()
        return self._verify()

    def _write(self) -> None:
        p = self._path()
        if self.storage.is_local:
            tmp = f"{p}.new-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(self._data())
            os.replace(tmp, p)
        else:
            self.storage.fs.pipe_file(p, self._data())

    def _verify(self) -> bool:
        time.sleep(_VERIFY_PAUSE_S)
        held = self._read()
        return bool(held) and held.get("run_id") == self.run_id

    def _is_stale(self, held: dict) -> tuple[bool, str]:
        if not held:  # unreadable: a holder mid-write, unless it stays so
            return self._age() > STALE_AFTER_S, "an unreadable lock file, untouched for minutes"
        if held.get("host") == self.info["host"] and isinstance(held.get("pid"), int):
            if held["pid"] == os.getpid():  # a run of this process (the API) whose release failed
                return held.get("run_id") not in _active, "its run in this process has ended"
            return (not _pid_alive(held["pid"])), "its process is gone"
        hb = held.get("heartbeat_unix")
        if not isinstance(hb, (int, float)):
            return self._age() > STALE_AFTER_S, "no heartbeat"
        return time.time() - hb > STALE_AFTER_S, f"no heartbeat for {time.time() - hb:.0f} s"

    # -- public ------------------------------------------------------------------------------
    def acquire(self) -> None:
        for _ in range(3):
            if self._create_exclusive():
                break
            held = self._read()
            if held is None:
                continue  # released between our try and our read
            stale, why = self._is_stale(held)
            if not stale:
                raise OutputLockedError(
                    f"output {self.storage.url()} is in use by another run ({describe(held)}); "
                    f"wait for it to end, or delete {self.storage.url(LOCK_REL)} if that run is gone")
            log.warning("output %s: taking over the lock of a run that is gone (%s; %s)",
                        self.storage.url(), describe(held), why)
            self._write()
            if self._verify():
                break
        else:
            held = self._read() or {}
            raise OutputLockedError(f"output {self.storage.url()} is in use by another run ({describe(held)})")
        self.held = True
        _active.add(self.run_id)
        self._thread = threading.Thread(target=self._beat, name="curastream-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for fn in self.on_heartbeat:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - the run reports store failures itself
                    log.debug("heartbeat task failed", exc_info=True)
            self.info["heartbeat_unix"] = round(time.time(), 3)
            with contextlib.suppress(Exception):
                self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if not self.held:
            return
        self.held = False
        _active.discard(self.run_id)
        held = self._read()
        # Only our own lock: a run that judged us gone and took over keeps its lock.
        if held is not None and held.get("run_id") not in (self.run_id, None):
            return
        st = self.storage
        with contextlib.suppress(Exception):
            if st.is_local:
                os.remove(self._path())
                mark = st.path(MARK_DIR)
                for name in os.listdir(mark):
                    if name.startswith("lock.json.new-"):  # a rewrite cut short by a kill
                        with contextlib.suppress(OSError):
                            os.remove(os.path.join(mark, name))
                for d in (st.path(JOURNAL_DIR), st.path(MARK_DIR)):
                    with contextlib.suppress(OSError):
                        os.rmdir(d)  # only when empty
            else:
                st.fs.rm(self._path())
