"""The video curation pipeline: probe -> analyse (one decode) -> split -> clips -> ClipWriter.

One item is one video: a VIDEO_SCHEMA batch of one row, checked against that schema when the
pipeline is built (see :mod:`curastream.videos.stages` for what the columns and side data hold,
and why the clips ride in the video's row). The analysis stage decodes each video once at a
reduced size and feeds every kernel from that one pass: shot boundaries, motion (codec motion
vectors where the codec has them, block matching on the frames otherwise), per-clip image scores
and preview frames. With ``--reencode --split fixed`` the same pass also feeds the clip
encoders, so nothing is decoded twice. The clip stage cuts media (stream copy by default),
aggregates scores per clip and applies filters; the ClipWriter's thread pool writes while the
next video is analysed.

A video that cannot be probed or decoded is rejected with its reason (``_curastream/rejects.parquet``
and ``_curastream/summary.json``); the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Iterable, Iterator

import pyarrow as pa

from curastream.config import VideoRunConfig
from curastream.engine.batch import Batch
from curastream.engine.device import Device, DeviceError, resolve_device
from curastream.engine.lock import MARK_DIR
from curastream.engine.memory import cap_arenas
from curastream.engine.names import printable
from curastream.engine.output import check_not_overlapping
from curastream.engine.ownership import Ownership
from curastream.engine.pipeline import Pipeline
from curastream.engine.run import Run, commit_run
from curastream.engine.run_settings import OutputSettingsError
from curastream.engine.schemas import VIDEO_SCHEMA
from curastream.engine.stats import RunStats
from curastream.engine.storage import Storage
from curastream.videos.gpu_decode import GPU_VIDEO_MODULES
from curastream.videos.sink import VideoRunSink
from curastream.videos.sources import VideoInput, list_video_inputs
from curastream.videos.records import video_clips
from curastream.videos.analyze import AnalyzeStage
from curastream.videos.clip_stage import ClipStage
from curastream.videos.work_budget import WorkBudget
from curastream.videos.stages import SOURCE_COLUMNS, source_batch
from curastream.writers.clip_layout import ClipLayout, relative_video_path
from curastream.writers.clip_writer import ClipWriter
from curastream.writers.rejects import read_rejects

log = logging.getLogger(__name__)

# Two analysis and two clip workers do the big allocations: two arenas between them.
VIDEO_ARENAS = 2

SUMMARY_NAME = f"{MARK_DIR}/summary.json"  # a run file: beside the rejects, apart from the dataset


def _source(inputs: Iterable[VideoInput]) -> Iterator[Batch]:
    for seq, inp in enumerate(inputs):
        yield source_batch(inp.path, inp.size, seq)


def _pipeline(inputs: Iterable[VideoInput], cfg: VideoRunConfig, device, span_range: tuple[int, int] | None = None,
              **kw) -> Pipeline:
    """span_range: fixed spans i..j-1 of each input only (a Ray task's part of a long video)."""
    cap_arenas(VIDEO_ARENAS)  # before the stages start their threads (engine/memory.py)
    work = WorkBudget()  # one for both stages: decodes wait while cuts fill it (videos/work_budget.py)
    return Pipeline(_source(inputs), [AnalyzeStage(cfg, device, span_range, work=work),
                                      ClipStage(cfg, device=device, work=work)],
                    schema=VIDEO_SCHEMA, source_columns=SOURCE_COLUMNS, queue_items=2, **kw)


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
    if cfg.runner == "ray":
        from curastream.distributed.videos import run_videos_on_ray

        return run_videos_on_ray(cfg)
    device = video_device(cfg)
    check_not_overlapping(cfg.output, cfg.sources)  # safety first: before the listing can say more
    inputs = list_video_inputs(cfg.sources, storage_options=cfg.storage_options)
    if not inputs:  # an empty folder or glob is a mistake to report, not an empty dataset to write
        raise FileNotFoundError("no videos found in " + ", ".join(map(printable, cfg.sources)))
    input_path = resolve_input_path(cfg, inputs)
    with Run("videos", cfg) as run:
        return _write_videos(run, cfg, device, inputs, input_path)


def video_device(cfg: VideoRunConfig) -> Device:
    """The run's device: the GPU path needs NVDEC (PyNvVideoCodec) as well as CuPy, and cannot
    give codec motion vectors, so --device gpu with --motion-method vectors stops here."""
    device = resolve_device(cfg.device, needs=GPU_VIDEO_MODULES)
    if device.is_gpu and cfg.motion_method == "vectors":
        raise DeviceError("--motion-method vectors needs the CPU decoder (NVDEC exports no motion vectors); "
                          "use --motion-method auto or frames with --device gpu, or --device cpu")
    return device


def resolve_input_path(cfg: VideoRunConfig, inputs: list[VideoInput]) -> str:
    input_path = cfg.input_path or _common_root([i.path for i in inputs])
    if input_path and "://" not in input_path:
        input_path = os.path.abspath(input_path)
    return input_path


def _earlier_summary(storage: Storage) -> list[dict]:
    """The per-video entries of the summary the resumed run wrote (or an earlier version did, at
    the root); [] when there is none or it cannot be read."""
    for rel in (SUMMARY_NAME, "summary.json"):
        if rel == "summary.json" and not storage.owns(rel):
            continue
        try:
            doc = json.loads(storage.read_bytes(rel))
        except (OSError, ValueError):
            continue
        videos = doc.get("videos") if isinstance(doc, dict) else None
        if isinstance(videos, list):
            return [v for v in videos if isinstance(v, dict)]
    return []


def _entry_from_records(storage: Storage, input_path: str, path: str) -> dict:
    """A done video's summary entry from its processed_videos and chunk JSONs (SPEC §2)."""
    entry: dict = {"video": printable(path), "status": "ok", "clips": 0, "clips_passed": 0, "from_records": True}
    try:
        doc = json.loads(storage.read_bytes(ClipLayout.processed_video_rel(input_path, path)))
        entry["clips"] = int(doc.get("num_total_clips") or 0)
        for k in range(int(doc.get("num_clip_chunks") or 0)):
            chunk = json.loads(storage.read_bytes(ClipLayout.processed_chunk_rel(input_path, path, k)))
            entry["clips_passed"] += int(chunk.get("num_clips_passed") or 0)
    except (OSError, ValueError, TypeError):
        pass  # counted as done with what could be read
    return entry


def _refuse_name_clashes(storage: Storage, input_path: str, inputs: list[VideoInput]) -> None:
    """A resume identifies videos by their full path: an input whose processed_videos record
    names another video (day2/a.mp4 where day1/a.mp4 was written) is neither done nor
    writable without replacing the other's record, so the resume stops, naming both."""
    clashes = []
    for i in inputs:
        rel = ClipLayout.processed_video_rel(input_path, i.path)
        try:
            doc = json.loads(storage.read_bytes(rel))
        except (OSError, ValueError):
            continue
        recorded = doc.get("video") if isinstance(doc, dict) else None
        if isinstance(recorded, str) and recorded != i.path:
            clashes.append(f"{printable(i.path)} would replace {rel}, which records {printable(recorded)}")
    if clashes:
        more = f" (+{len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise OutputSettingsError(
            "resume refused: inputs differ from the run this output holds: " + "; ".join(clashes[:3]) + more
            + "; resume with the same inputs and --input-path, or write these to another output")


