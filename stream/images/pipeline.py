"""The image run: read -> decode -> score -> filter/dedup -> encode (stages.py) -> shards.

Every stage works on a :class:`~curastream.engine.batch.Batch` of IMAGE_SCHEMA rows. A row that
fails anywhere is marked ``status="rejected"`` with the stage and reason and flows on to the
sink, which records it in ``_curastream/rejects.parquet``: a bad file never stops the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from curastream.config import ImageRunConfig
from curastream.engine.batch import Batch
from curastream.engine.device import resolve_device
from curastream.engine.names import printable
from curastream.engine.output import check_not_overlapping
from curastream.engine.pipeline import Pipeline
from curastream.engine.run import Run
from curastream.engine.schemas import IMAGE_SCHEMA, IMAGE_SCORE_COLUMNS, MODEL_SCORE_COLUMNS
from curastream.engine.stats import RunStats
from curastream.engine.storage import Storage
from curastream.images import dedup_facts
from curastream.images.dedup import AnalysedStage, analyse_facts, decide
from curastream.images.inputs import ImageInput, source_identity
from curastream.images.listing import list_image_inputs
from curastream.images.probe import DEFAULT_MAX_PIXELS
from curastream.images.reading import read_batches
from curastream.images.resume import ResumeState, load_resume_state, unclash_keys  # noqa: F401 - ResumeState: re-exported
from curastream.images.sink import REJECTS_EVERY_S, ImageRunSink  # noqa: F401 - REJECTS_EVERY_S: re-exported
from curastream.images.url_inputs import options_from, url_column_fields
from curastream.images.stages import SOURCE_COLUMNS, image_stages
from curastream.models.registry import make_models
from curastream.models.stage import with_model_columns
from curastream.writers.image_shards import CURATOR_COLUMNS, ImageShardWriter, shard_name_hash

log = logging.getLogger(__name__)

# Typed Parquet columns next to Curator's five (SPEC §1).
SHARD_COLUMNS = pa.schema(
    [
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        *(pa.field(c, pa.float32()) for c in IMAGE_SCORE_COLUMNS),
        pa.field("phash", pa.uint64()),
        *(pa.field(c, pa.float32()) for c in MODEL_SCORE_COLUMNS),
        pa.field("source_format", pa.string()),
        pa.field("source_bytes", pa.int64()),
        pa.field("exif_orientation", pa.int8()),
        pa.field("passthrough", pa.bool_()),
        pa.field("orientation_fix", pa.string()),
        pa.field("caption", pa.string()),
    ]
)
# The caption travels from the reader as a column of its own.
READ_COLUMNS = (*SOURCE_COLUMNS, "caption")


# -- source ------------------------------------------------------------------------------------
def batches_from_inputs(inputs: list[ImageInput], batch_size: int, storage_options=None,
                        skip_keys=frozenset(), workers: int = 2, url_options=None) -> Iterator[Batch]:
    # Tail: two full batches per decode worker. With whole batches to the end, the last one
    # kept a single core busy for ~0.3 s of a 5.5 s run (600 photos, 2 cores).
    tail = 2 * workers * batch_size
    for seq, loaded in enumerate(read_batches(inputs, batch_size=batch_size, storage_options=storage_options,
                                              skip_keys=skip_keys, tail=tail, url_options=url_options)):
        rows = []
        for li in loaded:
            inp = li.input
            row = {
                "image_id": inp.key,
                # names from user data may not be valid UTF-8; Arrow and JSON need text
                "source": printable(inp.source),
                "source_member": printable(inp.member) if inp.member is not None else None,
                "source_bytes": len(li.data) if li.data is not None else inp.size,
                "data": li.data,
                "metadata": json.dumps(li.metadata, sort_keys=True, default=str) if li.metadata else None,
                "caption": li.caption,
                "status": "ok",
            }
            if li.error is not None or li.data is None:
                row.update(status="rejected", reject_stage="read", reject_reason=li.error or "unreadable")
            rows.append(row)
        yield Batch.from_rows(IMAGE_SCHEMA, rows, READ_COLUMNS, seq=seq)


# -- runs --------------------------------------------------------------------------------------
def run_images(cfg: ImageRunConfig, composed: Composed | None = None) -> RunStats:
    """Curate images from ``cfg.sources`` into tar+Parquet shards in ``cfg.output``.
    ``composed``: what a composed pipeline (curastream.compose) changes; None for the CLI's run."""
    cfg.validate()
    if not cfg.output:
        raise ValueError("run_images needs an output location (use stream_images to not write)")
    if cfg.runner == "ray":
        if composed is not None:
            raise ValueError("a composed pipeline with its own stages runs locally (runner='local')")
        from curastream.distributed.images import run_images_on_ray

        return run_images_on_ray(cfg)
    device = resolve_device(cfg.device)
    if cfg.decoder == "dali":
        from curastream.images.dali import require_dali

        require_dali()  # before anything is listed or written
    check_not_overlapping(cfg.output, cfg.sources)  # safety first: before the listing can say more
    inputs = list_image_inputs(cfg.sources, storage_options=cfg.storage_options, files_from=cfg.files_from,
                               parquet_image_column=cfg.parquet_image_column, url_list=cfg.url_list,
                               url_options=options_from(cfg))
    if composed is not None and composed.extensions:
        inputs = [i for i in inputs if os.path.basename(i.source).lower().endswith(composed.extensions)]
    if not inputs:  # an empty folder or glob is a mistake to report, not an empty dataset to write
        named = [*cfg.sources, *([cfg.files_from] if cfg.files_from else []), *([cfg.url_list] if cfg.url_list else [])]
        raise FileNotFoundError("no images found in " + ", ".join(map(printable, named)))
    with Run("images", cfg, sources=_input_roots(cfg)) as run:
        return _curate_into(run, cfg, inputs, device, composed)


