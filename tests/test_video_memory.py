"""Video memory stays bounded by the work in flight, checked by what is still alive rather than
by an RSS threshold (which a shared machine makes flaky): a clip the writer has finished must
not be kept by anything, or every video would leave its media behind until a later one pushes
it out. scripts/bench_videos.py --memory measures the RSS itself.
"""

from __future__ import annotations

import gc
import io
import json
import os
import threading
import time
import weakref
from pathlib import Path

import av
import numpy as np
from curastream.writers.clip_model import ClipChunk, ClipRecord, VideoRecord
from curastream.writers.clip_pool import WritePool
from curastream.writers.clip_writer import ClipWriter

# Long enough for a loaded machine to let workers loop back; a leak never clears, so the
# deadline only bounds how long a failing test takes.
DEADLINE_S = 10.0


class _Payload:
    """Something a task holds that can be watched (bytes cannot be weakly referenced)."""


def _alive(refs: list[weakref.ref]) -> int:
    gc.collect()
    return sum(r() is not None for r in refs)


def _wait_released(refs: list[weakref.ref]) -> int:
    """Live objects among ``refs`` once they are released, or at the deadline if they are not."""
    end = time.monotonic() + DEADLINE_S
    while _alive(refs) and time.monotonic() < end:
        time.sleep(0.02)
    return _alive(refs)


def test_idle_write_pool_workers_keep_no_task():
    pool = WritePool(workers=3, max_pending=8, stop_event=threading.Event(), name="mem-test")
    done = threading.Semaphore(0)
    refs = []
    try:
        for _ in range(6):
            payload = _Payload()
            refs.append(weakref.ref(payload))
            pool.admit()
            pool.submit(lambda p: (pool.release(), done.release()), payload)
            del payload
        for _ in range(6):
            assert done.acquire(timeout=DEADLINE_S)
        # Every task has run and the workers are idle but alive, waiting for more work: what
        # they ran must not outlive it.
        assert all(t.is_alive() for t in pool._threads)
        assert _wait_released(refs) == 0
    finally:
        pool.close()


def _mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def test_finished_videos_leave_no_clips_in_the_writer(tmp_path):
    root = Path(os.path.realpath(tmp_path))
    inp, out = root / "in", root / "out"
    inp.mkdir()
    media = _mp4()
    writer = ClipWriter(str(out), str(inp), max_workers=2, generate_previews=True)
    refs: list[weakref.ref] = []
    n_videos = 8
    try:
        for v in range(n_videos):
            path = str(inp / f"v{v}.mp4")
            clips = [ClipRecord.for_span(path, k, k + 1.0, 10.0, media=media, width=64, height=48,
                                         framerate=10.0, num_frames=5, video_codec="h264",
                                         previews={(0, 4): b"RIFF-not-checked-here"})
                     for k in range(3)]
            refs += [weakref.ref(c) for c in clips]
            video = VideoRecord(path=path, height=48, width=64, framerate=10.0, num_frames=50, duration=5.0,
                                video_codec="h264", pixel_format="yuv420p", num_total_clips=len(clips))
            writer.write_chunk(ClipChunk(path, 0, clips, num_chunks_total=1), video)
            del clips, video
        # Wait for every video's completion marker (the last file of a video), then check, with
        # the writer still open and its workers idle, that no clip of a finished video is alive.
        end = time.monotonic() + DEADLINE_S
        markers = [out / "processed_videos" / f"v{v}.mp4.json" for v in range(n_videos)]
        while not all(m.exists() for m in markers) and time.monotonic() < end:
            time.sleep(0.02)
        assert all(m.exists() for m in markers)
        assert [json.loads(m.read_text())["num_total_clips"] for m in markers] == [3] * n_videos
        assert _wait_released(refs) == 0
    finally:
        writer.commit()
    # The clips' bytes reached the output all the same (independent reader).
    clips_dir = out / "clips"
    written = sorted(clips_dir.iterdir())
    assert len(written) == 3 * n_videos
    with av.open(str(written[0])) as c:
        assert c.streams.video[0].codec_context.name == "h264"
