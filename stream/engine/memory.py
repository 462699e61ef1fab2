"""Keep a video run's memory flat: hand freed heap pages back, and let few malloc arenas hold them.

Ninth stop (2026-12-04): the fixed split's spikes were work in flight, not fragmentation. Two
720p cuts with their encoders open while both analysis workers decoded 720p held 358 MB of heap,
against 254 MB at the single pass's highest; ``videos/work_budget.py`` now admits decodes and
cuts against one budget. And :class:`MmapThresholdPin` pins the mmap threshold at 1 MiB while
a clip stage is open, so big blocks go back when freed instead of at the next trim (the older
paragraphs below say why pinning was dropped before: its cost at 64 KiB, and at 1 MiB a ratio
no better while the spikes were still there). Fixed split, 10x / 1x, medians of three: budget
alone 388 -> 439 MB (1.13x), pin alone 363 -> 419 (1.16x), both 366 -> 392 (1.07x) and, as
kept, 365 -> 395 (1.08x), block peaks 355-395; no throughput cost beyond the noise
(docs/PERFORMANCE.md, "Ninth stop").

Eighth stop: much of what the seventh stop took for fragmentation was transparent huge pages.
libx264 and NumPy ask for them on big buffers; the hint outlives the buffer, and pages a trim
handed back came back as 2 MB pages. :mod:`curastream.engine.huge_pages` turns them off while a
clip stage runs. Medians of three, fixed split 10x/1x: 423 -> 477 MB (1.13x) before; after,
386 -> 424 (1.098x), 377 -> 450 (1.19x) and 382 -> 468 (1.22x): levels 2-11% lower, the
ratio no better within the noise of a set (it reads single-block spikes); scenes 520 -> 553
(1.06x). No throughput cost (docs/PERFORMANCE.md, "Eighth stop").

Seventh stop: what is left above a single pass is arena fragmentation (small live blocks
spread over pages no trim can return: 138-209 MB resident on 74-144 MB in use, a trim giving
back 0-17 MB), level after two or three passes, plus short spikes between a free and the next
trim. The heap in use peaks at 204-215 MB in every pass of a 10x run. A 1 MiB or 256 KiB mmap
threshold, ``PYTHONMALLOC=malloc``, one arena, a budget on large encoders and a trim at every
encoder close were measured and not kept (docs/PERFORMANCE.md, "Seventh stop").

Sixth stop (2026-12-03, an Intel machine; the fifth stop's was AMD). :class:`HeapTrimmer` now
also trims as soon as the resident set has grown 32 MB since its last trim (checked every
0.1 s), besides every 0.5 s: trims land when memory comes in, without the fixed 0.1 s clock
that slowed the analysis decodes. ``bench_videos.py --memory --memory-factor 10``, one run per
cell: scenes, old code 623 -> 677 MB (1.09x), new 599 -> 648 (1.08x), 585 -> 630 (1.08x) and
535 -> 573 (1.07x), blocks flat (second half / first half 1.01-1.02x). Fixed, old code
486 -> 582 (1.20x); new, three runs: 446 -> 531 (1.19x), 440 -> 472 (1.07x), 410 -> 453
(1.105x), blocks flat in each (run 1: 510, 483, 488, 502, 506, 500, 524, 500, 505, 506). Each
block holds a wrap-around (the last big videos of one pass cut while the first of the next are
analysed) that the single 1x pass never has; its heap in use is mostly libx264's (~110 MB per
720p encoder; docs/PERFORMANCE.md has the breakdown). Throughput (``--repeat 2``, against the same
run's bare encode): default 1.05 vs 0.98, exact 1.11 vs 1.03, reencode 0.86 vs 0.79, analysis
542 frames/s both; every row's peak RSS 0-5% lower.

Fifth stop (2026-12-03). Once the PyAV cycle below was fixed, the heap *in use* no longer grew
with the number of videos: ``mallinfo2`` sampled through 1x and 3x runs peaked at 215-270 MB
either way. RSS peaked 250-350 MB above it, and more the longer the run. glibc gives each thread
an arena, and what a thread frees stays resident for that arena alone. A video run has a dozen
threads making big allocations (two analysis and two clip workers, the codecs' own threads, six
writers), and :func:`trim` once per video missed what a 20-second cut frees clip by clip. Kept:
:func:`cap_arenas` (2, when a video pipeline is built) and :class:`HeapTrimmer` (every 0.5 s
while a clip stage runs; the sixth stop added the growth trigger).
``bench_videos.py --memory --memory-factor 10``, peak tree RSS 1x -> 10x, one run per cell,
on a machine ~15% slower than at the fourth stop:

=====================================  ===================  ===================
code                                   fixed                scenes
=====================================  ===================  ===================
fourth stop                            453 -> 599 (1.32x)   544 -> 710 (1.30x)
trimmer only                           494 -> 586 (1.19x)   543 -> 648 (1.19x)
trimmer + MALLOC_ARENA_MAX=2 (env)     435 -> 468 (1.07x)   530 -> 591 (1.11x)
trimmer + cap_arenas(2) (kept)         431 -> 450 (1.04x)   522 -> 612 (1.17x)
=====================================  ===================  ===================

The kept run's block peaks: fixed 433 ... 437 MB (second half / first half 0.99x, flat); scenes
535, 559, 539, 545, 544, 591, 591, 602, 565, 594 (1.08x, a drift still open). A budget shared
by the analysis decodes and the cuts (a cut weighing twice its frame size) gave 516 -> 592 and
525 -> 659 and did not move the in-use peaks: not kept. A second scenes run of the kept code
read 509 -> 637 (1.25x; blocks 534 ... 623, 1.02x): what is left moves with the largest overlap
more than with the number of videos. Trimming every 0.1 s read 524 -> 573 (1.09x), but the
analysis-bound rows of bench_videos ran 18-25% slower (--copy 2.12 clips/s against a limit of
870 frames/s; analysis 370 frames/s), so the period stays 0.5 s.

Fourth stop: what grew with the number of videos was not the heap. PyAV's
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
import os
import sys
import threading
import time

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                _libc = lib
            except (OSError, AttributeError):  # musl and other libcs: nothing to trim
                pass
    return _libc or None


def trim() -> None:
    """Return the free pages of every malloc arena to the system (a few ms: once per video)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


