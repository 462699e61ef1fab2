"""Plain records the video pipeline fills and :class:`~curastream.writers.clip_writer.ClipWriter`
consumes (SPEC §2).

They hold Python values and encoded bytes only, never decoded pixels: a chunk may wait in the
writer's queue, and what waits there must be small.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def span_frames(start_s: float, end_s: float, fps: float) -> tuple[int, int]:
    """SPEC's frame numbers for a span: ``int(start_s * fps), int(end_s * fps)``, truncating.

    Truncation (not rounding) is the formula other tools use, so ids stay comparable. The video
    pipeline fixes a span's frames once, where it makes the span (kernels.shots.Span), and
    passes them to :meth:`ClipRecord.for_span`; this is the default for callers that do not.
    """
    return int(start_s * fps), int(end_s * fps)


# Curator closes a chunk once the int() seconds of its clips reach num_clips_per_chunk * 8
# (ClipTranscodingStage, 32 * 8 = 256 s by default).
SECONDS_PER_CHUNK_CLIP = 8


def chunk_by_duration(clips: list[ClipRecord], num_clips_per_chunk: int = 32) -> list[list[ClipRecord]]:
    """A video's clips in processed_clip_chunks order, grouped as Curator groups them: each
    clip weighs ``int(duration)`` seconds and a chunk closes when its weight reaches
    ``num_clips_per_chunk * 8``. No clips still make one (empty) chunk: the chunk JSON is
    what the resume rule looks for."""
    limit = num_clips_per_chunk * SECONDS_PER_CHUNK_CLIP
    groups: list[list[ClipRecord]] = []
    cur: list[ClipRecord] = []
    weight = 0
    for c in clips:
        cur.append(c)
        weight += int(c.span[1] - c.span[0])
        if weight >= limit:
            groups.append(cur)
            cur, weight = [], 0
    if cur or not groups:
        groups.append(cur)
    return groups


def span_uuid(video_path: str, start_frame: int, end_frame: int) -> str:
    """``uuid5(NAMESPACE_URL, f"{video_path}_{start_frame}_{end_frame}")``, as a string."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{video_path}_{start_frame}_{end_frame}"))


def chunk_uuid(video_path: str, chunk_index: int) -> str:
    """Name of a chunk's embedding Parquet: ``uuid5(NAMESPACE_URL, f"{video_path}_{chunk_index}")``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{video_path}_{chunk_index}"))


@dataclass
class ClipRecord:
    """One clip of a source video."""

    span: tuple[float, float]  # seconds in the source
    start_frame: int
    end_frame: int
    uuid: str
    media: bytes | None = None  # encoded mp4; None when not transcoded
    width: int | None = None  # the encoded clip's own properties (None without media)
    height: int | None = None
    framerate: float | None = None
    num_frames: int | None = None
    video_codec: str | None = None
    motion_score: dict[str, float] | None = None  # {"global_mean", "per_patch_min_256"}
    aesthetic_score: float | None = None
    model_scores: dict[str, float] = field(default_factory=dict)  # --model outputs (nsfw_score): metas top level
    frame_scores: dict[str, float] = field(default_factory=dict)  # sharpness, mean_luma, ...
    filtered_by: list[str] = field(default_factory=list)  # e.g. ["motion"]; empty = passed
    # stage -> message; metas list the stages as Curator does (``errors``) and keep the messages
    errors: dict[str, str] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # algorithm -> (D,) vector
    # {"start_frame", "end_frame", "<model>_caption", "<model>_enhanced_caption"}; frames are
    # the clip's own (0 = its first frame), end inclusive, as Curator's windows
    windows: list[dict[str, Any]] = field(default_factory=list)
    # (window start_frame, window end_frame) -> animated WebP, one per window (Curator's previews)
    previews: dict[tuple[int, int], bytes] = field(default_factory=dict)

    @classmethod
    def for_span(cls, video_path: str, start_s: float, end_s: float, fps: float,
                 frames: tuple[int, int] | None = None, **fields: Any) -> ClipRecord:
        """A record whose uuid is SPEC's formula over ``frames`` (default: :func:`span_frames`)."""
        sf, ef = span_frames(start_s, end_s, fps) if frames is None else (int(frames[0]), int(frames[1]))
        return cls(span=(float(start_s), float(end_s)), start_frame=sf, end_frame=ef,
                   uuid=span_uuid(video_path, sf, ef), **fields)

    @property
    def preview(self) -> bytes | None:
        """The first window's WebP (the one preview a single column can carry), or None."""
        return next(iter(self.previews.values()), None)

    @property
    def passed(self) -> bool:
        return not self.filtered_by

    @property
    def duration(self) -> float:
        return float(self.span[1]) - float(self.span[0])


@dataclass
class VideoRecord:
    """One source video's properties (what ``processed_videos/<rel>.json`` holds).

    It carries no clips: a long video streams out as several :class:`ClipChunk` s, each passed
    to the writer with this record beside it.
    """

    path: str  # absolute, resolved local path or URL
    height: int | None = None
    width: int | None = None
    framerate: float | None = None
    num_frames: int | None = None
    duration: float | None = None
    video_codec: str | None = None
    pixel_format: str | None = None
    audio_format: str | None = None
    # None = "count them": the writer then sums the clips of all chunks it wrote.
    num_total_clips: int | None = None


@dataclass
class ClipChunk:
    """A slice of one video's clips, written (and resumable) as a unit.

    ``num_chunks_total`` may be None on all but one chunk of a video, for a pipeline that only
    learns the count at the end of decoding; the video is complete once some chunk has stated
    the count and every index below it has been written.
    """

    video_path: str
    chunk_index: int
    clips: list[ClipRecord] = field(default_factory=list)
    num_chunks_total: int | None = None
