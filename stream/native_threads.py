"""Keep native libraries from adding threads of their own while a pipeline runs.

The engine already runs the heavy stages on as many threads as there are cores. OpenBLAS (behind
NumPy's matmul: luma weights, the pHash DCT) would add its own pool per call, and its idle
workers spin between calls: on a 2-core machine that stole ~1 CPU-s from the decoders in a
600-image run (measured: 10.4 -> 9.0 CPU-s, see docs/PERFORMANCE.md). The limit is process-wide
(that is how OpenBLAS works), so it is taken for the length of a run and put back after, with a
count so that two pipelines running at once do not undo each other's.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_limiter = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - a declared dependency; degrade, do not fail
                _limiter = None
            else:
                _limiter = threadpool_limits(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None
