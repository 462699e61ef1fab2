"""Reading motion vectors leaves no decoded frame behind (videos/motion_side_data.py).

PyAV's ``frame.side_data`` makes a reference cycle through the frame, and decoded frames are
already old to the GC, so every frame whose vectors were read that way stayed in memory with
its picture until a full collection. These tests count the decoded-size frames still alive
(without collecting, which would hide the fault) after the decoders that read vectors, and
check that the vectors read through a carrier frame are the decoded frame's, record for record.
"""

from __future__ import annotations

import gc

import av
import numpy as np
import pytest

from conftest import media_path
from curastream.videos.motion_side_data import motion_vector_carrier, read_motion_vectors

VIDEO = "pyscenedetect_testvideo.mp4"  # 1280x720 H.264 with B-frames: vectors in every P/B frame
FRAMES = 90


def _frames_alive(width: int, height: int) -> int:
    """Decoded-size frames still allocated, garbage not yet collected included."""
    return sum(1 for o in gc.get_objects()
               if type(o) is av.VideoFrame and o.width == width and o.height == height)


def _decoder(path):
    container = av.open(str(path))
    vs = container.streams.video[0]
    vs.codec_context.thread_type = "SLICE"
    vs.codec_context.options = {"flags2": "+export_mvs"}
    return container, vs


def test_carrier_holds_the_decoded_frames_vectors_and_the_frames_are_freed():
    path = media_path("videos", VIDEO)
    container, vs = _decoder(path)
    w, h = vs.codec_context.width, vs.codec_context.height
    reformatter = av.video.reformatter.VideoReformatter()
    with_vectors = 0
    with container:
        for i, frame in enumerate(container.decode(vs)):
            ours = read_motion_vectors(motion_vector_carrier(frame, reformatter))
            direct = frame.side_data.get("MOTION_VECTORS")  # the cycle, on purpose: the reference
            if direct is None:
                assert ours is None
            else:
                with_vectors += 1
                assert np.array_equal(ours, direct.to_ndarray())
            del direct, frame
            if i + 1 == FRAMES:
                break
    assert with_vectors > FRAMES // 2
    # The direct reads above left their frames to the GC: PyAV still has the cycle. If this
    # fails, PyAV freed them itself and motion_side_data.py can go.
    assert _frames_alive(w, h) > 10  # (some of the 90 go when the GC runs a full collection)
    gc.collect()

    container, vs = _decoder(path)
    with container:
        for i, frame in enumerate(container.decode(vs)):
            read_motion_vectors(motion_vector_carrier(frame, reformatter), lambda mvs: float(mvs["motion_x"].sum()))
            del frame
            if i + 1 == FRAMES:
                break
        assert _frames_alive(w, h) <= 3  # the decoder's next frame and its delayed pictures


@pytest.mark.parametrize("sample_fps", [None, 3.0])
def test_analysis_decode_reading_every_frames_vectors_keeps_no_frame(sample_fps):
    from curastream.kernels.motion_accumulator import MotionAccumulator
    from curastream.videos.decode import iter_analysis_frames
    from curastream.videos.probe import probe

    path = media_path("videos", VIDEO)
    info = probe(str(path))
    motion = MotionAccumulator(info.fps, mv_size=(info.width, info.height), sample_fps=3)
    gc.collect()
    worst, vectors = 0, 0
    # sample_fps None: every frame becomes an analysis picture (the vectors ride on it, as in
    # --split scenes); 3: most frames are not kept and get a tiny carrier of their own.
    for chunk in iter_analysis_frames(str(path), info, motion_vectors=True, mv_sample_fps=None,
                                      mv_reduce=motion.reduce_mvs, sample_fps=sample_fps, motion_pairs=False,
                                      chunk_size=64, short_side=144):
        vectors += len(chunk.mv_samples)
        worst = max(worst, _frames_alive(info.width, info.height))
    assert vectors > 300
    assert worst <= 4


def test_reencode_motion_reading_keeps_no_frame():
    from curastream.videos.motion_reencode import score_clip_bytes

    data = media_path("videos", VIDEO).read_bytes()
    gc.collect()
    score = score_clip_bytes(data)
    assert score.method == "motion_vectors"
    assert _frames_alive(1280, 720) <= 1
