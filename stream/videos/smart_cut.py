"""Frame-exact cut by "smart cut": each clip holds exactly the frames [int(s*fps), int(e*fps)) of
its span. The GOPs lying wholly inside the span are stream-copied; only the partial GOPs at its
edges are decoded and re-encoded, with the source's codec, size and pixel format.

The parts are spliced into one MP4 track. The re-encoded edges carry their own parameter sets,
so H.264/HEVC clips use the 'avc3'/'hev1' sample entries (parameter sets in-band, ahead of every
IDR: the decoder re-reads them where the encoder changes) and the copied GOPs get the source's
parameter sets in-band too (FFmpeg's *_mp4toannexb filter inserts them). VP9 needs nothing: every
keyframe carries its own headers. AV1 keyframes carry their sequence header in-band.

A clip that cannot be spliced (codec without an encoder here, no or broken timestamps, odd
size, a failing edge encode) or has no whole GOP inside its span (nothing to copy) is fully
re-encoded instead, with the configured encoder; ``ClipMedia.note`` says why. Splice points
are keyframes that decode on their own (checked: some files flag keyframes that do not).
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import av.bitstream

from curastream.videos.clip_audio import copy_audio, source_audio, with_audio
from curastream.videos.clip_encode import cut_reencode
from curastream.videos.clip_facts import (
    UNREADABLE,
    ClipMedia,
    SpanError,
    check_spans,
    codec_name,
    fmt_sar,
    mp4_rotation,
    open_video,
    stream_fps,
    video_packets,
)
from curastream.videos.edge_encoder import SPLICE_ENCODERS, _EdgeEncoder
from curastream.videos.mp4box import faststart
from curastream.videos.packet_index import (
    _TO_ANNEXB,
    NotSpliceable,
    _annexb_to_lengths,
    _display_index,
    _Index,
    _index,
    _nal_length_size,
    _Packet,
    frame_range,
)


@dataclass
class _Plan:
    sf: int  # first frame of the span (display index)
    ef: int  # one past the last
    k1: int  # copied GOPs: display frames [k1, k2); k1 == k2 when nothing is copied
    k2: int


def _plan(sf: int, ef: int, index: _Index, clean) -> _Plan:
    """Copy from the first splice point at/after sf up to the last one at/before ef, provided
    the packets between them, in decode order, are exactly the frames between them (no leading
    pictures of an open GOP reaching outside) and decoding can really start at the first
    (``clean``)."""
    keys = index.key_display
    i = bisect.bisect_left(keys, sf)
    j = bisect.bisect_right(keys, ef) - 1
    bounds = keys[i : j + 1]
    while bounds and not clean(bounds[0]):  # the end bound needs no check: the tail decodes from before it
        bounds.pop(0)
    if ef >= index.frames:
        bounds.append(index.frames)  # the end of the stream is a clean boundary too
    while len(bounds) >= 2:
        k1, k2 = bounds[0], bounds[-1]
        if _contiguous(index, k1, k2):
            return _Plan(sf, ef, k1, k2)
        bounds.pop()
    return _Plan(sf, ef, sf, sf)  # nothing to copy


def _contiguous(index: _Index, k1: int, k2: int) -> bool:
    order = index.decode_order
    first = order.index(k1)
    stop = order.index(k2) if k2 < index.frames else len(order)
    seg = order[first:stop]
    return len(seg) == k2 - k1 and min(seg) == k1 and max(seg) == k2 - 1


class _Source:
    """One open source and what every clip of it shares."""

    def __init__(self, path: str, stream_index: int, audio: bool):
        self.path = path
        self.container, self.vs = open_video(path, stream_index)
        self.vs.thread_type = "SLICE"  # one thread per cut, as clip_encode.cut_reencode
        self.vs.thread_count = 1
        self.codec = codec_name(self.vs)
        self.fps = stream_fps(self.vs)
        self.audio = source_audio(self.container) if audio else None
        self.stream_index = stream_index
        self._reader = self.rvs = None
        self._frames = self._held = None
        self._next = 0
        self._clean: dict[int, bool] = {}
        self._index: _Index | None = None

    def check(self) -> _Index:
        if self.codec not in SPLICE_ENCODERS:
            raise NotSpliceable(f"no same-codec splice for {self.codec!r}")
        name = SPLICE_ENCODERS[self.codec][0]
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001  (an FFmpeg build without that encoder)
            raise NotSpliceable(f"this FFmpeg has no {name} encoder") from None
        cc = self.vs.codec_context
        if cc.width % 2 or cc.height % 2:
            raise NotSpliceable(f"odd frame size {cc.width}x{cc.height}")
        if self.codec in _TO_ANNEXB and not (cc.extradata and cc.extradata[0] == 1):
            raise NotSpliceable("parameter sets are not in MP4 form (Annex-B source)")
        index = _index(self.container, self.vs, self.codec)
        if not index.frames:
            raise NotSpliceable("no video packets")
        self._index = index
        return index

    def close(self) -> None:
        self.container.close()
        if self._reader is not None:
            self._reader.close()

    @property
    def reader(self):
        """A second open source for decoding, so copying packets does not move the decoder."""
        if self._reader is None:
            self._reader, self.rvs = open_video(self.path, self.stream_index)
            self.rvs.thread_type = "SLICE"
            self.rvs.thread_count = 1
        return self._reader

    # -- reading

    def decode(self, a: int, b: int, index: _Index) -> Iterator[av.VideoFrame]:
        """Decoded frames of display indices [a, b), yielded as they come (a span re-encoded
        whole would not fit in memory as a list of 720p frames).

        Spans come in order, so the decoder carries on from where the last range stopped when
        no keyframe lies between: a long GOP is decoded once, not once per clip.
        """
        if a >= b:
            return
        restart = self.restart_point(a, index)
        if self._frames is None or not (restart <= self._next <= a):
            self.reader.seek(index.pts[restart], stream=self.rvs, backward=True)
            self._frames, self._held = self.reader.decode(self.rvs), None
        while True:
            frame = self._held or next(self._frames, None)
            self._held = None
            if frame is None:
                self._frames, self._next = None, 0
                break
            if frame.pts is None:
                continue
            d = _display_index(frame.pts, self.rvs, self.fps)
            if d >= b:
                self._held, self._next = frame, d
                break
            self._next = d + 1
            if d >= a:
                frame.pts = index.pts[d]  # a clean, exact pts for the encoder
                yield frame

    def restart_point(self, a: int, index: _Index) -> int:
        """The last keyframe at/before frame ``a`` that decodes on its own (else the first frame)."""
        keys = index.key_display
        for j in range(bisect.bisect_right(keys, a) - 1, -1, -1):
            if keys[j] == 0 or self.clean(keys[j]):
                return keys[j]
        return 0

    def clean(self, k: int) -> bool:
        """Whether keyframe ``k`` decodes on its own. Not a given: some files flag keyframes
        that FFmpeg decodes to grey garbage without the frames before (cockatoo.mp4's H.264
        4:4:4 IDRs), and a clip starting there would be garbage too. One frame's decode, cached."""
        if k not in self._clean:
            self._clean[k] = self._decodes_alone(k)
        return self._clean[k]

    def _decodes_alone(self, k: int) -> bool:
        if self._index is None:
            return True
        target = self._index.pts[k]
        self.container.seek(target, stream=self.vs, backward=True)
        for packet in video_packets(self.container, self.vs):
            if packet.pts != target:
                continue
            cc = av.CodecContext.create(self.vs.codec_context.codec.name, "r")
            if self.vs.codec_context.extradata:
                cc.extradata = self.vs.codec_context.extradata
            try:
                frames = cc.decode(packet) + cc.decode(None)
            except av.FFmpegError:
                return False
            return bool(frames) and not any(f.is_corrupt for f in frames)
        return False

    def copy(self, plan: _Plan, index: _Index, base: int) -> list[_Packet]:
        """The packets of frames [k1, k2), decode order, parameter sets in-band."""
        self.container.seek(index.pts[plan.k1], stream=self.vs, backward=True)
        bsf = None
        if self.codec in _TO_ANNEXB:
            bsf = av.bitstream.BitStreamFilterContext(_TO_ANNEXB[self.codec], self.vs)
        size = _nal_length_size(self.vs, self.codec)
        out, started = [], False
        for packet in video_packets(self.container, self.vs):
            d = _display_index(packet.pts, self.vs, self.fps)
            if not started:
                if d != plan.k1:
                    continue
                started = True
            elif d == plan.k2:
                break
            pts, dts, key = packet.pts - base, packet.dts - base, packet.is_keyframe
            if bsf is not None:
                data = b"".join(_annexb_to_lengths(bytes(p), size) for p in bsf.filter(packet))
            else:
                data = bytes(packet)
            out.append(_Packet(data, pts, dts, key))
            if len(out) == plan.k2 - plan.k1:
                break
        return out


