"""A clip tree (SPEC §2) as export samples: one per clip with a metas JSON, in the order of its
source video and start time. Each sample is the clip's MP4, its metas JSON as written, its
captions (``.txt``, one line per caption window) and its embedding (``.npy``) when present."""

from __future__ import annotations

import io
import json
import logging
import pickle
import posixpath
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from curastream.engine.schemas import IMAGE_SCORE_COLUMNS
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

METAS = "metas/v0"
EMBEDDING_DIRS = ("iv2_embd", "ce1_embd")  # internvideo2, cosmos-embed1
MODEL_SCORES = ("nsfw_score", "aesthetic_score")

CLIP_INDEX_SCHEMA = pa.schema([
    pa.field("span_uuid", pa.string(), nullable=False),
    pa.field("source_video", pa.string()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("clip_location", pa.string()),  # where the clip is in the exported tree, null: no media
    pa.field("filtered", pa.bool_()),  # in filtered_clips/
    pa.field("valid", pa.bool_()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("framerate", pa.float32()),
    pa.field("num_frames", pa.int32()),
    pa.field("video_codec", pa.string()),
    pa.field("num_bytes", pa.int64()),
    pa.field("motion_global_mean", pa.float32()),
    pa.field("motion_per_patch_min_256", pa.float32()),
    *(pa.field(c, pa.float32()) for c in IMAGE_SCORE_COLUMNS),
    *(pa.field(c, pa.float32()) for c in MODEL_SCORES),
    pa.field("captions", pa.list_(pa.string())),
    pa.field("embedding", pa.list_(pa.float32())),
])


class _ArrayUnpickler(pickle.Unpickler):
    """Embedding pickles hold one numpy array; anything else in one is refused, because
    unpickling an arbitrary object from a dataset runs whatever code it names."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("copyreg", "_reconstructor")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"embedding pickle names {module}.{name}, not a numpy array")
        return super().find_class(module, name)


def load_embedding(data: bytes) -> np.ndarray:
    arr = _ArrayUnpickler(io.BytesIO(data)).load()
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"embedding pickle holds a {type(arr).__name__}, not an array")
    return arr.reshape(-1)  # stored (1, D): a sample's vector is (D,)


def window_captions(meta: dict[str, Any]) -> list[str]:
    """One caption per window: the enhanced one where a window has it, else the plain one."""
    out = []
    for w in meta.get("windows") or []:
        keys = sorted(k for k in w if k.endswith("_caption") and isinstance(w[k], str) and w[k])
        enhanced = [k for k in keys if k.endswith("_enhanced_caption")]
        pick = enhanced or keys
        if pick:
            out.append(w[pick[0]])
    return out


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class ClipSource:
    kind = "clips"
    key = "span_uuid"

    def __init__(self, storage: Storage, include_filtered: bool = False):
        self.storage = storage
        files = storage.list_files()
        media = {}
        for rel in files:
            top = rel.split("/", 1)[0]
            if top in ("clips", "filtered_clips") and rel.endswith(".mp4"):
                media[posixpath.basename(rel)[:-4]] = rel
        embeddings = {}
        for rel in files:
            top = rel.split("/", 1)[0]
            if top in EMBEDDING_DIRS and rel.endswith(".pickle") and rel.count("/") == 1:
                embeddings.setdefault(posixpath.basename(rel)[:-7], rel)
        self.media, self.embeddings = media, embeddings
        self.metas: dict[str, bytes] = {}
        self.vectors: dict[str, np.ndarray] = {}
        rows = []
        for rel in files:
            if not (rel.startswith(METAS + "/") and rel.endswith(".json")):
                continue
            raw = storage.read_bytes(rel)
            meta = json.loads(raw)
            key = meta.get("span_uuid") or posixpath.basename(rel)[:-5]
            where = media.get(key)
            filtered = where is not None and where.startswith("filtered_clips/")
            if filtered and not include_filtered:
                continue
            vec = load_embedding(storage.read_bytes(embeddings[key])) if key in embeddings else None
            if vec is not None:
                self.vectors[key] = vec
            self.metas[key] = raw
            rows.append(self._row(key, meta, where, filtered, vec))
        rows.sort(key=lambda r: (r["source_video"] or "", r["start_s"] or 0.0, r["span_uuid"]))
        self.table = pa.Table.from_pylist(rows, schema=CLIP_INDEX_SCHEMA)

    def _row(self, key: str, meta: dict, where: str | None, filtered: bool, vec) -> dict[str, Any]:
        span = meta.get("duration_span") or [None, None]
        motion = meta.get("motion_score") or {}
        scores = meta.get("frame_scores") or {}
        return {
            "span_uuid": key, "source_video": meta.get("source_video"),
            "start_s": _f(span[0]), "end_s": _f(span[1]),
            "clip_location": self.storage.url(where) if where else None,
            "filtered": filtered, "valid": meta.get("valid"),
            "width": meta.get("width"), "height": meta.get("height"), "framerate": _f(meta.get("framerate")),
            "num_frames": meta.get("num_frames"), "video_codec": meta.get("video_codec"),
            "num_bytes": meta.get("num_bytes"),
            "motion_global_mean": _f(motion.get("global_mean")),
            "motion_per_patch_min_256": _f(motion.get("per_patch_min_256")),
            **{c: _f(scores.get(c)) for c in IMAGE_SCORE_COLUMNS},
            **{c: _f(meta.get(c)) for c in MODEL_SCORES},
            "captions": window_captions(meta),
            "embedding": None if vec is None else vec.astype(np.float32).tolist(),
        }

    def samples(self, keys: list[str]) -> Iterator[tuple[str, dict[str, bytes] | None]]:
        """(key, members) in the order given; members None for a clip without media."""
        for key in keys:
            rel = self.media.get(key)
            if rel is None:
                yield key, None
                continue
            members = {"mp4": self.storage.read_bytes(rel), "json": self.metas[key]}
            caps = window_captions(json.loads(self.metas[key]))
            if caps:
                members["txt"] = "\n".join(caps).encode("utf-8")
            if key in self.vectors:
                buf = io.BytesIO()
                np.save(buf, self.vectors[key], allow_pickle=False)
                members["npy"] = buf.getvalue()
            yield key, members
