"""The image curation pipeline: read -> decode -> score -> filter/dedup -> encode -> shards.

Every stage works on a :class:`~curastream.engine.schemas.Batch` of IMAGE_SCHEMA rows. A row that
fails anywhere is marked ``status="rejected"`` with the stage and reason and flows on to the
sink, which records it in ``rejects.parquet``: a bad file never stops the run.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curastream.config import ImageFilters, ImageRunConfig
from curastream.engine.device import Device, resolve_device
from curastream.engine.pipeline import Pipeline, Stage
from curastream.images.decode import (
    ANALYSIS_SIZE,
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    check_jpeg,
    decode_for_analysis,
    decode_full_rgb,
    encode_jpeg,
    needs_reencode,
    probe_image,
)
from curastream.engine.names import printable
from curastream.images.sources import ImageInput, list_image_inputs, read_batches
from curastream.engine.ipc import IpcEmitter
from curastream.kernels.image_scores import luma, score_batch
from curastream.kernels.phash import NearDuplicateIndex, phash
from curastream.engine.output import prepare_output
from curastream.engine.progress import Progress
from curastream.engine.schemas import IMAGE_SCHEMA, IMAGE_SCORE_COLUMNS, Batch
from curastream.engine.stats import RunStats
from curastream.writers.image_shards import ImageShardWriter, read_committed_shards, shard_name_hash
from curastream.writers.rejects import read_rejects, write_rejects
from curastream.engine.run_index import write_run_index
from curastream.engine.sink import Sink
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

REJECTS_EVERY_S = 30.0
SOURCE_COLUMNS = ("key", "source", "source_member", "source_bytes", "data", "metadata", "status",
                  "reject_stage", "reject_reason")

# Typed Parquet columns next to Curator's five (SPEC §1).
SHARD_COLUMNS = pa.schema(
    [
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        *(pa.field(c, pa.float32()) for c in IMAGE_SCORE_COLUMNS),
        pa.field("phash", pa.uint64()),
        pa.field("source_format", pa.string()),
        pa.field("source_bytes", pa.int64()),
        pa.field("exif_orientation", pa.int8()),
        pa.field("passthrough", pa.bool_()),
    ]
)


def _reject(b: Batch, i: int, stage: str, reason: str, duplicate_of: str | None = None) -> None:
    b.columns["status"][i] = "rejected"
    b.columns["reject_stage"][i] = stage
    b.columns["reject_reason"][i] = reason
    if duplicate_of is not None:
        b.columns["duplicate_of"][i] = duplicate_of


def _ok_rows(b: Batch) -> list[int]:
    return [i for i, s in enumerate(b.columns["status"]) if s == "ok"]


# -- source ------------------------------------------------------------------------------------
def batches_from_inputs(inputs: list[ImageInput], batch_size: int, storage_options=None,
                        skip_keys=frozenset(), workers: int = 2) -> Iterator[Batch]:
    # Tail: two full batches per decode worker. With whole batches to the end, the last one
    # kept a single core busy for ~0.3 s of a 5.5 s run (600 photos, 2 cores).
    tail = 2 * workers * batch_size
    for seq, loaded in enumerate(read_batches(inputs, batch_size=batch_size, storage_options=storage_options,
                                              skip_keys=skip_keys, tail=tail)):
        rows = []
        for li in loaded:
            inp = li.input
            row = {
                "key": inp.key,
                # names from user data may not be valid UTF-8; Arrow and JSON need text
                "source": printable(inp.source),
                "source_member": printable(inp.member) if inp.member is not None else None,
                "source_bytes": len(li.data) if li.data is not None else inp.size,
                "data": li.data,
                "metadata": json.dumps(li.metadata, sort_keys=True, default=str) if li.metadata else None,
                "status": "ok",
            }
            if li.error is not None or li.data is None:
                row.update(status="rejected", reject_stage="read", reject_reason=li.error or "unreadable")
            rows.append(row)
        yield Batch.new(IMAGE_SCHEMA, rows, seq=seq)


# -- stages ------------------------------------------------------------------------------------
class DecodeStage(Stage):
    """Header probe (dimensions, orientation, bombs) and a reduced-size decode for scoring."""

    name = "decode"
    requires = ("data",)
    provides = ("source_format", "width", "height", "exif_orientation")

    def __init__(self, decoder: str = "auto", workers: int = 2, max_pixels: int | None = None,
                 device: Device | None = None, check_passthrough: bool = False):
        self.decoder = decoder
        self.workers = workers
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self.device = device or Device("cpu", None)
        # Whether the original bytes can go to the shard is decided here, from the same walk
        # over the JPEG's markers the decode needed (check_jpeg), and handed to the encode
        # stage, which is then left with the few re-encodes.
        self.check_passthrough = check_passthrough
        self._dali = None

    def open(self) -> None:
        if self.decoder == "auto" and self.device.is_gpu:
            self.decoder = "dali"  # nvJPEG through DALI's "mixed" decoder beats any CPU path there
        if self.decoder == "dali":
            from curastream.images.dali import make_decode_pipeline

            self._dali_args = dict(device="mixed" if self.device.is_gpu else "cpu",
                                   device_id=self.device.device_id, size=ANALYSIS_SIZE)
            self._make_dali = make_decode_pipeline

    def process(self, b: Batch) -> Batch:
        probes: dict[int, Any] = {}
        for i in _ok_rows(b):
            try:
                p = probe_image(b.columns["data"][i], max_pixels=self.max_pixels)
            except ImageDecodeError as e:
                _reject(b, i, "decode", f"{e.reason}: {e}")
                continue
            probes[i] = p
            b.columns["source_format"][i] = p.format
            b.columns["width"][i] = p.width
            b.columns["height"][i] = p.height
            b.columns["exif_orientation"][i] = p.exif_orientation
        pixels: list[np.ndarray | None] = [None] * b.num_rows
        reencode: list[str | None] = [None] * b.num_rows
        if self.decoder == "dali" and probes:
            self._decode_dali(b, probes, pixels)
            if self.check_passthrough:
                reencode = [None if px is None else needs_reencode(probes[i], b.columns["data"][i])
                            for i, px in enumerate(pixels)]
        else:
            for i, p in probes.items():
                data = b.columns["data"][i]
                try:
                    # One walk over the JPEG's markers serves the decode and the pass-through check.
                    jpeg = check_jpeg(data) if p.format in ("JPEG", "MPO") else None
                    pixels[i] = decode_for_analysis(data, p, size=ANALYSIS_SIZE, decoder=self.decoder, jpeg=jpeg)
                except ImageDecodeError as e:
                    _reject(b, i, "decode", f"{e.reason}: {e}")
                    continue
                if self.check_passthrough:
                    reencode[i] = needs_reencode(p, data, jpeg=jpeg)
        b.sidecar["probe"] = [probes.get(i) for i in range(b.num_rows)]
        b.sidecar["analysis"] = pixels
        if self.check_passthrough:
            b.sidecar["reencode"] = reencode
        return b

    def _decode_dali(self, b: Batch, probes: dict[int, Any], pixels: list) -> None:
        from curastream.images.dali import dali_decode_batch

        idx = list(probes)
        if self._dali is None or self._dali_batch < len(idx):
            self._dali_batch = max(len(idx), b.num_rows)
            self._dali = self._make_dali(batch_size=self._dali_batch, num_threads=self.workers, **self._dali_args)
        results = dali_decode_batch(self._dali, [b.columns["data"][i] for i in idx])
        for i, r in zip(idx, results):
            if isinstance(r, Exception):
                _reject(b, i, "decode", f"corrupt: {r}")
            else:
                pixels[i] = r


class ScoreStage(Stage):
    """All pixel scores and the perceptual hash, batched over the analysis images."""

    name = "score"
    requires = ("width",)
    provides = IMAGE_SCORE_COLUMNS + ("phash",)

    def __init__(self, device: Device | None = None):
        self.device = device or Device("cpu", None)

    def process(self, b: Batch) -> Batch:
        ok = [i for i in _ok_rows(b) if b.sidecar["analysis"][i] is not None]
        if not ok:
            return b
        xp = self.device.xp
        stack = xp.asarray(np.stack([b.sidecar["analysis"][i] for i in ok]))
        y = luma(stack)
        scores = score_batch(stack, y)
        hashes = phash(y)
        if xp is not np:
            scores = {k: xp.asnumpy(v) for k, v in scores.items()}
            hashes = xp.asnumpy(hashes)
        for name in IMAGE_SCORE_COLUMNS:
            col = b.columns[name]
            for j, i in enumerate(ok):
                col[i] = float(scores[name][j])
        for j, i in enumerate(ok):
            b.columns["phash"][i] = int(hashes[j])
        return b


def filter_reason(row: dict[str, Any], f: ImageFilters) -> str | None:
    """Why a row fails the thresholds, or None. Order: cheapest/most basic first."""
    w, h = row["width"], row["height"]
    if f.min_side is not None and min(w, h) < f.min_side:
        return f"min_resolution: {w}x{h} has a side below {f.min_side} px"
    if f.max_aspect is not None and max(w, h) / max(1, min(w, h)) > f.max_aspect:
        return f"max_aspect: {w}x{h} aspect {max(w, h) / max(1, min(w, h)):.1f} > {f.max_aspect}"
    checks = (
        ("sharpness", f.min_sharpness, "min"),
        ("contrast", f.min_contrast, "min"),
        ("entropy", f.min_entropy, "min"),
        ("colorfulness", f.min_colorfulness, "min"),
        ("mean_luma", f.min_mean_luma, "min"),
        ("mean_luma", f.max_mean_luma, "max"),
        ("frac_dark", f.max_frac_dark, "max"),
        ("frac_bright", f.max_frac_bright, "max"),
    )
    for col, limit, kind in checks:
        if limit is None or row.get(col) is None:
            continue
        v = row[col]
        if kind == "min" and v < limit:
            return f"min_{col}: {v:.4g} < {limit}"
        if kind == "max" and v > limit:
            return f"max_{col}: {v:.4g} > {limit}"
    return None


class FilterStage(Stage):
    """Thresholds, then near-duplicate removal (first in input order is kept)."""

    name = "filter"
    requires = ("width", "height", "phash") + IMAGE_SCORE_COLUMNS
    provides = ("duplicate_of",)

    def __init__(self, filters: ImageFilters, seen: NearDuplicateIndex | None = None):
        self.filters = filters
        self.seen = seen if seen is not None else NearDuplicateIndex(filters.dedup_distance)

    def process(self, b: Batch) -> Batch:
        for i in _ok_rows(b):
            reason = filter_reason(b.row(i), self.filters)
            if reason is not None:
                _reject(b, i, "filter", reason)
                continue
            if self.filters.dedup and b.columns["phash"][i] is not None:
                h = b.columns["phash"][i]
                first = self.seen.find(h)
                if first is not None:
                    _reject(b, i, "dedup", f"near_duplicate: pHash within {self.filters.dedup_distance} bits of {first}",
                            duplicate_of=first)
                    continue
                self.seen.add(h, b.columns["key"][i])
        return b


class EncodeStage(Stage):
    """JPEG bytes for the shard: the original when nothing changed it, else a re-encode."""

    name = "encode"
    requires = ("data", "source_format")
    provides = ("image_bytes", "passthrough")

    def __init__(self, quality: int = 92, workers: int = 2):
        self.quality = quality
        self.workers = workers

    def process(self, b: Batch) -> Batch:
        probes = b.sidecar.get("probe") or [None] * b.num_rows
        reasons = b.sidecar.get("reencode")
        for i in _ok_rows(b):
            data = b.columns["data"][i]
            try:
                why = reasons[i] if reasons is not None else needs_reencode(probes[i], data)
                if why is None:
                    b.columns["image_bytes"][i] = data
                    b.columns["passthrough"][i] = True
                else:
                    rgb = decode_full_rgb(data, probes[i])
                    b.columns["image_bytes"][i] = encode_jpeg(rgb, quality=self.quality)
                    b.columns["passthrough"][i] = False
            except ImageDecodeError as e:
                _reject(b, i, "encode", f"{e.reason}: {e}")
        # pixels are not needed past this point: free them before the batch queues for the writer
        b.sidecar.clear()
        return b


# -- sink --------------------------------------------------------------------------------------
class ImageRunSink(Sink):
    """Shards for kept rows, rejects.parquet for the rest, the IPC tee, stats and progress."""

    name = "write"

    def __init__(self, storage: Storage, writer: ImageShardWriter, stats: RunStats,
                 prior_rejects: list[dict[str, Any]], emitter: IpcEmitter | None,
                 progress: Progress | None):
        self.storage = storage
        self.writer = writer
        self.stats = stats
        self.rejects = list(prior_rejects)
        self.emitter = emitter
        self.progress = progress
        self._rejects_dirty = False
        self._rejects_written_at = time.monotonic()
        writer.on_shard_committed = self._on_shard_committed

    def write(self, b: Batch) -> None:
        kept_rows = []
        for i in range(b.num_rows):
            row = b.row(i)
            self.stats.items_in += 1
            self.stats.bytes_in += row["source_bytes"] or 0
            if row["status"] == "ok":
                row["original_path"] = row["source"] if row["source_member"] is None else f"{row['source']}::{row['source_member']}"
                row["metadata_obj"] = json.loads(row["metadata"]) if row["metadata"] else {}
                kept_rows.append((i, row))
                self.stats.bytes_out += len(row["image_bytes"])
            else:
                self.stats.count_reject(f"{row['reject_stage']}:{row['reject_reason'].split(':', 1)[0]}")
                self.rejects.append({
                    "key": row["key"], "source": row["source"], "source_member": row["source_member"],
                    "stage": row["reject_stage"], "reason": row["reject_reason"],
                    "duplicate_of": row["duplicate_of"],
                })
                self._rejects_dirty = True
        for (i, _), written in zip(kept_rows, self.writer.write_rows([r for _, r in kept_rows])):
            b.columns["tar_file"][i] = written["tar_file"]
            b.columns["member_name"][i] = written["member_name"]
            if self.writer.remove_image_data:
                b.columns["image_bytes"][i] = None
            self.stats.items_out += 1
        if self.emitter is not None:
            self.emitter.emit(b.to_arrow(drop=() if self.emitter.include_bytes else ("data",)))
        if self.progress is not None:
            self.progress.update(b.num_rows)

    def _on_shard_committed(self, info, table) -> None:
        # Rejects need not be committed with each shard for correctness (a resume re-judges what
        # is not in a committed shard and gets the same answer), but a long run should show them:
        # rewrite the file now and then, not at every shard, so the cost stays linear.
        if self._rejects_dirty and time.monotonic() - self._rejects_written_at >= REJECTS_EVERY_S:
            self._write_rejects()

    def _write_rejects(self) -> None:
        write_rejects(self.storage, self.rejects)
        self._rejects_dirty = False
        self._rejects_written_at = time.monotonic()

    def commit(self) -> None:
        self.writer.commit()
        self._write_rejects()  # always: an empty rejects.parquet says "nothing rejected"
        if self.emitter is not None:
            self.emitter.close()

    def abort(self) -> None:
        self.writer.abort()
        if self.emitter is not None:
            self.emitter.close()


# -- resume ------------------------------------------------------------------------------------
def load_resume_state(storage: Storage, dedup_distance: int) -> tuple[set[str], int, NearDuplicateIndex, list[dict]]:
    """What an interrupted run already committed: done keys, next shard index, dedup state, rejects."""
    stems = read_committed_shards(storage)
    done: set[str] = set()
    seen = NearDuplicateIndex(dedup_distance)
    for stem in stems:
        t = pq.read_table(io.BytesIO(storage.read_bytes(f"{stem}.parquet")), columns=["image_id", "phash"])
        rows = t.num_rows
        for key, h in zip(t.column("image_id").to_pylist(), t.column("phash").to_pylist()):
            done.add(key)
            if h is not None:
                seen.add(h, key)
        storage.adopt(f"{stem}.tar", rows=rows)
        storage.adopt(f"{stem}.parquet", rows=rows)
    # A tar without its Parquet was cut short between the two commits: rebuild it.
    committed = {f"{s}.tar" for s in stems}
    for rel in storage.list_files():
        if rel.startswith("images-") and rel.endswith(".tar") and "/" not in rel and rel not in committed:
            storage.delete(rel)
    rejects = read_rejects(storage)
    if rejects:
        done.update(r["key"] for r in rejects if r["key"])
    next_index = 0
    if stems:
        next_index = int(stems[-1].rsplit("-", 1)[1]) + 1
    return done, next_index, seen, rejects


# -- runs --------------------------------------------------------------------------------------
def _stages(cfg: ImageRunConfig, device: Device, seen: NearDuplicateIndex | None, encode: bool) -> list[Stage]:
    stages: list[Stage] = [
        DecodeStage(cfg.decoder, workers=cfg.workers, max_pixels=cfg.max_pixels, device=device,
                    check_passthrough=encode),
        ScoreStage(device),
        FilterStage(cfg.filters, seen),
    ]
    if encode:
        stages.append(EncodeStage(cfg.jpeg_quality, workers=cfg.workers))
    return stages


def run_images(cfg: ImageRunConfig) -> RunStats:
    """Curate images from ``cfg.sources`` into tar+Parquet shards in ``cfg.output``."""
    cfg.validate()
    if not cfg.output:
        raise ValueError("run_images needs an output location (use stream_images to not write)")
    device = resolve_device(cfg.device)
    inputs = list_image_inputs(cfg.sources, storage_options=cfg.storage_options, files_from=cfg.files_from,
                               parquet_image_column=cfg.parquet_image_column)
    storage = Storage(cfg.output, cfg.storage_options)
    resuming = prepare_output(storage, cfg.on_existing)
    skip: set[str] = set()
    start_index = 0
    seen = None
    prior_rejects: list[dict] = []
    if resuming:
        skip, start_index, seen, prior_rejects = load_resume_state(storage, cfg.filters.dedup_distance)
        log.info("resume: %d of %d inputs already done, continuing at shard %d", len(skip & {i.key for i in inputs}),
                 len(inputs), start_index)
    name_hash = shard_name_hash((i.key for i in inputs), cfg.writer_identity())
    writer = ImageShardWriter(
        cfg.output, images_per_tar=cfg.images_per_tar, verbose=cfg.verbose,
        deterministic_name=cfg.deterministic_name, remove_image_data=cfg.remove_image_data,
        name_hash=name_hash if cfg.deterministic_name else None, start_index=start_index,
        sidecar_json=cfg.sidecar_json, columns_schema=SHARD_COLUMNS, storage=storage,
    )
    stats = RunStats(kind="images")
    todo = [i for i in inputs if i.key not in skip]
    progress = Progress(len(todo), "img", enabled=cfg.progress)
    emitter = IpcEmitter(cfg.emit_ipc, include_bytes=cfg.emit_ipc_bytes) if cfg.emit_ipc else None
    sink = ImageRunSink(storage, writer, stats, prior_rejects, emitter, progress)
    pipe = Pipeline(
        batches_from_inputs(todo, cfg.batch_size, cfg.storage_options, workers=cfg.workers),
        _stages(cfg, device, seen, encode=True), sink=sink, schema=IMAGE_SCHEMA,
        source_columns=SOURCE_COLUMNS, stats=stats,
    )
    try:
        pipe.run()
    finally:
        progress.close()
    stats.extra.update(device=device.kind, shards=len(writer.shards_written), resumed_skipped=len(inputs) - len(todo),
                       inputs_listed=len(inputs))
    if cfg.stats_path:
        _write_stats(cfg.stats_path, stats)
    write_run_index(storage, "images", cfg.to_dict(), stats.to_dict(),
                    extra={"shard_name_hash": name_hash, "inputs": len(inputs)})
    return stats


def _write_stats(path: str, stats: RunStats) -> None:
    import fsspec

    with fsspec.open(path, "w") as f:
        f.write(stats.to_json())


def _coerce_inputs(items: Iterable[Any], batch_size: int) -> Iterator[Batch]:
    """The streaming API accepts paths, raw bytes, (key, bytes) pairs or dicts."""
    from pathlib import Path

    rows: list[dict] = []
    seq = 0
    for n, it in enumerate(items):
        if isinstance(it, (str, Path)):
            p = str(it)
            with open(p, "rb") as fh:
                data = fh.read()
            row = {"key": Path(p).stem, "source": p, "data": data}
        elif isinstance(it, (bytes, bytearray, memoryview)):
            row = {"key": f"item{n:09d}", "source": "<bytes>", "data": bytes(it)}
        elif isinstance(it, tuple):
            row = {"key": str(it[0]), "source": "<bytes>", "data": bytes(it[1])}
        elif isinstance(it, dict):
            row = {"key": str(it["key"]), "source": str(it.get("source", "<bytes>")), "data": bytes(it["data"])}
            if it.get("metadata"):
                row["metadata"] = json.dumps(it["metadata"], sort_keys=True, default=str)
        else:
            raise TypeError(f"cannot stream an input of type {type(it).__name__}")
        row.update(status="ok", source_bytes=len(row["data"]))
        rows.append(row)
        if len(rows) >= batch_size:
            yield Batch.new(IMAGE_SCHEMA, rows, seq=seq)
            rows, seq = [], seq + 1
    if rows:
        yield Batch.new(IMAGE_SCHEMA, rows, seq=seq)


def stream_images(items: Iterable[Any], cfg: ImageRunConfig | None = None, encode: bool = False,
                  include_bytes: bool = False) -> Iterator[pa.RecordBatch]:
    """Score images as they arrive and yield Arrow record batches; nothing is written.

    ``items``: file paths, bytes, ``(key, bytes)`` pairs or ``{"key", "data", "metadata"}`` dicts.
    Rejected rows are yielded too, with ``status="rejected"`` and the reason.
    """
    cfg = cfg or ImageRunConfig(sources=["<stream>"])
    device = resolve_device(cfg.device)
    pipe = Pipeline(_coerce_inputs(items, cfg.batch_size), _stages(cfg, device, None, encode),
                    schema=IMAGE_SCHEMA, source_columns=SOURCE_COLUMNS, stats=RunStats(kind="images"))
    drop = () if include_bytes else ("data", "image_bytes")
    for b in pipe:
        yield b.to_arrow(drop=drop)
