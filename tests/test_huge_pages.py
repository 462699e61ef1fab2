"""While a video run cuts, the process takes no transparent huge pages, and gets its own setting
back afterwards. Read from the kernel's own accounting (AnonHugePages in /proc/self/smaps) of a
region that asks for huge pages, as libx264 and NumPy ask for theirs. Each case runs in a fresh
process: the setting is the whole process's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")

# Maps 16 MiB that ask for huge pages, touches every page, prints the huge-page kB of that mapping.
PROBE = textwrap.dedent("""
    import ctypes, mmap
    def huge_kb():
        m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(mmap.MADV_HUGEPAGE)
        for off in range(0, len(m), 4096):
            m[off] = 1
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        found, kb = False, 0
        for line in open("/proc/self/smaps"):
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                found = lo <= addr < hi
            elif found and head == "AnonHugePages:":
                kb += int(line.split()[1])
        return kb
""")


def _run(body: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE + textwrap.dedent(body)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.fixture(scope="module")
def thp_available():
    mode = THP.read_text() if THP.exists() else "[never]"
    if "[never]" in mode:
        pytest.skip(f"transparent huge pages are off on this machine ({THP}: {mode.strip()})")
    (kb,) = _run("print(huge_kb())")
    if int(kb) == 0:  # the control: without it the test below could not fail
        pytest.skip("the kernel gave no huge page to a region asking for them (no free 2 MB pages?)")


def test_the_guard_keeps_huge_pages_off_while_started_and_restores_them(thp_available):
    before, during, nested, after = _run("""
        from curastream.engine.huge_pages import HugePageGuard
        g = HugePageGuard()
        before = huge_kb()
        g.start(); g.start()
        during = huge_kb()
        g.stop()
        nested = huge_kb()  # one pipeline still running
        g.stop()
        print(before, during, nested, huge_kb())
    """)
    assert int(before) > 0
    assert int(during) == 0 and int(nested) == 0
    assert int(after) > 0  # the process has its own setting back


def test_the_guard_leaves_a_process_that_had_huge_pages_off_as_it_was(thp_available):
    during, after, disabled = _run("""
        from curastream.engine.huge_pages import HugePageGuard, huge_pages_disabled, _prctl, PR_SET_THP_DISABLE
        _prctl(PR_SET_THP_DISABLE, 1)  # the embedding program's own choice
        g = HugePageGuard()
        g.start()
        during = huge_kb()
        g.stop()
        print(during, huge_kb(), huge_pages_disabled())
    """)
    assert (int(during), int(after), disabled) == (0, 0, "True")
