"""The record kinds that flow through a run, declared once.

Each pipeline checks its stages' ``requires``/``provides`` against one of these schemas when it
is built (a stage may only add declared columns, and only read columns made before it), and
every column a stage sets gets its declared type (:meth:`Batch.with_columns` builds it from the
schema's field, and refuses an Arrow array of another type). Decoded pixels never enter Arrow: they travel beside the record batch in
:attr:`curastream.engine.batch.Batch.sidecar`, row-aligned, and are dropped by the last stage
that needs them.
"""

from __future__ import annotations

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

# Scores of the built-in models (curastream.models): declared so every run's Parquet has one
# schema (SPEC §1: null when not computed). Plug-in models add theirs to the run's schema.
MODEL_SCORE_COLUMNS = ("nsfw_score",)

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # Curator's name; the tar key: no dots, no slashes
        pa.field("source", pa.string(), nullable=False),  # where the input came from
        pa.field("source_member", pa.string()),  # member/row inside a tar or Parquet source
        pa.field("source_bytes", pa.int64()),
        pa.field("source_format", pa.string()),  # JPEG, PNG, ... as detected from the bytes
        pa.field("data", pa.binary()),  # the encoded input bytes
        pa.field("metadata", pa.string()),  # JSON of passthrough metadata from the input
        pa.field("caption", pa.string()),  # a URL list's caption column, a WebDataset sample's .txt
        pa.field("width", pa.int32()),  # full resolution, upright
        pa.field("height", pa.int32()),
        pa.field("exif_orientation", pa.int8()),
        *(pa.field(c, pa.float32()) for c in IMAGE_SCORE_COLUMNS),
        pa.field("phash", pa.uint64()),
        *(pa.field(c, pa.float32()) for c in MODEL_SCORE_COLUMNS),
        pa.field("status", pa.string()),  # "ok" or "rejected"
        pa.field("reject_stage", pa.string()),
        pa.field("reject_reason", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("image_bytes", pa.binary()),  # the JPEG written to the shard
        pa.field("passthrough", pa.bool_()),  # original bytes written unchanged
        pa.field("orientation_fix", pa.string()),  # EXIF-rotated input stored upright: "lossless"/"reencode"
        pa.field("original_width", pa.int32()),  # the input's upright size; width/height: what is stored
        pa.field("original_height", pa.int32()),
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

# One row per input video, the unit of the video pipeline: its clips ride along as a list
# column (``clips``, rows of CLIP_SCHEMA), because a video yields zero or more clips and a
# rejected one must still reach the sink with its reason.
VIDEO_SCHEMA = pa.schema(
    [
        pa.field("video", pa.string(), nullable=False),  # absolute path or URL, as given
        pa.field("source_bytes", pa.int64()),
        pa.field("status", pa.string()),  # "ok" or "rejected"
        pa.field("reject_stage", pa.string()),
        pa.field("reject_reason", pa.string()),
        pa.field("width", pa.int32()),  # coded size
        pa.field("height", pa.int32()),
        pa.field("display_width", pa.int32()),  # upright, SAR applied
        pa.field("display_height", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("num_frames", pa.int64()),
        pa.field("duration", pa.float64()),
        pa.field("video_codec", pa.string()),
        pa.field("pixel_format", pa.string()),
        pa.field("audio_codec", pa.string()),
        pa.field("decode_errors", pa.int32()),
        pa.field("analysis_s", pa.float64()),
        pa.field("motion_method", pa.string()),
        pa.field("warnings", pa.string()),  # newline-separated; processed, but the user should know
        pa.field("clips", pa.list_(pa.struct(list(CLIP_SCHEMA)))),
    ]
)

# _curastream/rejects.parquet: every input a run did not write, with the stage and the reason.
# Images name the item by Curator's ``image_id`` (the shard key); a video is its ``source``.
REJECT_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_member", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string()),
        # The failure may pass (store unreachable, a timeout): a resume tries the input again.
        pa.field("transient", pa.bool_()),
    ]
)
VIDEO_REJECT_SCHEMA = pa.schema([f for f in REJECT_SCHEMA if f.name not in ("image_id", "source_member", "duplicate_of")])

SCHEMAS = {"images": IMAGE_SCHEMA, "clips": CLIP_SCHEMA, "videos": VIDEO_SCHEMA, "rejects": REJECT_SCHEMA, "video_rejects": VIDEO_REJECT_SCHEMA}
