"""The decoder choice for the analysis view: :func:`decode_for_analysis` validates the decoder
name and sends an image either to the CPU decoders (:mod:`curastream.images.cpu_decode`) or,
for ``decoder="dali"``, to NVIDIA DALI, which is imported only on that branch because the
import alone costs ~1.2 s and DALI is an optional extra.
"""

from __future__ import annotations

import numpy as np

from curastream.images.cpu_decode import ANALYSIS_SIZE, decode_cpu
from curastream.images.jpeg import JpegStructure
from curastream.images.probe import ImageProbe

__all__ = ["DECODERS", "decode_for_analysis"]

# "auto" is simplejpeg for JPEG: measured fastest of the CPU paths (scripts/bench_decoders.py).
DECODERS = ("auto", "turbo", "pillow", "dali")


def decode_for_analysis(
    data: bytes, probe: ImageProbe, size: int = ANALYSIS_SIZE, decoder: str = "auto",
    jpeg: JpegStructure | None = None,
) -> np.ndarray:
    """(size, size, 3) uint8 RGB, upright, squashed (aspect ratio not kept).

    decoder: "auto"/"turbo" = simplejpeg DCT-scaled decode for JPEG (Pillow for other formats),
    "pillow" = Pillow everywhere (draft() scaling for JPEG; the baseline), "dali" = DALI CPU
    pipeline (one image at a time here; use ``images.dali.dali_decode_batch`` for throughput).
    ``jpeg``: ``check_jpeg(data)`` when the caller already has it.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "dali":
        from curastream.images import dali as dali_decode

        return dali_decode.decode_one(data, size=size)
    return decode_cpu(data, probe, size=size, pillow=decoder == "pillow", jpeg=jpeg)
