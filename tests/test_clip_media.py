"""Clip media: stream-copy cuts, frame-exact re-encodes, WebP previews, probing.

Every clip is read back by FFmpeg (PyAV decode) and previews by Pillow; synthetic sources carry
their frame number as bars, so a decoded clip says exactly which source frames it holds.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import media_path
from PIL import Image

from curastream.videos.clip_media import (
    ClipEncoder,
    ClipMedia,
    SpanError,
    cut_copy,
    cut_reencode,
    encode_clips,
    keyframe_times,
    make_preview,
    probe_media,
)

FPS, GOP, N = 25, 25, 100  # synthetic source: 4 s, keyframe every second


# ---------------------------------------------------------------------------------------------
# synthetic sources


def _pattern(k: int, w: int, h: int) -> np.ndarray:
    """Frame k: background shade varies with k, 8 bars in the top half spell k in binary."""
    img = np.full((h, w, 3), (40 + 7 * k) % 200, np.uint8)
    bar = w // 8
    for b in range(8):
        img[h // 8 : h // 2, b * bar : (b + 1) * bar] = 255 if (k >> b) & 1 else 0
    return img


def _frame_number(frame: av.VideoFrame) -> int:
    g = frame.to_ndarray(format="gray").astype(float)
    h, w = g.shape
    bar = w // 8
    rows = slice(h // 8 + 4, h // 2 - 4)
    return sum(1 << b for b in range(8) if g[rows, b * bar + 4 : (b + 1) * bar - 4].mean() > 128)


def _render(path, n=N, size=(320, 240), pix_fmt="yuv420p", rotation=None, draw=_pattern) -> str:
    w, h = size
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = w, h, pix_fmt
        # fixed GOP, B-frames on (veryfast): packets are reordered like real camera files
        st.codec_context.options = {"preset": "veryfast", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"}
        if rotation is not None:
            st.set_display_rotation(rotation)
        for k in range(n):
            for p in st.encode(av.VideoFrame.from_ndarray(draw(k, w, h), format="rgb24")):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return str(path)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> str:
    return _render(tmp_path_factory.mktemp("clips") / "synth.mp4")


def _decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as c:
        return list(c.decode(video=0))


def _numbers(clip: ClipMedia) -> list[int]:
    return [_frame_number(f) for f in _decode(clip.data)]


def _spans(clips) -> list[float]:
    return [t for c in clips for t in (c.start_s, c.end_s)]


def _ok(results) -> list[ClipMedia]:
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


# ---------------------------------------------------------------------------------------------
# stream copy, synthetic


def test_keyframe_times_from_packets(synth):
    assert keyframe_times(synth) == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_cut_copy_tiles_and_is_bit_exact(synth):
    clips = _ok(cut_copy(synth, [(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]))
    assert _spans(clips) == pytest.approx([0, 1, 1, 2, 2, 4])
    assert all(c.method == "copy" and c.video_codec == "h264" for c in clips)
    with av.open(synth) as c:
        source = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    frames = [f for c in clips for f in _decode(c.data)]
    assert len(frames) == N == sum(c.num_frames for c in clips)
    # stream copy: the clips decode to exactly the source's pixels, in order
    assert all(np.array_equal(a, f.to_ndarray(format="gray")) for a, f in zip(source, frames))
    for c in clips:
        info = probe_media(c.data)
        assert info["moov_first"] and info["num_frames"] == c.num_frames
        assert info["duration"] == pytest.approx(c.end_s - c.start_s, abs=1 / FPS)
        assert _numbers(c) == list(range(round(c.start_s * FPS), round(c.end_s * FPS)))


def test_cut_copy_unaligned_spans_cover_or_tile(synth):
    spans = [(0.0, 1.5), (1.5, 4.0)]
    cover = _ok(cut_copy(synth, spans))
    assert _spans(cover) == pytest.approx([0, 2, 1, 4])  # each covers its span
    tile = _ok(cut_copy(synth, spans, snap="tile"))
    assert _spans(tile) == pytest.approx([0, 1, 1, 4])  # no overlap
    assert sum(c.num_frames for c in tile) == N
    # a span inside one GOP has no keyframe boundary to tile on: it covers rather than vanish
    (inner,) = _ok(cut_copy(synth, [(1.2, 1.6)], snap="tile"))
    assert (inner.start_s, inner.end_s) == pytest.approx((1, 2))


def test_cut_copy_boundaries_round_to_nearest_frame(synth):
    # 0.99 and 2.01 are within half a frame of keyframes 1.0 and 2.0
    (clip,) = _ok(cut_copy(synth, [(0.99, 2.01)]))
    assert (clip.start_s, clip.end_s) == pytest.approx((1, 2))


def test_cut_copy_bad_span_fails_alone(synth):
    res = cut_copy(synth, [(0.0, 1.0), (9.0, 10.0)])
    assert isinstance(res[0], ClipMedia) and res[0].method == "copy" and isinstance(res[1], SpanError)
    # spans that all miss the video are not worth a re-encode
    assert all(isinstance(r, SpanError) for r in cut_copy(synth, [(5.0, 6.0), (7.0, 8.0)]))
    with pytest.raises(ValueError):
        cut_copy(synth, [(2.0, 1.0)])
    assert cut_copy(synth, []) == []


def test_copy_keeps_display_rotation(tmp_path):
    src = _render(tmp_path / "rot.mp4", n=30, size=(96, 64), rotation=-90)
    (clip,) = _ok(cut_copy(src, [(0, 1.2)]))
    (first, *_) = _decode(clip.data)
    assert clip.rotation == first.rotation == -90 == probe_media(clip.data)["rotation"]
    assert (clip.width, clip.height, clip.display_size) == (96, 64, (64, 96))


# ---------------------------------------------------------------------------------------------
# re-encode, synthetic


def test_cut_reencode_is_frame_exact(synth):
    clips = _ok(cut_reencode(synth, [(1.0, 2.0), (0.99, 2.01), (2.5, 4.0)]))
    assert _numbers(clips[0]) == list(range(25, 50))
    assert _numbers(clips[1]) == list(range(25, 50))  # boundaries round to the nearest frame
    assert _numbers(clips[2]) == list(range(62, 100))  # 2.5 s is frame 62.5: starts at 63 - 1/2 frame
    c = clips[0]
    assert (c.start_s, c.end_s, c.num_frames, c.method) == (1.0, 2.0, 25, "reencode")
    # a late first span seeks to the keyframe before it instead of decoding from the top
    (late,) = _ok(cut_reencode(synth, [(3.2, 3.6)]))
    assert _numbers(late) == list(range(80, 90))
    info = probe_media(c.data, count_frames=True)
    assert (info["num_frames"], info["width"], info["height"], info["pix_fmt"]) == (25, 320, 240, "yuv420p")
    assert info["duration"] == pytest.approx(1.0) and info["framerate"] == pytest.approx(25)


def _bright_corner(frame: av.VideoFrame) -> str:
    g = frame.to_ndarray(format="gray").astype(float)
    h, w = g.shape
    top, bottom, left, right = slice(0, h // 2), slice(h // 2, h), slice(0, w // 2), slice(w // 2, w)
    quads = {"tl": (top, left), "tr": (top, right), "bl": (bottom, left), "br": (bottom, right)}
    return max(quads, key=lambda q: g[quads[q]].mean())


def _corner_marker(k, w, h):
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = 255  # top-left as coded
    return img


@pytest.mark.parametrize("rotation, corner", [(-90, "tr"), (90, "bl"), (180, "br")])
def test_reencode_bakes_rotation_into_pixels(tmp_path, rotation, corner):
    # av: rotation is CCW degrees; -90 shows the coded top-left corner at the top right
    src = _render(tmp_path / "r.mp4", n=10, size=(96, 64), rotation=rotation, draw=_corner_marker)
    (clip,) = _ok(cut_reencode(src, [(0, 1)]))
    frames = _decode(clip.data)
    assert len(frames) == 10 and frames[0].rotation == 0 and clip.rotation == 0
    size = (64, 96) if rotation % 180 else (96, 64)
    assert (frames[0].width, frames[0].height) == (clip.width, clip.height) == size
    assert _bright_corner(frames[0]) == corner


def test_reencode_odd_size_crops_to_even(tmp_path):
    # 4:4:4 H.264 allows odd sizes; 4:2:0 output loses the last row and column
    src = _render(tmp_path / "odd.mp4", n=25, size=(321, 241), pix_fmt="yuv444p")
    (copy,) = _ok(cut_copy(src, [(0, 1)]))
    assert (copy.width, copy.height) == (321, 241)
    (clip,) = _ok(cut_reencode(src, [(0, 1)]))
    info = probe_media(clip.data)
    assert (clip.width, clip.height, info["width"], info["height"], info["pix_fmt"]) == (320, 240, 320, 240, "yuv420p")
    assert _numbers(clip) == list(range(25))


def test_reencode_10bit_to_8bit(tmp_path):
    src = _render(tmp_path / "ten.mp4", n=10, size=(160, 120), pix_fmt="yuv420p10le")
    (clip,) = _ok(cut_reencode(src, [(0, 1)]))
    assert probe_media(clip.data)["pix_fmt"] == "yuv420p"
    assert len(_decode(clip.data)) == 10


def test_clip_encoder_from_arrays_matches_probe():
    enc = ClipEncoder(0.0, 2.0, fps=10, width=64, height=48)
    for k in range(20):
        assert enc.push(_pattern(k, 64, 48), k / 10)
    assert not enc.push(_pattern(20, 64, 48), 2.0)  # past the end: ignored
    clip = enc.finish()
    info = probe_media(clip.data, count_frames=True)
    assert {k: info[k] for k in ("width", "height", "num_frames", "video_codec")} == {
        "width": 64, "height": 48, "num_frames": 20, "video_codec": "h264"
    }
    assert info["framerate"] == pytest.approx(10) and info["duration"] == pytest.approx(2.0)
    assert clip.num_bytes == len(clip.data) and info["moov_first"]
    with pytest.raises(SpanError):
        ClipEncoder(1.0, 2.0, fps=10, width=64, height=48).finish()  # no frames


def test_encode_clips_one_pass_overlapping_spans(synth):
    with av.open(synth) as c:
        frames = [(f.time, f) for f in c.decode(video=0)]
    out = encode_clips(iter(frames), [(0.0, 1.0), (0.5, 1.5), (9.0, 10.0)], fps=FPS, width=320, height=240)
    assert _numbers(out[0]) == list(range(0, 25))
    assert _numbers(out[1]) == list(range(12, 37))  # 0.5 s = frame 12.5 -> 13 - 1/2: nearest is 12
    assert isinstance(out[2], SpanError)  # no frames in that span; the others still finish


# ---------------------------------------------------------------------------------------------
# previews


def test_make_preview_animated_webp():
    frames = np.stack([_pattern(k, 64, 48) for k in range(35)])  # 3.5 s at 10 fps
    data = make_preview(frames, fps_in=10)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "WEBP" and im.is_animated and im.n_frames == 4
        assert im.size == (320, 240)
        for i in range(im.n_frames):
            im.seek(i)
            im.load()  # Pillow fills per-frame info on load
            assert im.info["duration"] == 1000
    with Image.open(io.BytesIO(make_preview(frames[:5], fps_in=10))) as single:
        assert not getattr(single, "is_animated", False) and single.size[1] == 240


# ---------------------------------------------------------------------------------------------
# real files


def _check_clips(clips, method):
    for c in _ok(clips):
        assert c.method == method
        info = probe_media(c.data)
        frames = _decode(c.data)
        assert len(frames) == c.num_frames == info["num_frames"] > 0
        assert info["moov_first"] and info["video_codec"] == c.video_codec
        assert info["duration"] == pytest.approx(c.end_s - c.start_s, abs=1.5 / c.framerate)
    return clips


def test_real_moov_at_end_720p():
    path = media_path("videos", "pyscenedetect_testvideo.mp4")
    # the file's keyframes sit on its first two scene cuts (frames 30 and 180)
    clips = _check_clips(cut_copy(path, [(0, 30 / 29.97), (30 / 29.97, 180 / 29.97)]), "copy")
    assert [c.num_frames for c in clips] == [30, 150]
    assert (clips[1].width, clips[1].height) == (1280, 720)


@pytest.mark.parametrize(
    "name, spans",
    [
        ("nodeopencv_motion.mov", [(0, 2), (2, 4)]),
        ("torchcodec_nasa_13013.mp4", [(0, 3), (8.1, 9)]),
        ("derived_cityCC0_hevc.mp4", [(0, 2), (5, 7)]),
        ("derived_nasa_13013_av1.mp4", [(0, 1), (8.1, 9)]),
        ("derived_cityCC0_vp9.webm", [(0, 2), (2, 4)]),
    ],
)
def test_real_copy(name, spans):
    _check_clips(cut_copy(media_path("videos", name), spans), "copy")


def test_real_copy_specifics():
    hevc = _ok(cut_copy(media_path("videos", "derived_cityCC0_hevc.mp4"), [(0, 2)]))[0]
    assert probe_media(hevc.data)["codec_tag"] == "hvc1"
    nasa = _ok(cut_copy(media_path("videos", "torchcodec_nasa_13013.mp4"), [(0, 3)], stream_index=0))[0]
    assert (nasa.width, nasa.height, nasa.framerate) == (320, 180, 25)
    ball = _ok(cut_copy(media_path("videos", "mecavideo_balle-jbart.mp4"), [(0, 5)], include_audio=True))[0]
    with av.open(io.BytesIO(ball.data)) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(16, 15)
        assert c.streams.audio[0].codec_context.name == "aac"
    assert ball.sample_aspect_ratio == "16:15" and ball.has_audio


def test_real_iphone_rotation():
    path = media_path("videos", "jsonize_iphone_rotated.mov")
    (copy,) = _check_clips(cut_copy(path, [(0, 1)]), "copy")
    assert copy.rotation == _decode(copy.data)[0].rotation == -90 and copy.display_size == (320, 568)
    (enc,) = _check_clips(cut_reencode(path, [(0, 1)]), "reencode")
    frame = _decode(enc.data)[0]
    assert (frame.width, frame.height, frame.rotation) == (320, 568, 0)


def test_real_raw_annexb_copy_rebuilds_timestamps():
    path = media_path("videos", "libvpl_cars_320x240.h264")
    (clip,) = _check_clips(cut_copy(path, [(0, 2)]), "copy")
    with av.open(str(path)) as c:
        source = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    frames = _decode(clip.data)
    # B-frames: the rebuilt pts must put frames in display order, pixel-identical to the source
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)
    assert all(np.array_equal(a, f.to_ndarray(format="gray")) for a, f in zip(source, frames))
    assert clip.end_s == pytest.approx(30 / 25)


@pytest.mark.parametrize("name", ["opencv_vtest.avi", "opencv_tree.avi"])
def test_real_uncopyable_codecs_fall_back(name):
    clips = _check_clips(cut_copy(media_path("videos", name), [(0, 1), (1, 2)]), "reencode")
    assert all(c.video_codec == "h264" for c in clips)
    with pytest.raises(ValueError):
        cut_copy(media_path("videos", name), [(0, 1)], fallback=False)


def test_unreadable_source_fails_every_span(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    for cut in (cut_copy, cut_reencode):
        res = cut(junk, [(0, 1), (1, 2)])
        assert len(res) == 2 and all(isinstance(r, av.FFmpegError) for r in res)
