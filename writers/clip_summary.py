"""Chunk and video summaries of the clip writer: what writing each clip produced, the
``processed_clip_chunks`` and ``processed_videos`` documents built from it, the chunk's
embedding Parquet, and the run's counters (``ClipWriter.summary()``).

Pure data: the writer holds the lock and does the writing.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curastream.writers.clip_model import ClipChunk, VideoRecord


@dataclass
class ClipOutcome:
    """What writing one clip produced; aggregated into its chunk's summary."""

    uuid: str
    passed: bool
    filtered_by: list[str]
    duration: float
    transcoded: bool = False
    valid: bool = False
    has_caption: bool = False
    has_webp: bool = False
    preview_missing: bool = False
    embedding_missing: bool = False
    has_errors: bool = False
    embedding: np.ndarray | None = None  # float32 (D,), passed clips only
    captions: dict[str, str] = field(default_factory=dict)  # "s_e" -> first caption
    enhanced: dict[str, str] = field(default_factory=dict)


@dataclass
class VideoState:
    """One source video as the writer has seen it so far, across its chunks."""

    rel: str
    video: VideoRecord
    total: int | None = None
    submitted: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    clips: int = 0
    marked: bool = False


def embedding_rows(outcomes: list[ClipOutcome]) -> list[ClipOutcome]:
    """Passed clips that carry an embedding: the rows of the chunk's Parquet."""
    return [o for o in outcomes if o.passed and o.embedding is not None]


def embeddings_parquet(rows: list[ClipOutcome]) -> bytes:
    table = pa.table({
        "id": pa.array([o.uuid for o in rows], pa.string()),
        "embedding": pa.array([o.embedding for o in rows], pa.list_(pa.float32())),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def chunk_doc(chunk: ClipChunk, video: VideoRecord, outcomes: list[ClipOutcome]) -> dict[str, Any]:
    """The ``processed_clip_chunks/<rel>_<i>.json`` document."""
    passed = [o for o in outcomes if o.passed]
    filtered = [o for o in outcomes if not o.passed]
    durations = [o.duration for o in outcomes]
    by_filter = Counter(f for o in filtered for f in o.filtered_by)
    return {
        "video": video.path,
        "clip_chunk_index": chunk.chunk_index,
        "num_clips_filtered_by_motion": by_filter["motion"],
        "num_clips_filtered_by_aesthetic": by_filter["aesthetic"],
        "num_clips_passed": len(passed),
        "num_clips_transcoded": sum(o.transcoded for o in outcomes),
        "num_clips_with_embeddings": len(embedding_rows(outcomes)),
        "num_clips_with_caption": sum(o.has_caption for o in passed),
        "num_clips_with_webp": sum(o.has_webp for o in passed),
        "total_clip_duration": float(sum(durations)),
        "max_clip_duration": float(max(durations, default=0.0)),
        "clips": [o.uuid for o in passed],
        "filtered_clips": [o.uuid for o in filtered],
        "all_windows": {o.uuid: o.captions for o in passed},
        "all_windows_enhanced_caption": {o.uuid: o.enhanced for o in passed},
        # Ours, after SPEC's fields: every filter's count, not only motion and aesthetic.
        "num_clips_filtered_by": dict(sorted(by_filter.items())),
    }


def video_doc(video: VideoRecord, num_chunks: int | None, n_clips: int) -> dict[str, Any]:
    """The ``processed_videos/<rel>.json`` document: the completion marker resume trusts."""
    return {
        "video": video.path,
        "height": video.height,
        "width": video.width,
        "framerate": video.framerate,
        "num_frames": video.num_frames,
        "duration": video.duration,
        "video_codec": video.video_codec,
        "pixel_format": video.pixel_format,
        "audio_format": video.audio_format,
        "num_total_clips": video.num_total_clips if video.num_total_clips is not None else n_clips,
        "num_clip_chunks": num_chunks,
    }


class WriterStats:
    """The writer's counters; the caller serialises access (the writer's lock)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.files_by_dir: Counter[str] = Counter()
        self.bytes_by_dir: Counter[str] = Counter()

    def add_file(self, top: str, nbytes: int) -> None:
        self.files_by_dir[top] += 1
        self.bytes_by_dir[top] += nbytes

    def add_chunk(self, outcomes: list[ClipOutcome], doc: dict[str, Any]) -> None:
        s = self.counts
        s["chunks"] += 1
        s["clips"] += len(outcomes)
        s["clips_passed"] += doc["num_clips_passed"]
        s["clips_filtered"] += len(doc["filtered_clips"])
        s["clips_valid"] += sum(o.valid for o in outcomes)
        s["clips_transcoded"] += doc["num_clips_transcoded"]
        s["clips_with_embeddings"] += doc["num_clips_with_embeddings"]
        s["clips_with_webp"] += doc["num_clips_with_webp"]
        s["clips_with_caption"] += doc["num_clips_with_caption"]
        s["clips_with_errors"] += sum(o.has_errors for o in outcomes)
        s["previews_missing"] += sum(o.preview_missing for o in outcomes)
        s["embeddings_missing"] += sum(o.embedding_missing for o in outcomes)
        s["total_clip_duration_ms"] += round(sum(o.duration for o in outcomes) * 1000)

    def summary(self, videos: list[VideoState]) -> dict[str, Any]:
        s = self.counts
        return {
            "videos": sum(1 for v in videos if v.marked),
            "videos_incomplete": sum(1 for v in videos if not v.marked),
            "chunks": s["chunks"],
            "clips": s["clips"],
            "clips_passed": s["clips_passed"],
            "clips_filtered": s["clips_filtered"],
            "clips_valid": s["clips_valid"],
            "clips_transcoded": s["clips_transcoded"],
            "clips_with_embeddings": s["clips_with_embeddings"],
            "clips_with_webp": s["clips_with_webp"],
            "clips_with_caption": s["clips_with_caption"],
            "clips_with_errors": s["clips_with_errors"],
            "previews_missing": s["previews_missing"],
            "embeddings_missing": s["embeddings_missing"],
            "total_clip_duration": round(s["total_clip_duration_ms"] / 1000.0, 3),
            "files_written": sum(self.files_by_dir.values()),
            "bytes_written": sum(self.bytes_by_dir.values()),
            "files_by_dir": dict(sorted(self.files_by_dir.items())),
            "bytes_by_dir": dict(sorted(self.bytes_by_dir.items())),
        }
