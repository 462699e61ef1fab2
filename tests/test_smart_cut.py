"""Frame-exact clips by smart cut, on real media of several codecs.

Each clip is decoded back by PyAV and compared, frame by frame, with the source's own frames
(decoded here independently): the count must be the span's, every frame must look like the
source frame of the same index, and the first and last frames must match their source frame
better than its neighbours (no off-by-one). Spans are written as (k + 0.5) / fps so that
int(t * fps), SPEC's rule, names frame k without float doubt.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import media_path

from curastream import run_videos
from curastream.cli import main
from curastream.config import VideoRunConfig
from curastream.videos.clip_audio import add_audio
from curastream.videos.clip_copy import cut_copy
from curastream.videos.clip_encode import cut_reencode
from curastream.videos.clip_facts import probe_media
from curastream.videos.smart_cut import cut_exact

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


def _source(path) -> tuple[float, list[np.ndarray]]:
    """(fps, luma of every frame in display order)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate)
        luma = [f.to_ndarray(format="gray") for f in c.decode(vs)]
    return fps, luma


def _clip(data: bytes) -> tuple[list[np.ndarray], list[float]]:
    """(luma per decoded frame, duration of each audio stream)."""
    with av.open(io.BytesIO(data)) as c:
        audio = [float(a.duration * a.time_base) for a in c.streams.audio if a.duration]
        luma = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    return luma, audio


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _best_match(frame: np.ndarray, src: list[np.ndarray], k: int, reach: int = 3) -> int:
    near = range(max(0, k - reach), min(len(src), k + reach + 1))
    return max(near, key=lambda j: _psnr(frame, src[j]))


def _t(k: int, fps: float) -> float:
    return (k + 0.5) / fps


# file, first frame, end frame (exclusive; None = end of stream), whether whole GOPs lie inside
CASES = [
    # H.264 Main, keyframe every 30: head [45, 60) + copied [60, 180) + tail [180, 200)
    pytest.param("nodeopencv_motion.mov", 45, 200, True, id="nodeopencv_motion.mov"),
    # H.264 High 4:4:4 whose flagged keyframes (76, 145) FFmpeg cannot start decoding from (grey
    # garbage): they must not be used as splice points, not even with the end of the stream as
    # the other bound, so the span is re-encoded
    pytest.param("imageio_cockatoo.mp4", 40, None, False, marks=pytest.mark.slow, id="imageio_cockatoo.mp4"),
    # H.264 720x576 SAR 16:15 with AAC; the span runs to the end of the stream from before frame 122
    pytest.param("mecavideo_balle-jbart.mp4", 75, None, True, id="mecavideo_balle-jbart.mp4"),
    # one keyframe in 241 frames: nothing to copy, the span re-encoded (still exact)
    pytest.param("moviepy_chaplin.mp4", 32, 117, False, id="moviepy_chaplin.mp4"),
    # VP9 in WebM, keyframes every 50 frames
    pytest.param("derived_cityCC0_vp9.webm", 12, 112, True, id="derived_cityCC0_vp9.webm"),
    # HEVC: the keyframe at the cut (frame 116) is a CRA without leading pictures; the x265 head
    # [100, 116) and the copied GOP carry different parameter sets, both in-band ('hev1')
    pytest.param("derived_cityCC0_hevc.mp4", 100, None, True, id="derived_cityCC0_hevc.mp4"),
    # AV1 (dav1d decodes, SVT-AV1 encodes the edges): keyframe at 240 (8.01 s)
    pytest.param("derived_nasa_13013_av1.mp4", 200, None, True, id="derived_nasa_13013_av1.mp4"),
]


@pytest.mark.parametrize("name,sf,ef,copies", CASES)
def test_exact_clip_holds_exactly_the_span_frames(name, sf, ef, copies):
    path = media_path("videos", name)
    if name.endswith("_av1.mp4") and "libsvtav1" not in av.codecs_available:
        pytest.skip("this FFmpeg has no SVT-AV1 encoder for the edges")
    fps, src = _source(path)
    ef = len(src) if ef is None else ef
    (m,) = cut_exact(path, [(_t(sf, fps), _t(ef, fps))])
    assert not isinstance(m, Exception), m
    if copies:
        assert m.method == "exact" and m.copied_frames > 0, m.note
    else:  # no whole GOP inside: a plain re-encode, exact all the same
        assert m.method == "reencode" and "no whole GOP" in m.note
    got, _ = _clip(m.data)
    assert len(got) == ef - sf == m.num_frames
    worst = min(_psnr(g, src[sf + i]) for i, g in enumerate(got))
    assert worst > 30, f"a clip frame differs from its source frame: {worst:.1f} dB"
    assert _best_match(got[0], src, sf) == sf
    assert _best_match(got[-1], src, ef - 1) == ef - 1


def test_span_before_a_cut_holds_no_cut():
    """City VP9 has a hard cut at 4.64 s (frame 116) and keyframes every 2 s: a copy cut of
    [0.5, 4.5) s runs on to the 6.0 s keyframe and holds the cut; the exact clip must not."""
    path = media_path("videos", "derived_cityCC0_vp9.webm")
    fps, src = _source(path)
    cut = round(4.64 * fps)
    jump = np.abs(src[cut].astype(int) - src[cut - 1].astype(int)).mean()
    calm = max(np.abs(src[k].astype(int) - src[k - 1].astype(int)).mean() for k in range(13, cut))
    assert jump > 3 * calm  # the cut is there, and stands out from motion

    def biggest_step(data):
        luma, _ = _clip(data)
        return max(np.abs(b.astype(int) - a.astype(int)).mean() for a, b in itertools.pairwise(luma))

    span = [(_t(12, fps), _t(112, fps))]
    (exact,) = cut_exact(path, span)
    (snapped,) = cut_copy(path, span)
    assert biggest_step(exact.data) < jump / 2
    assert biggest_step(snapped.data) > jump / 2  # the keyframe-snapped clip does cross it


