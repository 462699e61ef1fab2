"""``images --runner ray``: partitions of the sorted inputs as Ray tasks, one shard name per partition.

The plan: inputs sorted by source identity, cut into partitions of ``images_per_tar`` inputs.
A partition's shards are named ``images-<hash>-<index>`` with the hash of the local run's
formula (shard_name_hash) over the partition's keys, so names depend on the inputs and
settings only, never on scheduling: a retried task rewrites the same names atomically, with
the same bytes. A partition writes one shard (a short one when some of it is rejected), so a
Ray run's shards group items differently from a local run's; each item's bytes are the same.

Dedup across partitions is the local two-pass design (images/dedup.py), split where it
naturally splits: pass 1 runs per partition and returns the small per-item facts (the pass-1
values stay in Ray's object store for that partition's pass 2); the driver decides every
group once, over all facts, in the total order of dedup.decide, so the result does not depend
on partitioning or task order; pass 2 runs per partition with the plan.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass

from curastream.config import ConfigError, ImageRunConfig
from curastream.distributed.cluster import (TaskOutput, adopt_commits, connected, gather, node_name, planned_device,
                                            remove_orphan_temps, task_cpus, task_options)
from curastream.distributed.stats import merge_into, merge_stats
from curastream.engine.device import resolve_device
from curastream.engine.names import printable
from curastream.engine.run import Run
from curastream.engine.schemas import IMAGE_SCHEMA
from curastream.engine.stats import RunStats
from curastream.images import dedup_facts
from curastream.images.dedup import decide
from curastream.images.inputs import ImageInput, source_identity
from curastream.images.listing import list_image_inputs
from curastream.images.pipeline import (SOURCE_COLUMNS, _input_roots, analysis_pipeline, batches_from_inputs,
                                        shard_writer, write_stages)
from curastream.images.resume import load_resume_state, unclash_keys
from curastream.images.sink import ImageRunSink
from curastream.engine.pipeline import Pipeline
from curastream.images.dedup import analyse_facts
from curastream.models.registry import make_models
from curastream.models.stage import with_model_columns
from curastream.writers.image_shards import read_committed_shards, shard_name_hash
from curastream.writers.rejects import write_rejects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partition:
    index: int
    inputs: list[ImageInput]
    name_hash: str

    @property
    def tag(self) -> str:
        return f"img{self.index:06d}"


def plan_partitions(inputs: list[ImageInput], size: int, identity: dict) -> list[Partition]:
    ordered = sorted(inputs, key=lambda i: source_identity(i.source, i.member))
    parts = []
    for n, start in enumerate(range(0, len(ordered), size)):
        chunk = ordered[start:start + size]
        parts.append(Partition(n, chunk, shard_name_hash((i.key for i in chunk), identity)))
    return parts


def run_images_on_ray(cfg: ImageRunConfig) -> RunStats:
    if not cfg.deterministic_name:
        raise ConfigError("deterministic_name", "must stay on with --runner ray: a retried task must rewrite "
                                                "the names it wrote")
    if cfg.emit_ipc:
        raise ConfigError("emit_ipc", "is not available with --runner ray (records are written by the workers)")
    inputs = list_image_inputs(cfg.sources, storage_options=cfg.storage_options, files_from=cfg.files_from,
                               parquet_image_column=cfg.parquet_image_column)
    if not inputs:
        named = [*cfg.sources, *([cfg.files_from] if cfg.files_from else [])]
        raise FileNotFoundError("no images found in " + ", ".join(map(printable, named)))
    make_models(cfg.models)  # an unknown model fails here, before the output or the cluster
    with Run("images", cfg, sources=_input_roots(cfg)) as run, connected(cfg.ray_address) as ray:
        return _curate_on_ray(ray, run, cfg, inputs)


def _curate_on_ray(ray, run: Run, cfg: ImageRunConfig, inputs: list[ImageInput]) -> RunStats:
    t0 = time.perf_counter()
    storage = run.storage
    skip: set[str] = set()
    prior_rejects: list[dict] = []
    shards_of: Counter = Counter()
    if run.resuming:
        state = load_resume_state(storage, cfg.filters.dedup_distance)
        skip, prior_rejects = state.done, state.rejects
        inputs = unclash_keys(inputs, state)
        # a partition continues after the shards it committed (only its transient rejects are left)
        shards_of.update(stem.split("-")[1] for stem in read_committed_shards(storage))
    parts = plan_partitions(inputs, cfg.images_per_tar, cfg.writer_identity())
    device_kind = planned_device(cfg.device)
    cpus = task_cpus(ray, cfg.workers)
    # the stage threads a task runs on its CPUs, on the device it reserved
    task_cfg = dataclasses.replace(cfg, workers=cpus, device=device_kind)
    opts = task_options(cpus, device_kind, cfg.gpus_per_task)
    todo = {p.index: [i for i in p.inputs if source_identity(i.source, i.member) not in skip] for p in parts}
    work = [p for p in parts if todo[p.index]]
    plan_ref = None
    analysed = {}
    first = None
    reused_n = 0
    if cfg.filters.dedup and work:
        # Pass 1 covers done inputs too, as locally: a resume decides the same groups; what an
        # earlier run of this output analysed is read back (images.dedup_facts), as locally.
        fp = dedup_facts.fingerprint(cfg, device_kind)
        saved = dedup_facts.load(storage, fp) if run.resuming else {}
        reused = {p.index: dedup_facts.reuse(saved, p.inputs) for p in parts}
        analyse_task = ray.remote(_analyse_partition).options(**opts)
        fresh = [p for p in parts if reused[p.index][0]]
        firsts = gather(ray, [analyse_task.remote(task_cfg, reused[p.index][0]) for p in fresh])
        by_part = {p.index: (dict(reused[p.index][1]), list(reused[p.index][2])) for p in parts}
        for p, r in zip(fresh, firsts):
            by_part[p.index][0].update(r.pop("analysed"))
            by_part[p.index][1].extend(r["facts"])
        facts = [f for _, fs in by_part.values() for f in fs]
        all_analysed = {k: a for az, _ in by_part.values() for k, a in az.items()}
        dedup_facts.save(storage, fp, inputs, all_analysed, facts)
        plan = decide(facts, cfg.filters.dedup_distance)
        reused_n = len(inputs) - sum(len(reused[p.index][0]) for p in fresh)
        log.info("dedup: %d of %d inputs are near-duplicates of a better copy (%d analysed before)",
                 len(plan.duplicate_of), plan.planned, reused_n)
        plan_ref = ray.put(plan)
        # pass 2 of a partition needs the values of its inputs left to write only
        analysed = {p.index: ray.put({i.key: by_part[p.index][0][i.key] for i in todo[p.index]
                                      if i.key in by_part[p.index][0]}) for p in work}
        if firsts:
            first = merge_stats("images", firsts, time.perf_counter() - t0, prefix="analyse:")
    elif cfg.filters.dedup and run.resuming:
        dedup_facts.adopt(storage)
    write_task = ray.remote(_write_partition).options(**opts)
    run_id = run.output.lock.run_id
    refs = [write_task.remote(task_cfg, todo[p.index], p.name_hash, shards_of[p.name_hash], plan_ref,
                              analysed.get(p.index), run_id, p.tag) for p in work]
    n_todo = sum(len(todo[p.index]) for p in work)
    progress = run.start_progress(n_todo, "img", sizes=[i.size for p in work for i in todo[p.index]])
    results = gather(ray, refs, progress)
    own = run.output.ownership
    rejects = list(prior_rejects)
    for r in results:
        adopt_commits(storage, own, r["files"])
        rejects += r["rejects"]
    write_rejects(storage, rejects)
    remove_orphan_temps(storage, own)
    stats = merge_stats("images", results, time.perf_counter() - t0)
    if first is not None:
        merge_into(stats, first)
    if plan_ref is not None:
        stats.extra.update(dedup_passes=2, near_duplicates=len(ray.get(plan_ref).duplicate_of),
                           dedup_analysed=len(inputs) - reused_n, dedup_analysis_reused=reused_n)
    stats.extra.update(device=device_kind, shards=sum(len(r["shards"]) for r in results),
                       resumed_skipped=len(inputs) - n_todo, inputs_listed=len(inputs), partitions=len(parts),
                       task_cpus=cpus)
    run.stats = stats  # what finish() writes to --stats and the index
    return run.finish({"runner": "ray", "partitions": len(parts), "inputs": len(inputs)})


# -- tasks (run on the workers) -------------------------------------------------------------------
def _analyse_partition(cfg: ImageRunConfig, inputs: list[ImageInput]):
    """Pass 1 over one partition's inputs: its per-key values and its dedup facts, both to the
    driver (small: never pixels), which keeps them for a resume and hands pass 2 its part."""
    import ray

    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    models = make_models(cfg.models)
    pipe = analysis_pipeline(cfg, inputs, device, models, with_model_columns(IMAGE_SCHEMA, models))
    analysed, facts = analyse_facts(pipe, cfg.filters)
    return {"analysed": analysed, "facts": facts, "stats": pipe.stats.to_dict(), "node": node_name(ray),
            "seconds": time.perf_counter() - t0, "items": len(inputs)}


class _PartitionSink(ImageRunSink):
    """A partition's rejects go back to the driver, which writes the run's one rejects file."""

    def _write_rejects(self) -> None:
        self._rejects_dirty = False


def _write_partition(cfg: ImageRunConfig, inputs: list[ImageInput], name_hash: str, start_index: int, plan,
                     analysed, run_id: str, tag: str) -> dict:
    import ray

    t0 = time.perf_counter()
    out = TaskOutput(cfg.output, cfg.storage_options, run_id, tag)
    device = resolve_device(cfg.device)
    models = make_models(cfg.models)
    schema = with_model_columns(IMAGE_SCHEMA, models)
    writer = shard_writer(cfg, out.storage, name_hash, start_index, models)
    stats = RunStats(kind="images")
    sink = _PartitionSink(out.storage, writer, stats, [], None, None)
    Pipeline(batches_from_inputs(inputs, cfg.batch_size, cfg.storage_options, workers=cfg.workers),
             write_stages(cfg, device, None, plan, analysed, models, schema), sink=sink, schema=schema,
             source_columns=SOURCE_COLUMNS, stats=stats).run()
    return {"files": out.close(), "rejects": sink.rejects, "stats": stats.to_dict(), "shards": writer.shards_written,
            "node": node_name(ray), "seconds": time.perf_counter() - t0, "items": len(inputs)}
