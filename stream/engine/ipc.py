"""Result batches as a live Arrow IPC stream (zstd-compressed buffers).

``--emit-ipc PATH`` (or ``-`` for stdout) lets another process, DuckDB or Polars read the
run's records while it is going: each batch is flushed as soon as it is written out.
"""

from __future__ import annotations

import sys
import threading
from typing import BinaryIO

import pyarrow as pa

BYTE_COLUMNS = ("data", "image_bytes", "media", "preview")


class IpcEmitter:
    def __init__(self, target: str, include_bytes: bool = False):
        self.target = target
        self.include_bytes = include_bytes
        self._sink: BinaryIO | None = None
        self._own_file = False
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema: pa.Schema | None = None
        self._lock = threading.Lock()

    def _open(self, schema: pa.Schema) -> None:
        if self.target == "-":
            self._sink = sys.stdout.buffer
        else:
            self._sink = open(self.target, "wb")
            self._own_file = True
        opts = pa.ipc.IpcWriteOptions(compression="zstd")
        self._writer = pa.ipc.new_stream(self._sink, schema, options=opts)
        self._schema = schema

    def emit(self, batch: pa.RecordBatch) -> None:
        if not self.include_bytes:
            keep = [n for n in batch.schema.names if n not in BYTE_COLUMNS]
            batch = batch.select(keep)
        with self._lock:
            if self._writer is None:
                self._open(batch.schema)
            self._writer.write_batch(batch)
            self._sink.flush()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._sink.flush()
            if self._own_file and self._sink is not None:
                self._sink.close()
            self._writer = None
