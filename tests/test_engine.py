"""The engine itself: queues, backpressure, errors, stop, sinks, storage, index, IPC, device."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

from curastream.engine.device import DeviceError, resolve_device, array_module
from curastream.engine.pipeline import FunctionStage, Pipeline, PipelineError, Stage
from curastream.engine.queues import BoundedQueue, EndOfStream, Stopped
from curastream.engine.schemas import IMAGE_SCHEMA
from curastream.engine.run_index import write_run_index
from curastream.engine.sink import Sink
from curastream.engine.storage import Storage


class Blob:
    """An item with a size, like a batch of decoded pixels."""

    def __init__(self, i: int, nbytes: int = 1 << 20):
        self.i = i
        self.nbytes = nbytes


class ListSink(Sink):
    def __init__(self, delay: float = 0.0):
        self.items: list = []
        self.delay = delay
        self.committed = False
        self.aborted = False

    def write(self, item):
        time.sleep(self.delay)
        self.items.append(item)

    def commit(self):
        self.committed = True

    def abort(self):
        self.aborted = True


# -- queue ---------------------------------------------------------------------------------------
def test_queue_bounds_items_and_bytes():
    q = BoundedQueue(max_items=10, max_bytes=3 << 20, poll_s=0.01)
    for i in range(3):
        q.put(Blob(i), 1 << 20)
    blocked = threading.Event()

    def producer():
        q.put(Blob(3), 1 << 20)  # over the byte budget: must wait
        blocked.set()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.2)
    assert not blocked.is_set(), "put should block when the byte budget is full"
    assert q.get().i == 0
    t.join(30)  # hang guard: returns as soon as the put went through
    assert blocked.is_set()
    assert q.peak_bytes <= 3 << 20


def test_queue_admits_one_oversized_item_alone():
    q = BoundedQueue(max_items=2, max_bytes=100, poll_s=0.01)
    q.put("big", 10_000)  # alone: admitted
    assert q.get() == "big"


def test_queue_end_of_stream_and_error_after_items():
    q = BoundedQueue(max_items=4)
    q.put(1)
    q.put(2)
    q.close()
    assert list(q) == [1, 2]
    with pytest.raises(EndOfStream):
        q.get()
    q2 = BoundedQueue(max_items=4)
    q2.put(1)
    q2.fail(ValueError("boom"))
    assert q2.get() == 1
    with pytest.raises(ValueError, match="boom"):
        q2.get()


def test_queue_honours_stop_event_promptly():
    stop = threading.Event()
    q = BoundedQueue(max_items=1, stop_event=stop, poll_s=0.02)
    q.put(1)
    errors = []

    def blocked_put():
        try:
            q.put(2)
        except Stopped:
            errors.append("put")

    t = threading.Thread(target=blocked_put)
    t.start()
    time.sleep(0.05)
    stop.set()
    t.join(30)  # hang guard: returns as soon as the put gave up
    assert errors == ["put"]
    with pytest.raises(Stopped):
        q.get()


# -- pipeline ------------------------------------------------------------------------------------
def test_pipeline_preserves_order_with_parallel_workers():
    def slow_square(x):
        time.sleep(0.001 * (x % 7))
        return x * x

    sink = ListSink()
    Pipeline(range(200), [FunctionStage(slow_square, workers=4)], sink=sink).run()
    assert sink.items == [x * x for x in range(200)]
    assert sink.committed and not sink.aborted


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_blas_runs_single_threaded_during_a_run_and_is_restored_after():
    import numpy  # noqa: F401 - loads the BLAS that threadpoolctl reports

    before = _blas_threads()
    if not before:
        pytest.skip("NumPy here links no BLAS that threadpoolctl can see")
    seen = []
    sink = ListSink()
    Pipeline(range(3), [FunctionStage(lambda x: seen.append(_blas_threads()) or x)], sink=sink).run()
    assert seen and all(t == [1] * len(before) for t in seen)
    assert _blas_threads() == before
    streamed = []
    for x in Pipeline(range(3), [FunctionStage(lambda x: streamed.append(_blas_threads()) or x)]):
        pass
    assert streamed and all(t == [1] * len(before) for t in streamed)
    assert _blas_threads() == before


def test_opencv_runs_single_threaded_during_a_run_and_is_restored_after():
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        seen = []
        Pipeline(range(3), [FunctionStage(lambda x: seen.append(cv2.getNumThreads()) or x)], sink=ListSink()).run()
        assert seen == [1, 1, 1]
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


def test_large_atomic_file_is_synced_as_it_grows_and_hashes_right(tmp_path, monkeypatch):
    from curastream.engine import storage as storage_mod

    import concurrent.futures

    synced = []

    def record(fd):
        synced.append(os.fstat(fd).st_size)
        done = concurrent.futures.Future()
        done.set_result(None)
        return done

    monkeypatch.setattr(storage_mod, "SYNC_EVERY_BYTES", 1 << 20)
    monkeypatch.setattr(storage_mod, "_sync_in_background", record)
    st = Storage(str(tmp_path / "out"))
    chunk = os.urandom(256 << 10)
    with st.open_atomic("big.bin") as f:
        for _ in range(12):
            f.write(chunk)
    assert synced == [1 << 20, 2 << 20, 3 << 20]  # the bytes were on disk when synced
    data = (tmp_path / "out" / "big.bin").read_bytes()
    assert data == chunk * 12
    assert st.committed()[0].sha256 == hashlib.sha256(data).hexdigest()


def test_background_sync_outlives_the_writers_descriptor(tmp_path, monkeypatch):
    from curastream.engine import storage as storage_mod

    synced = []
    real = storage_mod._fdatasync
    monkeypatch.setattr(storage_mod, "_fdatasync", lambda fd: synced.append(os.fstat(fd).st_size) or real(fd))
    path = tmp_path / "f.bin"
    f = open(path, "wb")
    f.write(b"x" * 1000)
    f.flush()
    gate = storage_mod._sync_in_background(f.fileno())
    f.close()  # the writer may finish (and its descriptor be reused) before the sync runs
    gate.result(timeout=30)
    assert synced and synced[-1] == 1000
    fd = os.open(path, os.O_RDONLY)
    storage_mod._sync_in_background(fd).result(timeout=30)
    os.close(fd)  # the caller's descriptor stays the caller's: closing it is not an error


def test_backpressure_slow_sink_bounds_memory_and_producer_waits():
    produced = []

    def source():
        for i in range(40):
            produced.append(time.perf_counter())
            yield Blob(i, nbytes=4 << 20)

    sink = ListSink(delay=0.02)
    pipe = Pipeline(source(), [FunctionStage(lambda b: b, name="ident")], sink=sink,
                    queue_items=100, queue_bytes=8 << 20, poll_s=0.01)
    stats = pipe.run()
    assert len(sink.items) == 40
    # Each queue held at most 2 blobs of 4 MiB: memory bounded by bytes, not by the 100-item limit.
    for q in stats.queues:
        assert q["peak_bytes"] <= 8 << 20, q
        assert q["peak_items"] <= 2, q
    # The producer was held back: it waited on the full queue for a good share of the run.
    assert stats.queues[0]["producer_wait_s"] > 0.3
    assert produced[-1] - produced[0] > 0.5  # it could not race ahead of the 20 ms/item sink


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["source", "stage", "parallel_stage", "sink", "flush"])
def test_error_from_any_stage_reaches_caller_with_traceback(where):
    class Boom(RuntimeError):
        pass

    def source():
        for i in range(100):
            if where == "source" and i == 5:
                raise Boom("source failed")
            yield i

    def fail_at_7(x):
        if x == 7:
            raise Boom("stage failed")
        return x

    class FlushFails(Stage):
        name = "flusher"

        def process(self, x):
            return x

        def flush(self):
            raise Boom("flush failed")

    class FailingSink(ListSink):
        def write(self, item):
            if item == 9:
                raise Boom("sink failed")
            super().write(item)

    stages: list[Stage] = [FunctionStage(lambda x: x, name="pass")]
    if where == "stage":
        stages.append(FunctionStage(fail_at_7, name="fail"))
    if where == "parallel_stage":
        stages.append(FunctionStage(fail_at_7, name="fail", workers=3))
    if where == "flush":
        stages.append(FlushFails())
    sink = FailingSink() if where == "sink" else ListSink()
    pipe = Pipeline(source(), stages, sink=sink, poll_s=0.01)
    with pytest.raises(Boom) as ei:
        pipe.run()
    # Not hanging is the timeout marker's job; what is checked here is that the error ended every
    # thread of the run (seconds are no measure on a loaded machine).
    assert all(d.wait(30) for d in pipe._done), "a pipeline thread outlived the failed run"
    # the original frame is in the traceback, not a re-wrapped error
    frames = [tb.name for tb in ei.traceback]
    expected = {"source": "source", "stage": "fail_at_7", "parallel_stage": "fail_at_7",
                "sink": "write", "flush": "flush"}[where]
    assert expected in frames
    assert sink.aborted and not sink.committed


@pytest.mark.timeout(60)
def test_stop_finishes_within_two_seconds_and_aborts_sink():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    sink = ListSink(delay=0.01)
    pipe = Pipeline(endless(), [FunctionStage(lambda x: x, workers=2)], sink=sink)
    taken_at_stop = []

    def stop():
        pipe.stop()
        taken_at_stop.append(len(sink.items))  # after the flag: at most the item being written follows

    timer = threading.Timer(0.3, stop)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        pipe.run()
    timer.join(30)
    # The source is endless, so returning at all means stop() worked. Promptly is counted in items,
    # not seconds (a loaded machine stretches those): the sink took nothing after the stop but the
    # item it was writing, and every thread of the run ended.
    assert len(sink.items) <= taken_at_stop[0] + 1, (taken_at_stop, len(sink.items))
    assert sink.aborted and not sink.committed
    assert all(d.wait(30) for d in pipe._done), "a pipeline thread outlived the stopped run"


def test_streaming_iteration_and_early_break_stop_threads():
    pipe = Pipeline(range(10_000), [FunctionStage(lambda x: x + 1)])
    out = []
    for x in pipe:
        out.append(x)
        if len(out) == 50:
            break
    assert out == list(range(1, 51))
    assert all(d.wait(30) for d in pipe._done), "a pipeline thread outlived the early break"


def test_schema_checked_when_pipeline_is_built():
    class NeedsScores(Stage):
        name = "needs"
        requires = ("sharpness",)

    with pytest.raises(PipelineError, match="needs columns"):
        Pipeline([], [NeedsScores()], sink=ListSink(), schema=IMAGE_SCHEMA, source_columns=("image_id",))

    class MakesJunk(Stage):
        name = "junk"
        provides = ("not_a_column",)

    with pytest.raises(PipelineError, match="does not declare"):
        Pipeline([], [MakesJunk()], sink=ListSink(), schema=IMAGE_SCHEMA, source_columns=("image_id",))


# -- storage, sinks, index -------------------------------------------------------------------------
def test_atomic_commit_and_abort_leave_no_partial_files(tmp_path):
    st = Storage(str(tmp_path / "out"))
    st.write_atomic("a/b.bin", b"hello", rows=1)
    with pytest.raises(RuntimeError):
        with st.open_atomic("a/c.bin") as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["a/b.bin"]
    assert [c.path for c in st.committed()] == ["a/b.bin"]
    with pytest.raises(ValueError):
        st.write_atomic("../escape.bin", b"x")
    with pytest.raises(ValueError):
        st.write_atomic("a/\x00b", b"x")


def test_remove_temps_cleans_crash_leftovers(tmp_path):
    st = Storage(str(tmp_path))
    (tmp_path / "x.tar.tmp-123-abcd").write_bytes(b"partial")
    st.write_atomic("ok.bin", b"1")
    assert st.remove_temps() == ["x.tar.tmp-123-abcd"]
    assert st.list_files() == ["ok.bin"]


def test_index_json_matches_files(tmp_path):
    st = Storage(str(tmp_path))
    st.write_atomic("s/one.bin", b"a" * 10, rows=2)
    st.write_atomic("two.bin", b"b" * 20, rows=3)
    write_run_index(st, "images", {"x": 1}, {"wall_s": 0.1})
    doc = json.loads((tmp_path / "index.json").read_text())
    assert doc["kind"] == "images"
    listed = {f["path"]: f for f in doc["files"]}
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()} - {"index.json"}
    assert set(listed) == on_disk
    for rel, f in listed.items():
        data = (tmp_path / rel).read_bytes()
        assert f["bytes"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["totals"] == {"files": 2, "bytes": 30, "rows": 5}
    assert "pyarrow" in doc["versions"]


def test_memory_filesystem_commit():
    st = Storage("memory://curastream-test-out")
    st.clear()
    st.write_atomic("d/f.txt", b"abc")
    assert st.read_bytes("d/f.txt") == b"abc"
    assert st.list_files() == ["d/f.txt"]
    assert st.url("d/f.txt").startswith("memory://")


# -- IPC -------------------------------------------------------------------------------------------
def test_ipc_stream_is_readable_by_another_process(tmp_path):
    from curastream.engine.ipc import IpcEmitter

    path = tmp_path / "out.arrows"
    em = IpcEmitter(str(path))
    for i in range(3):
        em.emit(pa.record_batch({"key": [f"k{i}"], "score": [float(i)], "data": [b"xx"]}))
    em.close()
    code = (
        "import pyarrow.ipc as ipc, sys, json\n"
        "r = ipc.open_stream(open(sys.argv[1], 'rb'))\n"
        "t = r.read_all()\n"
        "print(json.dumps({'keys': t.column('key').to_pylist(), 'cols': t.column_names}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["keys"] == ["k0", "k1", "k2"]
    assert "data" not in doc["cols"], "encoded bytes are only emitted when asked for"
    # zstd buffer compression is on
    assert b"\x28\xb5\x2f\xfd" in path.read_bytes()


# -- device ----------------------------------------------------------------------------------------
def test_device_selection_on_a_cpu_machine(monkeypatch):
    import curastream.engine.device as dev

    monkeypatch.setattr(dev, "_cuda_problem", lambda: "no CUDA device is visible")
    assert resolve_device("auto").kind == "cpu"
    assert resolve_device("cpu").device_id is None
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("gpu")
    with pytest.raises(DeviceError):
        resolve_device("tpu")
    import numpy

    assert array_module("cpu") is numpy


def test_cli_gpu_without_gpu_is_a_one_line_error(tmp_path):
    if os.environ.get("CURASTREAM_HAS_GPU"):
        pytest.skip("this machine has a GPU")
    exe = os.path.join(os.path.dirname(sys.executable), "curastream")
    r = subprocess.run([exe, "images", str(tmp_path), "--output", str(tmp_path / "o"), "--device", "gpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --device gpu"), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_no_thread_pins_the_last_item_while_it_waits(workers):
    """Once an item is written, nothing in the engine keeps it alive while the source waits:
    for videos an item is a whole video's batch with its clips, outside the queues' bounds."""
    import gc
    import threading
    import time
    import weakref

    class Box:
        pass

    go, written = threading.Event(), threading.Event()
    refs = []

    def source():
        first = Box()
        refs.append(weakref.ref(first))
        yield first
        del first
        go.wait(10)
        yield Box()

    class DroppingSink(Sink):
        def write(self, item):
            written.set()

    t = threading.Thread(target=Pipeline(source(), [FunctionStage(lambda b: b, workers=workers)] * 2,
                                         sink=DroppingSink()).run)
    t.start()
    try:
        assert written.wait(10)
        deadline = time.monotonic() + 5
        while refs[0]() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.05)
        assert refs[0]() is None, gc.get_referrers(refs[0]())
    finally:
        go.set()
        t.join(10)


def test_a_pool_stage_passes_finished_work_on_while_its_input_waits():
    """A stage with workers sends a finished item on even when no next item comes: a slow or
    blocked stage upstream must not hold finished work back from the sink (before, the item
    waited in the pool for the next input; a composed run's shards were not committed while a
    user stage upstream was busy)."""
    import threading

    reached = threading.Event()

    def source():
        yield 1
        reached.wait(10)  # the next item comes only once the first has reached the sink
        yield 2

    class Notes(ListSink):
        def write(self, item):
            super().write(item)
            reached.set()

    sink = Notes()
    t0 = time.monotonic()
    # the work takes a moment, so it is not yet done when the item is handed to the pool
    Pipeline(source(), [FunctionStage(lambda x: time.sleep(0.2) or x, workers=2)], sink=sink).run()
    assert reached.is_set() and time.monotonic() - t0 < 5, "the first item waited for the second"
    assert sink.items == [1, 2]
