"""No encoder leaves real-time threads behind: SVT-AV1 makes the thread that opens it, and the
threads it starts, SCHED_FIFO 99 when the process runs as root (containers, CI)."""

from __future__ import annotations

import io
import os
import sys
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from curastream.videos.encoder_open import _realtime_threads, open_encoder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                reason="only root can be made real-time")


def _svt(w=320, h=240):
    try:
        cc = av.CodecContext.create("libsvtav1", "w")
    except Exception:  # noqa: BLE001
        pytest.skip("this FFmpeg has no libsvtav1")
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, 25), 25
    cc.options = {"preset": "10", "crf": "30"}
    return cc


def _in_thread(fn):
    out = {}

    def run():
        out["result"] = fn()
    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    return out["result"]


def _open_and_look(opener):
    cc = _svt()
    opener(cc)
    seen = (os.sched_getscheduler(0), len(_realtime_threads()))
    frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 90, np.uint8), format="rgb24").reformat(format="yuv420p")
    packets = []
    for i in range(5):
        frame.pts = i
        packets += cc.encode(frame)
    packets += cc.encode(None)
    return seen, len(packets)


def test_plain_open_makes_threads_realtime():
    """What the guard is for: without it the opening thread and SVT's threads are SCHED_FIFO."""
    (policy, realtime), _ = _in_thread(lambda: _open_and_look(lambda cc: cc.open()))
    if policy != os.SCHED_FIFO:
        pytest.skip("this SVT-AV1 build leaves scheduling alone")
    assert realtime > 1


def test_open_encoder_leaves_no_realtime_thread_and_still_encodes():
    (policy, realtime), packets = _in_thread(lambda: _open_and_look(open_encoder))
    assert policy == os.SCHED_OTHER and realtime == 0
    assert packets == 5
    assert not _realtime_threads()


def test_av1_smart_cut_worker_stays_normal(tmp_path):
    """The clip stage's worker after an AV1 smart cut (edges re-encoded with libsvtav1)."""
    from conftest import MEDIA
    from curastream.videos.smart_cut import cut_exact

    path = MEDIA / "videos" / "derived_nasa_13013_av1.mp4"
    if not path.is_file():
        pytest.skip("shared media absent")

    def cut():
        fps = 30000 / 1001
        clips = cut_exact(str(path), [(200.5 / fps, 390.5 / fps)])  # edge [200, 240) + the GOP at 240
        return clips, os.sched_getscheduler(0)
    clips, policy = _in_thread(cut)
    assert policy == os.SCHED_OTHER and not _realtime_threads()
    assert getattr(clips[0], "method", None) == "exact" and clips[0].copied_frames > 0
    with av.open(io.BytesIO(clips[0].data)) as c:
        assert sum(1 for _ in c.decode(video=0)) == clips[0].num_frames
