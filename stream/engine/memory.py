"""Keep a video run's resident memory flat in the number of videos.

Measured with scripts/bench_videos.py (9 videos, then the same x10): peak RSS went from 346 MB
to 548 MB and kept climbing run-long, while the live data per video in flight stays a few MB.
The cause is glibc's *dynamic* mmap threshold: the first time a large block that came from
mmap is freed (a decoded frame, a stacked chunk of frames), glibc raises the threshold to that
size, and from then on every frame-sized block comes from the heap arenas instead. Each decode,
encode and writer thread gets an arena of its own (up to 8 per core), and freed frames leave
those heaps fragmented, so RSS ratchets up with every new video until all arenas are as large
as the worst video they served. ``malloc_trim`` after each video did not help on its own (the
holes sit between live blocks); capping the arenas at 2 only slowed the climb.

A fixed threshold (setting it switches the dynamic one off) sends frame-sized blocks back to
mmap, which returns them to the system on free. What is left is small blocks spread over the
threads' arenas; handing their free pages back once per finished video (:func:`trim`) takes
the rest of the creep off (~8 MB of 320 at 10x). The peak left is set by which videos are
decoded together, which the analysis stage bounds (``stages._PixelBudget``). Together: 287 MB
at 1x, 315 MB at 10x.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
# Below one analysis frame (256x144 RGB is 108 KiB): those are the blocks freed by the thousand.
MMAP_THRESHOLD = 64 << 10

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = lib
            except (OSError, AttributeError):  # musl and other libcs: nothing to tune
                pass
    return _libc or None


_pinned = False


def fixed_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold for this process; False where there is no glibc."""
    global _pinned
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    _pinned = _pinned or ok
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return ok


def unpin_mmap_threshold() -> None:
    """Undo :func:`fixed_mmap_threshold` as far as glibc allows, for work that wants the heap.

    glibc cannot switch the dynamic threshold back on, so this sets its ceiling (32 MiB on
    64-bit), which is where the dynamic threshold ends up in a busy process anyway. An image
    run after a video run in the same process needs it: at 64 KiB every photo-sized block was
    a page-faulting mmap (0.54x the limit in scripts/bench_images.py instead of 0.8x). Does
    nothing when nothing was pinned, so a fresh process keeps glibc's own behaviour.
    """
    if _pinned:
        fixed_mmap_threshold(32 << 20)


def trim() -> None:
    """Return the free pages of every malloc arena to the system (a few ms: once per video)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
