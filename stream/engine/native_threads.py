"""Keep native libraries from adding threads of their own while a pipeline runs.

The engine already runs the heavy stages on as many threads as there are cores. OpenBLAS (behind
NumPy's matmul: the pHash DCT, the motion kernels) would add its own pool per call, and its idle
workers spin between calls: on a 2-core machine that stole ~1 CPU-s from the decoders in a
600-image run (measured: 10.4 -> 9.0 CPU-s, see docs/PERFORMANCE.md). OpenCV's pool does the same
on a smaller scale: it splits each resize and colour conversion across its own threads, which
here only adds hand-offs (cv2.resize INTER_AREA of the decoded photos: 1.11 -> 1.01 CPU-ms per
image on one thread). Both limits are process-wide (that is how the libraries work), so they are
taken for the length of a run and put back after, with a count so that two pipelines running at
once do not undo each other's.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_restore: list = []


def _limit_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a declared dependency; degrade, do not fail
        return None
    return threadpool_limits(limits=1, user_api="blas").restore_original_limits


def _limit_opencv():
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv-python-headless is installed with the project
        return None
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    return lambda: cv2.setNumThreads(before)


@contextlib.contextmanager
def single_threaded_native() -> Iterator[None]:
    global _depth
    with _lock:
        if _depth == 0:
            # OpenCV first: importing it can load a BLAS of its own, which the BLAS limit
            # must then see.
            _restore[:] = [r for r in (_limit_opencv(), _limit_blas()) if r is not None]
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for restore in _restore:
                    restore()
                _restore.clear()
