"""The edge encoder of a smart cut: re-encodes the partial GOPs at a clip's edges with the
source's own codec, size, pixel format and colour, as self-contained pieces (IDR first, no
B-frames, parameter sets in-band), because only such pieces can sit next to stream-copied GOPs
in one track; each codec's encoder and its options are chosen here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable

import av

from curastream.videos.clip_encode import ENCODER_THREADS
from curastream.videos.clip_facts import stream_fps
from curastream.videos.encoder_open import open_encoder
from curastream.videos.packet_index import _TO_ANNEXB, _annexb_to_lengths, _nal_length_size, _Packet
from curastream.videos.x264 import x264_options

# Source codec -> (encoder for the edges, MP4 sample entry that allows in-band parameter sets).
SPLICE_ENCODERS = {
    "h264": ("libx264", "avc3"),
    "hevc": ("libx265", "hev1"),
    "vp9": ("libvpx-vp9", None),
    "av1": ("libsvtav1", None),
}


class _EdgeEncoder:
    """Encodes the frames of one edge as a self-contained piece: IDR first, no B-frames (dts ==
    pts, so it splices next to copied GOPs), parameter sets in-band (no global header)."""

    def __init__(self, vs, codec: str, preset: str, crf: int):
        name = SPLICE_ENCODERS[codec][0]
        cc = av.CodecContext.create(name, "w")
        src = vs.codec_context
        cc.width, cc.height, cc.pix_fmt = src.width, src.height, src.pix_fmt
        cc.time_base = vs.time_base
        cc.framerate = stream_fps(vs)
        if vs.sample_aspect_ratio:
            cc.sample_aspect_ratio = vs.sample_aspect_ratio
        # the edges say the same colour as the copied GOPs (else players switch matrices mid-clip)
        for prop in ("color_range", "colorspace", "color_primaries", "color_trc"):
            setattr(cc, prop, getattr(src, prop))
        cc.max_b_frames = 0
        cc.thread_count = ENCODER_THREADS  # same bytes every run: see clip_encode.ENCODER_THREADS
        cc.options = _edge_options(name, preset, crf)
        open_encoder(cc)  # libsvtav1 would leave its threads, and this one, real-time
        self.cc, self.codec = cc, codec
        self.size = _nal_length_size(vs, codec)

    def encode(self, frames: Iterable[av.VideoFrame], base: int) -> list[_Packet]:
        out = []
        for frame in frames:
            frame.pict_type = av.video.frame.PictureType.NONE
            out += self.cc.encode(frame)
        out += self.cc.encode(None)
        packets = []
        for p in out:
            data = bytes(p)
            if self.codec in _TO_ANNEXB:
                data = _annexb_to_lengths(data, self.size)
            packets.append(_Packet(data, p.pts - base, p.pts - base, p.is_keyframe))
        packets.sort(key=lambda q: q.pts)
        return packets


def _edge_options(encoder: str, preset: str, crf: int) -> dict[str, str]:
    if encoder == "libx264":
        return {"preset": preset, "crf": str(crf), **x264_options()}
    if encoder == "libx265":
        return {"preset": preset, "crf": str(crf), "x265-params": "log-level=error:bframes=0"}
    if encoder == "libvpx-vp9":
        # no alt-ref: its hidden frames would pack two frames into one packet's timing
        return {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1",
                "auto-alt-ref": "0", "lag-in-frames": "0"}
    if encoder == "libsvtav1":
        svt = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8, "medium": 6}
        return {"preset": str(svt.get(preset, 10)), "crf": str(crf)}
    return {}