M_ARENA_MAX = -8  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1


def cap_arenas(n: int) -> bool:
    """Lets the process's threads share at most ``n`` malloc arenas from now on (process-wide).

    Each arena keeps what its threads freed for those threads alone, so a video run's dozen
    threads (decoders', encoders', workers', writers') each held freed frame buffers resident.
    glibc fixes the limit when it first needs it, after its 8th arena: called later, the cap
    can no longer take effect (returns whether glibc took the setting, not whether it applies).
    Arenas made before the call stay in use: a CLI video run has 3 when its pipeline is built.
    """
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, n))


def resident_bytes() -> int:
    """This process's resident set (one read of /proc/self/statm; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class HeapTrimmer:
    """Trims the heap from a daemon thread while started: every ``period_s`` seconds, and
    sooner when the resident set grew by ``grow_bytes`` since the last trim.

    A 20-second 720p cut frees its encoder's and decoder's buffers clip by clip, long before
    the video ends and :func:`trim` runs (the module docstring has the numbers). A fixed clock
    fast enough for the scenes split's overlaps slowed the analysis decodes (each trim locks
    the arenas and hands back pages a decoder faults in again at once); looking at the RSS
    every ``poll_s`` costs one small read, and trims only when memory came in.
    """

    def __init__(self, period_s: float = 0.5, poll_s: float = 0.1, grow_bytes: int | None = 32 << 20):
        self.period_s = period_s
        self.poll_s = min(poll_s, period_s)
        self.grow_bytes = grow_bytes
        self.trims = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._users = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Starts the thread on the first of nested starts (video pipelines side by side in one process)."""
        with self._lock:
            self._users += 1
            if self._users > 1 or _glibc() is None:
                return
            # a fresh event per thread: a start right after a stop must not revive the old thread
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stop,), name="curastream-trim",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._stop.set()
        thread.join()

    def _run(self, stop: threading.Event) -> None:
        watch = self.grow_bytes is not None
        last = time.monotonic()
        floor = resident_bytes() if watch else 0
        while not stop.wait(self.poll_s):
            grew = False
            if watch:
                rss = resident_bytes()
                floor = min(floor, rss)  # grown since the lowest point after the last trim
                grew = rss - floor >= self.grow_bytes
            if not grew and time.monotonic() - last < self.period_s:
                continue
            trim()
            self.trims += 1
            last = time.monotonic()
            if watch:
                floor = resident_bytes()

    def __enter__(self) -> "HeapTrimmer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# One per process: pipelines running side by side share it (start/stop nest).
HEAP_TRIMMER = HeapTrimmer()


# Blocks from 1 MiB up (x264's pictures, decoders' frame pools, stacked chunks) get their own
# mappings, returned to the system the moment they are freed. With glibc's sliding threshold
# the 1x fixed runs read 370-408 MB (eighth stop); pinned, 358-371, and with the work budget
# beside it a 10x run's block peaks 355-395 (ninth stop; the pin alone left spikes to 445).
PINNED_MMAP_THRESHOLD = 1 << 20
# glibc cannot go back to its sliding threshold once one is set: after a run, blocks up to
# where the sliding one tops out (32 MiB on 64-bit) come from the arenas again, and free()
# keeps up to twice that at the heap's top, as the sliding rule would. Without the second
# setting, image runs after a video run in one process took 3.0-3.2 s instead of 2.8-3.0 s
# (600 images from tars, three runs per process, two processes each way; ninth stop).
RELEASED_MMAP_THRESHOLD = 32 << 20
RELEASED_TRIM_THRESHOLD = 2 * RELEASED_MMAP_THRESHOLD


class MmapThresholdPin:
    """Pins malloc's mmap threshold on the first of nested starts; the last stop sets it to
    :data:`RELEASED_MMAP_THRESHOLD` (and the trim threshold to :data:`RELEASED_TRIM_THRESHOLD`).

    A freed block below the threshold stays in its arena until a trim, and beside it new
    blocks land wherever the arena has room: what a long run holds then depends on when the
    trims came. Above the threshold, where the heap must grow for it, a block gets its own
    mapping and is unmapped when freed (free room already in an arena is used first). Each
    such block costs a mapping and its page faults; the analysis frames and previews, a few
    hundred KB each, stay below 1 MiB. Measured cost: none beyond the noise in bench_videos'
    clip and analysis rows (ninth stop); 64 KiB cost 30% at the first pass of issue 11.
    """

    def __init__(self, threshold: int = PINNED_MMAP_THRESHOLD):
        self.threshold = threshold
        self._users = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._users += 1
            libc = _glibc()
            if self._users == 1 and libc is not None:
                libc.mallopt(M_MMAP_THRESHOLD, self.threshold)

    def stop(self) -> None:
        with self._lock:
            if self._users == 0:  # a stop without its start: a process that never pinned keeps glibc's rule
                return
            self._users -= 1
            libc = _glibc()
            if self._users == 0 and libc is not None:
                libc.mallopt(M_MMAP_THRESHOLD, RELEASED_MMAP_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, RELEASED_TRIM_THRESHOLD)


# One per process, like the trimmer: the threshold is the process's.
MMAP_THRESHOLD = MmapThresholdPin()
