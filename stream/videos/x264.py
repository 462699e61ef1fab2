"""libx264 options that make its output a function of its input alone.

On CPUs with AVX-512 the libx264 in PyAV's wheels (core 165) gave the same frames other bytes
from run to run: one of its AVX-512 routines reads memory that nothing wrote, so the result
followed whatever the heap held before. Measured on the raw ``libvpl_cars_320x240.h264``
(30 frames, 24 encodes, the heap stirred between them): 2 to 5 different outputs with the
detected instruction sets, whether single-threaded, frame- or slice-threaded; one output in
24 out of 24 with ``asm=AVX2`` (AVX-512 off, everything below it on) at every thread setting,
at no measurable cost. That was the Ray worker's clip that differed from the driver's.

The same output on another machine needs the same SIMD level as well: x264 without assembly,
for one, codes these frames otherwise.
"""

from __future__ import annotations

import functools
import sys


@functools.cache
def x264_options() -> dict[str, str]:
    """Extra AVOptions for every libx264 encoder this package opens."""
    return {"x264-params": "asm=AVX2"} if _has_avx512() else {}


def _has_avx512() -> bool:
    # Every CPU with AVX-512 has AVX2, so pinning to AVX2 never asks for a missing instruction.
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("flags"):
                        return "avx512f" in line.split()
        except OSError:
            pass
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return False
    return bool(__cpu_features__.get("AVX512F"))
