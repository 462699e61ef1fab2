"""ClipWriterStage layout (SPEC §2): clip media, previews, per-clip metadata, embeddings, and
per-video / per-chunk records, written concurrently with the pipeline that produces them.

Concurrency (the invariants the code relies on):

- The caller thread only validates and enqueues. Files are written by a ThreadPoolExecutor:
  one task per clip, then one finaliser task per chunk, submitted *after* its clip tasks.
  The executor's queue is FIFO, so when a finaliser starts, its clip tasks have already been
  taken by workers; the finaliser's wait on them therefore never needs a free worker and
  cannot deadlock the pool.
- At most ``max_pending_chunks`` chunks are queued or in flight; ``write_chunk`` blocks when
  that many are pending, so a slow store slows the pipeline instead of filling memory.
- Commit order: clip files -> chunk Parquet -> chunk JSON; a video's ``processed_videos``
  JSON only after every one of its chunk JSONs is committed. That JSON is the completion
  marker the resume rule trusts (:meth:`ClipWriter.is_video_done`).
- After the first error or an abort, tasks that have not started are cancelled and running
  ones stop before their next file; each file goes through :class:`Storage`, so nothing is
  ever left half-written under a final name nor as a temporary.
"""

from __future__ import annotations

import io
import json
import logging
import numbers
import os
import pickle
import posixpath
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curastream.writers.clip_model import ClipChunk, ClipRecord, VideoRecord, chunk_uuid
from curastream.engine.sink import Sink
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

EMBEDDING_ALGORITHMS = {"internvideo2": "iv2", "cosmos-embed1": "ce1"}

CLIPS_DIR = "clips"
FILTERED_CLIPS_DIR = "filtered_clips"
PREVIEWS_DIR = "previews"
METAS_DIR = "metas/v0"
PROCESSED_VIDEOS_DIR = "processed_videos"
PROCESSED_CHUNKS_DIR = "processed_clip_chunks"


def _normalize(path: str, resolve_links: bool = True) -> str:
    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path:
        return path.rstrip("/")
    path = os.path.expanduser(path)
    return os.path.realpath(path) if resolve_links else os.path.abspath(path)


def relative_video_path(input_path: str, video_path: str) -> str:
    """``video_path`` relative to ``input_path`` (both resolved first), posix separators.

    The prefix must end at a path separator: ``/data/vid`` is not a prefix of
    ``/data/videos/a.mp4``, where plain ``str.startswith`` would say it is.
    Paths are compared as given (made absolute) first, so a symlink inside ``input_path``
    that points elsewhere keeps its name under ``input_path``; then with links resolved
    (``input_path`` itself may be reached through a link).
    """
    try:
        return _relative(_normalize(input_path, False), _normalize(video_path, False), input_path, video_path)
    except ValueError:
        return _relative(_normalize(input_path), _normalize(video_path), input_path, video_path)


def _relative(root: str, video: str, input_path: str, video_path: str) -> str:
    if video == root:  # input_path names the single video itself
        return posixpath.basename(video.replace(os.sep, "/"))
    prefix = root if root.endswith(("/", os.sep)) else root + "/"
    if os.sep != "/":
        video, prefix = video.replace(os.sep, "/"), prefix.replace(os.sep, "/")
    if not video.startswith(prefix):
        raise ValueError(
            f"video {video_path!r} is not under input_path {input_path!r} "
            f"(resolved: {video!r} vs {root!r}); input_path must be a prefix of every video path"
        )
    return video[len(prefix):]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, numbers.Real):  # Fraction frame rates and the like
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _dumps(doc: dict[str, Any]) -> bytes:
    # 4-space indent is Curator's format; readers diffing the two outputs see the same text.
    return json.dumps(doc, indent=4, default=_json_default).encode()


