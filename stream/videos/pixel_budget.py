"""Admission of decodes by frame size, so that the largest videos decoded together, not the
input order, set a run's peak memory."""

from __future__ import annotations

import contextlib
import threading
import time


class PixelBudget:
    """Admits decodes while their frame sizes sum to at most ``limit`` pixels; one decode is
    always admitted, however large.

    A decoder's memory (frame threads, reference frames, scaler) grows with the frame size, and
    the run's peak RSS is set by the largest videos that happen to be decoded together: without
    a bound it depends on the order of the inputs rather than on the largest video.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int):
        """Yields the seconds spent waiting for room."""
        t0 = time.perf_counter()
        with self.cond:
            self.cond.wait_for(lambda: self.used == 0 or self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield time.perf_counter() - t0
        finally:
            with self.cond:
                self.used -= pixels
                self.cond.notify_all()
