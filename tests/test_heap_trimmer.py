"""The heap trimmer hands freed heap pages back while a video run goes on: memory a finished cut
freed in the middle of an arena stays resident until something trims it (glibc returns only the
top of a heap by itself). Measured on RSS with a margin far above what a busy machine moves in
a second; glibc only (other C libraries have nothing to trim)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
import time

import pytest

from curastream.engine.memory import HeapTrimmer, _glibc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None,
                                reason="malloc_trim is glibc's")

CHUNK = 64 << 10  # under glibc's smallest mmap threshold: these come from the heap
COUNT = 3200  # 200 MiB


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _free_below_a_pin(libc) -> tuple[int, float]:
    """Allocates and touches 200 MiB, keeps a small block above it, frees the rest: the free
    pages stay resident (they are not at the top of the heap). Returns the pin and the RSS."""
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(CHUNK) for _ in range(COUNT)]
    for b in blocks:
        ctypes.memset(b, 1, CHUNK)
    pin = libc.malloc(CHUNK)
    ctypes.memset(pin, 1, CHUNK)
    for b in blocks:
        libc.free(b)
    return pin, _rss_mb()


def test_trimmer_returns_freed_heap_pages_while_running():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    pin, before = _free_below_a_pin(libc)
    try:
        time.sleep(0.5)
        assert _rss_mb() > before - 50, "freed pages went back without a trim: the test measures nothing"
        trimmer = HeapTrimmer(period_s=0.1)
        with trimmer:
            deadline = time.monotonic() + 10
            while _rss_mb() > before - 150 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _rss_mb() <= before - 150
        assert trimmer.trims >= 1 and trimmer._thread is None
    finally:
        libc.free(pin)


@pytest.mark.parametrize("grow,trims_early", [(32 << 20, True), (None, False)])
def test_trimmer_trims_as_soon_as_memory_comes_in(grow, trims_early):
    """With the clock a minute long, only the resident set's growth can make it trim early: 64 MiB
    coming in must hand back the 200 MiB freed before. The control (no growth trigger) leaves
    them resident for that time."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    pin, before = _free_below_a_pin(libc)
    try:
        trimmer = HeapTrimmer(period_s=60, poll_s=0.05, grow_bytes=grow)
        with trimmer:
            time.sleep(0.3)  # the thread has read its starting point
            incoming = mmap.mmap(-1, 64 << 20)  # not from malloc: it cannot reuse the freed pages
            page = b"\x01" * 4096  # no big temporary: its free could return pages by itself
            for _ in range(16 << 10):
                incoming.write(page)
            deadline = time.monotonic() + 3
            while _rss_mb() > before - 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (_rss_mb() <= before - 100) is trims_early
            assert (trimmer.trims >= 1) is trims_early
            incoming.close()
    finally:
        libc.free(pin)


def test_trimmer_runs_once_for_nested_users_and_stops_with_the_last():
    trimmer = HeapTrimmer(period_s=0.05)
    trimmer.start()
    thread = trimmer._thread
    trimmer.start()  # a second pipeline in the same process
    assert trimmer._thread is thread and thread.is_alive()
    trimmer.stop()
    assert thread.is_alive()  # the other user still runs
    trimmer.stop()
    assert trimmer._thread is None and not thread.is_alive()
    trimmer.stop()  # one stop too many does nothing


_ARENAS_SCRIPT = r"""
import ctypes, ctypes.util, re, sys, tempfile, threading
from curastream.engine.memory import cap_arenas
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
if sys.argv[1] == "cap":
    cap_arenas(2)
def work():  # each thread's first allocation takes an arena: a new one while the limit allows
    blocks = [bytearray(200_000) for _ in range(20)]
    barrier.wait()
barrier = threading.Barrier(12)
threads = [threading.Thread(target=work) for _ in range(12)]
for t in threads: t.start()
for t in threads: t.join()
path = tempfile.mktemp()
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
print(len(re.findall(r'<heap nr="', open(path).read())))
"""


@pytest.mark.parametrize("how,most", [("cap", 2), ("no cap", None)])
def test_cap_arenas_limits_the_heaps_threads_get(how, most):
    import subprocess

    got = int(subprocess.run([sys.executable, "-c", _ARENAS_SCRIPT, how], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip())
    if most is None:
        assert got > 2  # the control: without the cap, a dozen threads spread over more arenas
    else:
        assert got <= most


# Where a freed 2 MiB block goes, read from glibc's own count of mmapped bytes (hblkhd): after
# an 8 MiB block is freed, the sliding threshold keeps 2 MiB blocks in the heap (the control);
# pinned, each is its own mapping, gone from the process the moment it is freed; released, the
# heap takes them again. The threshold decides only where the heap must grow: free room already
# in an arena is used first, so each probe starts from a trimmed heap.
_MMAP_SCRIPT = r"""
import ctypes, ctypes.util
from curastream.engine.memory import MmapThresholdPin
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MI
libc.malloc_trim.argtypes = [ctypes.c_size_t]
def mapped_while_held():
    libc.malloc_trim(0)  # a free chunk big enough would be reused whatever the threshold
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(2 << 20)
    held = libc.mallinfo2().hblkhd - before
    libc.free(p)
    return held, libc.mallinfo2().hblkhd - before
libc.free(libc.malloc(8 << 20))  # glibc slides its threshold up to a freed mapping's size
out = [mapped_while_held()]
pin = MmapThresholdPin()
pin.start(); pin.start(); pin.stop()  # nested: still pinned after the inner stop
out.append(mapped_while_held())
pin.stop()
out.append(mapped_while_held())
print(out)
"""


def test_a_pinned_mmap_threshold_hands_big_blocks_back_as_they_are_freed():
    import ast
    import ctypes.util
    import subprocess

    libc = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or libc is None or not hasattr(ctypes.CDLL(libc), "mallinfo2"):
        pytest.skip("glibc's mallinfo2 is needed to see where blocks come from")
    sliding, pinned, released = ast.literal_eval(subprocess.run(
        [sys.executable, "-c", _MMAP_SCRIPT], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert sliding == (0, 0), "the control: after a big free, 2 MiB blocks come from the heap"
    assert pinned[0] >= 2 << 20 and pinned[1] == 0, "pinned: a 2 MiB block is mapped, and unmapped on free"
    assert released == (0, 0), "after the last stop, the heap takes them again"