def _splice_dts(head: list[_Packet], mid: list[_Packet], tail: list[_Packet]) -> list[_Packet]:
    """One monotonic dts line over the three parts. The copied part keeps its reorder delay, so
    the head's dts move back by that delay; every later dts is pushed past the one before it."""
    delay = (mid[0].pts - mid[0].dts) if mid else 0
    for p in head:
        p.dts = p.pts - delay
    packets = head + mid + tail
    prev = None
    for p in packets:
        if prev is not None and p.dts <= prev:
            p.dts = prev + 1
        if p.dts > p.pts:
            raise NotSpliceable("cannot order decode times across the splice")
        prev = p.dts
    return packets


def _mux(src: _Source, packets: list[_Packet], audio_span: tuple[float, float] | None) -> tuple[bytes, bool]:
    buf = io.BytesIO()
    vs = src.vs
    tick = max(1, round(1 / (src.fps * vs.time_base)))
    with av.open(buf, "w", format="mp4") as out:
        ovs = out.add_stream_from_template(vs, opaque=True)
        tag = SPLICE_ENCODERS[src.codec][1]
        if tag:
            ovs.codec_context.codec_tag = tag
        oas = out.add_stream_from_template(src.audio, opaque=True) if audio_span and src.audio else None
        for p in packets:
            pk = av.Packet(p.data)
            pk.pts, pk.dts, pk.duration = p.pts, p.dts, tick
            pk.time_base = vs.time_base
            pk.is_keyframe = p.key
            pk.stream = ovs
            out.mux(pk)
        has_audio = copy_audio(src.container, src.audio, out, oas, *audio_span) if oas is not None else False
    return faststart(buf.getvalue()), has_audio


