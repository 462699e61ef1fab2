"""Which Ray tasks a video run becomes: one per video, or, for a long video with fixed spans,
one per group of consecutive spans; and how a split video's part results become one video's.

Fixed-stride spans follow from the probe alone (``videos.analyze.fixed_spans``, the rule the
local run uses), so the driver can cut a long video before anything is decoded: each part
decodes from the keyframe at or before its first span to just past its last and writes its
clips' own files. Shot splits (``scenes``, ``transnetv2``) need the whole decode to know their
spans, stream-copy clips snap to keyframes that may lie in a neighbouring part, and the GPU
decoder does not seek, so those stay one task per video. The plan depends on the inputs and
settings only, so a resumed run plans the same parts (and the same names).

A split video's ``processed_clip_chunks`` and ``processed_videos`` records are written by the
driver once every part has succeeded (:func:`fold_parts` gives what they need); a part that
rejects its video rejects it whole, and the clip files the other parts wrote are removed, so a
rejected video leaves what a local run leaves: nothing but its reject row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from curastream.config import VideoRunConfig
from curastream.engine.names import printable
from curastream.kernels.shots import Span
from curastream.videos.analyze import fixed_spans
from curastream.videos.sink import _output_name_error
from curastream.videos.sources import VideoInput
from curastream.videos.stages import _probe_retrying
from curastream.writers.clip_model import ClipRecord, chunk_by_duration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoTask:
    inp: VideoInput
    tag: str  # names the task's journal: fixed by the plan, so a retry reuses it
    span_range: tuple[int, int] | None  # fixed spans i..j-1; None: the whole video
    part: int = 0
    parts: int = 1


def group_spans(spans: list[Span], chunk_s: float) -> list[tuple[int, int]]:
    """Consecutive spans, a group covering at most ``chunk_s`` seconds of video (at least one span)."""
    groups: list[tuple[int, int]] = []
    first = 0
    for k in range(1, len(spans) + 1):
        if k == len(spans) or spans[k].end_s - spans[first].start_s > chunk_s:
            groups.append((first, k))
            first = k
    return groups


def splittable(cfg: VideoRunConfig, device_kind: str) -> bool:
    return (cfg.split == "fixed" and cfg.clip_mode != "copy" and device_kind == "cpu"
            and cfg.ray_video_chunk_s is not None)


def plan_video_tasks(cfg: VideoRunConfig, todo: list[VideoInput], device_kind: str, input_path: str,
                     local_output: bool) -> list[VideoTask]:
    tasks: list[VideoTask] = []
    split = splittable(cfg, device_kind)
    for n, inp in enumerate(todo):
        ranges = _parts(cfg, inp, input_path, local_output) if split else [None]
        for k, r in enumerate(ranges):
            tag = f"vid{n:06d}" if len(ranges) == 1 else f"vid{n:06d}-{k:04d}"
            tasks.append(VideoTask(inp, tag, r, k, len(ranges)))
    return tasks


def _parts(cfg: VideoRunConfig, inp: VideoInput, input_path: str, local_output: bool) -> list:
    try:
        info = _probe_retrying(inp.path)
    except Exception:  # noqa: BLE001 - the task probes again and rejects the video with the reason
        return [None]
    # Without a duration in the header the spans are counted from packets, and frames without
    # timestamps cannot be found after a seek: such a video is decoded whole.
    if info.counted or not info.meta_fps or info.meta_fps <= 0 or info.duration <= cfg.ray_video_chunk_s:
        return [None]
    spans = fixed_spans(info, cfg)
    groups = group_spans(spans, cfg.ray_video_chunk_s)
    if len(groups) < 2:
        return [None]
    # A name the store refuses rejects the video before any file; one task does that as locally.
    n_chunks = len(chunk_by_duration([ClipRecord((sp.start_s, sp.end_s), 0, 0, "") for sp in spans],
                                     cfg.clips_per_chunk))
    if _output_name_error(input_path, inp.path, n_chunks, local_output) is not None:
        return [None]
    log.info("ray: %s split into %d tasks (%d spans, %.0f s)", printable(inp.path), len(groups), len(spans),
             info.duration)
    return groups


def fold_parts(parts: list[dict]) -> dict:
    """The results of one video's part tasks (in part order) as one task's result for the video,
    and ``rejected``: whether the video was rejected. Stats count the video once: its input and
    bytes in the first part, its output only when every part succeeded."""
    rejecting = next((r for r in parts if r["rejects"]), None)
    for k, r in enumerate(parts):
        d = r["stats"]
        if k:
            d["items_in"] = d["bytes_in"] = 0
        d["items_out"] = 0 if (k or rejecting is not None) else 1
        if rejecting is not None and r is not rejecting:
            d["rejected_by_reason"] = {}
    out = {"rejected": rejecting is not None, "files": [f for r in parts for f in r["files"]]}
    if rejecting is not None:
        out.update(rejects=rejecting["rejects"][:1], per_video=rejecting["per_video"][:1], clips_total=0,
                   clips_passed=0, clips_filtered=0, videos_with_warnings=0, records=None)
        return out
    entries = [e for r in parts for e in r["per_video"]]
    entry = dict(entries[0])
    for key in ("clips", "clips_passed", "decode_errors"):
        entry[key] = sum(e.get(key) or 0 for e in entries)
    entry["analysis_s"] = round(sum(e.get("analysis_s") or 0.0 for e in entries), 3)
    warnings = list(dict.fromkeys(w for e in entries for w in e.get("warnings", [])))
    entry.pop("warnings", None)
    if warnings:
        entry["warnings"] = warnings
    entry["tasks"] = len(parts)
    recs = [rec for r in parts for rec in r["records"]]
    video, clips, outcomes = recs[0][0], [c for _, cs, _ in recs for c in cs], [o for _, _, os_ in recs for o in os_]
    video.num_total_clips = len(clips)
    out.update(rejects=[], per_video=[entry], clips_total=sum(r["clips_total"] for r in parts),
               clips_passed=sum(r["clips_passed"] for r in parts),
               clips_filtered=sum(r["clips_filtered"] for r in parts),
               videos_with_warnings=int(bool(warnings)), records=(video, clips, outcomes))
    return out
