"""The video curation pipeline: probe -> analyse (one decode) -> split -> clips -> ClipWriter.

One item is one video. The analysis stage decodes each video once at a reduced size and feeds
every kernel from that one pass: shot boundaries, motion (codec motion vectors where the codec
has them, block matching on the frames otherwise), per-clip image scores and preview frames.
With ``--reencode --split fixed`` the same pass also feeds the clip encoders, so nothing is
decoded twice. The clip stage cuts media (stream copy by default), aggregates scores per clip
and applies filters; the ClipWriter's thread pool writes while the next video is analysed.

A video that cannot be probed or decoded is rejected with its reason (``rejects.parquet`` and
``summary.json``); the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa

from curastream.videos.clip_media import ClipEncoder, ClipMedia, cut_copy, cut_reencode, make_preview
from curastream.config import VideoRunConfig
from curastream.engine.device import Device, resolve_device
from curastream.engine.pipeline import Pipeline, Stage
from curastream.engine.names import printable
from curastream.engine.ipc import IpcEmitter
from curastream.kernels.image_scores import score_batch
from curastream.kernels.motion import (
    MotionAccumulator,
    aggregate_motion,
    passes_motion_filter,
)
from curastream.kernels.shots import ShotDetector, fixed_stride_spans, frame_features, split_scenes
from curastream.engine.output import prepare_output
from curastream.engine.progress import Progress
from curastream.engine.schemas import CLIP_SCHEMA, IMAGE_SCORE_COLUMNS, Batch
from curastream.engine.stats import RunStats
from curastream.videos.decode import VideoDecodeError, iter_analysis_frames, read_ahead
from curastream.videos.probe import VideoInfo, VideoProbeError, probe
from curastream.videos.sources import VideoInput, list_video_inputs
from curastream.writers.clip_model import ClipChunk, ClipRecord, VideoRecord
from curastream.writers.clip_writer import PROCESSED_CHUNKS_DIR, ClipWriter, relative_video_path
from curastream.writers.rejects import read_rejects, write_rejects
from curastream.engine.run_index import write_run_index
from curastream.engine.sink import Sink
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
SCORE_FPS = 1.0  # per-clip frame scores and plug-in frames: one frame a second is plenty
MOTION_FPS = 2.0  # Curator samples motion at about 2 frames/s
# Decoded frames per chunk. The decoder runs one chunk ahead of the kernels (read_ahead), so a
# video holds up to three chunks: 3 x 128 frames keep a worker's frames at or below the 2 x 256
# it held before read-ahead (~14 MB per chunk at 256x144), and the kernels of the last chunk,
# which nothing overlaps, stay short.
ANALYSIS_CHUNK = 128


@dataclass
class VideoTask:
    """One video on its way through the stages. Holds no full-size pixels."""

    input: VideoInput
    seq: int
    info: VideoInfo | None = None
    reject: tuple[str, str] | None = None  # (stage, reason)
    spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) frame spans
    motion: list[Any] = field(default_factory=list)  # MotionSample
    score_frames: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (frame_index, analysis RGB)
    preview_frames: list[tuple[int, bytes]] = field(default_factory=list)  # (frame_index, JPEG of a 240p frame)
    media: list[ClipMedia | Exception] | None = None  # set by the analysis pass in single-pass re-encode
    clips: list[ClipRecord] = field(default_factory=list)
    decode_errors: int = 0
    analysis_s: float = 0.0
    warnings: list[str] = field(default_factory=list)  # processed, but the user should know

    @property
    def nbytes(self) -> int:
        n = sum(f.nbytes for _, f in self.score_frames) + sum(len(b) for _, b in self.preview_frames)
        n += sum(len(c.media or b"") + len(c.preview or b"") for c in self.clips)
        if self.media:
            n += sum(m.num_bytes for m in self.media if isinstance(m, ClipMedia))
        return n

    @property
    def num_rows(self) -> int:
        return max(1, len(self.clips))


def _jpeg(rgb: np.ndarray) -> bytes:
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=85, colorsubsampling="420")


def _unjpeg(data: bytes) -> np.ndarray:
    import simplejpeg

    return simplejpeg.decode_jpeg(data)


class AnalyzeStage(Stage):
    """Probe and one analysis decode per video: shots, motion samples, score and preview frames."""

    name = "analyze"

    def __init__(self, cfg: VideoRunConfig, device: Device):
        self.cfg = cfg
        self.device = device
        self.workers = 2  # two videos at once: one decode + its kernels leave a core idle

    def process(self, task: VideoTask) -> VideoTask:
        t0 = time.perf_counter()
        bad_name = _name_error(task.input.path)
        if bad_name is not None:
            task.reject = ("read", bad_name)
            return task
        try:
            task.info = probe(task.input.path)
        except VideoProbeError as e:
            task.reject = ("probe", str(e))
            return task
        except Exception as e:  # noqa: BLE001 - PyAV raises assorted types on malformed files
            # One odd file must not end the run (a 2%-long MP4 once gave an AttributeError
            # from inside PyAV's objects); the reason names the type so it can be chased.
            log.warning("probing %s failed unexpectedly", printable(task.input.path), exc_info=True)
            task.reject = ("probe", f"unreadable ({type(e).__name__}: {e})")
            return task
        try:
            self._analyze(task)
        except VideoDecodeError as e:
            task.reject = ("decode", str(e))
        except (av_errors()) as e:  # anything FFmpeg raises mid-stream that the decoder did not catch
            task.reject = ("decode", f"{type(e).__name__}: {e}")
        if task.reject is None:
            task.warnings = _input_warnings(task)
        task.analysis_s = time.perf_counter() - t0
        return task

    def _analyze(self, task: VideoTask) -> None:
        cfg, info = self.cfg, task.info
        fps = info.fps
        scenes = cfg.split == "scenes"
        detector = ShotDetector(fps) if scenes else None
        use_mvs = info.has_motion_vectors_codec and cfg.motion_method in ("vectors", "auto")
        on_frame = None
        if not scenes:
            task.spans = fixed_stride_spans(info.num_frames, fps, cfg.clip_len_s, cfg.min_clip_s)
            if cfg.clip_mode == "reencode" and cfg.upload_clips and not cfg.dry_run:
                # single pass: the decode that feeds the kernels also feeds the encoders
                on_frame = _Feeder(task.spans, info, cfg)
        score_next = 0.0
        preview_next = 0.0
        motion = MotionAccumulator(fps, mv_size=(info.width, info.height) if use_mvs else None,
                                   source_size=None if use_mvs else (info.display_width, info.display_height),
                                   sample_fps=MOTION_FPS)
        chunks = iter_analysis_frames(
            task.input.path, info, short_side=cfg.analysis_short_side,
            sample_fps=None if scenes else MOTION_FPS, motion_pairs=not scenes and not use_mvs,
            motion_vectors=use_mvs, mv_sample_fps=MOTION_FPS, time_limit_s=cfg.video_time_limit_s,
            on_frame=on_frame, preview_fps=1.0 if cfg.previews else None, preview_height=240,
            chunk_size=ANALYSIS_CHUNK,
        )
        # Closed here, not when garbage collected: an exception stored with its traceback
        # would otherwise keep the reading thread and the open container alive.
        chunks = read_ahead(chunks)
        try:
            for chunk in chunks:
                if len(chunk.frame_indices) == 0:
                    continue
                if detector is not None:
                    detector.update(frame_features(chunk.frames), chunk.frame_indices)
                motion.add(chunk.frames, chunk.frame_indices, chunk.times, chunk.mv_samples)
                for k, t in enumerate(chunk.times):
                    if t + 1e-9 >= score_next:
                        score_next = t + 1.0 / SCORE_FPS
                        task.score_frames.append((int(chunk.frame_indices[k]), chunk.frames[k].copy()))
                for t, idx, rgb in getattr(chunk, "preview_frames", None) or ():
                    if t + 1e-9 >= preview_next:
                        preview_next = t + 1.0
                        task.preview_frames.append((int(idx), _jpeg(rgb)))
                task.decode_errors = chunk.decode_errors
        finally:
            chunks.close()
        task.motion = motion.mv_samples if use_mvs else motion.frame_samples
        if detector is not None:
            cuts = detector.finish()
            task.spans = split_scenes(cuts, info.num_frames, fps, cfg.min_clip_s, min(cfg.clip_len_s, cfg.max_clip_s))
        if on_frame is not None:
            task.media = on_frame.finish()


def _input_warnings(task: VideoTask) -> list[str]:
    info, out = task.info, []
    if info.counted:
        out.append("no duration/frame count in the container header; counted from packets")
    if task.decode_errors:
        out.append(f"{task.decode_errors} undecodable packet(s) skipped")
    return out


class _Feeder:
    """Gives every full-size decoded frame to the clip encoders whose span holds it.

    Encoders are made at the first frame: its display rotation (CCW, as PyAV reports it) is
    what they turn the pixels by. Each is finished as soon as the frames pass its end, so only
    clips in progress are held.
    """

    def __init__(self, spans: list[tuple[int, int]], info: VideoInfo, cfg: VideoRunConfig):
        self.spans_s = [(a / info.fps, b / info.fps) for a, b in spans]
        self.info, self.cfg = info, cfg
        self.encoders: list[ClipEncoder | None] | None = None
        self.results: list[ClipMedia | Exception | None] = [None] * len(spans)

    def __call__(self, t: float, frame) -> None:
        if self.encoders is None:
            from fractions import Fraction

            sar = Fraction(self.info.sar).limit_denominator(1000) if self.info.sar and self.info.sar != 1 else None
            self.encoders = [ClipEncoder(s, e, self.info.fps, frame.width, frame.height, encoder=self.cfg.encoder,
                                         preset=self.cfg.encoder_preset, crf=self.cfg.encoder_crf,
                                         rotation=getattr(frame, "rotation", 0) or 0, sar=sar)
                             for s, e in self.spans_s]
        for k, enc in enumerate(self.encoders):
            if enc is None:
                continue
            if enc.accepts(t):
                enc.push(frame, t)
            elif t >= enc.end_s:
                self._close(k)

    def _close(self, k: int) -> None:
        enc = self.encoders[k]
        self.encoders[k] = None
        try:
            self.results[k] = enc.finish()
        except Exception as e:  # noqa: BLE001 - one clip's failure is recorded on that clip
            self.results[k] = e

    def finish(self) -> list[ClipMedia | Exception]:
        for k in range(len(self.results)):
            if self.encoders is not None and self.encoders[k] is not None:
                self._close(k)
            elif self.results[k] is None:
                self.results[k] = ValueError("no frame decoded in this span")
        return self.results


def av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError)


class ClipStage(Stage):
    """Cut clip media, aggregate scores per clip, filter, previews, plug-ins."""

    name = "clips"

    def __init__(self, cfg: VideoRunConfig, workers: int = 2):
        self.cfg = cfg
        self.workers = workers

    def process(self, task: VideoTask) -> VideoTask:
        if task.reject is not None or task.info is None:
            return task
        cfg, info = self.cfg, task.info
        fps = info.fps
        spans_s = [(a / fps, b / fps) for a, b in task.spans]
        media: list[ClipMedia | Exception | None] = [None] * len(spans_s)
        if spans_s and cfg.upload_clips and not cfg.dry_run:
            if task.media is not None:
                media = list(task.media)
            elif cfg.clip_mode == "copy":
                media = cut_copy(task.input.path, spans_s, stream_index=info.stream_index, snap="tile",
                                 encoder=cfg.encoder, preset=cfg.encoder_preset, crf=cfg.encoder_crf)
            else:
                media = cut_reencode(task.input.path, spans_s, stream_index=info.stream_index, encoder=cfg.encoder,
                                     preset=cfg.encoder_preset, crf=cfg.encoder_crf)
        task.media = None
        seen: set[str] = set()
        for (s, e), m in zip(spans_s, media):
            clip = self._clip(task, s, e, m)
            if clip.uuid in seen:
                # Stream copy cuts on keyframes: with keyframes sparser than the spans, several
                # spans come out as the same keyframe range, i.e. the same clip (same uuid).
                continue
            seen.add(clip.uuid)
            task.clips.append(clip)
        task.score_frames = []
        task.preview_frames = []
        return task

    def _clip(self, task: VideoTask, s: float, e: float, m: ClipMedia | Exception | None) -> ClipRecord:
        cfg, info = self.cfg, task.info
        fps = info.fps
        errors: dict[str, str] = {}
        fields: dict[str, Any] = {}
        if isinstance(m, ClipMedia):
            s, e = m.start_s, m.end_s  # record the real span (keyframe-aligned for copy)
            w, h = m.display_size
            fields.update(media=m.data, width=w, height=h, framerate=m.framerate, num_frames=m.num_frames,
                          video_codec=m.video_codec)
        elif isinstance(m, Exception):
            errors["transcode"] = f"{type(m).__name__}: {m}"
        clip = ClipRecord.for_span(task.input.path, s, e, fps, errors=errors, **fields)
        sf, ef = int(round(s * fps)), int(round(e * fps))
        score = aggregate_motion(task.motion, sf, ef)
        if score.available:
            clip.motion_score = {"global_mean": score.global_mean, "per_patch_min_256": score.per_patch_min_256}
        frames = [f for i, f in task.score_frames if sf <= i < ef]
        if frames:
            sc = score_batch(np.stack(frames))
            clip.frame_scores = {k: round(float(np.mean(v)), 6) for k, v in sc.items()}
        if cfg.motion_filter:
            ok, _ = passes_motion_filter(score, cfg.motion_global_mean_threshold, cfg.motion_per_patch_min_threshold)
            if not ok:
                clip.filtered_by.append("motion")
        dur = e - s
        if cfg.min_duration_s is not None and dur < cfg.min_duration_s:
            clip.filtered_by.append("min_duration")
        if cfg.max_duration_s is not None and dur > cfg.max_duration_s:
            clip.filtered_by.append("max_duration")
        pv = [f for i, f in task.preview_frames if sf <= i < ef]
        if cfg.previews and pv and not cfg.dry_run:
            clip.preview = make_preview([_unjpeg(b) for b in pv], fps_in=1.0, target_fps=1.0, height=240)
        if frames and not clip.filtered_by:
            self._plugins(clip, frames)
        return clip

    def _plugins(self, clip: ClipRecord, frames: list[np.ndarray]) -> None:
        cfg = self.cfg
        stack = np.stack(frames)
        if cfg.embedder is not None:
            try:
                clip.embeddings[cfg.embedding_algorithm] = np.asarray(cfg.embedder(stack), np.float32).reshape(-1)
            except Exception as e:  # noqa: BLE001 - a plug-in failure is that clip's error
                clip.errors["embedding"] = f"{type(e).__name__}: {e}"
        if cfg.captioner is not None:
            model = (cfg.caption_models or ["plugin"])[0]
            try:
                text = str(cfg.captioner(stack))
                clip.windows.append({"start_frame": 0, "end_frame": clip.end_frame - clip.start_frame,
                                     f"{model}_caption": text})
            except Exception as e:  # noqa: BLE001
                clip.errors["caption"] = f"{type(e).__name__}: {e}"


def clip_rows(task: VideoTask, chunk_index_of: dict[str, int], locations: dict[str, str | None]) -> Batch:
    rows = []
    for k, c in enumerate(task.clips):
        ms = c.motion_score or {}
        row = {
            "video": task.input.path, "span_uuid": c.uuid, "clip_index": k,
            "chunk_index": chunk_index_of.get(c.uuid), "start_s": c.span[0], "end_s": c.span[1],
            "start_frame": c.start_frame, "end_frame": c.end_frame,
            "motion_global_mean": ms.get("global_mean"), "motion_per_patch_min_256": ms.get("per_patch_min_256"),
            "motion_method": (task.motion[0].method if task.motion else None),
            "filtered_by": ",".join(c.filtered_by) or None,
            "valid": bool(c.media is not None and not c.filtered_by and not c.errors),
            "width": c.width, "height": c.height, "framerate": c.framerate, "num_frames": c.num_frames,
            "video_codec": c.video_codec, "num_bytes": len(c.media) if c.media else None,
            "clip_location": locations.get(c.uuid), "media": c.media, "preview": c.preview,
        }
        for name in IMAGE_SCORE_COLUMNS:
            row[name] = c.frame_scores.get(name)
        rows.append(row)
    return Batch.new(CLIP_SCHEMA, rows, seq=task.seq)


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

    def write(self, task: VideoTask) -> None:
        self.stats.items_in += 1
        self.stats.bytes_in += task.input.size or 0
        if task.reject is None and self.writer is not None:
            too_long = _output_name_error(self.writer.input_path, task.input.path, len(task.clips),
                                          self.cfg.clips_per_chunk, self.storage.is_local)
            if too_long is not None:
                task.reject = ("write", too_long)
        if task.reject is not None:
            stage, reason = task.reject
            source = printable(task.input.path)
            self.stats.count_reject(f"{stage}:{_reason_kind(reason)}")
            self.rejects.append({"key": os.path.basename(source), "source": source,
                                 "source_member": None, "stage": stage, "reason": reason, "duplicate_of": None})
            self.per_video.append({"video": source, "status": "rejected", "stage": stage, "reason": reason})
        else:
            self._write_video(task)
        if self.progress is not None:
            self.progress.update(1)

    def _write_video(self, task: VideoTask) -> None:
        info, cfg = task.info, self.cfg
        video = VideoRecord(path=task.input.path, height=info.display_height, width=info.display_width,
                            framerate=info.fps, num_frames=info.num_frames, duration=info.duration,
                            video_codec=info.video_codec, pixel_format=info.pixel_format,
                            audio_format=info.audio_codec, num_total_clips=len(task.clips))
        per = max(1, cfg.clips_per_chunk)
        groups = [task.clips[i:i + per] for i in range(0, len(task.clips), per)] or [[]]
        chunk_of: dict[str, int] = {}
        for ci, clips in enumerate(groups):
            for c in clips:
                chunk_of[c.uuid] = ci
            if self.writer is not None:
                self.writer.write_chunk(ClipChunk(task.input.path, ci, clips, num_chunks_total=len(groups)), video)
        locations = {}
        for c in task.clips:
            if c.media is not None and cfg.upload_clips and not cfg.dry_run:
                base = ClipWriter.get_output_path_clips(self.storage.url(), filtered=bool(c.filtered_by))
                sub = f"{c.uuid[:2]}/" if cfg.clip_subdirs else ""
                locations[c.uuid] = f"{base}/{sub}{c.uuid}.mp4"
        passed = sum(1 for c in task.clips if not c.filtered_by)
        if task.warnings:
            self.videos_with_warnings += 1
            log.warning("%s: %s", task.input.path, "; ".join(task.warnings))
        self.clips_total += len(task.clips)
        self.clips_passed += passed
        self.clips_filtered += len(task.clips) - passed
        self.stats.items_out += 1
        self.stats.bytes_out += sum(len(c.media or b"") for c in task.clips)
        self.per_video.append({"video": task.input.path, "status": "ok", "clips": len(task.clips),
                               "clips_passed": passed, "decode_errors": task.decode_errors,
                               "motion_method": task.motion[0].method if task.motion else None,
                               **({"warnings": task.warnings} if task.warnings else {}),
                               "analysis_s": round(task.analysis_s, 3)})
        if self.emitter is not None and task.clips:
            b = clip_rows(task, chunk_of, locations)
            self.emitter.emit(b.to_arrow(drop=() if self.emitter.include_bytes else ("media", "preview")))

    def _write_rejects(self) -> None:
        write_rejects(self.storage, self.rejects)

    def commit(self) -> None:
        if self.writer is not None:
            self.writer.commit()
        self._write_rejects()
        if self.emitter is not None:
            self.emitter.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        if self.emitter is not None:
            self.emitter.close()


# Longest file name (bytes) local filesystems take, and longest object key S3 takes.
NAME_MAX = 255
KEY_MAX = 1024


def _name_error(path: str) -> str | None:
    """Why a video's own name cannot be carried into the output, or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return (f"file name is not valid UTF-8 ({printable(path)!r}): clip ids, JSON records and "
                "processed_* paths are made from it; rename the file")
    return None


