"""``_curastream/rejects.parquet``: every input a run did not write, with the stage and the reason, and
whether the failure was transient (worth trying again on resume) or a verdict on the input."""

from __future__ import annotations

import asyncio
import errno
import io
import socket
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from curastream.engine.columns import table
from curastream.engine.lock import MARK_DIR
from curastream.engine.schemas import REJECT_SCHEMA
from curastream.engine.storage import Storage

# Beside the lock, not at the root: every *.parquet at the root is a shard of one schema.
REJECTS_NAME = f"{MARK_DIR}/rejects.parquet"
LEGACY_REJECTS_NAME = "rejects.parquet"  # where versions before 0.3 wrote it

# Reasons of transient failures start with this, so that the mark survives the trip through a
# batch's ``reject_reason`` column (no column of its own there) to the sink that writes rejects.
TRANSIENT_PREFIX = "transient: "

# Library exceptions that are network trouble, by (module prefix, class name); matched by name
# so that neither aiohttp nor botocore has to be importable here.
_TRANSIENT_NAMES = (
    ("aiohttp", "ClientConnectorError"), ("aiohttp", "ClientConnectorDNSError"),
    ("aiohttp", "ClientOSError"), ("aiohttp", "ServerDisconnectedError"), ("aiohttp", "ServerTimeoutError"),
    ("aiohttp", "ClientPayloadError"), ("aiohttp", "ConnectionTimeoutError"), ("aiohttp", "SocketTimeoutError"),
    ("botocore", "EndpointConnectionError"), ("botocore", "ConnectTimeoutError"),
    ("botocore", "ReadTimeoutError"), ("botocore", "ConnectionClosedError"),
    ("urllib3", "ProtocolError"), ("requests", "ConnectionError"), ("requests", "Timeout"),
)


# errnos of I/O that may work a moment later (whatever OSError subclass carries them: PyAV
# raises its own).
_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE,
                     errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ENETDOWN,
                     errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.EPIPE,
                     errno.EACCES, errno.EPERM}


def is_transient_error(e: BaseException) -> bool:
    """Whether ``e`` may not happen again: an I/O error other than "not there" or "not a file",
    a network or connection error, a timeout, a permission error. Corrupt data is not."""
    for x in _chain(e):
        if isinstance(x, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(x, (PermissionError, ConnectionError, TimeoutError, asyncio.TimeoutError, socket.gaierror)):
            return True
        cls = type(x)
        for base in cls.__mro__:
            mod = base.__module__ or ""
            if any(mod.startswith(m) and base.__name__ == n for m, n in _TRANSIENT_NAMES):
                return True
        # A plain OSError carries the failing I/O (EIO, ENETDOWN, ...); its subclasses that
        # say something about the data (e.g. tarfile's ReadError is not an OSError) are not.
        if type(x) is OSError or (isinstance(x, OSError) and x.errno in _TRANSIENT_ERRNOS):
            return True
    return False


def _chain(e: BaseException) -> list[BaseException]:
    out, seen = [], set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        out.append(x)
        x = x.__cause__ or x.__context__
    return out


def transient_reason(reason: str) -> str:
    return reason if reason.startswith(TRANSIENT_PREFIX) else TRANSIENT_PREFIX + reason


def is_transient_reason(reason: str | None) -> bool:
    return bool(reason) and reason.startswith(TRANSIENT_PREFIX)


def reject_row(image_id: str | None, source: str, source_member: str | None, stage: str, reason: str,
               duplicate_of: str | None = None) -> dict[str, Any]:
    """One rejects row; ``transient`` follows from the reason's prefix."""
    return {"image_id": image_id, "source": source, "source_member": source_member, "stage": stage, "reason": reason,
            "duplicate_of": duplicate_of, "transient": is_transient_reason(reason)}


def _identity(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r.get("image_id") or "", r["source"], r.get("source_member") or "")


def write_rejects(storage: Storage, rows: Iterable[dict[str, Any]], schema: pa.Schema = REJECT_SCHEMA) -> int:
    """Commit all ``rows`` atomically, one per input (the last word on an input wins), sorted
    so that the same run gives the same bytes however its work was scheduled."""
    unique = {_identity(r): r for r in rows}
    ordered = [unique[k] for k in sorted(unique)]
    buf = io.BytesIO()
    cols = {f.name: [r.get(f.name) for r in ordered] for f in schema}
    cols["transient"] = [bool(r.get("transient")) for r in ordered]
    pq.write_table(table(cols, schema), buf, compression="zstd")
    storage.write_atomic(REJECTS_NAME, buf.getvalue(), rows=len(ordered))
    _drop_legacy(storage)
    return len(ordered)


def _drop_legacy(storage: Storage) -> None:
    # A resumed output of an earlier version: its root rejects.parquet (read into ``rows`` on
    # resume) would break ``*.parquet`` globs; removed only when this tool wrote it.
    if storage.owns(LEGACY_REJECTS_NAME) and storage.exists(LEGACY_REJECTS_NAME):
        storage.delete(LEGACY_REJECTS_NAME)


def read_rejects(storage: Storage) -> list[dict[str, Any]]:
    """The rows, each with ``image_id`` (``key`` in earlier versions) and ``transient`` (False
    in files written before the column existed). Reads the earlier root location as well."""
    rows: list[dict[str, Any]] = []
    for name in (LEGACY_REJECTS_NAME, REJECTS_NAME):
        if name == LEGACY_REJECTS_NAME and not storage.owns(name):
            continue  # someone else's file at the root is not our record
        if storage.exists(name):
            rows += pq.read_table(io.BytesIO(storage.read_bytes(name))).to_pylist()
    for r in rows:
        if "key" in r:
            r.setdefault("image_id", r.pop("key"))
        r["transient"] = bool(r.get("transient"))
    return rows
