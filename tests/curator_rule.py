"""NeMo Curator 1.4's clip rules, transcribed for tests from its source (nemo_curator/utils/
decoder_utils.py ``extract_video_metadata``, stages/video/clipping/clip_extraction_stages.py
``FixedStrideExtractorStage`` and ``ClipTranscodingStage``, utils/grouping.py
``split_by_chunk_size``, utils/windowing_utils.py ``compute_windows``), reading the video with
PyAV only. Expected values in the tests come from here, never from curastream.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class CuratorMeta:
    fps: float
    duration: float
    num_frames: int


def curator_meta(path: str) -> CuratorMeta:
    """ffprobe's ``avg_frame_rate`` as num/den, its stream ``duration`` (printed with %f) else
    the format's, and ``int(duration * fps)`` frames, of the last video stream (Curator's)."""
    with av.open(path) as c:
        s = list(c.streams.video)[-1]
        avg = s.average_rate
        fps = avg.numerator / avg.denominator
        if s.duration is not None:
            tb = s.time_base
            duration = float("%f" % (s.duration * (tb.numerator / tb.denominator)))
        else:
            duration = float("%f" % (c.duration * (1 / 1000000)))
    return CuratorMeta(fps, duration, int(duration * fps))


def curator_spans(path: str, meta: CuratorMeta, clip_len_s: float = 10.0, clip_stride_s: float = 10.0,
                  min_clip_length_s: float = 2.0) -> list[tuple[float, float, str]]:
    """(start_s, end_s, span_uuid) as FixedStrideExtractorStage makes them (tutorial defaults)."""
    duration = meta.num_frames / meta.fps if meta.fps > 0 else -1
    out = []
    clip_start = 0.0
    while clip_start < duration:
        clip_end = min(clip_start + clip_len_s, duration)
        if (clip_end - clip_start) >= min_clip_length_s:
            a, b = int(clip_start * meta.fps), int(clip_end * meta.fps)
            out.append((clip_start, clip_end, str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path}_{a}_{b}"))))
        clip_start += clip_stride_s
    return out


def curator_chunks(durations: list[float], num_clips_per_chunk: int = 32) -> list[list[int]]:
    """Clip indices per chunk: split_by_chunk_size(clips, num_clips_per_chunk * 8, int(duration))."""
    out, cur, count = [], [], 0
    for i, d in enumerate(durations):
        cur.append(i)
        count += int(d)
        if count >= num_clips_per_chunk * 8:
            out.append(cur)
            cur, count = [], 0
    if cur:
        out.append(cur)
    return out


def curator_windows(total_frames: int, window_size: int = 256, remainder_threshold: int = 128) -> list[tuple[int, int]]:
    """compute_windows with the tutorial's captioning defaults; end frames inclusive."""
    if not total_frames or total_frames < 4:
        return []
    if total_frames <= window_size:
        return [(0, total_frames - 1)]
    full, remainder = divmod(total_frames, window_size)
    out = [(i * window_size, i * window_size + window_size - 1) for i in range(full)]
    if remainder >= remainder_threshold:
        out.append((total_frames - remainder, total_frames - 1))
    elif remainder > 0:
        out[-1] = (out[-1][0], total_frames - 1)
    return out