@dataclasses.dataclass(frozen=True)
class Composed:
    """What a composed pipeline changes in an image run; the run itself (listing, resume,
    two passes, writer, index) stays this module's.

    ``arrange``: the writing pass's stages -> the composition's order (user stages placed);
    ``fields``: columns the user stages add (batch schema and shard Parquet); ``identity``: added
    to the writer identity (shard names); ``extensions``: FilePartitioningStage's filter."""

    arrange: Callable[[list], list]
    fields: tuple[pa.Field, ...] = ()
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)
    extensions: tuple[str, ...] = ()


def _input_roots(cfg: ImageRunConfig) -> list[str]:
    roots = list(cfg.sources) + ([cfg.url_list] if cfg.url_list else [])
    if cfg.files_from:
        from curastream.images.listing import _read_files_from

        roots += [s for s, _ in _read_files_from(cfg.files_from, cfg.storage_options)]
    return roots


def _curate_into(run: Run, cfg: ImageRunConfig, inputs: list[ImageInput], device,
                 composed: Composed | None = None) -> RunStats:
    storage = run.storage
    skip: set[str] = set()
    start_index = 0
    seen = None
    prior_rejects: list[dict] = []
    if run.resuming:
        state = load_resume_state(storage, cfg.filters.dedup_distance)
        skip, start_index, seen, prior_rejects = state.done, state.next_index, state.seen, state.rejects
        inputs = unclash_keys(inputs, state)
        log.info("resume: %d of %d inputs already done, continuing at shard %d",
                 sum(source_identity(i.source, i.member) in skip for i in inputs), len(inputs), start_index)
    models = make_models(cfg.models)  # before anything is written: an unknown model fails here
    user_fields = list(composed.fields) if composed else []
    schema = _with_fields(with_model_columns(IMAGE_SCHEMA, models), user_fields)
    name_hash = shard_name_hash((i.key for i in inputs), {**cfg.writer_identity(), **(composed.identity if composed else {})})
    writer = shard_writer(cfg, storage, name_hash if cfg.deterministic_name else None, start_index, models,
                          extra_fields=user_fields)
    todo = [i for i in inputs if source_identity(i.source, i.member) not in skip]
    plan = analysed = first = None
    if cfg.filters.dedup and todo:
        # Pass 1 of two (images.dedup): every input, done ones too, so that a resume decides
        # the same groups; what an earlier run of this output analysed is read back
        # (images.dedup_facts), the rest decoded and scored. Pass 2 below writes without
        # decoding again.
        fp = dedup_facts.fingerprint(cfg, device.kind)
        saved = dedup_facts.load(storage, fp) if run.resuming else {}
        fresh, analysed, facts = dedup_facts.reuse(saved, inputs)
        new_analysed, new_facts = {}, []
        if fresh:
            first = analysis_pipeline(cfg, fresh, device, models, schema)
            new_analysed, new_facts = analyse_facts(first, cfg.filters)
        analysed.update(new_analysed)
        facts += new_facts
        dedup_facts.save(storage, fp, inputs, analysed, facts)
        plan = decide(facts, cfg.filters.dedup_distance)
        log.info("dedup: %d of %d inputs are near-duplicates of a better copy (%d analysed before)",
                 len(plan.duplicate_of), plan.planned, len(inputs) - len(fresh))
    elif cfg.filters.dedup and run.resuming:
        dedup_facts.adopt(storage)
    stages = write_stages(cfg, device, seen, plan, analysed, models, schema)
    if composed is not None:
        stages = composed.arrange(stages)
    progress = run.start_progress(len(todo), "img", sizes=[i.size for i in todo])
    sink = ImageRunSink(storage, writer, run.stats, prior_rejects, run.emitter, progress,
                        kept_columns=[f.name for f in _kept_url_fields(cfg)])
    source = batches_from_inputs(todo, cfg.batch_size, cfg.storage_options, workers=cfg.workers,
                                 url_options=options_from(cfg))
    if user_fields:
        source = _widened(source, schema)
    pipe = Pipeline(
        source,
        stages, sink=sink, schema=schema,
        source_columns=READ_COLUMNS, stats=run.stats,
    )
    stats = run.execute(pipe)
    if first is not None:
        # One run, two passes: its time and its stages are both passes' (decode and score are
        # in the first), so items/s and the bottleneck stay true.
        stats.wall_s += first.stats.wall_s
        stats.stages = first.stats.stages + stats.stages
        stats.queues = first.stats.queues + stats.queues
    if analysed is not None:
        stats.extra.update(dedup_passes=2, near_duplicates=len(plan.duplicate_of), dedup_analysed=len(fresh),
                           dedup_analysis_reused=len(inputs) - len(fresh))
    stats.extra.update(device=device.kind, shards=len(writer.shards_written), resumed_skipped=len(inputs) - len(todo),
                       inputs_listed=len(inputs))
    return run.finish({"shard_name_hash": name_hash, "inputs": len(inputs)})