def _cut_one(src: _Source, index: _Index, s: float, e: float, preset: str, crf: int) -> ClipMedia:
    sf, ef = frame_range(s, e, src.fps)
    ef = min(ef, index.frames)
    if sf >= ef:
        raise SpanError(f"span ({s}, {e}) holds no frames of the video ({index.frames} frames)")
    plan = _plan(sf, ef, index, src.clean)
    base = index.pts[sf]
    copied = plan.k2 - plan.k1
    if not copied:
        # Nothing to save: a plain re-encode with the configured encoder is as exact, and
        # cheaper than x265 / SVT-AV1 for the sources where those would be the edge encoders.
        raise NotSpliceable("no whole GOP inside the span")
    head = _EdgeEncoder(src.vs, src.codec, preset, crf).encode(src.decode(sf, plan.k1, index), base)
    mid = src.copy(plan, index, base)
    tail = _EdgeEncoder(src.vs, src.codec, preset, crf).encode(src.decode(plan.k2, ef, index), base)
    n = len(head) + len(mid) + len(tail)
    if n != ef - sf:
        raise NotSpliceable(f"got {n} frames for the {ef - sf} of the span")
    packets = _splice_dts(head, mid, tail)
    t0, t1 = sf / float(src.fps), ef / float(src.fps)
    data, has_audio = _mux(src, packets, (t0, t1) if src.audio is not None else None)
    cc = src.vs.codec_context
    return ClipMedia(
        data=data, start_s=t0, end_s=t1, width=cc.width, height=cc.height, framerate=float(src.fps),
        num_frames=n, video_codec=src.codec, num_bytes=len(data), method="exact",
        rotation=mp4_rotation(data), sample_aspect_ratio=fmt_sar(src.vs.sample_aspect_ratio),
        has_audio=has_audio, copied_frames=copied,
    )


def cut_exact(
    path: str | Path,
    spans: Sequence[tuple[float, float]],
    stream_index: int = 0,
    *,
    audio: bool = True,
    preset: str = "veryfast",
    crf: int = 23,
    **reencode: Any,
) -> list[ClipMedia | Exception]:
    """Frame-exact clips of ``spans`` (seconds; frames [int(s*fps), int(e*fps))), smart-cut.

    Results follow ``spans``; a failed span holds its Exception. A clip that cannot be spliced
    is fully re-encoded (``method="reencode"``, ``note`` says why; ``reencode`` kwargs, e.g.
    ``encoder``, go to ``cut_reencode``), with the source's audio kept all the same.
    """
    check_spans(spans)
    if not spans:
        return []
    path = str(path)
    try:
        src = _Source(path, stream_index, audio)
    except (*UNREADABLE, ValueError) as err:  # ValueError: no frame rate
        return [err] * len(spans)
    results: list[ClipMedia | Exception | None] = [None] * len(spans)
    fallback: list[tuple[int, str]] = []
    try:
        try:
            index = src.check()
        except Exception as why:  # noqa: BLE001  (NotSpliceable, or a source FFmpeg chokes on)
            fallback = [(k, str(why) if isinstance(why, NotSpliceable) else f"{type(why).__name__}: {why}")
                        for k in range(len(spans))]
        else:
            for k, (s, e) in enumerate(spans):
                try:
                    results[k] = _cut_one(src, index, s, e, preset, crf)
                except SpanError as err:
                    results[k] = err
                except Exception as err:  # noqa: BLE001  (that clip is re-encoded instead)
                    fallback.append((k, f"{type(err).__name__}: {err}"))
        fps = src.fps
    finally:
        src.close()
    if fallback:
        _reencode(path, spans, fallback, fps, stream_index, audio, results, preset=preset, crf=crf, **reencode)
    return results  # type: ignore[return-value]


def _reencode(path, spans, todo, fps, stream_index, audio, results, **kw) -> None:
    # spans as exact frame times, so the re-encode keeps the same frames [sf, ef) as a splice
    exact = [tuple(f / float(fps) for f in frame_range(*spans[k], fps)) for k, _ in todo]
    media = cut_reencode(path, exact, stream_index, **kw)
    for (k, why), (s, e), m in zip(todo, exact, media):
        if isinstance(m, ClipMedia):
            note = f"re-encoded in full: {why}"
            if audio:
                try:
                    m = with_audio(m, path, s, e)
                except Exception as err:  # noqa: BLE001  (the clip stands without its sound, said so)
                    note += f"; audio dropped ({type(err).__name__}: {err})"
            m = replace(m, note=note)
        results[k] = m