@pytest.mark.parametrize("name,codec", [("nodeopencv_motion.mov", "aac"), ("moviepy_chaplin.mp4", "mp3")])
def test_audio_is_kept_and_trimmed_to_the_span(name, codec):
    path = media_path("videos", name)
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
    sf, ef = 40, 150
    span = (_t(sf, fps), _t(ef, fps))
    (m,) = cut_exact(path, [span])
    assert m.has_audio
    with av.open(io.BytesIO(m.data)) as c:
        (a,) = c.streams.audio
        assert a.codec_context.codec.canonical_name == codec
        dur = float(a.duration * a.time_base)
        samples = sum(f.samples for f in c.decode(a))
        rate = a.codec_context.sample_rate
    want = (ef - sf) / fps
    assert abs(dur - want) < 0.06, (dur, want)  # to the nearest audio packet
    assert abs(samples / rate - want) < 0.1  # and it decodes to that much sound
    (silent,) = cut_exact(path, [span], audio=False)
    assert not silent.has_audio
    assert probe_media(silent.data)["has_audio"] is False


def test_parameter_sets_travel_in_band():
    """Edges and copied GOPs carry different SPS/PPS: the sample entry says so ('avc3', 'hev1'),
    and the clip keeps the source's display matrix and pixel aspect (the copied GOPs are coded
    that way, so the edges are too)."""
    path = media_path("videos", "jsonize_iphone_rotated.mov")  # keyframes at 0, 30, 60 of 66
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        total = sum(1 for _ in c.decode(video=0))
    (rot,) = cut_exact(path, [(0.2, 3.0)])  # runs past the end: frames [5, 66), [30, 66) copied
    assert rot.method == "exact" and rot.copied_frames == total - 30
    info = probe_media(rot.data, count_frames=True)
    assert info["codec_tag"] == "avc3" and info["video_codec"] == "h264"
    assert info["rotation"] == rot.rotation == -90
    assert info["num_frames"] == total - int(0.2 * fps)
    (sar,) = cut_exact(media_path("videos", "mecavideo_balle-jbart.mp4"), [(4.0, 10.3)])
    assert sar.method == "exact" and probe_media(sar.data)["sample_aspect_ratio"] == "16:15"


def test_unspliceable_codec_falls_back_to_full_reencode_and_says_why():
    path = media_path("videos", "mecavideo_g1.avi")  # MPEG-4 Part 2: no MP4 splice
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
    (m,) = cut_exact(path, [(_t(2, fps), _t(12, fps))])
    assert m.method == "reencode" and "mpeg4" in m.note
    got, _ = _clip(m.data)
    assert len(got) == 10


def test_fallback_keeps_audio_and_frame_count():
    """fire2.mp4 has broken (repeated) timestamps: no splice, a full re-encode, audio muxed in."""
    (m,) = cut_exact(media_path("videos", "moviepy_fire2.mp4"), [(0.5, 2.0)])
    assert m.method == "reencode" and "timestamps" in m.note
    got, audio = _clip(m.data)
    assert len(got) == m.num_frames > 0
    assert m.has_audio and abs(audio[0] - 1.5) < 0.06


def test_span_past_the_end_is_an_error_of_that_span_only():
    path = media_path("videos", "imageio_realshort.mp4")
    ok, bad = cut_exact(path, [(0.1, 0.9), (5.0, 6.0)])
    assert not isinstance(ok, Exception) and isinstance(bad, ValueError)
    assert len(_clip(ok.data)[0]) == int(0.9 * 30.02) - int(0.1 * 30.02)


def _printed(*args: str) -> dict:
    r = CliRunner().invoke(main, ["videos", "v.mp4", "-o", "out", *args, "--print-config"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return tomllib.loads(r.stdout)


def test_exact_is_the_default_mode_and_audio_is_on():
    cfg = VideoRunConfig(sources=["v.mp4"])
    assert cfg.clip_mode == "exact" and cfg.audio is True
    assert _printed()["clip_mode"] == "exact"
    assert _printed("--copy")["clip_mode"] == "copy"
    assert _printed("--reencode")["clip_mode"] == "reencode"
    assert _printed("--copy", "--exact")["clip_mode"] == "exact"
    assert _printed("--no-audio")["audio"] is False


def test_reencoded_clips_get_the_audio_too():
    path = media_path("videos", "nodeopencv_motion.mov")
    (m,) = add_audio(path, cut_reencode(path, [(1.0, 3.0)]))
    _, audio = _clip(m.data)
    assert m.has_audio and abs(audio[0] - 2.0) < 0.06


@pytest.mark.slow
@pytest.mark.parametrize("audio", [True, False])
def test_pipeline_default_writes_exact_clips_with_audio(tmp_path, audio):
    """The run's clips (default mode) hold exactly end_frame - start_frame frames, as the metas
    say, and keep the sound unless --no-audio."""
    src = media_path("videos", "nodeopencv_motion.mov")
    out = tmp_path / "o"
    run_videos(VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", clip_len=3, min_clip_len=1,
                              motion_filter=False, audio=audio, progress=False))
    metas = [json.loads(p.read_text()) for p in (out / "metas" / "v0").glob("*.json")]
    assert len(metas) == 3
    for m in metas:
        frames, sound = _clip(Path(m["clip_location"]).read_bytes())
        (s, e), fps = m["duration_span"], m["framerate_source"]
        assert len(frames) == m["num_frames"] == int(e * fps) - int(s * fps)  # SPEC's frame numbers
        assert bool(sound) == audio
