"""Progress: a bar on a terminal, a quiet line every few seconds otherwise (CI logs, pipes).

With the inputs' sizes known (the listing has them) the bar and its ETA follow bytes, not
items: a run's large files are seldom spread evenly, and an item-count ETA sat wrong for half
a run whenever the big ones came first or last. Items still finish in input order (the engine
emits in order), so the n-th finished item is the n-th size.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

from tqdm import tqdm


def _weights(sizes: Sequence[int | None] | None, total: int | None) -> list[float] | None:
    """Bytes per item, unknown sizes taken as the mean of the known ones; None when no size
    is known (or the sizes do not describe every item): then items are the measure."""
    if not sizes or total is None or len(sizes) != total:
        return None
    known = [s for s in sizes if s is not None and s >= 0]
    if not known or sum(known) <= 0:
        return None
    mean = sum(known) / len(known)
    return [float(s) if s is not None and s >= 0 else mean for s in sizes]


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    def __init__(self, total: int | None, unit: str, enabled: bool | None = None, every_s: float = 5.0,
                 sizes: Sequence[int | None] | None = None):
        self.total = total
        self.unit = unit
        tty = sys.stderr.isatty()
        self.enabled = tty if enabled is None else enabled
        self._weights = _weights(sizes, total)
        self._bytes_total = sum(self._weights) if self._weights else 0.0
        self._bytes_done = 0.0
        self._n = 0
        self._bar = None
        if self.enabled and tty:
            if self._weights:
                self._bar = tqdm(total=self._bytes_total, unit="B", unit_scale=True, unit_divisor=1024,
                                 dynamic_ncols=True, file=sys.stderr, postfix=self._count())
            else:
                self._bar = tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)
        self._quiet_lines = enabled is not False and not tty
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._every = every_s

    def _count(self) -> str:
        return f"{self._n}/{self.total} {self.unit}" if self.total is not None else f"{self._n} {self.unit}"

    def update(self, n: int = 1) -> None:
        done = 0.0
        if self._weights:
            done = sum(self._weights[self._n:self._n + n])
            self._bytes_done += done
        self._n += n
        if self._bar is not None:
            if self._weights:
                self._bar.set_postfix_str(self._count(), refresh=False)
                self._bar.update(done)
            else:
                self._bar.update(n)
            return
        now = time.perf_counter()
        if self._quiet_lines and now - self._last >= self._every:
            self._last = now
            print(f"[curastream] {self.line(now - self._t0)}", file=sys.stderr, flush=True)

    @property
    def fraction(self) -> float | None:
        """Share of the work done: by bytes when the sizes are known, else by items."""
        if self._weights:
            return min(1.0, self._bytes_done / self._bytes_total)
        return min(1.0, self._n / self.total) if self.total else None

    def eta_s(self, elapsed: float) -> float | None:
        f = self.fraction
        if not f or elapsed <= 0:
            return None
        return elapsed * (1 - f) / f

    def line(self, elapsed: float) -> str:
        """The quiet-mode line: items, rate, and the share done and ETA where known."""
        rate = self._n / elapsed if elapsed > 0 else 0.0
        text = f"{self._count()} ({rate:.1f}/s)"
        f, eta = self.fraction, self.eta_s(elapsed)
        if f is not None:
            text += f", {100 * f:.0f}%" + (" of bytes" if self._weights else "")
        if eta is not None and f is not None and f < 1:
            text += f", ETA {_duration(eta)}"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
