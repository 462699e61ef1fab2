"""The streaming engine: stages in threads, joined by bounded queues.

A :class:`Pipeline` is ``source -> stage -> stage -> ... -> (sink | caller)``. Each stage runs
in its own thread; a stage with ``workers > 1`` runs its ``process`` on a small thread pool and
still emits results in input order (the writers rely on order for deterministic shards).
Threads, not processes: the heavy work (JPEG/video decode, NumPy kernels, tar/Parquet/MP4
writes) releases the GIL, and threads avoid copying pixels between processes. Measured in
scripts/bench_images.py (see docs/PERFORMANCE.md).

Failure and shutdown: the first exception raised anywhere sets the run's stop event; every
queue operation then raises :class:`Stopped` within ``poll_s``, every thread unwinds, the sink
aborts (removing its temporaries), and :meth:`Pipeline.run` re-raises the original exception
with its original traceback. Ctrl-C in the caller does the same and raises KeyboardInterrupt.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from curastream.engine.native_threads import single_threaded_native
from curastream.engine.queues import EMPTY, BoundedQueue, EndOfStream, Stopped
from curastream.engine.stats import RunStats, StageStats
from curastream.engine.sink import Sink
from curastream.engine.stage import (  # noqa: F401 - FunctionStage: callers import it from here
    FunctionStage,
    Stage,
    _as_outputs,
    item_nbytes,
    item_rows,
)

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """The pipeline is wired wrongly (found when it is built, before any data moves)."""


class Pipeline:
    def __init__(
        self,
        source: Iterable[Any],
        stages: list[Stage],
        sink: Sink | None = None,
        schema: pa.Schema | None = None,
        source_columns: tuple[str, ...] = (),
        queue_items: int = 4,
        queue_bytes: int = 512 << 20,
        stats: RunStats | None = None,
        poll_s: float = 0.05,
    ):
        self.source = source
        self.stages = list(stages)
        self.sink = sink
        self.schema = schema
        self.source_columns = tuple(source_columns)
        self.stop_event = threading.Event()
        self.stats = stats or RunStats(kind="generic")
        self._poll_s = poll_s
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # Set by each thread as its very last act. Joins wait on these, never on Thread.join():
        # a Ctrl-C landing inside Thread.join() can mark a running thread as finished
        # (CPython bpo-45274 workaround), after which is_alive()/join() lie about it.
        self._done: list[threading.Event] = []
        self._sink_done: threading.Event | None = None
        self._t0 = time.perf_counter()
        n_queues = len(self.stages) + 1
        self.queues = [
            BoundedQueue(queue_items, queue_bytes, self.stop_event, name=self._queue_name(i), poll_s=poll_s)
            for i in range(n_queues)
        ]
        self._stage_stats = [StageStats(s.name, workers=max(1, s.workers)) for s in self.stages]
        if sink is not None:
            self._sink_stats = StageStats(getattr(sink, "name", "sink"))
        self.check()

    def _queue_name(self, i: int) -> str:
        src = "source" if i == 0 else self.stages[i - 1].name
        dst = self.stages[i].name if i < len(self.stages) else "sink"
        return f"{src}->{dst}"

    # -- build-time checks -----------------------------------------------------------------
    def check(self) -> None:
        """Every column a stage reads is made by the source or an earlier stage, and every
        column made is declared in the schema with its type."""
        if self.schema is None:
            return
        declared = set(self.schema.names)
        available = set(self.source_columns)
        unknown = available - declared
        if unknown:
            raise PipelineError(f"source provides undeclared columns {sorted(unknown)}")
        for st in self.stages:
            missing = [c for c in st.requires if c not in available]
            if missing:
                raise PipelineError(
                    f"stage {st.name!r} needs columns {missing} that no earlier stage provides"
                )
            undeclared = [c for c in st.provides if c not in declared]
            if undeclared:
                raise PipelineError(
                    f"stage {st.name!r} provides {undeclared}, which the {self.stats.kind} schema does not declare"
                )
            available.update(st.provides)

    # -- failure -----------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self.stop_event.set()

    def stop(self) -> None:
        """Ask the run to stop; threads unwind within a few poll intervals."""
        self.stop_event.set()

    # -- threads -----------------------------------------------------------------------------
    def _run_source(self) -> None:
        out = self.queues[0]
        try:
            for item in self.source:
                out.put(item, item_nbytes(item))
                # Loop variables outlive their item: without the del each thread would pin the
                # last item it handled (a video's batch with all its clips) while it waits for
                # the next one, outside the queues' byte bounds.
                del item
            out.close()
        except Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - delivered to the caller
            self._fail(e)
        finally:
            close = getattr(self.source, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001
                    log.debug("source close failed", exc_info=True)

    def _emit(self, out: BoundedQueue, st: StageStats, result: Any) -> None:
        for o in _as_outputs(result):
            st.items_out += 1
            st.rows_out += item_rows(o)
            n = item_nbytes(o)
            st.bytes_out += n
            out.put(o, n)

    def _timed(self, st: StageStats, fn: Callable, *args):
        t0 = time.perf_counter()
        try:
            r = fn(*args)
            if isinstance(r, Iterator):  # generators do their work while being consumed
                r = list(r)
            return r
        finally:
            dt = time.perf_counter() - t0
            with self._error_lock:
                st.busy_s += dt

    def _run_stage(self, idx: int) -> None:
        stage, st = self.stages[idx], self._stage_stats[idx]
        inq, out = self.queues[idx], self.queues[idx + 1]
        pool = None
        try:
            stage.open()
            if stage.workers > 1:
                pool = cf.ThreadPoolExecutor(stage.workers, thread_name_prefix=stage.name)
                pending: collections.deque[cf.Future] = collections.deque()
                while True:
                    # Finished results leave while the stage waits for input: before, they sat
                    # in the pool until the next item came, so a slow stage upstream held the
                    # whole run's finished work back from the sink (and from its commits).
                    while pending and pending[0].done():
                        self._emit(out, st, self._wait(pending.popleft()))
                    try:
                        item = inq.poll(self._poll_s if pending else None)
                    except EndOfStream:
                        break
                    if item is EMPTY:
                        continue
                    st.items_in += 1
                    st.rows_in += item_rows(item)
                    st.bytes_in += item_nbytes(item)
                    pending.append(pool.submit(self._timed, st, stage.process, item))
                    del item
                    # bounded in-flight work; results leave in input order
                    while len(pending) >= 2 * stage.workers:
                        self._emit(out, st, self._wait(pending.popleft()))
                while pending:
                    self._emit(out, st, self._wait(pending.popleft()))
            else:
                for item in inq:
                    st.items_in += 1
                    st.rows_in += item_rows(item)
                    st.bytes_in += item_nbytes(item)
                    self._emit(out, st, self._timed(st, stage.process, item))
                    del item
            self._emit(out, st, self._timed(st, stage.flush))
            out.close()
        except Stopped:
            pass
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            try:
                stage.close()
            except Exception as e:  # noqa: BLE001
                self._fail(e)

    def _wait(self, fut: cf.Future):
        while True:
            if self.stop_event.is_set():
                raise Stopped("stage pool")
            try:
                return fut.result(timeout=self._poll_s)
            except cf.TimeoutError:
                continue

    def _run_sink(self) -> None:
        sink, st, inq = self.sink, self._sink_stats, self.queues[-1]
        ok = False
        try:
            for item in inq:
                st.items_in += 1
                st.rows_in += item_rows(item)
                st.bytes_in += item_nbytes(item)
                self._timed(st, sink.write, item)
                del item
            self._timed(st, sink.commit)
            ok = True
        except Stopped:
            pass
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
        finally:
            if not ok:
                try:
                    sink.abort()
                except Exception:  # noqa: BLE001
                    log.exception("sink abort failed")

    def _start(self) -> None:
        targets: list[tuple[str, Callable]] = [("source", self._run_source)]
        targets += [(f"stage-{s.name}", lambda i=i: self._run_stage(i)) for i, s in enumerate(self.stages)]
        if self.sink is not None:
            targets.append(("sink", self._run_sink))
        for name, fn in targets:
            done = threading.Event()
            t = threading.Thread(target=self._thread_main, args=(fn, done), name=f"curastream-{name}", daemon=True)
            self._threads.append(t)
            self._done.append(done)
            if name == "sink":
                self._sink_done = done
        self._t0 = time.perf_counter()
        for t in self._threads:
            t.start()

    @staticmethod
    def _thread_main(fn: Callable[[], None], done: threading.Event) -> None:
        try:
            fn()
        finally:
            done.set()

    def _all_done(self) -> bool:
        return all(d.is_set() for d in self._done)

    def _finish_stats(self) -> None:
        self.stats.wall_s = time.perf_counter() - self._t0
        self.stats.stages = list(self._stage_stats) + ([self._sink_stats] if self.sink is not None else [])
        self.stats.queues = [q.snapshot() for q in self.queues]

    def _join(self, timeout: float = 2.0, sink_grace: float = 30.0) -> None:
        """Wait for the threads to unwind after a stop.

        The sink is waited for first and longest (``timeout + sink_grace``): it is the one
        thread with files open, and its abort removes their temporaries. Source and stage
        threads hold only memory; one stuck in a long native call (a decode) is left to finish
        on its own (daemon) after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        # (a Ctrl-C during _start() can leave later threads never started: nothing to wait for)
        started = [(t, d) for t, d in zip(self._threads, self._done) if t.ident is not None]
        for t, d in started:
            if d is self._sink_done:
                d.wait(timeout + sink_grace)
        for t, d in started:
            d.wait(max(0.0, deadline - time.monotonic()))

    @property
    def sink_finished(self) -> bool:
        """The sink thread has ended (committed or aborted): no output file is being written."""
        return self._sink_done is None or self._sink_done.is_set()

    def run(self) -> RunStats:
        """Run to the end; returns stats, or raises the first stage exception."""
        if self.sink is None:
            raise PipelineError("run() needs a sink; iterate the pipeline to stream results")
        with single_threaded_native():
            return self._run()

    def _run(self) -> RunStats:
        try:
            self._start()
            while not self._all_done():
                if self.stop_event.wait(0.1):
                    self._join(timeout=1.0)
                    break
        except KeyboardInterrupt:
            self.stop()
            self._join(timeout=0.5)
            self._finish_stats()
            raise
        self._finish_stats()
        if self._error is not None:
            raise self._error
        if self.stop_event.is_set():
            raise KeyboardInterrupt("run stopped")
        return self.stats

    def __iter__(self) -> Iterator[Any]:
        """Streaming form: run without a sink and yield what the last stage emits."""
        if self.sink is not None:
            raise PipelineError("a pipeline with a sink is run with run(), not iterated")
        with single_threaded_native():
            yield from self._iterate()

    def _iterate(self) -> Iterator[Any]:
        self._start()
        last = self.queues[-1]
        try:
            while True:
                try:
                    yield last.get()
                except EndOfStream:
                    break
                except Stopped:
                    break
        finally:
            # the consumer may stop early (break / close()): wind the threads down
            self.stop_event.set()
            self._join()
            self._finish_stats()
        if self._error is not None:
            raise self._error
