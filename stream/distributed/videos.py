"""``videos --runner ray``: one Ray task per video, or per part of a long one; the driver writes
the run's records.

A video is the unit because the clip layout is already per video: clip ids derive from the
video and the span, a video's files commit in a fixed order and its ``processed_videos``
record is written last (writers/clip_writer.py), so a task retried after its worker died
rewrites the same names and a resume skips exactly the finished videos. A long video with
fixed spans runs as several tasks, each writing its spans' clip files; the driver writes that
video's chunk and ``processed_videos`` records once every part is done (:mod:`.video_plan`),
so the completion marker still means "every file of the video is there". The driver keeps what
a local run keeps: resume, rejects, ``summary.json`` and the index (videos/pipeline.py).
"""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

from curastream.config import ConfigError, VideoRunConfig
from curastream.distributed.cluster import (TaskOutput, adopt_commits, connected, gather, node_name, planned_device,
                                            remove_orphan_temps, task_cpus, task_options)
from curastream.distributed.stats import merge_stats
from curastream.distributed.video_plan import VideoTask, fold_parts, plan_video_tasks
from curastream.engine.device import resolve_device
from curastream.engine.names import printable
from curastream.engine.output import OutputSession
from curastream.engine.schemas import VIDEO_REJECT_SCHEMA
from curastream.engine.stats import RunStats
from curastream.videos.pipeline import (_pipeline, clip_writer, finish_videos, resolve_input_path,
                                        resume_todo)
from curastream.videos.sink import VideoRunSink
from curastream.videos.sources import VideoInput, list_video_inputs
from curastream.writers.rejects import write_rejects

# What a video's stage threads keep busy (analysis decode, clip cutting): more CPUs than this
# per video buy little, fewer videos at once would.
CPUS_PER_VIDEO = 2


def run_videos_on_ray(cfg: VideoRunConfig) -> RunStats:
    if cfg.emit_ipc:
        raise ConfigError("emit_ipc", "is not available with --runner ray (records are written by the workers)")
    inputs = list_video_inputs(cfg.sources, storage_options=cfg.storage_options)
    if not inputs:
        raise FileNotFoundError("no videos found in " + ", ".join(map(printable, cfg.sources)))
    input_path = resolve_input_path(cfg, inputs)
    device_kind = planned_device(cfg.device)
    with OutputSession(cfg.output, cfg.storage_options, cfg.on_existing, cfg.sources, kind="videos",
                       settings=cfg.to_dict()) as out, connected(cfg.ray_address) as ray:
        return _videos_on_ray(ray, cfg, out, inputs, input_path, device_kind)


def _videos_on_ray(ray, cfg: VideoRunConfig, out: OutputSession, inputs: list[VideoInput], input_path: str,
                   device_kind: str) -> RunStats:
    t0 = time.perf_counter()
    storage = out.storage
    todo, prior_rejects = resume_todo(cfg, storage, out.resuming, input_path, inputs, out.ownership)
    todo = sorted(todo, key=lambda i: i.path)
    cpus = task_cpus(ray, CPUS_PER_VIDEO)
    task = ray.remote(_video_task).options(**task_options(cpus, device_kind, cfg.gpus_per_task))
    run_id = out.lock.run_id
    task_cfg = dataclasses.replace(cfg, progress=False, device=device_kind)
    plan = plan_video_tasks(cfg, todo, device_kind, input_path, storage.is_local)
    refs = [task.remote(task_cfg, t.inp, input_path, run_id, t.tag, t.span_range) for t in plan]
    from curastream.engine.progress import Progress

    progress = Progress(len(todo), "video", enabled=cfg.progress, sizes=[i.size for i in todo])
    records = clip_writer(cfg, input_path, storage)  # split videos' chunk and processed_videos records
    videos = _VideoResults(plan, storage, out.ownership, records, cfg.clips_per_chunk)
    try:
        gather(ray, refs, progress, count=lambda r: r["videos_done"], on_result=videos.add)
    except BaseException:
        records.abort()
        raise
    records.commit()
    results = videos.results
    done = SimpleNamespace(
        clips_total=sum(r["clips_total"] for r in results), clips_passed=sum(r["clips_passed"] for r in results),
        clips_filtered=sum(r["clips_filtered"] for r in results),
        videos_with_warnings=sum(r["videos_with_warnings"] for r in results),
        per_video=[v for r in results for v in r["per_video"]],
        rejects=prior_rejects + [x for r in results for x in r["rejects"]])
    write_rejects(storage, done.rejects, VIDEO_REJECT_SCHEMA)
    remove_orphan_temps(storage, out.ownership)
    stats = merge_stats("videos", videos.tasks, time.perf_counter() - t0)
    stats.extra.update(task_cpus=cpus, videos_split=videos.split)
    return finish_videos(cfg, storage, out.resuming, device_kind, stats, done,
                         _merge_summaries([r["summary"] for r in videos.tasks] + [records.summary()]), inputs,
                         todo, input_path)


