"""Hand freed heap pages back to the system between big items (videos).

What grew with the number of videos was found on 2026-12-03, and it was not the heap: PyAV's
``frame.side_data`` puts every frame whose motion vectors are read in a reference cycle that
only a full GC collection frees (``videos/motion_side_data.py`` reads them off a fresh carrier
frame instead). ``bench_videos.py --memory --memory-factor 10``, peak tree RSS 1x -> 10x, one
run per cell: scenes 1151 -> 1684 MB before, 544 -> 710 MB after (1.46x -> 1.30x); fixed
681 -> 797 MB before, 453 -> 599 MB after (1.17x -> 1.32x; both "before" rows already with the
per-stage trim below). The bench now also prints the peak of every block of 1x videos in the
10x run. Fixed: 541, 576, 572, 556, 553, 598, 564, 549, 558, 542 MB, no growth; its ratio is the
1x run's peak sitting below every block's (one 1x run has no block boundary, where one pass's
last big videos meet the next pass's first). Scenes: 549, 554, 638, 630, 648, 616, 615, 678, 672,
710 MB, still a small drift (second half / first half 1.09x; 1.02x in another run). :func:`trim`
now also runs after each video's analysis and cut, not only once the sink has written the
video. A pixel budget on the clip stage's cuts (one 720p cut at a time, as the analysis admits
decodes) cost 10-15% of the default mode's throughput (0.87 vs 0.97-1.0 clips/s) and was not
kept (with it: scenes 519 -> 655, fixed 538 -> 538 MB).

The history below is what was tried before the cycle was found.

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
(cheap, a few ms) and the analysis stage's pixel budget (``videos.pixel_budget``).

Reusing the analysis decode's chunk buffers was built, tested and NOT kept (the session note of
2026-12-03 has the table): a pool that hands a chunk's buffer out again only once nothing
references it (every consumer copies what it keeps past a chunk) left the numbers where they
were. ``bench_videos.py --memory --memory-factor 10`` (21 videos, 1 run per cell, +-10% noise),
peak tree RSS 1x -> 10x, fixed split: before 751 -> 989 MB (1.32x, load 4-15); with the pool
789 -> 999 MB (1.27x, load 1-10). Scenes, before: 1207 -> 1907 (1.58x) and 1156 -> 2124 MB
(1.84x) in two runs; with the pool 1031 -> 2407 MB (2.33x), one run. So the chunk buffers are
not what grows. Sampled every 3 s through a 10x fixed run, RSS swings 360-900 MB with the videos
in flight and the per-21-video maximum shows no trend (715, 842, 820, 863, 818, 894, 775, 790,
690, 716 MB): the fixed ratio looks like the peak of more, differently mixed overlaps rather
than a ratchet. Scenes does grow (~+1 GB at 10x) and is the open item. A malloc arena cap
(``mallopt(M_ARENA_MAX, 2)`` when the analyze stage opens) lowered both ends by ~10% but not
the ratio (703 -> 896 MB, 1.27x, quiet machine; CPU seconds no higher) and was not kept either:
it misses the target as well, is process-wide, and the first run with it stalled for minutes in
a libsvtav1 edge encode (idle on SVT's semaphores; not shown to be caused by the cap, not seen without it).
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
