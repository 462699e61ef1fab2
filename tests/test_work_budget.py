"""The work budget: analysis decodes and clip cuts admitted together by their estimated native
memory. The waits are observed through events (a share never granted while the budget is full),
not timed; the estimates are checked against what real 720p x264 encoders hold."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import media_path
from curastream.config import VideoRunConfig
from curastream.videos.probe import probe
from curastream.videos.work_budget import WorkBudget, cut_bytes, decode_bytes

MB = 1 << 20


class _Holder(threading.Thread):
    """Holds ``est`` of the budget from its own thread until ended."""

    def __init__(self, budget: WorkBudget, est: int, cut: bool = False):
        super().__init__(daemon=True)
        self.budget, self.est, self.cut = budget, est, cut
        self.admitted, self._release = threading.Event(), threading.Event()
        self.start()

    def run(self) -> None:
        with self.budget.hold(self.est, cut=self.cut):
            self.admitted.set()
            self._release.wait(60)

    def end(self) -> None:
        self._release.set()
        self.join(60)


def test_a_decode_waits_while_two_of_the_largest_cuts_fill_the_budget():
    budget = WorkBudget()
    with budget.hold(100 * MB, cut=True), contextlib.ExitStack() as stack:
        stack.enter_context(budget.hold(100 * MB, cut=True))  # two of the largest cuts fit together
        decode = _Holder(budget, 40 * MB)
        assert not decode.admitted.wait(0.5), "a decode started beside two of the largest cuts"
        stack.close()  # one cut ends: 100 + 40 fit in twice the largest
        assert decode.admitted.wait(30), "the decode never started after a cut ended"
        decode.end()
    assert budget.used == 0 and budget.high == 200 * MB


def test_a_waiting_cut_goes_before_new_decodes():
    budget = WorkBudget()
    with budget.hold(100 * MB, cut=True):
        first_decode = _Holder(budget, 60 * MB)
        assert first_decode.admitted.wait(30)
        cut = _Holder(budget, 100 * MB, cut=True)  # 100 + 60 + 100 > 200: waits
        assert not cut.admitted.wait(0.5)
        small = _Holder(budget, 1 * MB)  # would fit, but a cut is waiting
        assert not small.admitted.wait(0.5), "a new decode went ahead of a waiting cut"
        first_decode.end()
        assert cut.admitted.wait(30), "the cut never started after the decode ended"
        assert not small.admitted.wait(0.5), "two cuts fill the budget: the decode still waits"
        cut.end()
        assert small.admitted.wait(30)
        small.end()
    assert budget.used == 0


def test_a_cut_waits_for_a_long_decode_only_so_long():
    budget = WorkBudget(cut_wait_s=0.2)  # an hour-long video's decode would hold its share for minutes
    with budget.hold(100 * MB, cut=True), budget.hold(60 * MB):
        late = _Holder(budget, 100 * MB, cut=True)  # 260 > 200: waits, then goes anyway
        assert late.admitted.wait(30), "a cut waited for a decode without end"
        assert budget.used == 260 * MB
        late.end()
    assert budget.used == 0


def test_work_alone_is_admitted_however_large_and_raises_the_room_for_the_rest():
    budget = WorkBudget()
    with budget.hold(10 * MB):
        big = _Holder(budget, 900 * MB, cut=True)  # the largest so far: 910 <= 2 x 900
        assert big.admitted.wait(30)
        big.end()
    with budget.hold(5000 * MB, cut=True):
        assert budget.used == 5000 * MB
    assert budget.used == 0 and budget.largest == 5000 * MB


def _info(name: str):
    return probe(str(media_path("videos", name)))  # skips the test where the shared media is absent


def test_estimates_follow_what_each_cut_and_decode_opens():
    fixed = VideoRunConfig(sources=["x"], output="o", split="fixed")
    copy = VideoRunConfig(sources=["x"], output="o", split="fixed", clip_mode="copy")
    reencode = VideoRunConfig(sources=["x"], output="o", split="fixed", clip_mode="reencode")
    dry = VideoRunConfig(sources=["x"], output="o", split="fixed", dry_run=True)
    h264_720, h264_360 = _info("pyscenedetect_testvideo.mp4"), _info("moviepy_chaplin.mp4")
    h264_444, vp8_720 = _info("imageio_cockatoo.mp4"), _info("moviepy_big_buck_bunny_0_30.webm")
    # a smart cut's edges grow with the picture and its chroma planes
    assert cut_bytes(h264_720, fixed) > 3 * cut_bytes(h264_360, fixed)
    assert cut_bytes(h264_444, fixed) > cut_bytes(h264_720, fixed)
    # VP8 cannot be spliced: the exact cut re-encodes it in full, with look-ahead and B-frames
    assert cut_bytes(vp8_720, fixed) > cut_bytes(h264_720, fixed)
    assert cut_bytes(vp8_720, fixed) == cut_bytes(vp8_720, reencode)
    # a stream copy opens no encoder; a dry run and media made in the analysis cut nothing
    assert cut_bytes(h264_720, copy) < cut_bytes(h264_720, fixed) / 4
    assert cut_bytes(vp8_720, copy) == cut_bytes(vp8_720, reencode)  # VP8 is not copied into MP4
    assert cut_bytes(h264_720, dry) == 0 and cut_bytes(h264_720, reencode, media_made=True) == 0
    # a GPU decode's frames live on the device; a single pass also holds the clip encoders
    assert decode_bytes(h264_720, fixed, on_gpu=True) == 0
    assert decode_bytes(h264_720, fixed) > decode_bytes(h264_360, fixed)
    assert decode_bytes(h264_720, reencode, single_pass=True) > decode_bytes(h264_720, fixed) + 100 * MB


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _heap_in_use():
    """Bytes the process's malloc holds for live blocks (glibc's mallinfo2), or None."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2

    def read() -> int:
        m = libc.mallinfo2()
        return m.uordblks + m.hblkhd

    return read


