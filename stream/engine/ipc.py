"""Result batches as a live Arrow IPC stream (zstd-compressed buffers).

``--emit-ipc PATH`` (or ``-`` for stdout) lets another process, DuckDB or Polars read the
run's records while it is going: each batch is flushed as soon as it is written out.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from typing import BinaryIO

import pyarrow as pa

BYTE_COLUMNS = ("data", "image_bytes", "media", "preview")

log = logging.getLogger(__name__)


def _is_broken_pipe(e: BaseException) -> bool:
    # pyarrow re-raises a failed write of a Python file object as the original OSError, but
    # an Arrow IOError carrying only the text is possible too
    return isinstance(e, BrokenPipeError) or getattr(e, "errno", None) == errno.EPIPE \
        or "Broken pipe" in str(e)


class IpcEmitter:
    def __init__(self, target: str, include_bytes: bool = False):
        self.target = target
        self.include_bytes = include_bytes
        self._sink: BinaryIO | None = None
        self._own_file = False
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema: pa.Schema | None = None
        self._lock = threading.Lock()
        self._gone = False  # the reader closed the pipe

    def _open(self, schema: pa.Schema) -> None:
        if self.target == "-":
            self._sink = sys.stdout.buffer
        else:
            # the config check allows a folder that does not exist yet: make it now
            os.makedirs(os.path.dirname(os.path.abspath(self.target)), exist_ok=True)
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
            if self._gone:
                return
            try:
                if self._writer is None:
                    self._open(batch.schema)
                self._writer.write_batch(batch)
                self._sink.flush()
            except Exception as e:
                if not _is_broken_pipe(e):
                    raise
                self._drop_reader()

    def _drop_reader(self) -> None:
        """The reader closed its end (``--emit-ipc - | head``): the tee is optional, the run's
        own output is not, so the stream ends here quietly and the run goes on."""
        self._gone = True
        self._writer = None
        log.warning("IPC reader closed the stream; the run goes on without it")
        if self.target == "-":
            # What is still buffered for stdout would fail again when Python flushes it at exit
            # ("Exception ignored ... BrokenPipeError"); stdout now leads nowhere, as Python's
            # docs on SIGPIPE advise.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
        elif self._own_file and self._sink is not None:
            try:
                self._sink.close()
            except OSError:
                pass
            self._sink = None

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                try:
                    self._writer.close()
                    self._sink.flush()
                except Exception as e:
                    if not _is_broken_pipe(e):
                        raise
                    self._drop_reader()
            if self._own_file and self._sink is not None:
                self._sink.close()
            self._writer = None
