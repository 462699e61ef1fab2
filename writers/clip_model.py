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

    Truncation (not rounding) is the formula other tools use, so ids stay comparable.
    """
    return int(start_s * fps), int(end_s * fps)


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
    frame_scores: dict[str, float] = field(default_factory=dict)  # sharpness, mean_luma, ...
    filtered_by: list[str] = field(default_factory=list)  # e.g. ["motion"]; empty = passed
    errors: dict[str, str] = field(default_factory=dict)
    preview: bytes | None = None  # animated WebP
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # algorithm -> (D,) vector
    # {"start_frame", "end_frame", "<model>_caption", "<model>_enhanced_caption"}
    windows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def for_span(cls, video_path: str, start_s: float, end_s: float, fps: float,
                 **fields: Any) -> "ClipRecord":
        """A record whose frame numbers and uuid follow SPEC's formula for ``video_path``."""
        sf, ef = span_frames(start_s, end_s, fps)
        return cls(span=(float(start_s), float(end_s)), start_frame=sf, end_frame=ef,
                   uuid=span_uuid(video_path, sf, ef), **fields)

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
