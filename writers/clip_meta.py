"""Per-clip metadata of the clip writer: the ``metas/v0/<uuid>.json`` document and the caption
windows it carries (which also feed the chunk summary's ``all_windows``)."""

from __future__ import annotations

from typing import Any

from curastream.writers.clip_layout import num
from curastream.writers.clip_model import ClipRecord, VideoRecord
from curastream.writers.clip_summary import ClipOutcome


def caption_keys(window: dict[str, Any], models: list[str] | None, enhanced: bool) -> list[str]:
    suffix = "_enhanced_caption" if enhanced else "_caption"
    if models is not None:
        return [f"{m}{suffix}" for m in models]
    # No model list: emit what upstream provided, in the order it provided it.
    return [k for k in window if k.endswith(suffix)
            and (enhanced or not k.endswith("_enhanced_caption"))]


def clip_windows(clip: ClipRecord, out: ClipOutcome, caption_models: list[str] | None,
                 enhanced_caption_models: list[str] | None) -> list[dict[str, Any]]:
    """The clip's windows as the meta JSON lists them; records first captions in ``out``."""
    windows = []
    for w in clip.windows:
        d: dict[str, Any] = {"start_frame": int(w["start_frame"]), "end_frame": int(w["end_frame"])}
        key = f"{d['start_frame']}_{d['end_frame']}"
        for enhanced in (False, True):
            models = enhanced_caption_models if enhanced else caption_models
            for k in caption_keys(w, models, enhanced):
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


def meta_doc(clip: ClipRecord, video: VideoRecord, clip_location: str | None, errors: dict[str, str],
             windows: list[dict[str, Any]], valid: bool) -> dict[str, Any]:
    """The ``metas/v0/<uuid>.json`` document, keys in Curator's order."""
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
            "global_mean": num(clip.motion_score.get("global_mean")),
            "per_patch_min_256": num(clip.motion_score.get("per_patch_min_256")),
        }
    if clip.aesthetic_score is not None:
        doc["aesthetic_score"] = float(clip.aesthetic_score)
    for name, v in clip.model_scores.items():
        doc[name] = num(v)
    if errors:
        # Curator's shape: the list of the stages that failed (``list(clip.errors)``); the
        # messages follow as an addition.
        doc["errors"] = list(errors)
        doc["error_messages"] = dict(errors)
    if clip.frame_scores:
        doc["frame_scores"] = {k: num(v) for k, v in clip.frame_scores.items()}
    if clip.filtered_by:
        doc["filtered_by"] = list(clip.filtered_by)
    doc["windows"] = windows
    doc["valid"] = valid
    return doc