def _output_name_error(input_path: str, video_path: str, n_clips: int, per_chunk: int, local: bool) -> str | None:
    """Why ``processed_clip_chunks/<rel>_<n>.json`` (the longest name a video gets) cannot be
    written, or None. Checked before any of the video's files is written, so a name the store
    refuses rejects that one video instead of failing the run half-way through its files."""
    rel = relative_video_path(input_path, video_path)
    last_chunk = max(0, (n_clips - 1) // max(1, per_chunk))
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


def _common_root(paths: list[str]) -> str:
    if not paths:
        return os.getcwd()
    if len(paths) == 1:
        return os.path.dirname(paths[0])
    return os.path.commonpath([os.path.dirname(p) for p in paths]) if all(os.path.isabs(p) for p in paths) \
        else os.path.dirname(os.path.commonprefix(paths))


def run_videos(cfg: VideoRunConfig) -> RunStats:
    """Split, score, filter and write videos from ``cfg.sources`` in the ClipWriterStage layout."""
    cfg.validate()
    if not cfg.output:
        raise ValueError("run_videos needs an output location (use stream_videos to not write)")
    device = resolve_device(cfg.device)
    inputs = list_video_inputs(cfg.sources, storage_options=cfg.storage_options)
    input_path = cfg.input_path or _common_root([i.path for i in inputs])
    if input_path and "://" not in input_path:
        input_path = os.path.abspath(input_path)
    storage = Storage(cfg.output, cfg.storage_options)
    resuming = prepare_output(storage, cfg.on_existing)
    prior_rejects: list[dict] = []
    todo = inputs
    if resuming:
        done = [i for i in inputs if ClipWriter.is_video_done(cfg.output, input_path, i.path, cfg.storage_options)]
        done_set = {i.path for i in done}
        todo = [i for i in inputs if i.path not in done_set]
        for rel in storage.list_files():
            storage.adopt(rel)
        retried = {printable(i.path) for i in todo}  # judged again in this run
        prior_rejects = [r for r in read_rejects(storage) if r["source"] not in retried]
        log.info("resume: %d of %d videos already done", len(done), len(inputs))
    writer = ClipWriter(
        cfg.output, input_path, upload_clips=cfg.upload_clips, dry_run=cfg.dry_run,
        generate_embeddings=cfg.generate_embeddings, generate_previews=cfg.previews,
        generate_captions=cfg.captioner is not None, embedding_algorithm=cfg.embedding_algorithm,
        caption_models=cfg.caption_models or None, verbose=cfg.verbose, max_workers=cfg.max_workers,
        clip_subdirs=cfg.clip_subdirs, storage=storage,
    )
    stats = RunStats(kind="videos")
    progress = Progress(len(todo), "video", enabled=cfg.progress)
    emitter = IpcEmitter(cfg.emit_ipc, include_bytes=cfg.emit_ipc_bytes) if cfg.emit_ipc else None
    sink = VideoRunSink(cfg, storage, writer, stats, prior_rejects, emitter, progress)
    tasks = (VideoTask(inp, seq) for seq, inp in enumerate(todo))
    pipe = Pipeline(tasks, [AnalyzeStage(cfg, device), ClipStage(cfg)], sink=sink, queue_items=2,
                    queue_bytes=256 << 20, stats=stats)
    try:
        pipe.run()
    finally:
        progress.close()
    summary = writer.summary()
    stats.extra.update(device=device.kind, clips=sink.clips_total, clips_passed=sink.clips_passed,
                       clips_filtered=sink.clips_filtered, videos_with_warnings=sink.videos_with_warnings,
                       resumed_skipped=len(inputs) - len(todo),
                       clips_per_s=round(sink.clips_total / stats.wall_s, 2) if stats.wall_s else 0.0)
    doc = {"totals": {"videos": len(inputs), "videos_processed": stats.items_out,
                      "videos_rejected": stats.items_rejected, "videos_skipped_done": len(inputs) - len(todo),
                      "clips": sink.clips_total, "clips_passed": sink.clips_passed,
                      "clips_filtered": sink.clips_filtered},
           "writer": summary, "videos": sink.per_video, "rejects": [r for r in sink.rejects],
           "wall_s": round(stats.wall_s, 3), "config": cfg.to_dict()}
    storage.write_atomic(SUMMARY_NAME, (json.dumps(doc, indent=2, default=str) + "\n").encode())
    if cfg.stats_path:
        import fsspec

        with fsspec.open(cfg.stats_path, "w") as f:
            f.write(stats.to_json())
    write_run_index(storage, "videos", cfg.to_dict(), stats.to_dict(), extra={"input_path": input_path})
    return stats


def stream_videos(paths: Iterable[str], cfg: VideoRunConfig | None = None) -> Iterator[pa.RecordBatch]:
    """Analyse videos and yield one clip record batch per video (scores, spans, media bytes when
    clips are cut); nothing is written. Rejected videos yield no rows (see logs)."""
    cfg = cfg or VideoRunConfig(sources=["<stream>"])
    device = resolve_device(cfg.device)
    tasks = (VideoTask(VideoInput(os.path.abspath(p) if "://" not in str(p) else str(p), None, True), seq)
             for seq, p in enumerate(paths))
    pipe = Pipeline(tasks, [AnalyzeStage(cfg, device), ClipStage(cfg)], queue_items=2)
    for task in pipe:
        if task.reject is not None:
            log.warning("video %s rejected at %s: %s", task.input.path, *task.reject)
            continue
        if task.clips:
            yield clip_rows(task, {}, {}).to_arrow()
