"""Where video batches end: clips to the ClipWriter, rejects to _curastream/rejects.parquet, a line per
video for summary.json, and (``--emit-ipc``) the clip rows to the IPC stream.

Each batch is VIDEO_SCHEMA rows (see :mod:`curastream.videos.stages`); a row is either
rejected, with its stage and reason, or carries its clips (``clips`` column, and their
:class:`ClipRecord` s in the ``clip_records`` side data for the writer).
"""

from __future__ import annotations

import logging
from typing import Any

from curastream.config import VideoRunConfig
from curastream.engine.batch import Batch
from curastream.engine.ipc import IpcEmitter
from curastream.engine.names import printable
from curastream.engine.progress import Progress
from curastream.engine.schemas import CLIP_SCHEMA, VIDEO_REJECT_SCHEMA
from curastream.engine.sink import Sink
from curastream.engine.stats import RunStats
from curastream.engine.storage import Storage
from curastream.engine.memory import trim
from curastream.videos.records import video_clips
from curastream.writers.clip_model import ClipChunk, ClipRecord, VideoRecord, chunk_by_duration
from curastream.writers.clip_writer import PROCESSED_CHUNKS_DIR, ClipWriter, relative_video_path
from curastream.writers.rejects import reject_row, write_rejects

log = logging.getLogger(__name__)

# Longest file name (bytes) local filesystems take, and longest object key S3 takes.
NAME_MAX = 255
KEY_MAX = 1024


class VideoRunSink(Sink):
    name = "write"

    def __init__(self, cfg: VideoRunConfig, storage: Storage, writer: ClipWriter | None, stats: RunStats,
                 prior_rejects: list[dict], emitter: IpcEmitter | None, progress: Progress | None):
        self.cfg = cfg
        self.storage = storage
        self.writer = writer
        self.stats = stats
        self.rejects = list(prior_rejects)
        self.emitter = emitter
        self.progress = progress
        self.per_video: list[dict[str, Any]] = []
        self.clips_total = self.clips_passed = self.clips_filtered = 0
        self.videos_with_warnings = 0

    def write(self, b: Batch) -> None:
        for i in range(b.num_rows):
            self._row(b, i)

    def _row(self, b: Batch, i: int) -> None:
        path = b.values("video")[i]
        clips: list[ClipRecord] = b.sidecar.get("clip_records", [None] * b.num_rows)[i] or []
        self.stats.items_in += 1
        self.stats.bytes_in += b.values("source_bytes")[i] or 0
        reject = None
        if b.values("status")[i] != "ok":
            reject = (b.values("reject_stage")[i], b.values("reject_reason")[i])
        elif self.writer is not None:
            too_long = _output_name_error(self.writer.input_path, path,
                                          len(chunk_by_duration(clips, self.cfg.clips_per_chunk)),
                                          self.storage.is_local)
            if too_long is not None:
                reject = ("write", too_long)
        if reject is not None:
            stage, reason = reject
            source = printable(path)
            self.stats.count_reject(f"{stage}:{_reason_kind(reason)}")
            self.rejects.append(reject_row(None, source, None, stage, reason))
            self.per_video.append({"video": source, "status": "rejected", "stage": stage, "reason": reason})
        else:
            self._write_video(b, i, path, clips)
        if self.progress is not None:
            self.progress.update(1)
        trim()  # this video's frames and clips are gone by now: see engine/memory.py

    def _write_video(self, b: Batch, i: int, path: str, clips: list[ClipRecord]) -> None:
        cfg = self.cfg
        v = {n: b.values(n)[i] for n in ("display_width", "display_height", "fps", "num_frames", "duration",
                                         "video_codec", "pixel_format", "audio_codec", "decode_errors",
                                         "motion_method", "warnings", "analysis_s")}
        video = VideoRecord(path=path, height=v["display_height"], width=v["display_width"], framerate=v["fps"],
                            num_frames=v["num_frames"], duration=v["duration"], video_codec=v["video_codec"],
                            pixel_format=v["pixel_format"], audio_format=v["audio_codec"],
                            num_total_clips=len(clips))
        groups = chunk_by_duration(clips, cfg.clips_per_chunk)
        chunk_of: dict[str, int] = {}
        for ci, group in enumerate(groups):
            for c in group:
                chunk_of[c.uuid] = ci
            if self.writer is not None:
                self.writer.write_chunk(ClipChunk(path, ci, group, num_chunks_total=len(groups)), video)
        locations = {}
        for c in clips:
            if c.media is not None and cfg.upload_clips and not cfg.dry_run:
                base = ClipWriter.get_output_path_clips(self.storage.url(), filtered=bool(c.filtered_by))
                sub = f"{c.uuid[:2]}/" if cfg.clip_subdirs else ""
                locations[c.uuid] = f"{base}/{sub}{c.uuid}.mp4"
        passed = sum(1 for c in clips if not c.filtered_by)
        warnings = v["warnings"].split("\n") if v["warnings"] else []
        if warnings:
            self.videos_with_warnings += 1
            log.warning("%s: %s", path, "; ".join(warnings))
        self.clips_total += len(clips)
        self.clips_passed += passed
        self.clips_filtered += len(clips) - passed
        self.stats.items_out += 1
        self.stats.bytes_out += sum(len(c.media or b"") for c in clips)
        self.per_video.append({"video": path, "status": "ok", "clips": len(clips),
                               "clips_passed": passed, "decode_errors": v["decode_errors"],
                               "motion_method": v["motion_method"],
                               **({"warnings": warnings} if warnings else {}),
                               "analysis_s": round(v["analysis_s"], 3)})
        if self.emitter is not None and clips:
            rows = Batch(CLIP_SCHEMA, video_clips(b, i), seq=b.seq).with_columns({
                "chunk_index": [chunk_of.get(c.uuid) for c in clips],
                "clip_location": [locations.get(c.uuid) for c in clips]})
            self.emitter.emit(rows.to_arrow(drop=() if self.emitter.include_bytes else ("media", "preview")))

    def commit(self) -> None:
        if self.writer is not None:
            self.writer.commit()
        write_rejects(self.storage, self.rejects, VIDEO_REJECT_SCHEMA)
        if self.emitter is not None:
            self.emitter.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        if self.emitter is not None:
            self.emitter.close()


def _output_name_error(input_path: str, video_path: str, n_chunks: int, local: bool) -> str | None:
    """Why ``processed_clip_chunks/<rel>_<n>.json`` (the longest name a video gets) cannot be
    written, or None. Checked before any of the video's files is written, so a name the store
    refuses rejects that one video instead of failing the run half-way through its files."""
    rel = relative_video_path(input_path, video_path)
    last_chunk = max(0, n_chunks - 1)
    longest = f"{PROCESSED_CHUNKS_DIR}/{rel}_{last_chunk}.json"
    parts = longest.encode("utf-8", "surrogateescape").split(b"/")
    if local and max(len(p) for p in parts) > NAME_MAX:
        return f"output name too long: {len(max(parts, key=len))} bytes in one path component (limit {NAME_MAX})"
    if not local and len(longest.encode("utf-8", "surrogateescape")) > KEY_MAX:
        return f"output name too long: object key over {KEY_MAX} bytes"
    return None


def _reason_kind(reason: str) -> str:
    low = reason.lower()
    for word in ("moov", "time limit", "no video stream", "zero frames", "no frame", "fps", "invalid data",
                 "truncated", "duration", "not valid utf-8", "name too long"):
        if word in low:
            return word.replace(" ", "_")
    return "error"