def shard_writer(cfg: ImageRunConfig, storage: Storage, name_hash: str | None, start_index: int,
                 models, extra_fields: list[pa.Field] = ()) -> ImageShardWriter:
    return ImageShardWriter(
        cfg.output, images_per_tar=cfg.images_per_tar, verbose=cfg.verbose,
        deterministic_name=cfg.deterministic_name, remove_image_data=cfg.remove_image_data,
        name_hash=name_hash, start_index=start_index,
        sidecar_json=cfg.sidecar_json, storage=storage,
        columns_schema=_with_fields(with_model_columns(SHARD_COLUMNS, models), [*_kept_url_fields(cfg), *extra_fields]),
    )


def _widened(batches: Iterator[Batch], schema: pa.Schema) -> Iterator[Batch]:
    """The batches under a schema that declares the user stages' columns: a batch carries its
    schema, and a stage may only set columns that schema declares."""
    for b in batches:
        yield Batch(schema, b.records, b.sidecar, b.seq)


def _kept_url_fields(cfg: ImageRunConfig) -> list[pa.Field]:
    """--save-additional-columns that are scalars, as typed shard columns; one named like a
    column of ours stays in metadata only."""
    fields = url_column_fields(cfg.url_list, options_from(cfg))
    ours = set(SHARD_COLUMNS.names) | set(CURATOR_COLUMNS) | set(IMAGE_SCHEMA.names)
    for f in fields:
        if f.name in ours:
            log.warning("--save-additional-columns %s: a column of that name exists; kept in metadata only", f.name)
    return [f for f in fields if f.name not in ours]


