"""The clip writer's write pool: worker threads that run write tasks in FIFO order, and the
backpressure that holds the caller to ``max_pending`` chunks, both on the engine's
:class:`~curastream.engine.queues.BoundedQueue` (the one bounded-queue mechanism of the package).

A chunk holds a slot of the ``pending`` queue from :meth:`WritePool.admit` (its submission)
until :meth:`WritePool.release` (its last file committed or given up), so the bound counts
chunks queued *and* in flight, as the caller's memory sees them. Tasks wait in a second,
unbounded-in-practice queue: the bound that matters is on chunks, whose clip tasks are many.
Both queues share the writer's stop event: once it is set, a blocked ``admit`` raises
:class:`Stopped` and workers leave without starting another task.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from typing import Any

from curastream.engine.queues import BoundedQueue, EndOfStream, Stopped

# Tasks are admitted through ``pending`` already; this queue only hands them to workers.
_TASKS_UNBOUNDED = 1 << 62

# Workers are daemon threads, so a writer never committed nor aborted cannot hang the exit;
# at exit the pools still running finish their queued files, as a ThreadPoolExecutor's would.
_live: weakref.WeakSet[WritePool] = weakref.WeakSet()


@atexit.register
def _finish_at_exit() -> None:
    for pool in list(_live):
        pool.close()


class WritePool:
    """``workers`` threads named ``<name>_<i>``, started at the first task; at most
    ``max_pending`` chunks admitted at once."""

    def __init__(self, workers: int, max_pending: int, stop_event: threading.Event, name: str = "clip-writer"):
        self.name = name
        self.workers = workers
        self.stop_event = stop_event
        self._pending: BoundedQueue[None] = BoundedQueue(max_items=max_pending, stop_event=stop_event,
                                                         name=f"{name}.pending")
        self._tasks: BoundedQueue[tuple[Callable[..., Any], tuple]] = BoundedQueue(
            max_items=_TASKS_UNBOUNDED, stop_event=stop_event, name=f"{name}.tasks")
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Chunks admitted and not yet released."""
        return len(self._pending)

    def admit(self) -> None:
        """Take a chunk slot, blocking while ``max_pending`` are taken; Stopped once stopping."""
        self._pending.put(None)

    def release(self) -> None:
        """Give a chunk slot back (its writes are done, or given up)."""
        try:
            self._pending.get()
        except Stopped:  # stopping: nobody waits for room any more
            pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` for a worker. ``fn`` handles its own errors: a worker only runs it."""
        self._start()
        self._tasks.put((fn, args))

    def close(self) -> None:
        """Let the workers finish every queued task (or leave early on stop), then join them."""
        self._tasks.close()
        self._join()

    def stop(self) -> None:
        """Drop the tasks not started; tasks running see the stop event between files. Joins."""
        self.wake()
        self._join()

    def wake(self) -> None:
        """Set the stop event and wake every waiter now rather than at its next poll.

        Closing a queue is what notifies its waiters; with the stop event set they then leave
        (``Stopped``) instead of reading on.
        """
        self.stop_event.set()
        self._tasks.close()
        self._pending.close()

    def _start(self) -> None:
        with self._start_lock:
            if self._threads:
                return
            for i in range(self.workers):
                t = threading.Thread(target=self._work, name=f"{self.name}_{i}", daemon=True)
                t.start()
                self._threads.append(t)
            _live.add(self)

    def _join(self) -> None:
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    def _work(self) -> None:
        while True:
            try:
                fn, args = self._tasks.get()
            except (EndOfStream, Stopped):
                return
            fn(*args)
            # Dropped before waiting for the next task: an idle worker would otherwise keep
            # its last chunk (every clip's media and previews) alive after the chunk's slot was
            # released, outside the ``max_pending`` bound.
            del fn, args
