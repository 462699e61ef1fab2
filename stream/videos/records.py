"""How a video's clips are held on their way to the sink.

In the batch: the ``clips`` column of VIDEO_SCHEMA, one list of CLIP_SCHEMA rows per video
(:func:`clips_column`, read back with :func:`video_clips`). Beside it: :class:`Held` lists of
side data that report their bytes, so the queues' byte bounds count frames and clip media.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curastream.engine.batch import Batch
from curastream.engine.schemas import CLIP_SCHEMA, IMAGE_SCORE_COLUMNS, VIDEO_SCHEMA
from curastream.videos.clip_facts import ClipMedia
from curastream.writers.clip_model import ClipRecord

CLIPS_TYPE = VIDEO_SCHEMA.field("clips").type


class Held(list):
    """One row's side data that reports the bytes it holds, so the queues' byte bounds see it."""

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(x) for x in self)


def _nbytes(x: Any) -> int:
    if isinstance(x, tuple):
        return sum(_nbytes(y) for y in x)
    if isinstance(x, np.ndarray):
        return x.nbytes
    if isinstance(x, (bytes, bytearray)):
        return len(x)
    if isinstance(x, ClipMedia):
        return x.num_bytes
    if isinstance(x, ClipRecord):
        return len(x.media or b"") + sum(len(w) for w in x.previews.values())
    return 0


def clip_rows(video: str, motion_method: str | None, clips: list[ClipRecord]) -> pa.RecordBatch:
    """A video's clips as CLIP_SCHEMA rows (chunk_index and clip_location are the writer's)."""
    rows = []
    for k, c in enumerate(clips):
        ms = c.motion_score or {}
        row = {
            "video": video, "span_uuid": c.uuid, "clip_index": k,
            "start_s": c.span[0], "end_s": c.span[1], "start_frame": c.start_frame, "end_frame": c.end_frame,
            "motion_global_mean": ms.get("global_mean"), "motion_per_patch_min_256": ms.get("per_patch_min_256"),
            "motion_method": motion_method, "filtered_by": ",".join(c.filtered_by) or None,
            "valid": bool(c.media is not None and not c.filtered_by and not c.errors),
            "width": c.width, "height": c.height, "framerate": c.framerate, "num_frames": c.num_frames,
            "video_codec": c.video_codec, "num_bytes": len(c.media) if c.media else None,
            "media": c.media, "preview": c.preview,
        }
        for name in IMAGE_SCORE_COLUMNS:
            row[name] = c.frame_scores.get(name)
        rows.append(row)
    return Batch.from_rows(CLIP_SCHEMA, rows, CLIP_SCHEMA.names).to_arrow()


def clips_column(per_video: list[pa.RecordBatch]) -> pa.Array:
    """One list-of-clips cell per video from each video's CLIP_SCHEMA rows."""
    offsets = np.zeros(len(per_video) + 1, np.int32)
    np.cumsum([rb.num_rows for rb in per_video], out=offsets[1:])
    table = pa.Table.from_batches(per_video, schema=CLIP_SCHEMA).combine_chunks()
    values = pa.StructArray.from_arrays([table.column(n).combine_chunks() for n in CLIP_SCHEMA.names],
                                        fields=list(CLIP_SCHEMA))
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=CLIPS_TYPE)


def video_clips(b: Batch, i: int) -> pa.RecordBatch:
    """Row ``i``'s clips as a CLIP_SCHEMA record batch."""
    col = b.records.column("clips")
    start, end = col.offsets[i].as_py(), col.offsets[i + 1].as_py()
    return pa.RecordBatch.from_struct_array(col.values.slice(start, end - start))