def _with_fields(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    for f in fields:
        if f.name not in schema.names:
            schema = schema.append(f)
    return schema


def analysis_pipeline(cfg: ImageRunConfig, inputs: list[ImageInput], device, models, schema) -> Pipeline:
    """Dedup's pass 1 (images.dedup): decode and score, nothing written."""
    return Pipeline(batches_from_inputs(inputs, cfg.batch_size, cfg.storage_options, workers=cfg.workers,
                                        url_options=options_from(cfg)),
                    image_stages(cfg, device, None, encode=True, models=models, schema=schema)[:2], schema=IMAGE_SCHEMA,
                    source_columns=READ_COLUMNS, stats=RunStats(kind="images"))


def write_stages(cfg: ImageRunConfig, device, seen, plan, analysed, models, schema) -> list:
    """The writing pass's stages; with pass 1's ``analysed`` values in place of decode + score."""
    stages = image_stages(cfg, device, seen, encode=True, plan=plan, models=models, schema=schema)
    if analysed is not None:
        stages = [AnalysedStage(analysed, cfg.max_pixels or DEFAULT_MAX_PIXELS)] + stages[2:]
    return stages


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
            row = {"image_id": Path(p).stem, "source": p, "data": data}
        elif isinstance(it, (bytes, bytearray, memoryview)):
            row = {"image_id": f"item{n:09d}", "source": "<bytes>", "data": bytes(it)}
        elif isinstance(it, tuple):
            row = {"image_id": str(it[0]), "source": "<bytes>", "data": bytes(it[1])}
        elif isinstance(it, dict):
            ident = it["image_id"] if "image_id" in it else it["key"]  # "key": WebDataset's word for it
            row = {"image_id": str(ident), "source": str(it.get("source", "<bytes>")), "data": bytes(it["data"])}
            if it.get("metadata"):
                row["metadata"] = json.dumps(it["metadata"], sort_keys=True, default=str)
        else:
            raise TypeError(f"cannot stream an input of type {type(it).__name__}")
        row.update(status="ok", source_bytes=len(row["data"]))
        rows.append(row)
        if len(rows) >= batch_size:
            yield Batch.from_rows(IMAGE_SCHEMA, rows, SOURCE_COLUMNS, seq=seq)
            rows, seq = [], seq + 1
    if rows:
        yield Batch.from_rows(IMAGE_SCHEMA, rows, SOURCE_COLUMNS, seq=seq)


def stream_images(items: Iterable[Any], cfg: ImageRunConfig | None = None, encode: bool = False,
                  include_bytes: bool = False) -> Iterator[pa.RecordBatch]:
    """Score images as they arrive and yield Arrow record batches; nothing is written.

    ``items``: file paths, bytes, ``(image_id, bytes)`` pairs or ``{"image_id" (or "key"), "data", "metadata"}`` dicts.
    Rejected rows are yielded too, with ``status="rejected"`` and the reason.
    """
    cfg = cfg or ImageRunConfig(sources=["<stream>"])
    device = resolve_device(cfg.device)
    models = make_models(cfg.models)
    schema = with_model_columns(IMAGE_SCHEMA, models)
    pipe = Pipeline(_coerce_inputs(items, cfg.batch_size), image_stages(cfg, device, None, encode, models=models,
                                                                        schema=schema),
                    schema=schema, source_columns=SOURCE_COLUMNS, stats=RunStats(kind="images"))
    drop = () if include_bytes else ("data", "image_bytes")
    for b in pipe:
        yield b.to_arrow(drop=drop)
