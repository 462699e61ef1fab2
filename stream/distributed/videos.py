"""``videos --runner ray``: one Ray task per video, the driver writes the run's records.

A video is the unit because the clip layout is already per video: clip ids derive from the
video and the span, a video's files commit in a fixed order and its ``processed_videos``
record is written last (writers/clip_writer.py), so a task retried after its worker died
rewrites the same names and a resume skips exactly the finished videos. The driver keeps what
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
    todo, prior_rejects = resume_todo(cfg, storage, out.resuming, input_path, inputs)
    todo = sorted(todo, key=lambda i: i.path)
    cpus = task_cpus(ray, CPUS_PER_VIDEO)
    task = ray.remote(_video_task).options(**task_options(cpus, device_kind, cfg.gpus_per_task))
    run_id = out.lock.run_id
    task_cfg = dataclasses.replace(cfg, progress=False, device=device_kind)
    refs = [task.remote(task_cfg, inp, input_path, run_id, f"vid{n:06d}") for n, inp in enumerate(todo)]
    from curastream.engine.progress import Progress

    progress = Progress(len(todo), "video", enabled=cfg.progress, sizes=[i.size for i in todo])
    results = gather(ray, refs, progress, count=lambda r: 1)
    for r in results:
        adopt_commits(storage, out.ownership, r["files"])
    done = SimpleNamespace(
        clips_total=sum(r["clips_total"] for r in results), clips_passed=sum(r["clips_passed"] for r in results),
        clips_filtered=sum(r["clips_filtered"] for r in results),
        videos_with_warnings=sum(r["videos_with_warnings"] for r in results),
        per_video=[v for r in results for v in r["per_video"]],
        rejects=prior_rejects + [x for r in results for x in r["rejects"]])
    write_rejects(storage, done.rejects, VIDEO_REJECT_SCHEMA)
    remove_orphan_temps(storage, out.ownership)
    stats = merge_stats("videos", results, time.perf_counter() - t0)
    stats.extra.update(task_cpus=cpus)
    return finish_videos(cfg, storage, out.resuming, device_kind, stats, done,
                         _merge_summaries([r["summary"] for r in results]), inputs, todo, input_path)


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


def _video_task(cfg: VideoRunConfig, inp: VideoInput, input_path: str, run_id: str, tag: str) -> dict:
    import ray

    t0 = time.perf_counter()
    out = TaskOutput(cfg.output, cfg.storage_options, run_id, tag)
    device = resolve_device(cfg.device)
    writer = clip_writer(cfg, input_path, out.storage)
    stats = RunStats(kind="videos")
    sink = _TaskSink(cfg, out.storage, writer, stats, [], None, None)
    _pipeline([inp], cfg, device, sink=sink, queue_bytes=256 << 20, stats=stats).run()
    return {"files": out.close(), "rejects": sink.rejects, "per_video": sink.per_video, "stats": stats.to_dict(),
            "summary": writer.summary(), "clips_total": sink.clips_total, "clips_passed": sink.clips_passed,
            "clips_filtered": sink.clips_filtered, "videos_with_warnings": sink.videos_with_warnings,
            "node": node_name(ray), "seconds": time.perf_counter() - t0, "items": 1}
