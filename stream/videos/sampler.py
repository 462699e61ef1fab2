"""Frame sampling on a time grid, shared by the CPU and GPU analysis decoders."""

from __future__ import annotations

import math


class _Sampler:
    """Picks the first frame at or after each point of a ``rate`` grid (None: every frame).

    Half a frame of slack keeps a 30 fps stream sampled at 2 fps on every 15th frame instead of
    drifting by one when timestamps are rounded.
    """

    def __init__(self, rate: float | None, fps: float):
        self.rate = rate if rate and rate > 0 else None
        self.slack = 0.5 / fps if fps > 0 else 0.0
        self.next_t = -math.inf

    def take(self, t: float) -> bool:
        if self.rate is None:
            return True
        if t + self.slack < self.next_t:
            return False
        # Grid-aligned, so a gap in the stream does not shift later samples.
        self.next_t = (math.floor((t + self.slack) * self.rate) + 1) / self.rate
        return True

