"""Opening an encoder without real-time threads.

SVT-AV1 (libsvtav1, the edge encoder of AV1 smart cuts) switches the thread that opens it to
SCHED_FIFO at priority 99 when the process runs as root, as it does in containers and on this
project's CI, and the ~40 threads it starts inherit that. Measured: a 320x240 encoder opened
from a worker thread left 42 real-time threads on a 2-core machine, and the worker itself stayed
real-time for the rest of the run, cutting every later video ahead of the analysis, the writers
and the kernel's own work. Real-time priority is the user's to give, not a codec's: the threads
an open made real-time go back to normal scheduling right after it.
"""

from __future__ import annotations

import os
import sys

_REALTIME = tuple(getattr(os, name) for name in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, name))


def open_encoder(cc) -> None:
    """Open ``cc`` (a PyAV CodecContext with every setting made) and return any thread the open
    made real-time to normal scheduling."""
    before = _realtime_threads()
    cc.open()
    if before is not None:
        demote(_realtime_threads() - before)


def demote(tids) -> None:
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:  # the thread ended meanwhile
            pass


def _realtime_threads() -> set[int] | None:
    """The process's real-time threads; None where no open can make one (not Linux, not root)."""
    if not sys.platform.startswith("linux") or not _REALTIME or os.geteuid() != 0:
        return None
    found = set()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for name in tids:
        try:
            if os.sched_getscheduler(int(name)) in _REALTIME:
                found.add(int(name))
        except OSError:
            pass
    return found
