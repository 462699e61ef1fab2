"""What both video stages share: the row a video enters with, the column lists, the probe retry and
the failure wording, kept in one small module so that analysis (:mod:`curastream.videos.analyze`)
and clip making (:mod:`curastream.videos.clip_stage`) speak of a video the same way; the stages
themselves are importable from here too, where the rest of the package has always found them.

The video stages: analyse (probe + one decode) -> clips, each over VIDEO_SCHEMA batches.

The unit is a :class:`~curastream.engine.batch.Batch` of VIDEO_SCHEMA, one row per video
(videos are big: one video per batch). The video row stays the unit up to the sink, and its
clips ride in it as the ``clips`` list column (rows of CLIP_SCHEMA), rather than the clip stage
switching to CLIP_SCHEMA batches: a video yields zero or more clips, a rejected video must
still reach the sink with its reason, and the sink needs the video's own facts
(``processed_videos/<rel>.json``) next to its clips. One schema end to end keeps the
build-time requires/provides check whole.

Side data, row-aligned, never in Arrow:

- ``probe`` (:class:`VideoInfo`), ``spans``, ``motion`` (motion samples), ``score_frames``
  (analysis-size RGB), ``preview_frames`` (240p JPEGs), ``media`` (clips encoded by the
  single-pass re-encode) — made by AnalyzeStage; ClipStage is the last to need them and drops
  them.
- ``clip_records`` (:class:`ClipRecord` per clip) — made by ClipStage for the writer: they
  hold what CLIP_SCHEMA does not (embeddings, caption windows, per-clip errors, scores before
  the float32 cast), so metas JSON stays byte for byte what it was.
"""

from __future__ import annotations

import time

import numpy as np

from curastream.engine.batch import Batch
from curastream.engine.names import printable
from curastream.engine.schemas import VIDEO_SCHEMA
from curastream.videos.probe import VideoInfo, probe
from curastream.writers.rejects import is_transient_error, transient_reason

# A probe that fails transiently (the store drops a connection, EIO) is tried this many times in
# all, PROBE_BACKOFF_S then twice that in between; still failing, the reject is marked
# transient and a resume tries the video again.
PROBE_ATTEMPTS = 3
PROBE_BACKOFF_S = 0.5

# What the source makes (a name that cannot be carried into the output is rejected there).
SOURCE_COLUMNS = ("video", "source_bytes", "status", "reject_stage", "reject_reason")
PROBE_COLUMNS = ("width", "height", "display_width", "display_height", "fps", "num_frames", "duration",
                 "video_codec", "pixel_format", "audio_codec")
ANALYSIS_SIDECAR = ("probe", "spans", "motion", "score_frames", "preview_frames", "media")


def source_batch(path: str, size: int | None, seq: int) -> Batch:
    """A video's row as it enters the pipeline."""
    bad = name_error(path)
    return Batch.from_columns(VIDEO_SCHEMA, {
        "video": [path if bad is None else printable(path)], "source_bytes": [size],
        "status": ["ok" if bad is None else "rejected"], "reject_stage": [None if bad is None else "read"],
        "reject_reason": [bad],
    }, seq=seq)


def name_error(path: str) -> str | None:
    """Why a video's own name cannot be carried into the output, or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return (f"file name is not valid UTF-8 ({printable(path)!r}): clip ids, JSON records and "
                "processed_* paths are made from it; rename the file")
    return None


def _jpeg(rgb: np.ndarray) -> bytes:
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=85, colorsubsampling="420")


def _unjpeg(data: bytes) -> np.ndarray:
    import simplejpeg

    return simplejpeg.decode_jpeg(data)


def av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError)


def _probe_retrying(path: str) -> VideoInfo:
    delay = PROBE_BACKOFF_S
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        try:
            return probe(path)
        except Exception as err:  # noqa: BLE001 - re-raised unless worth another try
            if attempt == PROBE_ATTEMPTS or not is_transient_error(err):
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def failure_reason(err: BaseException) -> str:
    """A reject reason for an exception nothing expected: its type names what to chase."""
    why = f"{type(err).__name__}: {err or 'allocation failed'}" if isinstance(err, MemoryError) \
        else f"{type(err).__name__}: {err}"
    return transient_reason(why) if is_transient_error(err) else why


# The stages live in their own modules and import the helpers above: resolved on first use, so
# that importing either of those modules first does not meet a half-made one here.
_MOVED = {
    "AnalyzeStage": "curastream.videos.analyze",
    "SCENE_MIN_LEN_S": "curastream.videos.analyze",
    "SCORE_FPS": "curastream.videos.analyze",
    "MOTION_FPS": "curastream.videos.analyze",
    "ANALYSIS_CHUNK": "curastream.videos.analyze",
    "DECODE_PIXEL_BUDGET": "curastream.videos.analyze",
    "MIN_SIDE": "curastream.videos.analyze",
    "ClipStage": "curastream.videos.clip_stage",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