def _peak_while_encoding(name: str, width: int, height: int, pix_fmt: str, options: dict, b_frames: int | None,
                         read) -> int:
    from curastream.videos.encoder_open import open_encoder

    base = read()
    cc = av.CodecContext.create(name, "w")
    cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
    cc.time_base, cc.framerate, cc.thread_count = Fraction(1, 25), Fraction(25), 1
    if b_frames is not None:
        cc.max_b_frames = b_frames
    cc.options = options
    open_encoder(cc)
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    peak = 0
    for i in range(40):
        frame = av.VideoFrame.from_ndarray(np.roll(rgb, 3 * i, axis=1), format="rgb24").reformat(format=pix_fmt)
        frame.pts = i
        cc.encode(frame)
        peak = max(peak, read() - base)
    cc.encode(None)
    del cc
    return peak


def test_the_estimates_are_within_a_factor_of_two_of_what_real_encoders_hold():
    read = _heap_in_use()
    if read is None:
        pytest.skip("no glibc mallinfo2 to read the heap with")
    from curastream.videos.clip_encode import _encoder_options
    from curastream.videos.edge_encoder import _edge_options

    fixed = VideoRunConfig(sources=["x"], output="o", split="fixed")
    vp8_720, h264_720 = _info("moviepy_big_buck_bunny_0_30.webm"), _info("pyscenedetect_testvideo.mp4")
    clip = _peak_while_encoding("libx264", 1280, 720, "yuv420p", _encoder_options("libx264", "veryfast", 23),
                                None, read)
    edge = _peak_while_encoding("libx264", 1280, 720, "yuv420p", _edge_options("libx264", "veryfast", 23), 0, read)
    assert clip > 50 * MB, "the control: a 720p x264 encoder holds its look-ahead pool"
    for measured, est in ((clip, cut_bytes(vp8_720, fixed)), (edge, cut_bytes(h264_720, fixed))):
        assert measured / 2 <= est <= 2 * measured, (measured / MB, est / MB)