class _VideoResults:
    """Task results as they arrive, one per video: a whole-video task's as it is; a split
    video's folded once its last part is in, then its records written (or, rejected, the clip
    files its parts wrote removed). Finished videos are marked done as the run goes, so a
    driver killed later loses only the unfinished ones."""

    def __init__(self, plan: list[VideoTask], storage, ownership, records, clips_per_chunk: int):
        self.plan, self.storage, self.ownership = plan, storage, ownership
        self.records, self.clips_per_chunk = records, clips_per_chunk
        self.tasks: list[dict] = []  # every task's result (stats per task and node)
        self.split = 0
        self._parts: dict[str, dict[int, dict]] = {}
        self._by_video: dict[str, dict] = {}

    def add(self, index: int, r: dict) -> None:
        t = self.plan[index]
        self.tasks.append(r)
        r["videos_done"] = 0
        if t.parts == 1:
            adopt_commits(self.storage, self.ownership, r["files"])
            self._done(t, r)
            return
        parts = self._parts.setdefault(t.inp.path, {})
        parts[t.part] = r
        if len(parts) < t.parts:
            return
        folded = fold_parts([parts[k] for k in range(t.parts)])
        del self._parts[t.inp.path]
        self.split += 1
        if folded["rejected"]:
            for f in folded["files"]:  # a rejected video keeps no file, as locally
                self.storage.delete(f["path"])
            for k in range(t.parts):  # nor counts any in the writer's summary
                parts[k]["summary"] = {}
        else:
            adopt_commits(self.storage, self.ownership, folded["files"])
            video, clips, outcomes = folded["records"]
            self.records.write_video_records(video, clips, outcomes, self.clips_per_chunk)
        self._done(t, folded)

    def _done(self, t: VideoTask, r: dict) -> None:
        r["videos_done"] = 1
        self._by_video[t.inp.path] = r

    @property
    def results(self) -> list[dict]:
        """One result per finished video, in plan (path) order."""
        return [self._by_video[p] for p in sorted(self._by_video)]


def _merge_summaries(docs: list[dict]) -> dict:
    """The per-task ClipWriter summaries as one: every count is a sum."""
    out: dict = {}
    for d in docs:
        for k, v in d.items():
            if isinstance(v, dict):
                sub = out.setdefault(k, {})
                for kk, vv in v.items():
                    sub[kk] = sub.get(kk, 0) + vv
            else:
                out[k] = round(out.get(k, 0) + v, 3) if isinstance(v, float) else out.get(k, 0) + v
    return out


class _TaskSink(VideoRunSink):
    """A video's reject goes back to the driver, which writes the run's one rejects file."""

    def commit(self) -> None:
        if self.writer is not None:
            self.writer.commit()


def _video_task(cfg: VideoRunConfig, inp: VideoInput, input_path: str, run_id: str, tag: str,
                span_range: tuple[int, int] | None = None) -> dict:
    """One video, or its fixed spans i..j-1 (``span_range``): then only the clips' own files are
    written, and ``records`` carries what the driver writes the video's records from."""
    import ray

    t0 = time.perf_counter()
    out = TaskOutput(cfg.output, cfg.storage_options, run_id, tag)
    device = resolve_device(cfg.device)
    writer = clip_writer(cfg, input_path, out.storage, video_records=span_range is None)
    stats = RunStats(kind="videos")
    sink = _TaskSink(cfg, out.storage, writer, stats, [], None, None)
    _pipeline([inp], cfg, device, span_range, sink=sink, queue_bytes=256 << 20, stats=stats).run()
    return {"records": writer.written_clips() if span_range is not None else [],
            "files": out.close(), "rejects": sink.rejects, "per_video": sink.per_video, "stats": stats.to_dict(),
            "summary": writer.summary(), "clips_total": sink.clips_total, "clips_passed": sink.clips_passed,
            "clips_filtered": sink.clips_filtered, "videos_with_warnings": sink.videos_with_warnings,
            "node": node_name(ray), "seconds": time.perf_counter() - t0, "items": 1}
