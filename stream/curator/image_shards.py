"""A worker's image shards from Curator ``ImageObject`` batches (duck-typed: no Curator import).

Curator hands decoded pixels (``image_data``, H x W x C RGB) and no source bytes, so each image is
encoded as Curator's own writer encodes it (Pillow, JPEG quality 92 by default: the same bytes
for RGB input), then written by our ImageShardWriter, which fills every tar to exactly
``images_per_tar`` across batches. Grayscale, single-channel and RGBA pixels become RGB JPEGs
(SPEC §1), where Curator writes grayscale as it comes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from curastream.curator.output import SharedOutput
from curastream.writers.image_shards import ImageShardWriter, read_committed_shards, shard_name_hash
from curastream.writers.rejects import read_rejects, reject_row

SHARD_FIELDS = pa.schema([pa.field("width", pa.int32()), pa.field("height", pa.int32()),
                          pa.field("aesthetic_score", pa.float32()), pa.field("nsfw_score", pa.float32())])
STAGE = "curator_image_writer"


def encode_jpeg(pixels: Any, quality: int) -> tuple[bytes, int, int]:
    """(JPEG bytes, width, height) of an H x W (x C) array."""
    from PIL import Image

    img = np.asarray(pixels)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] > 4:
        img = img[..., :3]
    if img.ndim not in (2, 3):
        raise ValueError(f"pixels of shape {img.shape} are not an image")
    pil = Image.fromarray(np.ascontiguousarray(img))
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), pil.width, pil.height


def member_key(image_id: str | None, image_path: str) -> str:
    """The tar member key: WebDataset splits keys at the first dot and tar names at '/'."""
    if not image_id:
        return hashlib.sha256(image_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return image_id.replace(".", "_").replace("/", "_")


def _json_safe(meta: Any) -> dict:
    if not isinstance(meta, dict):
        return {} if meta is None else {"value": str(meta)}
    return json.loads(json.dumps(meta, default=str))


class WorkerImageShards:
    """The shards of one Curator worker. ``open`` before ``write``; ``close`` once, at teardown."""

    def __init__(self, shared: SharedOutput, images_per_tar: int, verbose: bool, deterministic_name: bool,
                 remove_image_data: bool, sidecar_json: bool, jpeg_quality: int):
        self.shared = shared
        self.images_per_tar = images_per_tar
        self.verbose = verbose
        self.deterministic_name = deterministic_name
        self.remove_image_data = remove_image_data
        self.sidecar_json = sidecar_json
        self.jpeg_quality = jpeg_quality
        self.identity = {"writer": "curastream.curator", "images_per_tar": images_per_tar,
                         "jpeg_quality": jpeg_quality, "sidecar_json": sidecar_json}
        self.writer: ImageShardWriter | None = None
        self.done: set[tuple[str, str]] = set()  # (image_id, original_path) an earlier run wrote or rejected
        self.keys: dict[str, str] = {}  # key -> original_path, this worker's
        self.rejects: list[dict] = []
        self.written = 0
        self._committed_now: list[str] = []
        self.opened = False

    def open(self) -> None:
        if self.shared.open():
            storage = self.shared.storage
            for stem in read_committed_shards(storage):
                t = pq.read_table(io.BytesIO(storage.read_bytes(f"{stem}.parquet")),
                                  columns=["image_id", "original_path"])
                self.done.update(zip(t.column("image_id").to_pylist(), t.column("original_path").to_pylist()))
            self.done.update((r.get("image_id") or "", r["source"]) for r in read_rejects(storage)
                             if not r["transient"])
        self.opened = True

    def write(self, images: Iterable[Any]) -> list[str]:
        """Write a batch's images; returns the files committed meanwhile (full shards only)."""
        if not self.opened:
            self.open()
        self._committed_now = []
        rows = []
        for obj in images:
            path = str(getattr(obj, "image_path", "") or "")
            key = member_key(getattr(obj, "image_id", None), path)
            if (key, path) in self.done:
                continue  # resumed: in a committed shard, or rejected for good
            if key in self.keys and self.keys[key] != path:
                key = f"{key}_{hashlib.sha256(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
            elif key in self.keys:
                continue  # the same image again (a retried task): written once
            self.keys[key] = path
            if getattr(obj, "image_data", None) is None:
                self.rejects.append(reject_row(key, path, None, STAGE, "no pixels (ImageObject.image_data is None)"))
                continue
            try:
                data, w, h = encode_jpeg(obj.image_data, self.jpeg_quality)
            except Exception as e:  # noqa: BLE001 - one bad image is a reject, not a stopped pipeline
                self.rejects.append(reject_row(key, path, None, STAGE, f"encode: {type(e).__name__}: {e}"))
                continue
            rows.append({"image_id": key, "image_bytes": data, "original_path": path,
                         "metadata_obj": _json_safe(getattr(obj, "metadata", None)), "width": w, "height": h,
                         "aesthetic_score": getattr(obj, "aesthetic_score", None),
                         "nsfw_score": getattr(obj, "nsfw_score", None)})
            if self.remove_image_data:
                obj.image_data = None
        if rows:
            if self.writer is None:
                self.writer = self._new_writer([r["image_id"] for r in rows])
            self.writer.write_rows(rows)
            self.written += len(rows)
        return self._committed_now

    def _new_writer(self, first_keys: list[str]) -> ImageShardWriter:
        # The worker's whole partition is not known up front (tasks stream in), so the name hashes
        # its first batch's keys with the settings: the same input and settings give the same names.
        name_hash = shard_name_hash(first_keys, self.identity) if self.deterministic_name else None
        start = 0
        if name_hash is not None:
            mine = [s for s in read_committed_shards(self.shared.storage) if s.startswith(f"images-{name_hash}-")]
            start = (int(mine[-1].rsplit("-", 1)[1]) + 1) if mine else 0
        return ImageShardWriter(self.shared.output_dir, images_per_tar=self.images_per_tar, verbose=self.verbose,
                                deterministic_name=self.deterministic_name, remove_image_data=True,
                                name_hash=name_hash, start_index=start, sidecar_json=self.sidecar_json,
                                columns_schema=SHARD_FIELDS, storage=self.shared.storage,
                                on_shard_committed=self._committed)

    def _committed(self, info: dict, table: pa.Table) -> None:
        st = self.shared.storage
        self._committed_now += [st.url(info["tar"]), st.url(info["parquet"])]

    def close(self) -> list[str]:
        """Commit the short last shard, this worker's record and the run's index."""
        if not self.opened:
            return []
        self._committed_now = []
        if self.writer is not None:
            self.writer.commit()
        shards = len(self.writer.shards_written) if self.writer is not None else 0
        self.shared.finish({"images_written": self.written, "rejected": len(self.rejects), "shards": shards,
                            "rejects": self.rejects})
        self.opened = False
        return self._committed_now

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        self.shared.abort()
        self.opened = False
