"""Transparent huge pages off while a video run cuts, so that freed memory goes back to the system.

libx264 asks the kernel for huge pages (``madvise(MADV_HUGEPAGE)``) on every buffer of 1.75 MB or
more, and NumPy on every array of 4 MB or more. The hint stays on that stretch of the malloc heap
after the buffer is freed: a small block glibc later puts there makes a whole 2 MB page
resident, and khugepaged merges pages a trim handed back into 2 MB pages again (a merge needs a
single 4 KB page of the 512 in use). Sampled through a 10x fixed-split ``bench_videos --memory``
run, the process held 58-172 MB of huge pages, and the anonymous memory not in use by malloc
grew from 100 MB (first block of videos) to 160 MB (last); with huge pages off it was 69-75 MB
in the first block and 82-115 MB from the third on, level (docs/PERFORMANCE.md, "Eighth stop").

``prctl(PR_SET_THP_DISABLE)`` is the process's switch (Linux 3.15+). The guard sets it while a
clip stage is open and then restores what was there before, so an embedding program gets its
setting back; in the meantime its own big buffers get no huge pages either.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

PR_SET_THP_DISABLE = 41
PR_GET_THP_DISABLE = 42

_prctl_fn = None


def _prctl(option: int, arg: int = 0) -> int | None:
    """prctl's result, or None where there is no prctl (not Linux) or it refused."""
    global _prctl_fn
    if _prctl_fn is None:
        _prctl_fn = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl
                fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
                fn.restype = ctypes.c_int
                _prctl_fn = fn
            except (OSError, AttributeError):
                pass
    if not _prctl_fn:
        return None
    r = _prctl_fn(option, arg, 0, 0, 0)
    return None if r < 0 else r


def huge_pages_disabled() -> bool | None:
    """Whether this process has transparent huge pages off (None: cannot tell here)."""
    r = _prctl(PR_GET_THP_DISABLE)
    return None if r is None else bool(r)


class HugePageGuard:
    """Turns transparent huge pages off on the first of nested starts and restores the
    process's earlier setting on the last stop (video pipelines side by side in one process)."""

    def __init__(self):
        self._users = 0
        self._restore = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1 and huge_pages_disabled() is False:
                self._restore = _prctl(PR_SET_THP_DISABLE, 1) is not None

    def stop(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._restore:
                _prctl(PR_SET_THP_DISABLE, 0)
                self._restore = False


# One per process, like the heap trimmer: the setting is the process's.
HUGE_PAGES = HugePageGuard()