def _write_videos(run: Run, cfg: VideoRunConfig, device, inputs: list[VideoInput], input_path: str) -> RunStats:
    todo, prior_rejects = resume_todo(cfg, run.storage, run.resuming, input_path, inputs, run.output.ownership)
    writer = clip_writer(cfg, input_path, run.storage)
    progress = run.start_progress(len(todo), "video", sizes=[i.size for i in todo])
    sink = VideoRunSink(cfg, run.storage, writer, run.stats, prior_rejects, run.emitter, progress)
    stats = run.execute(_pipeline(todo, cfg, device, sink=sink, queue_bytes=256 << 20, stats=run.stats))
    write_summary(cfg, run.storage, run.resuming, device.kind, stats, sink, writer.summary(), inputs, todo,
                  input_path)
    return run.finish({"input_path": input_path})


def resume_todo(cfg: VideoRunConfig, storage: Storage, resuming: bool, input_path: str,
                inputs: list[VideoInput], ownership: Ownership) -> tuple[list[VideoInput], list[dict]]:
    """The videos still to do and the rejects to keep; on a resume the done ones' files are
    adopted into this run's index, and what a killed run left of a video done again is removed
    first: the redo writes its files afresh, and a video rejected this time keeps none."""
    prior_rejects: list[dict] = []
    todo = inputs
    if resuming:
        _refuse_name_clashes(storage, input_path, inputs)
        done = [i for i in inputs if ClipWriter.is_video_done(cfg.output, input_path, i.path, cfg.storage_options)]
        done_set = {i.path for i in done}
        todo = [i for i in inputs if i.path not in done_set]
        present = storage.list_files()
        left = set(ownership.files_of({relative_video_path(input_path, i.path) for i in todo})) & set(present)
        for rel in sorted(left):
            storage.remove(rel)
        for rel in present:
            if rel not in left and storage.owns(rel):  # foreign files kept in the output are not listed as ours
                storage.adopt(rel)
        retried = {printable(i.path) for i in todo}  # judged again in this run
        prior_rejects = [r for r in read_rejects(storage) if r["source"] not in retried]
        log.info("resume: %d of %d videos already done", len(done), len(inputs))
        if left:
            log.info("resume: removed %d file(s) an interrupted run wrote for the %d videos done again",
                     len(left), len(todo))
    return todo, prior_rejects


