"""Clip media, the public face: cut a source video into MP4 clips, make animated WebP previews,
probe the result. The work lives in the modules named below; callers import from here.

Three ways to make a clip:

- ``cut_exact`` (smart_cut.py, the default): frame-exact by smart cut. The GOPs wholly inside
  the span are stream-copied, only the partial GOPs at its edges are re-encoded in the source's
  codec; the source's audio is copied in (clip_audio.py).
- ``cut_copy`` (clip_copy.py): stream copy on keyframes. No decode, no quality loss, ~ms per
  clip; the clip's real span is keyframe-aligned, so it is usually longer than the span asked for.
- ``cut_reencode`` / ``ClipEncoder`` (clip_encode.py): frame-exact re-encode (libx264 by
  default). The video pipeline decodes a source once and pushes every frame to the open
  ``ClipEncoder`` of each span.

Time and span conventions are written down in clip_facts.py; MP4 boxes are walked in mp4box.py;
rotation conventions are in rotation.py.
"""

from __future__ import annotations

from curastream.videos.clip_copy import cut_copy
from curastream.videos.clip_encode import ClipEncoder, cut_reencode, encode_clips
from curastream.videos.clip_facts import (
    COPYABLE_VIDEO_CODECS,
    ClipMedia,
    SpanError,
    probe_media,
)
from curastream.videos.clip_keyframes import keyframe_times
from curastream.videos.clip_preview import make_preview
from curastream.videos.packet_index import frame_range
from curastream.videos.smart_cut import cut_exact

__all__ = [
    "COPYABLE_VIDEO_CODECS",
    "ClipEncoder",
    "ClipMedia",
    "SpanError",
    "cut_copy",
    "cut_exact",
    "cut_reencode",
    "encode_clips",
    "frame_range",
    "keyframe_times",
    "make_preview",
    "probe_media",
]
