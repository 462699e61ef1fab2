"""Why an input could not be read, in words: maps OS, tar and Parquet failures to the reject
reasons a user acts on (marking the transient ones, so a resume tries them again), and turns a
reading that raises into per-input errors, because one bad source must be its inputs' reject and
never the end of the run.
"""

from __future__ import annotations

import tarfile
from typing import Callable, Iterator

from curastream.images.containers import TAR_ERRORS
from curastream.images.inputs import ImageInput
from curastream.images.samples import LoadedImage
from curastream.writers.rejects import is_transient_error, transient_reason


class NotAFileError(Exception):
    """A named input that is not a regular file (FIFO, device, dangling link): its reject, not
    an open that may block forever."""


def _os_error(e: BaseException) -> str:
    if isinstance(e, PermissionError):
        why = f"permission denied: {e}"
    elif isinstance(e, FileNotFoundError):
        why = f"file vanished since listing: {e}"
    elif isinstance(e, IsADirectoryError):
        why = f"is a directory: {e}"
    else:
        why = f"read failed: {type(e).__name__}: {e}"
    return transient_reason(why) if is_transient_error(e) else why


def _tar_error(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, tarfile.TarError):
        return _os_error(e)
    return f"truncated or corrupt tar: {e}"


def _parquet_error(e: BaseException) -> str:
    why = f"cannot read Parquet: {type(e).__name__}: {e}"
    return transient_reason(why) if is_transient_error(e) else why


def _tar_open_error(opener: Callable) -> str:
    try:
        with opener() as f, tarfile.open(fileobj=f, mode="r:*") as tf:
            tf.next()
    except TAR_ERRORS as e:
        return _tar_error(e)
    return "tar could not be listed"


def _parquet_open_error(opener: Callable) -> str:
    import pyarrow.parquet as pq

    try:
        with opener() as f:
            pq.ParquetFile(f)
    except Exception as e:  # noqa: BLE001
        return _parquet_error(e)
    return "Parquet file could not be listed"


def _guarded(run: list[ImageInput], items: Iterator[LoadedImage]) -> Iterator[LoadedImage]:
    """``items``, and an error item for each input of ``run`` they did not come to when the
    reading raised: whatever one source does (a URL whose host does not resolve, a tar that
    kills the decompressor) is its inputs' reject, not the end of the run."""
    met: set[int] = set()
    try:
        for li in items:
            met.add(id(li.input))
            yield li
    except Exception as e:  # noqa: BLE001 - per-input errors, see above
        why = _os_error(e) if isinstance(e, OSError) else f"read failed: {type(e).__name__}: {e}"
        if not isinstance(e, OSError) and is_transient_error(e):
            why = transient_reason(why)
        for inp in run:
            if id(inp) not in met:
                yield LoadedImage(inp, None, {}, why)
