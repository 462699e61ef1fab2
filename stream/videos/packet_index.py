"""The source's packets as a smart cut plans with them: every frame's display index and pts, which
keyframes a splice may start at, and the NAL-level conversions between MP4 length prefixes and
Annex-B, kept apart from the cutting so that a plan is made from packet headers alone, without
decoding or copying any data.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from curastream.videos.clip_facts import origin, stream_fps, video_packets
from curastream.writers.clip_model import span_frames

_TO_ANNEXB = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}


class NotSpliceable(Exception):
    """This source (or span) cannot be smart-cut; the message is the reason recorded on the clip."""


def frame_range(s: float, e: float, fps: float | Fraction) -> tuple[int, int]:
    """The frames [start, end) a span in seconds names: SPEC's ``int(t * fps)``, the same numbers
    the clip's span_uuid is made of, so a clip's id and its content never disagree."""
    return span_frames(s, e, float(fps))


@dataclass(frozen=True)
class _Index:
    """Every video packet's display index, for planning cuts without touching data."""

    pts: list[int]  # per display index: source pts
    key_display: list[int]  # display indices of usable splice points (sorted)
    decode_order: list[int]  # display index of each packet, in decode order

    @property
    def frames(self) -> int:
        return len(self.pts)


def _display_index(pts: int, vs, fps: Fraction) -> int:
    return round(float((pts - origin(vs)) * vs.time_base * fps))


def _index(container, vs, codec: str) -> _Index:
    fps = stream_fps(vs)
    decode_order, keys, pts_of = [], set(), {}
    for packet in video_packets(container, vs):
        if packet.pts is None:
            raise NotSpliceable("packets carry no timestamps (raw stream)")
        if packet.is_corrupt:
            raise NotSpliceable("damaged packets (cut-short file)")
        d = _display_index(packet.pts, vs, fps)
        if d in pts_of:
            raise NotSpliceable("two packets share a presentation time (VFR or broken timestamps)")
        pts_of[d] = packet.pts
        decode_order.append(d)
        if packet.is_keyframe and _clean_start(codec, bytes(packet), _nal_length_size(vs, codec)):
            keys.add(d)
    n = len(decode_order)
    if sorted(pts_of) != list(range(n)):
        raise NotSpliceable("frame times are not one frame apart (VFR source)")
    return _Index([pts_of[d] for d in range(n)], sorted(keys), decode_order)


def _nal_length_size(vs, codec: str) -> int:
    extra = vs.codec_context.extradata or b""
    if codec == "h264" and len(extra) > 4 and extra[0] == 1:
        return (extra[4] & 3) + 1
    if codec == "hevc" and len(extra) > 21 and extra[0] == 1:
        return (extra[21] & 3) + 1
    return 4


def _clean_start(codec: str, data: bytes, size: int) -> bool:
    """Whether decoding may restart here with new parameter sets: an IDR for H.264/HEVC."""
    if codec not in _TO_ANNEXB:
        return True
    for nal in _split_lengths(data, size):
        if not nal:
            continue
        if codec == "h264":
            kind = nal[0] & 0x1F
            if 1 <= kind <= 5:
                return kind == 5
        else:
            kind = (nal[0] >> 1) & 0x3F
            if kind < 32:
                return 16 <= kind <= 21  # IRAP; leading pictures are ruled out by _contiguous
    return False


def _split_lengths(data: bytes, size: int) -> list[bytes]:
    out, pos = [], 0
    while pos + size <= len(data):
        n = int.from_bytes(data[pos : pos + size], "big")
        out.append(data[pos + size : pos + size + n])
        pos += size + n
    return out


def _annexb_to_lengths(data: bytes, size: int) -> bytes:
    """Annex-B start codes -> MP4 length prefixes (emulation prevention keeps 00 00 01 out of NALs)."""
    parts = []
    for nal in data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        nal = nal.rstrip(b"\x00")  # trailing zero bytes belong to the next start code
        if nal:
            parts.append(len(nal).to_bytes(size, "big") + nal)
    return b"".join(parts)


@dataclass
class _Packet:
    data: bytes
    pts: int  # source time base, relative to the clip start
    dts: int
    key: bool
