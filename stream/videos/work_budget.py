"""Admission of a video run's large native work, analysis decodes and clip cuts together, by its
estimated memory, so that the largest pieces of work met so far, not the input's order or
length, bound the run's working set.

Each stage bounds its own work (two analysis workers, a decode pixel budget, two clip workers),
but not what the two stages hold together: a long run meets, now and then, two 720p cuts with
their encoders open (~230 MB) while both analysis workers decode 720p (~110 MB more), a moment a
shorter run of the same videos may never have. Measured in a 10x fixed run: 358 MB of heap in
use at that moment against 254 MB at the single pass's highest (docs/PERFORMANCE.md, "Ninth
stop"). The estimates need not be exact, only in proportion: x264's pool of padded pictures
grows with the picture, and so do a decoder's frames.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time

from curastream.config import VideoRunConfig
from curastream.videos.clip_copy import COPYABLE_VIDEO_CODECS
from curastream.videos.edge_encoder import SPLICE_ENCODERS
from curastream.videos.probe import VideoInfo

MB = 1 << 20

# The run's estimated working set stays within this many times its largest single piece of
# work: two of the largest cuts fit (the clip stage's two workers are never held back by each
# other), a decode beside them does not.
HEADROOM = 2.0
# A cut waits for running decodes at most this long, then goes anyway: the clip stage is what
# a default run waits on, and an hour-long video's decode takes minutes. With the shared media
# no cut of a fixed run waited at all; in a scenes run (every frame decoded) one cut of 21
# waited 2.4 s (ninth stop).
CUT_WAIT_S = 5.0

# Native bytes per pixel of one open encoder, from mallinfo2 around 60 frames (veryfast, crf 23,
# one thread; 2026-12-04): libx264 116 MB for a 720p 4:2:0 clip (look-ahead and B-frames), 89 MB
# for a smart cut's edge (no B-frames), 126 MB for a 4:4:4 edge; a libx265 edge 61 MB at 640x360,
# libvpx-vp9 30 MB, libsvtav1 68 MB at 480x272.
CLIP_ENCODER_BYTES_PER_PIXEL = {"libx264": 125, "libx265": 265, "libvpx-vp9": 130, "libsvtav1": 520}
EDGE_ENCODER_BYTES_PER_PIXEL = {"h264": 100, "hevc": 265, "vp9": 130, "av1": 520}
FULL_CHROMA = 1.4  # 4:4:4 and RGB against 4:2:0 (x264's look-ahead planes are luma only)
CUT_DECODER_BYTES_PER_PIXEL = 20  # the cut's own one-thread decode
# An analysis decode: up to three chunks of 128 small frames (the decoder runs a chunk ahead
# of the kernels) and the decoder's frames; measured 62-64 MB at 720p, 30 MB at 640x360.
ANALYSIS_BYTES = 40 * MB
ANALYSIS_BYTES_PER_PIXEL = 30


def _chroma(info: VideoInfo) -> float:
    fmt = str(info.pixel_format or "")
    return FULL_CHROMA if "444" in fmt or fmt.startswith(("rgb", "bgr", "gbr")) else 1.0


def _clip_encoder_bytes(info: VideoInfo, cfg: VideoRunConfig) -> int:
    per_pixel = CLIP_ENCODER_BYTES_PER_PIXEL.get(cfg.encoder, CLIP_ENCODER_BYTES_PER_PIXEL["libx264"])
    return int(info.width * info.height * per_pixel)  # re-encodes are 4:2:0 whatever the source


def cut_bytes(info: VideoInfo, cfg: VideoRunConfig, media_made: bool = False) -> int:
    """Estimated native memory of cutting one video's clips in the clip stage."""
    if cfg.dry_run or media_made:
        return 0
    pixels = info.width * info.height
    codec = info.video_codec
    if cfg.clip_mode == "exact" and codec in SPLICE_ENCODERS:
        encoder = int(pixels * EDGE_ENCODER_BYTES_PER_PIXEL[codec] * _chroma(info))
    elif cfg.clip_mode == "copy" and codec in COPYABLE_VIDEO_CODECS:
        encoder = 0
    else:  # re-encoded in full: --reencode, or a codec that cannot be spliced or copied
        encoder = _clip_encoder_bytes(info, cfg)
    if cfg.motion_source == "reencode":  # every clip is re-encoded once more for its vectors
        encoder = max(encoder, _clip_encoder_bytes(info, cfg))
    return encoder + pixels * CUT_DECODER_BYTES_PER_PIXEL


def decode_bytes(info: VideoInfo, cfg: VideoRunConfig, on_gpu: bool = False, single_pass: bool = False) -> int:
    """Estimated native memory of one analysis decode (its frames live on the GPU with NVDEC).
    ``single_pass``: the decode also feeds the clip encoders of overlapping fixed spans."""
    est = 0 if on_gpu else ANALYSIS_BYTES + info.width * info.height * ANALYSIS_BYTES_PER_PIXEL
    if single_pass:
        overlapping = max(1, math.ceil(cfg.clip_len / cfg.stride)) if cfg.stride else 1
        est += overlapping * _clip_encoder_bytes(info, cfg)
    return est


class WorkBudget:
    """Admits work while the estimates held sum to at most :data:`HEADROOM` times the largest
    estimate met so far; work alone is always admitted, however large, so a wait always ends.

    Cuts come first: the clip stage is what a default run waits on, so a cut waits only for
    running decodes to end, at most ``cut_wait_s``; while a cut waits, no new decode starts.
    A worker holds one share at a time and nothing waits while holding one, so no wait can
    close a cycle.
    """

    def __init__(self, headroom: float = HEADROOM, cut_wait_s: float = CUT_WAIT_S):
        self.headroom = headroom
        self.cut_wait_s = cut_wait_s
        self.largest = 0
        self.used = 0
        self.high = 0  # the most ever held at once (what a test reads)
        self._cuts_waiting = 0
        self._cond = threading.Condition()

    def _fits(self, est: int) -> bool:
        return self.used == 0 or self.used + est <= self.headroom * self.largest

    @contextlib.contextmanager
    def hold(self, est: int, *, cut: bool = False):
        """Holds ``est`` bytes of the budget; yields the seconds spent waiting for room."""
        t0 = time.perf_counter()
        with self._cond:
            if est > self.largest:
                self.largest = est
                self._cond.notify_all()  # the room grew for those already waiting
            if cut:
                self._cuts_waiting += 1
                try:
                    self._cond.wait_for(lambda: self._fits(est), timeout=self.cut_wait_s)
                finally:
                    self._cuts_waiting -= 1
            else:
                self._cond.wait_for(lambda: self._cuts_waiting == 0 and self._fits(est))
            self.used += est
            self.high = max(self.high, self.used)
        try:
            yield time.perf_counter() - t0
        finally:
            with self._cond:
                self.used -= est
                self._cond.notify_all()
