"""Hand freed heap pages back to the system between big items (videos).

Measured with scripts/bench_videos.py (9 videos, then the same x10): peak RSS grows with the
number of videos (346 -> 548 MB before this round) while the live data per video in flight
stays a few MB. The cause is glibc's *dynamic* mmap threshold: once a large block that came
from mmap is freed (a stacked chunk of frames), glibc raises the threshold to its size, and
from then on frame-sized blocks come from the per-thread heap arenas, which fragment and
ratchet up with every video.

Pinning the threshold (``mallopt(M_MMAP_THRESHOLD)``) was measured and NOT kept: at 64 KiB the
video run stayed flat (287 -> 315 MB) but cost ~30% throughput (analysis 0.85x -> 0.50x the
bare decode; every frame-sized block became a page-faulting mmap) and, being process-wide,
made a later image run in the same process 0.54x the limit instead of 0.8x; at 1 MiB it was
1.17x at 10x and still ~10-20% slower. What is kept is :func:`trim` once per finished video
(cheap, a few ms) and the analysis stage's pixel budget (``videos.analyze._PixelBudget``); the
real fix is to stop the churn (reuse frame buffers across chunks), left open.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = lib
            except (OSError, AttributeError):  # musl and other libcs: nothing to trim
                pass
    return _libc or None


def trim() -> None:
    """Return the free pages of every malloc arena to the system (a few ms: once per video)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
