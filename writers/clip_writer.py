"""ClipWriterStage writer (SPEC §2): clip media, previews, per-clip metadata, embeddings, and
per-video / per-chunk records, written concurrently with the pipeline that produces them.

The layout (paths, resume rule) is in clip_layout.py, the write pool in clip_pool.py, the chunk
and video summaries in clip_summary.py, one clip's files in clip_files.py; this module runs the
clips' tasks and orders the commits.

Concurrency (the invariants the code relies on):

- The caller thread only validates and enqueues. Files are written by the :class:`WritePool`'s
  workers: one task per clip. The task that finishes a chunk's last clip then writes the
  chunk's summary files on the same worker, so no task ever waits on another.
- At most ``max_pending_chunks`` chunks are queued or in flight; ``write_chunk`` blocks when
  that many are pending (the pool's bounded queue), so a slow store slows the pipeline
  instead of filling memory.
- Commit order: clip files -> chunk Parquet -> chunk JSON; a video's ``processed_videos``
  JSON only after every one of its chunk JSONs is committed. That JSON is the completion
  marker the resume rule trusts (:meth:`ClipWriter.is_video_done`).
- After the first error or an abort, tasks that have not started are dropped and running
  ones stop before their next file; each file goes through :class:`Storage`, so nothing is
  ever left half-written under a final name nor as a temporary.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from curastream.engine.queues import Stopped
from curastream.engine.sink import Sink
from curastream.engine.storage import Storage
from curastream.writers.clip_files import ClipFiles
from curastream.writers.clip_layout import (  # noqa: F401 - names callers import from here
    CLIPS_DIR,
    EMBEDDING_ALGORITHMS,
    FILTERED_CLIPS_DIR,
    METAS_DIR,
    PREVIEWS_DIR,
    PROCESSED_CHUNKS_DIR,
    PROCESSED_VIDEOS_DIR,
    ClipLayout,
    dumps,
    relative_video_path,
)
from curastream.writers.clip_model import ClipChunk, ClipRecord, VideoRecord, chunk_by_duration, chunk_uuid
from curastream.writers.clip_pool import WritePool
from curastream.writers.clip_summary import (
    ClipOutcome,
    VideoState,
    WriterStats,
    chunk_doc,
    embedding_rows,
    embeddings_parquet,
    video_doc,
)

log = logging.getLogger(__name__)


@dataclass
class _ChunkJob:
    """One chunk in the pool: its clips' outcomes as they finish, and who finishes it."""

    chunk: ClipChunk
    video: VideoRecord
    st: VideoState
    outcomes: list[ClipOutcome | None]
    remaining: int
    failed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class ClipWriter(ClipLayout, ClipFiles, Sink):
    """Writes curated clips in ClipWriterStage's layout. The seed's parameters and defaults.

    ``write_chunk(chunk, video)`` from the pipeline thread; ``commit()`` at the end (or use it
    as a context manager, which aborts when an exception passes through). ``clip_subdirs``
    puts media under a two-character prefix folder (``clips/d2/<uuid>.mp4``, as the seed's
    example shows); flat by default, as Curator writes. The path helpers and
    :meth:`is_video_done` are :class:`ClipLayout`'s.
    """

    name = "clip_writer"

    def __init__(
        self,
        output_path: str,
        input_path: str,
        upload_clips: bool = True,
        dry_run: bool = False,
        generate_embeddings: bool = False,
        generate_previews: bool = False,
        generate_captions: bool = False,
        embedding_algorithm: str = "internvideo2",
        caption_models: list[str] | None = None,
        enhanced_caption_models: list[str] | None = None,
        verbose: bool = False,
        max_workers: int = 6,
        log_stats: bool = False,
        clip_subdirs: bool = False,
        storage_options: dict | None = None,
        *,
        storage: Storage | None = None,
        max_pending_chunks: int | None = None,
        video_records: bool = True,
    ):
        if embedding_algorithm not in EMBEDDING_ALGORITHMS:
            raise ValueError(
                f"embedding_algorithm must be one of {sorted(EMBEDDING_ALGORITHMS)}, "
                f"got {embedding_algorithm!r}"
            )
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        if max_pending_chunks is not None and max_pending_chunks < 1:
            raise ValueError("max_pending_chunks must be >= 1")
        self.output_path = str(output_path)
        self.input_path = str(input_path)
        self.upload_clips = upload_clips
        self.dry_run = dry_run
        self.generate_embeddings = generate_embeddings
        self.generate_previews = generate_previews
        self.generate_captions = generate_captions
        self.embedding_algorithm = embedding_algorithm
        self.caption_models = None if caption_models is None else list(caption_models)
        self.enhanced_caption_models = (
            None if enhanced_caption_models is None else list(enhanced_caption_models)
        )
        self.verbose = verbose
        self.max_workers = max_workers
        self.log_stats = log_stats
        self.clip_subdirs = clip_subdirs
        self.storage_options = storage_options
        self.max_pending_chunks = max_pending_chunks or 2 * max_workers
        self._emb_prefix = EMBEDDING_ALGORITHMS[embedding_algorithm]

        self._storage = storage
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = WritePool(max_workers, self.max_pending_chunks, self._stop, name="clip-writer")
        self._error: BaseException | None = None
        self._closed = False
        self._videos: dict[str, VideoState] = {}
        self._stats = WriterStats()
        # False: clip files only (a Ray task's part of a video); the video's chunk and
        # processed_videos records are written once, from every part, by write_video_records.
        self.video_records = video_records
        self._kept: dict[str, tuple[VideoRecord, list[tuple[list[ClipRecord], list]]]] = {}

    # -- sink contract ----------------------------------------------------------------------
    @property
    def storage(self) -> Storage:
        """The output Storage (its ``committed()`` feeds the run's index.json)."""
        if self._storage is None:
            self._storage = Storage(self.output_path, self.storage_options)
        return self._storage

    @property
    def pending(self) -> int:
        """Chunks queued or being written right now."""
        return self._pool.pending

    def write(self, item: tuple[ClipChunk, VideoRecord]) -> None:
        chunk, video = item
        self.write_chunk(chunk, video)

    def write_chunk(self, chunk: ClipChunk, video: VideoRecord) -> None:
        """Queue one chunk for writing; blocks while ``max_pending_chunks`` are pending.

        Raises the first error of an earlier write, so a failing store stops the pipeline.
        """
        if chunk.video_path != video.path:
            raise ValueError(f"chunk of {chunk.video_path!r} passed with video {video.path!r}")
        if chunk.chunk_index < 0:
            raise ValueError(f"chunk_index must be >= 0, got {chunk.chunk_index}")
        if chunk.num_chunks_total is not None and not 0 <= chunk.chunk_index < chunk.num_chunks_total:
            raise ValueError(
                f"chunk_index {chunk.chunk_index} out of range for {chunk.num_chunks_total} chunks"
            )
        rel = relative_video_path(self.input_path, video.path)
        with self._lock:
            self._raise_if_unusable()
        try:
            self._pool.admit()
        except Stopped:
            self._raise_if_unusable()
            raise
        try:
            st = self._register(chunk, video, rel)
        except BaseException:
            self._pool.release()
            raise
        try:
            _ = self.storage
            job = _ChunkJob(chunk, video, st, [None] * len(chunk.clips), len(chunk.clips))
            if not self.video_records:  # what the records need, without the media
                light = [ClipRecord(c.span, c.start_frame, c.end_frame, c.uuid) for c in chunk.clips]
                with self._lock:
                    self._kept.setdefault(video.path, (video, []))[1].append((light, job.outcomes))
            if not chunk.clips:
                self._pool.submit(self._finish_chunk, job)
            for i in range(len(chunk.clips)):
                self._pool.submit(self._run_clip, job, i)
        except BaseException as e:  # stopped under us (abort from another thread)
            self._fail(e)
            self._pool.release()
            if isinstance(e, Stopped):
                self._raise_if_unusable()
            raise

    def commit(self) -> None:
        """Wait for every pending write; raise the first error, if any."""
        with self._lock:
            if self._closed:
                self._raise_if_failed()
                return
            self._closed = True
        self._pool.close()
        if self._error is not None:
            self._pool.stop()
            raise self._error
        if self.log_stats:
            log.info("clip writer %s: %s", self.output_path, json.dumps(self.summary()))

    def abort(self) -> None:
        """Drop what has not started, let running files finish atomically, keep what is final."""
        with self._lock:
            self._closed = True
            self._stop.set()  # under the lock: a write failing from here on is not an error
        self._pool.stop()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.summary(list(self._videos.values()) if self.video_records else [])

    def written_clips(self) -> list[tuple[VideoRecord, list[ClipRecord], list[ClipOutcome]]]:
        """With ``video_records=False``, after :meth:`commit`: per video, its clips (span and id
        only) and what writing each produced, in the order written."""
        out = []
        for video, parts in self._kept.values():
            out.append((video, [c for light, _ in parts for c in light], [o for _, oc in parts for o in oc]))
        return out

    def write_video_records(self, video: VideoRecord, clips: list[ClipRecord], outcomes: list[ClipOutcome],
                            clips_per_chunk: int) -> None:
        """A video's ``processed_clip_chunks`` (and chunk embeddings) and, last, its
        ``processed_videos`` record, from clips other writers wrote (:meth:`written_clips`),
        grouped as the pipeline groups them. Runs on the caller's thread."""
        groups = chunk_by_duration(clips, clips_per_chunk)
        st = self._register(ClipChunk(video.path, 0, groups[0], len(groups)), video,
                            relative_video_path(self.input_path, video.path))
        st.submitted.update(range(len(groups)))
        start = 0
        for ci, group in enumerate(groups):
            self._write_chunk_files(ClipChunk(video.path, ci, group, len(groups)), video, st,
                                    outcomes[start:start + len(group)])
            start += len(group)

    # -- internals: lifecycle -----------------------------------------------------------------
    def _register(self, chunk: ClipChunk, video: VideoRecord, rel: str) -> VideoState:
        """Record a chunk against its video; ValueError for a chunk that contradicts the others."""
        idx = chunk.chunk_index
        with self._lock:
            self._raise_if_unusable()
            st = self._videos.get(video.path)
            if st is None:
                st = self._videos[video.path] = VideoState(rel, video)
            if idx in st.submitted:
                raise ValueError(f"chunk {idx} of {video.path!r} written twice")
            total = chunk.num_chunks_total if chunk.num_chunks_total is not None else st.total
            if total is not None and (
                (st.total is not None and st.total != total) or any(i >= total for i in st.submitted)
            ):
                raise ValueError(f"inconsistent chunk count for {video.path!r}")
            st.total = total
            st.submitted.add(idx)
            st.video = video
        return st

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _raise_if_unusable(self) -> None:
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError("ClipWriter is closed (committed or aborted)")

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self._error is None and not self._stop.is_set():
                self._error = e
            self._stop.set()
        self._pool.wake()  # a caller blocked in write_chunk sees the error at once

    def _put(self, rel: str, data: bytes, video_key: str, rows: int | None = None) -> str:
        """Commit one file of the video ``video_key`` (its path under input_path): journaled as
        that video's, so a resume that does the video again first removes what a killed run left
        of it (videos/pipeline.resume_todo)."""
        if self._stop.is_set():
            raise _Stopped()
        cf = self.storage.write_atomic(rel, data, rows=rows, group=video_key)
        top = rel.split("/", 1)[0]
        if top == "metas":
            top = METAS_DIR
        with self._lock:
            self._stats.add_file(top, cf.bytes)
        url = self.storage.url(rel)
        if self.verbose:
            log.info("wrote %s (%d bytes)", url, cf.bytes)
        return url

    # -- internals: one clip ------------------------------------------------------------------
    def _run_clip(self, job: _ChunkJob, i: int) -> None:
        """Pool task: write one clip; the chunk's last clip to finish writes the chunk's files."""
        try:
            job.outcomes[i] = self._write_clip(job.chunk.clips[i], job.video, job.st.rel)
        except _Stopped:
            job.failed = True
        except BaseException as e:  # noqa: BLE001 - handed to the caller via commit/write_chunk
            job.failed = True
            self._fail(e)
        with job.lock:
            job.remaining -= 1
            last = job.remaining == 0
        if last:
            self._finish_chunk(job)

    # -- internals: one chunk -------------------------------------------------------------------
    def _finish_chunk(self, job: _ChunkJob) -> None:
        try:
            if not job.failed and self.video_records:
                self._write_chunk_files(job.chunk, job.video, job.st, job.outcomes)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the caller via commit/write_chunk
            self._fail(e)
        finally:
            self._pool.release()

    def _write_chunk_files(self, chunk: ClipChunk, video: VideoRecord, st: VideoState,
                           outcomes: list[ClipOutcome]) -> None:
        rows = embedding_rows(outcomes)
        if rows and not self.dry_run:
            name = chunk_uuid(video.path, chunk.chunk_index)
            self._put(f"{self._emb_prefix}_embd_parquet/{name}.parquet", embeddings_parquet(rows), st.rel,
                      rows=len(rows))
        doc = chunk_doc(chunk, video, outcomes)
        self._put(f"{PROCESSED_CHUNKS_DIR}/{st.rel}_{chunk.chunk_index}.json", dumps(doc), st.rel)

        with self._lock:
            self._stats.add_chunk(outcomes, doc)
            st.done.add(chunk.chunk_index)
            st.clips += len(outcomes)
            # Claimed under the lock so exactly one finaliser writes the marker.
            complete = (st.total is not None and len(st.done) == st.total and not st.marked)
            if complete:
                st.marked = True
            v = st.video
            n_clips = st.clips
        if complete:
            try:
                self._put(f"{PROCESSED_VIDEOS_DIR}/{st.rel}.json", dumps(video_doc(v, st.total, n_clips)), st.rel)
            except BaseException:
                with self._lock:
                    st.marked = False
                raise


class _Stopped(Exception):
    """Raised inside a task when the writer was aborted or failed: skip the remaining files."""