def clip_writer(cfg: VideoRunConfig, input_path: str, storage: Storage, video_records: bool = True) -> ClipWriter:
    return ClipWriter(
        cfg.output, input_path, upload_clips=cfg.upload_clips, dry_run=cfg.dry_run,
        generate_embeddings=cfg.generate_embeddings, generate_previews=cfg.previews,
        generate_captions=cfg.captioner is not None, embedding_algorithm=cfg.embedding_algorithm,
        caption_models=cfg.caption_models or None, verbose=cfg.verbose, max_workers=cfg.max_workers,
        clip_subdirs=cfg.clip_subdirs, storage=storage, video_records=video_records,
    )


def finish_videos(cfg: VideoRunConfig, storage: Storage, resuming: bool, device_kind: str, stats: RunStats, sink,
                  summary: dict, inputs: list[VideoInput], todo: list[VideoInput], input_path: str) -> RunStats:
    """summary.json, --stats and the index, for a driver holding its own output session (Ray)."""
    write_summary(cfg, storage, resuming, device_kind, stats, sink, summary, inputs, todo, input_path)
    return commit_run(storage, "videos", cfg, stats, {"input_path": input_path})


def write_summary(cfg: VideoRunConfig, storage: Storage, resuming: bool, device_kind: str, stats: RunStats, sink,
                  summary: dict, inputs: list[VideoInput], todo: list[VideoInput], input_path: str) -> None:
    """The run's figures into ``stats`` and ``_curastream/summary.json``. ``sink``: a VideoRunSink,
    or anything with its per-video results (clips_*, videos_with_warnings, per_video, rejects)."""
    stats.extra.update(device=device_kind, clips=sink.clips_total, clips_passed=sink.clips_passed,
                       clips_filtered=sink.clips_filtered, videos_with_warnings=sink.videos_with_warnings,
                       resumed_skipped=len(inputs) - len(todo),
                       clips_per_s=round(sink.clips_total / stats.wall_s, 2) if stats.wall_s else 0.0)
    # The summary describes the whole output: videos done by the runs a resume continues keep
    # their entries (and count in the totals) beside this run's.
    todo_paths = {i.path for i in todo}
    done = [i for i in inputs if i.path not in todo_paths]
    earlier: list[dict] = []
    if resuming and done:
        entries = {v.get("video"): v for v in _earlier_summary(storage)}
        # a summary lost with a kill: the done video's own records still say what it holds
        earlier = [entries.get(printable(i.path)) or _entry_from_records(storage, input_path, i.path) for i in done]
    videos = earlier + sink.per_video
    ok = [v for v in videos if v.get("status") == "ok"]
    doc = {"totals": {"videos": len(inputs), "videos_processed": len(ok),
                      "videos_rejected": sum(v.get("status") == "rejected" for v in videos),
                      "videos_skipped_done": len(inputs) - len(todo),
                      "clips": sum(v.get("clips", 0) for v in ok),
                      "clips_passed": sum(v.get("clips_passed", 0) for v in ok),
                      "clips_filtered": sum(v.get("clips", 0) - v.get("clips_passed", 0) for v in ok)},
           "this_run": {"videos_processed": stats.items_out, "videos_rejected": stats.items_rejected,
                        "clips": sink.clips_total, "clips_passed": sink.clips_passed,
                        "clips_filtered": sink.clips_filtered},
           "writer": summary, "videos": videos, "rejects": [r for r in sink.rejects],
           "wall_s": round(stats.wall_s, 3), "config": cfg.to_dict()}
    storage.write_atomic(SUMMARY_NAME, (json.dumps(doc, indent=2, default=str) + "\n").encode())
    if storage.owns("summary.json") and storage.exists("summary.json"):
        storage.delete("summary.json")  # an earlier version's, read above: the root is the dataset's


def stream_videos(paths: Iterable[str], cfg: VideoRunConfig | None = None) -> Iterator[pa.RecordBatch]:
    """Analyse videos and yield one clip record batch per video (scores, spans, media bytes when
    clips are cut); nothing is written. Rejected videos yield no rows (see logs)."""
    cfg = cfg or VideoRunConfig(sources=["<stream>"])
    device = video_device(cfg)
    inputs = (VideoInput(os.path.abspath(p) if "://" not in str(p) else str(p), None, True) for p in paths)
    for b in _pipeline(inputs, cfg, device, stats=RunStats(kind="videos")):
        for i in range(b.num_rows):
            if b.values("status")[i] != "ok":
                log.warning("video %s rejected at %s: %s", b.values("video")[i], b.values("reject_stage")[i],
                            b.values("reject_reason")[i])
                continue
            clips = video_clips(b, i)
            if clips.num_rows:
                yield clips
