"""Clip media, the public face: cut a source video into MP4 clips, make animated WebP previews,
probe the result. The work lives in the modules named below; callers import from here.

Two ways to make a clip:

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
from curastream.videos.clip_facts import COPYABLE_VIDEO_CODECS, ClipMedia, SpanError, probe_media
from curastream.videos.clip_keyframes import keyframe_times
from curastream.videos.clip_preview import make_preview

__all__ = [
    "ClipMedia",
    "ClipEncoder",
    "SpanError",
    "COPYABLE_VIDEO_CODECS",
    "keyframe_times",
    "cut_copy",
    "cut_reencode",
    "encode_clips",
    "make_preview",
    "probe_media",
]
