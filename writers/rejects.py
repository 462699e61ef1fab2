"""``rejects.parquet``: every input a run did not write, with the stage and the reason."""

from __future__ import annotations

import io
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from curastream.engine.columns import table
from curastream.engine.schemas import REJECT_SCHEMA
from curastream.engine.storage import Storage

REJECTS_NAME = "rejects.parquet"

def _identity(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r.get("key") or "", r["source"], r.get("source_member") or "")


def write_rejects(storage: Storage, rows: Iterable[dict[str, Any]]) -> int:
    """Commit all ``rows`` atomically, one per input (the last word on an input wins), sorted
    so that the same run gives the same bytes however its work was scheduled."""
    unique = {_identity(r): r for r in rows}
    ordered = [unique[k] for k in sorted(unique)]
    buf = io.BytesIO()
    cols = {f.name: [r.get(f.name) for r in ordered] for f in REJECT_SCHEMA}
    pq.write_table(table(cols, REJECT_SCHEMA), buf, compression="zstd")
    storage.write_atomic(REJECTS_NAME, buf.getvalue(), rows=len(ordered))
    return len(ordered)


def read_rejects(storage: Storage) -> list[dict[str, Any]]:
    if not storage.exists(REJECTS_NAME):
        return []
    return pq.read_table(io.BytesIO(storage.read_bytes(REJECTS_NAME))).to_pylist()