def _num(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class _ClipOutcome:
    """What writing one clip produced; aggregated by its chunk's finaliser."""

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
class _VideoState:
    rel: str
    video: VideoRecord
    total: int | None = None
    submitted: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    clips: int = 0
    marked: bool = False


class ClipWriter(Sink):
    """Writes curated clips in ClipWriterStage's layout. The seed's parameters and defaults.

    ``write_chunk(chunk, video)`` from the pipeline thread; ``commit()`` at the end (or use it
    as a context manager, which aborts when an exception passes through). ``clip_subdirs``
    puts media under a two-character prefix folder (``clips/d2/<uuid>.mp4``, as the seed's
    example shows); flat by default, as Curator writes.
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
        self._executor: ThreadPoolExecutor | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._pending = 0
        self._error: BaseException | None = None
        self._closed = False
        self._videos: dict[str, _VideoState] = {}
        self._stats: Counter[str] = Counter()
        self._files_by_dir: Counter[str] = Counter()
        self._bytes_by_dir: Counter[str] = Counter()

    # -- path helpers (names and results fixed by SPEC §2) ------------------------------------
    @staticmethod
    def _join(output_path: str, extra: str) -> str:
        return str(output_path).rstrip("/") + "/" + extra.strip("/")

    @staticmethod
    def get_output_path_clips(output_path: str, filtered: bool = False) -> str:
        return ClipWriter._join(output_path, FILTERED_CLIPS_DIR if filtered else CLIPS_DIR)

    @staticmethod
    def get_output_path_previews(output_path: str) -> str:
        return ClipWriter._join(output_path, PREVIEWS_DIR)

    @staticmethod
    def get_output_path_metas(output_path: str, version: str) -> str:
        return ClipWriter._join(output_path, f"metas/{version}")

    @staticmethod
    def get_output_path_iv2_embd(output_path: str) -> str:
        return ClipWriter._join(output_path, "iv2_embd")

    @staticmethod
    def get_output_path_ce1_embd(output_path: str) -> str:
        return ClipWriter._join(output_path, "ce1_embd")

    @staticmethod
    def get_output_path_iv2_embd_parquet(output_path: str) -> str:
        return ClipWriter._join(output_path, "iv2_embd_parquet")

    @staticmethod
    def get_output_path_ce1_embd_parquet(output_path: str) -> str:
        return ClipWriter._join(output_path, "ce1_embd_parquet")

    @staticmethod
    def get_output_path_processed_videos(output_path: str) -> str:
        return ClipWriter._join(output_path, PROCESSED_VIDEOS_DIR)

    @staticmethod
    def get_output_path_processed_clip_chunks(output_path: str) -> str:
        return ClipWriter._join(output_path, PROCESSED_CHUNKS_DIR)

    # -- resume ---------------------------------------------------------------------------
    @staticmethod
    def processed_video_rel(input_path: str, video_path: str) -> str:
        return f"{PROCESSED_VIDEOS_DIR}/{relative_video_path(input_path, video_path)}.json"

    @staticmethod
    def processed_chunk_rel(input_path: str, video_path: str, chunk_index: int) -> str:
        rel = relative_video_path(input_path, video_path)
        return f"{PROCESSED_CHUNKS_DIR}/{rel}_{int(chunk_index)}.json"

    @staticmethod
    def is_video_done(output_path: str, input_path: str, video_path: str,
                      storage_options: dict | None = None) -> bool:
        """SPEC's resume rule: the video's processed_videos JSON and all its chunk JSONs exist."""
        st = Storage(output_path, storage_options)
        try:
            doc = json.loads(st.read_bytes(ClipWriter.processed_video_rel(input_path, video_path)))
        except (OSError, ValueError):  # missing, or unreadable: not a completion marker
            return False
        n = doc.get("num_clip_chunks") if isinstance(doc, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return False
        return all(
            st.exists(ClipWriter.processed_chunk_rel(input_path, video_path, i)) for i in range(n)
        )

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
        with self._cond:
            return self._pending

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
        idx = chunk.chunk_index
        with self._cond:
            while True:
                self._raise_if_unusable()
                if self._pending < self.max_pending_chunks:
                    break
                self._cond.wait()
            st = self._videos.get(video.path)
            if st is None:
                st = self._videos[video.path] = _VideoState(rel, video)
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
            self._pending += 1
        try:
            ex = self._open()
            clip_futs = [ex.submit(self._write_clip, clip, video) for clip in chunk.clips]
            ex.submit(self._finish_chunk, chunk, video, st, clip_futs)
        except BaseException as e:  # executor shut down under us (abort from another thread)
            self._fail(e)
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()
            raise

    def commit(self) -> None:
        """Wait for every pending write; raise the first error, if any."""
        with self._cond:
            if self._closed:
                self._raise_if_failed()
                return
            self._closed = True
            while self._pending and self._error is None:
                self._cond.wait()
        if self._error is not None:
            self._shutdown(cancel=True)
            raise self._error
        self._shutdown(cancel=False)
        if self.log_stats:
            log.info("clip writer %s: %s", self.output_path, json.dumps(self.summary()))

    def abort(self) -> None:
        """Cancel what has not started, let running files finish atomically, keep what is final."""
        with self._cond:
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        self._shutdown(cancel=True)

    def summary(self) -> dict[str, Any]:
        with self._cond:
            s = self._stats
            return {
                "videos": sum(1 for v in self._videos.values() if v.marked),
                "videos_incomplete": sum(1 for v in self._videos.values() if not v.marked),
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
                "files_written": sum(self._files_by_dir.values()),
                "bytes_written": sum(self._bytes_by_dir.values()),
                "files_by_dir": dict(sorted(self._files_by_dir.items())),
                "bytes_by_dir": dict(sorted(self._bytes_by_dir.items())),
            }

    # -- internals: lifecycle -----------------------------------------------------------------
    def _open(self) -> ThreadPoolExecutor:
        if self._executor is None:
            _ = self.storage
            self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="clip-writer")
        return self._executor

    def _shutdown(self, cancel: bool) -> None:
        ex = self._executor
        if ex is not None:
            if cancel:
                self._stop.set()
            ex.shutdown(wait=True, cancel_futures=cancel)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _raise_if_unusable(self) -> None:
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError("ClipWriter is closed (committed or aborted)")

    def _fail(self, e: BaseException) -> None:
        with self._cond:
            if self._error is None and not self._stop.is_set():
                self._error = e
            self._stop.set()
            self._cond.notify_all()

    def _put(self, rel: str, data: bytes, rows: int | None = None) -> str:
        if self._stop.is_set():
            raise _Stopped()
        cf = self.storage.write_atomic(rel, data, rows=rows)
        top = rel.split("/", 1)[0]
        if top == "metas":
            top = METAS_DIR
        with self._cond:
            self._files_by_dir[top] += 1
            self._bytes_by_dir[top] += cf.bytes
        url = self.storage.url(rel)
        if self.verbose:
            log.info("wrote %s (%d bytes)", url, cf.bytes)
        return url

    # -- internals: one clip ------------------------------------------------------------------
    def _clip_rel(self, uid: str, filtered: bool) -> str:
        d = FILTERED_CLIPS_DIR if filtered else CLIPS_DIR
        return f"{d}/{uid[:2]}/{uid}.mp4" if self.clip_subdirs else f"{d}/{uid}.mp4"

    def _caption_keys(self, window: dict[str, Any], enhanced: bool) -> list[str]:
        models = self.enhanced_caption_models if enhanced else self.caption_models
        suffix = "_enhanced_caption" if enhanced else "_caption"
        if models is not None:
            return [f"{m}{suffix}" for m in models]
        # No model list: emit what upstream provided, in the order it provided it.
        return [k for k in window if k.endswith(suffix)
                and (enhanced or not k.endswith("_enhanced_caption"))]

    def _windows(self, clip: ClipRecord, out: _ClipOutcome) -> list[dict[str, Any]]:
        windows = []
        for w in clip.windows:
            d: dict[str, Any] = {"start_frame": int(w["start_frame"]), "end_frame": int(w["end_frame"])}
            key = f"{d['start_frame']}_{d['end_frame']}"
            for enhanced in (False, True):
                for k in self._caption_keys(w, enhanced):
                    if w.get(k) is None:
                        continue
                    d[k] = w[k]
                    if enhanced:
                        out.enhanced.setdefault(key, w[k])
                    else:
                        out.captions.setdefault(key, w[k])
                        out.has_caption = True
            windows.append(d)
        return windows

    def _write_clip(self, clip: ClipRecord, video: VideoRecord) -> _ClipOutcome:
        try:
            return self._write_clip_inner(clip, video)
        except _Stopped:
            raise
        except BaseException as e:
            self._fail(e)
            raise

    def _write_clip_inner(self, clip: ClipRecord, video: VideoRecord) -> _ClipOutcome:
        passed = not clip.filtered_by
        out = _ClipOutcome(clip.uuid, passed, list(clip.filtered_by), clip.duration)
        errors = dict(clip.errors)
        write_files = not self.dry_run

        clip_location = None
        if clip.media:
            out.transcoded = True
            if self.upload_clips and write_files:
                clip_location = self._put(self._clip_rel(clip.uuid, not passed), clip.media)
        elif not self.dry_run:
            log.warning("clip %s from %s has no media; nothing to upload", clip.uuid, video.path)

        # Curator writes previews and embeddings for passing clips only.
        if passed:
            if clip.preview:
                out.has_webp = True
                if self.generate_previews and write_files:
                    self._put(f"{PREVIEWS_DIR}/{clip.uuid}/{clip.start_frame}_{clip.end_frame}.webp",
                              clip.preview)
            elif self.generate_previews:
                out.preview_missing = True
                log.error("clip %s from %s has no preview; nothing to write", clip.uuid, video.path)
            emb = clip.embeddings.get(self.embedding_algorithm)
            if emb is not None:
                vec = np.asarray(emb).reshape(-1)
                out.embedding = vec.astype(np.float32)
                if write_files:
                    arr = vec.astype(np.float16).reshape(1, -1)
                    self._put(f"{self._emb_prefix}_embd/{clip.uuid}.pickle", pickle.dumps(arr))
            elif self.generate_embeddings:
                out.embedding_missing = True
                errors["embedding"] = f"no {self.embedding_algorithm} embedding"
                log.error("clip %s from %s has no %s embedding", clip.uuid, video.path,
                          self.embedding_algorithm)

        windows = self._windows(clip, out)
        if passed and self.generate_captions and not out.has_caption:
            log.warning("clip %s from %s has no caption", clip.uuid, video.path)
        out.has_errors = bool(errors)
        out.valid = bool((clip.media or self.dry_run) and passed and not errors)

        if write_files:
            doc: dict[str, Any] = {
                "span_uuid": clip.uuid,
                "source_video": video.path,
                "duration_span": [float(clip.span[0]), float(clip.span[1])],
                "width_source": video.width,
                "height_source": video.height,
                "framerate_source": video.framerate,
                "clip_location": clip_location,
            }
            if clip.media:
                doc.update(width=clip.width, height=clip.height, framerate=clip.framerate,
                           num_frames=clip.num_frames, video_codec=clip.video_codec,
                           num_bytes=len(clip.media))
            if clip.motion_score is not None:
                doc["motion_score"] = {
                    "global_mean": _num(clip.motion_score.get("global_mean")),
                    "per_patch_min_256": _num(clip.motion_score.get("per_patch_min_256")),
                }
            if clip.aesthetic_score is not None:
                doc["aesthetic_score"] = float(clip.aesthetic_score)
            if errors:
                doc["errors"] = errors
            if clip.frame_scores:
                doc["frame_scores"] = {k: _num(v) for k, v in clip.frame_scores.items()}
            if clip.filtered_by:
                doc["filtered_by"] = list(clip.filtered_by)
            doc["windows"] = windows
            doc["valid"] = out.valid
            self._put(f"{METAS_DIR}/{clip.uuid}.json", _dumps(doc))
        return out

    # -- internals: one chunk -------------------------------------------------------------------
    def _finish_chunk(self, chunk: ClipChunk, video: VideoRecord, st: _VideoState,
                      clip_futs: list[Future]) -> None:
        try:
            outcomes = [f.result() for f in clip_futs]
            self._write_chunk_files(chunk, video, st, outcomes)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the caller via commit/write_chunk
            self._fail(e)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def _write_chunk_files(self, chunk: ClipChunk, video: VideoRecord, st: _VideoState,
                           outcomes: list[_ClipOutcome]) -> None:
        passed = [o for o in outcomes if o.passed]
        filtered = [o for o in outcomes if not o.passed]
        rows = [o for o in passed if o.embedding is not None]
        if rows and not self.dry_run:
            table = pa.table({
                "id": pa.array([o.uuid for o in rows], pa.string()),
                "embedding": pa.array([o.embedding for o in rows], pa.list_(pa.float32())),
            })
            buf = io.BytesIO()
            pq.write_table(table, buf)
            name = chunk_uuid(video.path, chunk.chunk_index)
            self._put(f"{self._emb_prefix}_embd_parquet/{name}.parquet", buf.getvalue(),
                      rows=len(rows))

        durations = [o.duration for o in outcomes]
        by_filter = Counter(f for o in filtered for f in o.filtered_by)
        doc = {
            "video": video.path,
            "clip_chunk_index": chunk.chunk_index,
            "num_clips_filtered_by_motion": by_filter["motion"],
            "num_clips_filtered_by_aesthetic": by_filter["aesthetic"],
            "num_clips_passed": len(passed),
            "num_clips_transcoded": sum(o.transcoded for o in outcomes),
            "num_clips_with_embeddings": len(rows),
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
        self._put(f"{PROCESSED_CHUNKS_DIR}/{st.rel}_{chunk.chunk_index}.json", _dumps(doc))

        with self._cond:
            s = self._stats
            s["chunks"] += 1
            s["clips"] += len(outcomes)
            s["clips_passed"] += len(passed)
            s["clips_filtered"] += len(filtered)
            s["clips_valid"] += sum(o.valid for o in outcomes)
            s["clips_transcoded"] += doc["num_clips_transcoded"]
            s["clips_with_embeddings"] += len(rows)
            s["clips_with_webp"] += doc["num_clips_with_webp"]
            s["clips_with_caption"] += doc["num_clips_with_caption"]
            s["clips_with_errors"] += sum(o.has_errors for o in outcomes)
            s["previews_missing"] += sum(o.preview_missing for o in outcomes)
            s["embeddings_missing"] += sum(o.embedding_missing for o in outcomes)
            s["total_clip_duration_ms"] += round(sum(durations) * 1000)
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
                self._write_video_json(v, st, n_clips)
            except BaseException:
                with self._cond:
                    st.marked = False
                raise

    def _write_video_json(self, video: VideoRecord, st: _VideoState, n_clips: int) -> None:
        doc = {
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
            "num_clip_chunks": st.total,
        }
        self._put(f"{PROCESSED_VIDEOS_DIR}/{st.rel}.json", _dumps(doc))


class _Stopped(Exception):
    """Raised inside a task when the writer was aborted or failed: skip the remaining files."""
