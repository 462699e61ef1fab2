"""A decoded frame's motion vectors, read so that the frame is freed as soon as it is dropped.

PyAV (18.1) caches ``frame.side_data`` on the frame, and that container points back at the
frame: a reference cycle, so a frame whose side data was read is freed only by the cyclic GC.
The frames a decoder hands out are already old to the GC (PyAV allocates each one before the
packet that fills it is sent, so it survives collections while it waits), and only a full
collection reaches them. Until one ran, every such frame kept its picture and its vectors:
about 1.5 MB per 720p frame, 400 MB for the 14 s cockatoo clip read in one piece, and the
``--split scenes`` runs, which read every frame's vectors, grew by about 1 GB at 10x the input.

A frame PyAV makes by reformatting carries a copy of the source's side data (FFmpeg's
``av_frame_copy_props``) and is new, so the cycle lands on a young object that the next young
collection frees, and the decoded frame goes back to reference counting. The caller hands in
the reformatted picture it makes anyway, or a tiny one is made here for the vectors alone.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

_VECTORS = "MOTION_VECTORS"


def motion_vector_carrier(frame, reformatter):
    """A new frame that carries ``frame``'s side data and almost no pixels."""
    return reformatter.reformat(frame, width=16, height=16, format="yuv420p", interpolation="POINT")


def read_motion_vectors(carrier, reduce: Callable[[np.ndarray], Any] | None = None) -> Any:
    """``reduce(vectors)`` (or a copy of the AVMotionVector records) of a frame made by
    reformatting, never of a decoded one (see the module docstring); None when it has none.
    Nothing returned refers to the carrier, so it dies with the caller's reference."""
    sd = carrier.side_data.get(_VECTORS)
    if sd is None:
        return None
    records = sd.to_ndarray()  # a view into the side data: it must not outlive this call
    return reduce(records) if reduce is not None else records.copy()


def has_motion_vectors(carrier) -> bool:
    return carrier.side_data.get(_VECTORS) is not None
