"""Progress: a bar on a terminal, a quiet line every few seconds otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int | None, unit: str, enabled: bool | None = None, every_s: float = 5.0):
        self.total = total
        self.unit = unit
        tty = sys.stderr.isatty()
        self.enabled = tty if enabled is None else enabled
        self._bar = tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr) if self.enabled and tty else None
        self._quiet_lines = enabled is not False and not tty
        self._n = 0
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._every = every_s

    def update(self, n: int = 1) -> None:
        self._n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self._quiet_lines and now - self._last >= self._every:
            self._last = now
            rate = self._n / (now - self._t0)
            tot = f"/{self.total}" if self.total else ""
            print(f"[curastream] {self._n}{tot} {self.unit} ({rate:.1f}/s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
