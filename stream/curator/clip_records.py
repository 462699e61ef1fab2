"""Curator's ``Video`` (one clip chunk of a VideoTask) as our ClipChunk + VideoRecord.

Duck-typed on Curator's attributes (no Curator import), so our ClipWriter writes what Curator's
stages computed: clip ids, spans, media, motion and aesthetic scores, windows with captions and
WebP previews, Cosmos-Embed1 embeddings, errors.

Curator moves a clip to ``filtered_clips`` without saying which filter did; the reason recorded
(``motion`` / ``aesthetic``, the chunk JSON's counts) is ``motion`` when the clip's motion scores
fall below Curator's default thresholds, else ``aesthetic`` (Curator's only other clip filter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curastream.kernels.motion_score import MOTION_GLOBAL_MEAN_THRESHOLD, MOTION_PER_PATCH_MIN_THRESHOLD
from curastream.writers.clip_model import ClipChunk, ClipRecord, VideoRecord

# Clip -> {"width", "height", "framerate", "num_frames", "video_codec", ...} of its own media
# (Curator's Clip.extract_metadata, which probes the buffer), or None.
Probe = Callable[[Any], "dict[str, Any] | None"]


def _filter_reason(clip: Any) -> str:
    g, p = getattr(clip, "motion_score_global_mean", None), getattr(clip, "motion_score_per_patch_min_256", None)
    if g is not None and (g < MOTION_GLOBAL_MEAN_THRESHOLD or (p is not None and p < MOTION_PER_PATCH_MIN_THRESHOLD)):
        return "motion"
    return "aesthetic"


def clip_record(clip: Any, fps: float, filtered: bool, probe: Probe | None) -> ClipRecord:
    start_s, end_s = (float(x) for x in clip.span)
    meta = (probe(clip) if probe is not None and clip.buffer else None) or {}
    motion = None
    if getattr(clip, "motion_score_global_mean", None) is not None:
        motion = {"global_mean": float(clip.motion_score_global_mean),
                  "per_patch_min_256": float(clip.motion_score_per_patch_min_256)}
    windows, previews = [], {}
    for w in getattr(clip, "windows", None) or []:
        d: dict[str, Any] = {"start_frame": int(w.start_frame), "end_frame": int(w.end_frame)}
        d.update({f"{m}_caption": c for m, c in (w.caption or {}).items()})
        d.update({f"{m}_enhanced_caption": c for m, c in (w.enhanced_caption or {}).items()})
        windows.append(d)
        if w.webp_bytes:
            previews[(d["start_frame"], d["end_frame"])] = w.webp_bytes
    emb = getattr(clip, "cosmos_embed1_embedding", None)
    return ClipRecord(
        span=(start_s, end_s), start_frame=int(start_s * fps), end_frame=int(end_s * fps),
        uuid=str(clip.uuid),  # Curator's own id, kept: a clip keeps its id across tools
        media=clip.buffer or None,
        width=meta.get("width"), height=meta.get("height"), framerate=meta.get("framerate"),
        num_frames=meta.get("num_frames"), video_codec=meta.get("video_codec"),
        motion_score=motion, aesthetic_score=getattr(clip, "aesthetic_score", None),
        filtered_by=[_filter_reason(clip)] if filtered else [],
        errors={str(k): str(v) for k, v in (getattr(clip, "errors", None) or {}).items()},
        embeddings={"cosmos-embed1": emb} if emb is not None else {},
        windows=windows, previews=previews)


def chunk_of(video: Any, probe: Probe | None = None) -> tuple[ClipChunk, VideoRecord]:
    md = video.metadata
    path = str(getattr(video.input_video, "as_posix", lambda: video.input_video)())
    fps = float(md.framerate or 0.0)
    record = VideoRecord(path=path, height=md.height, width=md.width, framerate=md.framerate,
                         num_frames=md.num_frames, duration=md.duration, video_codec=md.video_codec,
                         pixel_format=md.pixel_format, audio_format=getattr(md, "audio_codec", None),
                         num_total_clips=video.num_total_clips or None)
    clips = ([clip_record(c, fps, False, probe) for c in video.clips]
             + [clip_record(c, fps, True, probe) for c in video.filtered_clips])
    index = int(video.clip_chunk_index)
    # a pipeline without ClipTranscodingStage never splits a video: one chunk, of index 0
    total = int(video.num_clip_chunks or 0) or index + 1
    chunk = ClipChunk(video_path=path, chunk_index=index, clips=clips, num_chunks_total=total)
    return chunk, record
