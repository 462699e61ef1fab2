"""Bounded queues between stages.

A :class:`BoundedQueue` limits both the number of items and the bytes in flight, so a slow
consumer slows its producer instead of filling memory. It carries three kinds of message:
items, end-of-stream, and an exception raised upstream. Every blocking call wakes up at least
every ``poll_s`` to look at the run's stop event, so shutdown always finishes.

Invariants (the concurrency lives here, so they are written down):
- ``_bytes`` is the sum of the sizes of the items currently queued; it never exceeds
  ``max_bytes`` except when the queue holds a single item larger than ``max_bytes``
  (admitted alone so one big item cannot deadlock the pipeline).
- After ``close()`` (end-of-stream) or ``fail()``, ``put`` raises; ``get`` drains the
  remaining items first, then raises :class:`EndOfStream` or re-raises the failure.
- When the stop event is set, both ``put`` and ``get`` raise :class:`Stopped` promptly.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class EndOfStream(Exception):
    """The producer finished; no more items will come."""


class Stopped(Exception):
    """The run is stopping (error elsewhere, cancel or Ctrl-C)."""


# What BoundedQueue.poll returns when no item came in time.
EMPTY = object()


class BoundedQueue(Generic[T]):
    def __init__(
        self,
        max_items: int = 8,
        max_bytes: int = 256 << 20,
        stop_event: threading.Event | None = None,
        name: str = "queue",
        poll_s: float = 0.05,
    ):
        if max_items < 1 or max_bytes < 1:
            raise ValueError("a queue needs room for at least one item and one byte")
        self.name = name
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.stop_event = stop_event or threading.Event()
        self._poll_s = poll_s
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._bytes = 0
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        # occupancy samples for stats: time-weighted sum of queued items
        self._occ_area = 0.0
        self._occ_last = time.perf_counter()
        self._occ_start = self._occ_last
        self.peak_items = 0
        self.peak_bytes = 0
        self.put_wait_s = 0.0  # time producers spent blocked: backpressure felt upstream

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._cond:
            return self._bytes

    def _account(self) -> None:
        now = time.perf_counter()
        self._occ_area += len(self._items) * (now - self._occ_last)
        self._occ_last = now

    def mean_occupancy(self) -> float:
        with self._cond:
            self._account()
            span = self._occ_last - self._occ_start
            return self._occ_area / span if span > 0 else 0.0

    def _has_room(self, nbytes: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self.max_items and self._bytes + nbytes <= self.max_bytes

    def put(self, item: T, nbytes: int = 0) -> None:
        t0 = None
        with self._cond:
            while True:
                if self.stop_event.is_set():
                    raise Stopped(self.name)
                if self._closed or self._error is not None:
                    raise RuntimeError(f"put on finished queue {self.name}")
                if self._has_room(nbytes):
                    break
                if t0 is None:
                    t0 = time.perf_counter()
                self._cond.wait(self._poll_s)
            if t0 is not None:
                self.put_wait_s += time.perf_counter() - t0
            self._account()
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self.peak_items = max(self.peak_items, len(self._items))
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self._cond.notify_all()

    def get(self) -> T:
        return self.poll(None)  # type: ignore[return-value]

    def poll(self, timeout: float | None) -> T | object:
        """The next item, or :data:`EMPTY` when none came within ``timeout`` seconds (None:
        wait for one). Raises EndOfStream once closed and drained, Stopped on stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self.stop_event.is_set():
                    raise Stopped(self.name)
                if self._items:
                    self._account()
                    item, nbytes = self._items.popleft()
                    self._bytes -= nbytes
                    self._cond.notify_all()
                    return item
                if self._error is not None:
                    raise self._error
                if self._closed:
                    raise EndOfStream(self.name)
                if deadline is not None and time.monotonic() >= deadline:
                    return EMPTY
                self._cond.wait(self._poll_s if deadline is None else max(0.0, min(self._poll_s, deadline - time.monotonic())))

    def close(self) -> None:
        """End of stream: consumers drain what is queued, then see EndOfStream."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """Deliver an upstream exception to the consumer after the queued items."""
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    def __iter__(self):
        while True:
            try:
                yield self.get()
            except EndOfStream:
                return

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_items": self.max_items,
            "max_bytes": self.max_bytes,
            "peak_items": self.peak_items,
            "peak_bytes": self.peak_bytes,
            "mean_items": round(self.mean_occupancy(), 3),
            "producer_wait_s": round(self.put_wait_s, 3),
        }
