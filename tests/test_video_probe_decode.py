"""Probe and analysis decode on every file of shared/media/videos, the bad files, and synthetic clips."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from conftest import MEDIA, media_path
from curastream.videos.decode import (
    VideoDecodeError,
    VideoDecodeTimeout,
    analysis_size,
    decode_for_analysis,
    iter_analysis_frames,
    read_ahead,
)
from curastream.videos.probe import VideoProbeError, probe

import videogen

VIDEO_DIR = MEDIA / "videos"


def _manifest_rows() -> dict[str, dict]:
    p = MEDIA / "MANIFEST.tsv"
    if not p.exists():
        return {}
    with open(p, newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f, delimiter="\t") if r["file"].startswith("videos/")}


MANIFEST = _manifest_rows()
VIDEO_FILES = sorted(k.split("/", 1)[1] for k, r in MANIFEST.items() if r["codec"]) or ["pyscenedetect_testvideo.mp4"]


def _first_chunk(path, info, n=6, **kw):
    it = iter_analysis_frames(path, info, chunk_size=n, **kw)
    try:
        return next(it)
    finally:
        it.close()  # closes the container: only the first frames are decoded


# ---------------------------------------------------------------- probe


def _pyav_facts(path) -> tuple[int, int, str]:
    """Width, height and codec name read with PyAV directly: the reference where the MANIFEST has
    no value, so the probe is never checked against itself."""
    import av

    with av.open(str(path), metadata_errors="ignore") as c:
        cc = c.streams.video[0].codec_context
        # canonical_name is the codec id's name ("av1"), cc.name the decoder's ("libdav1d").
        return cc.width, cc.height, getattr(cc.codec, "canonical_name", None) or cc.name


@pytest.mark.parametrize("name", VIDEO_FILES)
def test_every_shared_video_probes_like_the_manifest(name):
    path = media_path("videos", name)
    row = MANIFEST.get(f"videos/{name}", {})
    info = probe(path)
    ref_w, ref_h, ref_codec = _pyav_facts(path)
    w, h = (int(v) for v in row["resolution"].split("x")) if row.get("resolution") else (ref_w, ref_h)
    assert (info.width, info.height) == (w, h)
    assert info.video_codec == (row["codec"].split(" ")[0] if row.get("codec") else ref_codec)
    if row.get("fps"):
        assert info.fps == pytest.approx(float(row["fps"]), rel=0.01)
    if row.get("frames"):
        assert abs(info.num_frames - int(row["frames"])) <= 1
    assert info.duration > 0 and info.num_frames > 0
    assert info.rotation in (0, 90, 180, 270)
    assert info.bit_depth == 8
    assert info.display_width > 0 and info.display_height > 0


def test_rotation_is_clockwise_degrees_and_swaps_display_size():
    info = probe(media_path("videos", "jsonize_iphone_rotated.mov"))
    # ffprobe: displaymatrix rotation -90 (counter-clockwise convention) -> 90 clockwise.
    assert info.rotation == 90
    assert (info.width, info.height) == (568, 320)
    assert (info.display_width, info.display_height) == (320, 568)
    assert info.upright_size == (320, 568)
    assert probe(media_path("videos", "moviepy_fire2.mp4")).rotation == 180


def test_sample_aspect_ratio_16_15():
    info = probe(media_path("videos", "mecavideo_balle-jbart.mp4"))
    assert info.sar == pytest.approx(16 / 15)
    assert (info.display_width, info.display_height) == (768, 576)


def test_two_video_streams_picks_the_first():
    info = probe(media_path("videos", "torchcodec_nasa_13013.mp4"))
    assert info.stream_index == 0
    assert (info.width, info.height) == (320, 180)
    assert info.fps == pytest.approx(25.0)
    assert info.audio_codec == "aac"


def test_stream_index_counts_video_streams_only():
    # Audio is the file's first stream; the index is into container.streams.video.
    info = probe(media_path("videos", "jsonize_iphone_rotated.mov"))
    assert info.stream_index == 0 and info.container_stream_index == 1


@pytest.mark.parametrize("name,codec", [("libvpl_cars_320x240.h264", "h264"), ("libvpl_cars_320x240.h265", "hevc")])
def test_raw_annexb_streams_count_packets(name, codec):
    info = probe(media_path("videos", name))
    assert info.video_codec == codec
    assert info.fps == 25.0
    assert info.num_frames == 30
    assert info.duration == pytest.approx(1.2)
    assert info.counted


def test_motion_vector_codecs():
    assert probe(media_path("videos", "opencv_vtest.avi")).has_motion_vectors_codec  # msmpeg4v3
    assert probe(media_path("videos", "mecavideo_g1.avi")).has_motion_vectors_codec  # mpeg4
    assert not probe(media_path("videos", "derived_cityCC0_hevc.mp4")).has_motion_vectors_codec
    assert not probe(media_path("videos", "derived_nasa_13013_av1.mp4")).has_motion_vectors_codec


def test_no_moov_is_a_clear_error():
    with pytest.raises(VideoProbeError, match="moov atom not found"):
        probe(media_path("bad", "derived_nasa_13013_no_moov.mp4"))


def test_no_duration_webm_gets_a_duration_by_demuxing():
    info = probe(media_path("bad", "moviepy_no_duration.webm"))
    assert info.counted
    assert info.video_codec == "vp9"
    assert 4.5 < info.duration < 5.5
    assert info.num_frames == 74


def test_truncated_mpeg_probes_and_decodes_what_is_there():
    # Decision: the header is intact, so probe succeeds; the decoder yields the frames present.
    path = media_path("bad", "derived_cityCC0_truncated40pct.mpg")
    info = probe(path)
    assert info.video_codec == "mpeg2video"
    frames = decode_for_analysis(path, info, sample_fps=4.0, motion_vectors=False)
    assert len(frames) > 5
    assert frames.frames_decoded <= info.num_frames + 2


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64])
def test_garbage_with_mp4_extension(tmp_path, content):
    p = tmp_path / "x.mp4"
    p.write_bytes(content)
    with pytest.raises(VideoProbeError) as e:
        probe(p)
    assert "\n" not in str(e.value) and e.value.reason


def test_still_image_is_not_a_video():
    with pytest.raises(VideoProbeError, match="still image"):
        probe(media_path("images", "skimage_rocket.jpg"))


def test_missing_file():
    with pytest.raises(VideoProbeError, match="not found"):
        probe("/nonexistent/video.mp4")


def test_probe_file_object():
    path = media_path("videos", "imageio_realshort.mp4")
    with open(path, "rb") as f:
        info = probe(f)
    assert (info.width, info.height, info.num_frames) == (320, 240, 36)


# ---------------------------------------------------------------- decode


@pytest.mark.parametrize("name", VIDEO_FILES)
def test_every_codec_decodes_upright_at_analysis_size(name):
    path = media_path("videos", name)
    info = probe(path)
    chunk = _first_chunk(path, info, n=4, sample_fps=1.5)  # spread out: some clips open on black
    wa, ha = analysis_size(info)
    assert min(wa, ha) == min(144, info.display_width, info.display_height)
    expect = min(4, int(np.ceil(info.duration * 1.5 - 1e-6)))  # short clips hold fewer samples
    assert chunk.frames.shape[0] >= max(1, expect - 1)
    assert chunk.frames.shape[1:] == (ha, wa, 3) and chunk.frames.dtype == np.uint8
    assert chunk.analysis_size == (wa, ha)
    assert (wa > ha) == (info.display_width > info.display_height)
    assert chunk.frames.std() > 1  # real pictures, not a blank buffer
    assert np.all(np.diff(chunk.frame_indices) > 0) and chunk.times[0] == pytest.approx(0.0, abs=0.05)
    # One sample per 1/1.5 s grid cell (the first frame at or after each grid point).
    cells = np.floor((chunk.times + 0.5 / info.fps) * 1.5)
    assert np.all(np.diff(cells) >= 1)


def test_rotated_video_yields_portrait_frames_the_right_way_up():
    path = media_path("videos", "jsonize_iphone_rotated.mov")
    info = probe(path)
    frames = _first_chunk(path, info, n=2).frames
    assert frames.shape[1:] == (256, 144, 3)
    # The same frame decoded raw and turned by hand must match the decoder's upright frame.
    import av

    with av.open(str(path)) as c:
        raw = next(c.decode(video=0)).to_ndarray(width=256, height=144, format="rgb24", interpolation="AREA")
    np.testing.assert_allclose(np.rot90(raw, k=-1).astype(float), frames[0].astype(float), atol=3)


def test_rotation_180():
    path = media_path("videos", "moviepy_fire2.mp4")
    info = probe(path)
    import av

    frames = _first_chunk(path, info, n=1).frames
    with av.open(str(path)) as c:
        raw = next(c.decode(video=0)).to_ndarray(width=256, height=144, format="rgb24", interpolation="AREA")
    np.testing.assert_allclose(raw[::-1, ::-1].astype(float), frames[0].astype(float), atol=3)


def test_anamorphic_video_is_scaled_to_display_aspect():
    path = media_path("videos", "mecavideo_balle-jbart.mp4")
    frames = _first_chunk(path, probe(path), n=1).frames
    assert frames.shape[1:3] == (144, 192)  # 768x576 display = 4:3, not 720:576


def test_ten_bit_input(tmp_path):
    r = videogen.render_pan(tmp_path / "ten.mkv", speed=(2, 0), size=(128, 96), seconds=0.4, pix_fmt="yuv420p10le")
    info = probe(r.path)
    assert info.bit_depth == 10 and info.pixel_format.startswith("yuv420p10")
    a = decode_for_analysis(r.path, info)
    assert a.frames.shape == (r.num_frames, 96, 128, 3)
    assert 40 < a.frames.mean() < 215


def test_chunks_concatenate_to_the_whole(tmp_path):
    r = videogen.render_cuts(tmp_path / "c.mp4", cut_times=(0.6,), seconds=1.2, size=(160, 120))
    info = probe(r.path)
    whole = decode_for_analysis(r.path, info, motion_vectors=True)
    chunks = list(iter_analysis_frames(r.path, info, chunk_size=7, motion_vectors=True))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(len(c) == 7 for c in chunks[:-1])
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), whole.frames)
    np.testing.assert_array_equal(np.concatenate([c.frame_indices for c in chunks]), np.arange(r.num_frames))
    assert sum(len(c.mv_samples) for c in chunks) == len(whole.mv_samples) > 0


def test_sampling_and_motion_pairs(tmp_path):
    r = videogen.render_pan(tmp_path / "p.mp4", speed=(2, 0), size=(160, 120), fps=25, seconds=2.2)
    info = probe(r.path)
    s = decode_for_analysis(r.path, info, sample_fps=2.0, motion_vectors=True, mv_sample_fps=2.0)
    assert list(s.frame_indices) == [0, 12, 25, 37, 50]  # first frame at or after each 0.5 s (half-frame slack)
    assert np.allclose(np.diff(s.times), 0.5, atol=0.03)
    pairs = decode_for_analysis(r.path, info, sample_fps=2.0, motion_pairs=True, motion_vectors=False)
    assert list(pairs.frame_indices) == [0, 1, 12, 13, 25, 26, 37, 38, 50, 51]
    assert pairs.mv_samples is None
    # Vectors of the first frame carrying them (frame 0 is intra) at ~2 per second.
    mv_idx = [i for _, i, _ in s.mv_samples]
    assert mv_idx[0] == 1 and len(mv_idx) == 5
    assert all(m.dtype.names and "motion_x" in m.dtype.names for _, _, m in s.mv_samples)


def test_no_motion_vectors_for_vp9():
    path = media_path("videos", "derived_cityCC0_vp9.webm")
    a = _first_chunk(path, probe(path), n=8, motion_vectors=True)
    assert a.mv_samples == []


def test_frame_indices_follow_the_timeline_when_pictures_are_skipped():
    # opencv_tree.avi: 444 frame slots at 15 fps, only 68 coded pictures (AVI drop packets).
    path = media_path("videos", "opencv_tree.avi")
    info = probe(path)
    a = decode_for_analysis(path, info, motion_vectors=False)
    assert a.frames_decoded == len(a) == 68
    np.testing.assert_allclose(a.frame_indices / info.fps, a.times, atol=0.5 / info.fps)
    assert a.frame_indices[-1] < info.num_frames


def test_read_ahead_yields_the_same_chunks(tmp_path):
    r = videogen.render_cuts(tmp_path / "c.mp4", cut_times=(0.6,), seconds=1.2, size=(160, 120))
    info = probe(r.path)
    direct = list(iter_analysis_frames(r.path, info, chunk_size=7))
    ahead = list(read_ahead(iter_analysis_frames(r.path, info, chunk_size=7)))
    assert len(ahead) == len(direct) > 2
    for a, b in zip(ahead, direct):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
        assert a.last == b.last


def test_read_ahead_raises_the_decoders_error_in_the_consumer():
    path = media_path("videos", "pyscenedetect_testvideo.mp4")
    with pytest.raises(VideoDecodeTimeout, match="time limit"):
        for _ in read_ahead(iter_analysis_frames(path, probe(path), time_limit_s=1e-6)):
            pass


def test_read_ahead_stops_and_closes_the_generator_when_the_consumer_stops():
    import threading

    closed = threading.Event()
    produced = []

    def chunks():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    it = read_ahead(chunks(), depth=1)
    assert next(it) == 0
    it.close()
    assert closed.is_set()  # close() waited for the reading thread to close the generator
    assert len(produced) <= 3  # one handed out, one queued, one being made: no more read ahead


def test_time_limit(tmp_path):
    path = media_path("videos", "pyscenedetect_testvideo.mp4")
    with pytest.raises(VideoDecodeTimeout, match="time limit"):
        decode_for_analysis(path, probe(path), time_limit_s=1e-6)


def test_midstream_corruption_is_skipped_and_counted(tmp_path):
    r = videogen.render_pan(tmp_path / "ok.mp4", speed=(4, 0), size=(320, 240), seconds=2)
    info = probe(r.path)
    data = bytearray(r.path.read_bytes())
    start = data.find(b"mdat") + 100
    rng = np.random.default_rng(1)
    for k in range(20):
        pos = start + (len(data) - start - 200) * k // 20
        data[pos:pos + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    a = decode_for_analysis(bad, info)
    assert a.decode_errors > 0 and a.error_messages
    assert 0 < len(a) <= r.num_frames


def test_wholly_undecodable_stream_raises(tmp_path):
    r = videogen.render_pan(tmp_path / "ok.mp4", speed=(4, 0), size=(160, 120), seconds=1)
    info = probe(r.path)
    data = bytearray(r.path.read_bytes())
    i = data.find(b"mdat")
    size = int.from_bytes(data[i - 4:i], "big")
    data[i + 4:i - 4 + size] = np.random.default_rng(2).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(data))
    with pytest.raises(VideoProbeError, match="no decodable"):
        probe(garbage)
    with pytest.raises(VideoDecodeError, match="no frame could be decoded"):
        decode_for_analysis(garbage, info)


def test_on_frame_sees_every_picture_and_previews_are_upright():
    path = media_path("videos", "jsonize_iphone_rotated.mov")
    info = probe(path)
    seen = []
    a = decode_for_analysis(path, info, sample_fps=2.0, motion_vectors=False,
                            on_frame=lambda t, f: seen.append((t, f.width, f.height)),
                            preview_fps=1.0, preview_height=240)
    assert len(seen) == a.frames_decoded == info.num_frames
    assert all((w, h) == (568, 320) for _, w, h in seen)  # full size, stored orientation
    assert [round(t) for t, _, _ in a.preview_frames] == [0, 1, 2]
    for t, idx, img in a.preview_frames:
        assert img.shape == (240, 135, 3) and img.flags.c_contiguous
        assert idx == round(t * info.fps)
