"""Read ahead: run a chunk generator (the analysis decode) on a thread of its own, a bounded
number of chunks ahead of its consumer, through the engine's :class:`BoundedQueue`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TypeVar

from curastream.engine.queues import BoundedQueue, EndOfStream, Stopped

T = TypeVar("T")


def read_ahead(chunks: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Run the generator ``chunks`` (e.g. :func:`~curastream.videos.decode.iter_analysis_frames`)
    on a thread of its own, at most ``depth`` chunks ahead of the consumer; yields the same chunks
    in the same order and re-raises its exceptions (VideoDecodeError, the time limit) at the same
    point.

    Without it the decoder stops whenever the consumer runs its kernels on a chunk: FFmpeg's
    frame threads only work ahead by a few pictures. With it the kernels overlap the decode of
    the next chunk, which matters when one video is left in flight (its kernels on one core,
    the decoder's threads on the other). The generator is closed on the reading thread when the
    consumer stops early (its ``finally`` closes the container), and this waits for that.
    """
    # Items only: a chunk's size is set by chunk_size, so the byte bound stays out of the way.
    q: BoundedQueue[T] = BoundedQueue(max_items=max(1, depth), name="video-decode")

    def produce() -> None:
        try:
            for chunk in chunks:
                q.put(chunk)
        except Stopped:  # the consumer left; the generator is closed below
            return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            q.fail(e)
            return
        finally:
            # Closed here, on the thread that runs it: a generator cannot be closed from
            # another thread while it is executing.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        q.close()

    thread = threading.Thread(target=produce, name="video-decode", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = q.get()
            except EndOfStream:
                return
            yield item
    finally:
        q.stop_event.set()
        q.close()  # wakes a producer blocked in put now; with the stop event set it leaves
        thread.join()
