"""A composed image pipeline, run as ``run_images`` runs: same listing, Run harness (lock,
resume, rejects, index), shard writer and engine stages, with the user's stages in between.

This mirrors ``images.pipeline.run_images``/``_curate_into`` step for step; the one difference
is the stage list, which here comes from the composition. A test holds the two byte-equal for
the CLI's composition. (A ``stages=`` hook on ``_curate_into`` would let this module shrink to
the stage list; see the report of issue 19.)
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator

import pyarrow as pa

from curastream.config import ImageRunConfig
from curastream.engine.batch import Batch
from curastream.engine.device import Device, resolve_device
from curastream.engine.names import printable
from curastream.engine.pipeline import Pipeline, Stage
from curastream.engine.run import Run
from curastream.engine.schemas import IMAGE_SCHEMA
from curastream.engine.stats import RunStats
from curastream.images.dedup import AnalysedStage, analyse
from curastream.images.inputs import ImageInput, source_identity
from curastream.images.listing import list_image_inputs
from curastream.images.pipeline import (SHARD_COLUMNS, ImageRunSink, _input_roots, batches_from_inputs,
                                        load_resume_state, unclash_keys)
from curastream.images.probe import DEFAULT_MAX_PIXELS
from curastream.images.stages import SOURCE_COLUMNS, image_stages
from curastream.models.registry import make_models
from curastream.models.stage import with_model_columns
from curastream.writers.image_shards import ImageShardWriter, shard_name_hash

log = logging.getLogger(__name__)

# The middle of a composition: "filter" (our FilterStage, built with the run's resume state) or
# a factory of one user stage's engine adapter.
Middle = list[Any]


def list_inputs(cfg: ImageRunConfig, file_extensions: list[str] | None) -> list[ImageInput]:
    inputs = list_image_inputs(cfg.sources, storage_options=cfg.storage_options, files_from=cfg.files_from,
                               parquet_image_column=cfg.parquet_image_column)
    if file_extensions:
        inputs = [i for i in inputs if os.path.basename(i.source).lower().endswith(tuple(file_extensions))]
    if not inputs:  # as run_images: an empty folder or glob is reported, not written as nothing
        named = [*cfg.sources, *([cfg.files_from] if cfg.files_from else [])]
        raise FileNotFoundError("no images found in " + ", ".join(map(printable, named)))
    return inputs


def engine_stages(cfg: ImageRunConfig, device: Device, middle: Middle, seen=None, plan=None, models=None,
                  schema: pa.Schema | None = None) -> list[Stage]:
    """decode, score, then the composition's middle in its order, then encode. ``middle`` holds
    "filter" (our thresholds and dedup), "models" (our model stage: NSFW and model plug-ins) and
    factories of user stages."""
    built = image_stages(cfg, device, seen, encode=True, plan=plan, models=models, schema=schema)
    decode, score, filt, encode = built[0], built[1], built[2], built[-1]
    ours = {"filter": [filt], "models": built[3:-1]}
    out: list[Stage] = [decode, score]
    for m in middle:
        out += ours[m] if isinstance(m, str) else [m()]
    return out + [encode]


def run_composed_images(cfg: ImageRunConfig, middle: Middle, user_fields: list[pa.Field],
                        identity: dict[str, Any] | None, file_extensions: list[str] | None) -> RunStats:
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.decoder == "dali":
        from curastream.images.dali import require_dali

        require_dali()  # before anything is listed or written
    inputs = list_inputs(cfg, file_extensions)
    with Run("images", cfg, sources=_input_roots(cfg)) as run:
        return _curate(run, cfg, inputs, device, middle, user_fields, identity)


def _curate(run: Run, cfg: ImageRunConfig, inputs: list[ImageInput], device: Device, middle: Middle,
            user_fields: list[pa.Field], identity: dict[str, Any] | None) -> RunStats:
    storage = run.storage
    skip: set[str] = set()
    start_index, seen, prior_rejects = 0, None, []
    if run.resuming:
        state = load_resume_state(storage, cfg.filters.dedup_distance)
        skip, start_index, seen, prior_rejects = state.done, state.next_index, state.seen, state.rejects
        inputs = unclash_keys(inputs, state)
        log.info("resume: %d of %d inputs already done, continuing at shard %d",
                 sum(source_identity(i.source, i.member) in skip for i in inputs), len(inputs), start_index)
    models = make_models(cfg.models)  # before anything is written: an unknown model fails here
    schema = pa.schema([*with_model_columns(IMAGE_SCHEMA, models), *user_fields])
    writer_identity = cfg.writer_identity()
    if identity:  # user stages change what lands in the shards: their names are in the hash
        writer_identity = {**writer_identity, **identity}
    name_hash = shard_name_hash((i.key for i in inputs), writer_identity)
    writer = ImageShardWriter(
        cfg.output, images_per_tar=cfg.images_per_tar, verbose=cfg.verbose,
        deterministic_name=cfg.deterministic_name, remove_image_data=cfg.remove_image_data,
        name_hash=name_hash if cfg.deterministic_name else None, start_index=start_index,
        sidecar_json=cfg.sidecar_json, columns_schema=pa.schema([*with_model_columns(SHARD_COLUMNS, models),
                                                                 *user_fields]),
        storage=storage,
    )
    todo = [i for i in inputs if source_identity(i.source, i.member) not in skip]
    plan = analysed = first = None
    if cfg.filters.dedup and todo:
        # Two passes, as run_images: decode and score everything (done inputs too, so a resume
        # decides the same groups), then write without decoding again.
        first = Pipeline(batches_from_inputs(inputs, cfg.batch_size, cfg.storage_options, workers=cfg.workers),
                         image_stages(cfg, device, None, encode=True, models=models, schema=schema)[:2],
                         schema=IMAGE_SCHEMA, source_columns=SOURCE_COLUMNS, stats=RunStats(kind="images"))
        analysed, plan = analyse(first, cfg.filters)
        log.info("dedup: %d of %d inputs are near-duplicates of a better copy", len(plan.duplicate_of), plan.planned)
    stages = engine_stages(cfg, device, middle, seen, plan, models, schema)
    if analysed is not None:
        stages = [AnalysedStage(analysed, cfg.max_pixels or DEFAULT_MAX_PIXELS)] + stages[2:]
    progress = run.start_progress(len(todo), "img", sizes=[i.size for i in todo])
    sink = ImageRunSink(storage, writer, run.stats, prior_rejects, run.emitter, progress)
    source = batches_from_inputs(todo, cfg.batch_size, cfg.storage_options, workers=cfg.workers)
    if user_fields:
        source = _widened(source, schema)
    pipe = Pipeline(source, stages, sink=sink, schema=schema, source_columns=SOURCE_COLUMNS, stats=run.stats)
    stats = run.execute(pipe)
    if first is not None:
        stats.wall_s += first.stats.wall_s
        stats.stages = first.stats.stages + stats.stages
        stats.queues = first.stats.queues + stats.queues
        stats.extra.update(dedup_passes=2, near_duplicates=len(plan.duplicate_of))
    stats.extra.update(device=device.kind, shards=len(writer.shards_written), resumed_skipped=len(inputs) - len(todo),
                       inputs_listed=len(inputs))
    return run.finish({"shard_name_hash": name_hash, "inputs": len(inputs)})


def _widened(batches: Iterator[Batch], schema: pa.Schema) -> Iterator[Batch]:
    """The batches under a schema with the user stages' columns declared: a batch carries its
    schema, and a stage may only set columns that schema declares."""
    for b in batches:
        yield Batch(schema, b.records, b.sidecar, b.seq)


def available_columns(cfg: ImageRunConfig, middle_before: Middle, user_provides: list[str]) -> set[str]:
    """Columns a stage placed after the reader and ``middle_before`` can read."""
    models = make_models(cfg.models) if "models" in middle_before else []
    built = image_stages(cfg, Device("cpu", None), None, encode=True, models=models,
                         schema=with_model_columns(IMAGE_SCHEMA, models))
    cols = set(SOURCE_COLUMNS) | set(built[0].provides) | set(built[1].provides)
    if "filter" in middle_before:
        cols |= set(built[2].provides)
    if "models" in middle_before:
        cols |= {c for st in built[3:-1] for c in st.provides}
    return cols | set(user_provides)
