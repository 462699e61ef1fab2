"""The record kinds that flow through a run, declared once.

Each pipeline checks its stages against one of these schemas when it is built (a stage may
only add declared columns, with the declared type). Decoded pixels never enter Arrow: they
travel beside the record batch in :attr:`Batch.sidecar`, row-aligned, and are dropped by the
last stage that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa


IMAGE_SCORE_COLUMNS = (
    "sharpness",
    "mean_luma",
    "frac_dark",
    "frac_bright",
    "contrast",
    "colorfulness",
    "entropy",
)

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # output key: no dots, no slashes
        pa.field("source", pa.string(), nullable=False),  # where the input came from
        pa.field("source_member", pa.string()),  # member/row inside a tar or Parquet source
        pa.field("source_bytes", pa.int64()),
        pa.field("source_format", pa.string()),  # JPEG, PNG, ... as detected from the bytes
        pa.field("data", pa.binary()),  # the encoded input bytes
        pa.field("metadata", pa.string()),  # JSON of passthrough metadata from the input
        pa.field("width", pa.int32()),  # full resolution, upright
        pa.field("height", pa.int32()),
        pa.field("exif_orientation", pa.int8()),
        *(pa.field(c, pa.float32()) for c in IMAGE_SCORE_COLUMNS),
        pa.field("phash", pa.uint64()),
        pa.field("status", pa.string()),  # "ok" or "rejected"
        pa.field("reject_stage", pa.string()),
        pa.field("reject_reason", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("image_bytes", pa.binary()),  # the JPEG written to the shard
        pa.field("passthrough", pa.bool_()),  # original bytes written unchanged
        pa.field("tar_file", pa.string()),
        pa.field("member_name", pa.string()),
    ]
)

CLIP_SCHEMA = pa.schema(
    [
        pa.field("video", pa.string(), nullable=False),
        pa.field("span_uuid", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32()),
        pa.field("chunk_index", pa.int32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("motion_global_mean", pa.float32()),
        pa.field("motion_per_patch_min_256", pa.float32()),
        pa.field("motion_method", pa.string()),
        *(pa.field(c, pa.float32()) for c in IMAGE_SCORE_COLUMNS),
        pa.field("filtered_by", pa.string()),  # comma-separated filter names, null = passed
        pa.field("valid", pa.bool_()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("framerate", pa.float32()),
        pa.field("num_frames", pa.int32()),
        pa.field("video_codec", pa.string()),
        pa.field("num_bytes", pa.int64()),
        pa.field("clip_location", pa.string()),
        pa.field("media", pa.large_binary()),
        pa.field("preview", pa.binary()),
    ]
)

# rejects.parquet: every input a run did not write, with the stage and the reason.
REJECT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_member", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string()),
    ]
)

SCHEMAS = {"images": IMAGE_SCHEMA, "clips": CLIP_SCHEMA, "rejects": REJECT_SCHEMA}


def empty_columns(schema: pa.Schema, n: int) -> dict[str, list]:
    return {name: [None] * n for name in schema.names}


@dataclass
class Batch:
    """A record batch in flight plus row-aligned data that must not go into Arrow.

    Stages work on plain column lists (cheap to update row by row) and the batch turns into a
    typed :class:`pyarrow.RecordBatch` with :meth:`to_arrow` wherever it leaves the process
    (IPC, Parquet) — so every exit is checked against the declared schema.
    """

    schema: pa.Schema
    columns: dict[str, list]
    seq: int = 0
    sidecar: dict[str, list] = field(default_factory=dict)

    @classmethod
    def new(cls, schema: pa.Schema, rows: list[dict[str, Any]], seq: int = 0) -> "Batch":
        cols = empty_columns(schema, len(rows))
        for i, row in enumerate(rows):
            for k, v in row.items():
                if k not in cols:
                    raise KeyError(f"column {k!r} is not in the schema")
                cols[k][i] = v
        return cls(schema, cols, seq)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def nbytes(self) -> int:
        n = 0
        for name in ("data", "image_bytes", "media", "preview"):
            for v in self.columns.get(name) or ():
                if v is not None:
                    n += len(v)
        for values in self.sidecar.values():
            for v in values:
                if isinstance(v, np.ndarray):
                    n += v.nbytes
                elif hasattr(v, "nbytes") and isinstance(v.nbytes, int):
                    n += v.nbytes
        return n

    def row(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}

    def rows(self):
        for i in range(self.num_rows):
            yield self.row(i)

    def to_arrow(self, columns: list[str] | None = None, drop: tuple[str, ...] = ()) -> pa.RecordBatch:
        names = [n for n in (columns or self.schema.names) if n not in drop]
        fields = [self.schema.field(n) for n in names]
        arrays = [pa.array(self.columns[n], type=f.type) for n, f in zip(names, fields)]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
