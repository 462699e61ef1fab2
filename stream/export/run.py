"""The export run: read the source's index, select, then write shards in order under the same
output rules as every run (engine.output: overlap check, lock, on-existing, owned files only),
each file committed atomically, ``index.json`` last.

Shards are cut in sample order, by count (``per_shard``) and by bytes (``max_shard_bytes``), and
named from the selected keys and the settings, so the same export gives the same files. A shard
is done when its Parquet exists (written after its tar, as image shards are); a resume keeps the
done shards, which hold a prefix of the samples, and cuts the rest exactly as an uninterrupted
run would have.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from curastream.engine.output import OutputSession
from curastream.engine.run_index import write_run_index
from curastream.engine.storage import Storage
from curastream.export.clip_source import METAS, ClipSource
from curastream.export.config import ExportConfig
from curastream.export.image_source import ImageSource, shard_parquets
from curastream.export.select import select
from curastream.export.tar import TarShard
from curastream.writers.image_shards import shard_name_hash

log = logging.getLogger(__name__)

KIND = "export"


def open_source(cfg: ExportConfig):
    storage = Storage(cfg.source, cfg.storage_options)
    if not storage.fs.exists(storage.path()):
        raise FileNotFoundError(f"export source {cfg.source} does not exist")
    if storage.list_files(METAS):
        return ClipSource(storage, include_filtered=cfg.include_filtered)
    if shard_parquets(storage):
        return ImageSource(storage)
    raise ValueError(f"{cfg.source} holds neither a clip tree ({METAS}/*.json) nor image shards "
                     "(images-*.parquet with their tars): nothing to export")


def _parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf, compression="zstd")
    return buf.getvalue()


class _Plan:
    """Names and the resume state of one export's shards."""

    def __init__(self, storage: Storage, kind: str, fmt: str, name_hash: str, key: str):
        self.storage, self.key = storage, key
        # webdataset shards of images are named as image shards are (SPEC §1): the export is
        # itself an image output, which can be exported again
        self.stem = f"{kind}-{name_hash}" if fmt == "webdataset" else f"index-{kind}-{name_hash}"
        self.webdataset = fmt == "webdataset"

    def parquet(self, i: int) -> str:
        return f"{self.stem}-{i:06d}.parquet"

    def tar(self, i: int) -> str:
        return f"{self.stem}-{i:06d}.tar"

    def done(self) -> tuple[int, set[str]]:
        """How many shards an earlier run finished, and their keys; they are recorded again so
        the new index.json lists them."""
        i, keys = 0, set()
        while self.storage.exists(self.parquet(i)) and (not self.webdataset or self.storage.exists(self.tar(i))):
            t = pq.read_table(pa.BufferReader(self.storage.read_bytes(self.parquet(i))), columns=[self.key])
            keys.update(t.column(self.key).to_pylist())
            if self.webdataset:
                self.storage.adopt(self.tar(i), rows=t.num_rows)
            self.storage.adopt(self.parquet(i), rows=t.num_rows)
            i += 1
        # the tar of an interrupted shard, committed before its Parquet: made again
        # (only one this tool wrote: names are not ownership)
        if self.webdataset and self.storage.exists(self.tar(i)) and self.storage.owns(self.tar(i)):
            self.storage.delete(self.tar(i))
        return i, keys


def run_export(cfg: ExportConfig, on_shard: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Export ``cfg.source`` to ``cfg.output``; returns the run's stats. ``on_shard`` is called
    after each committed shard with its record (path, samples, bytes)."""
    cfg.validate()
    t0 = time.perf_counter()
    source = open_source(cfg)
    table = source.table
    listed = table.num_rows
    if cfg.where:
        table = select(table, cfg.where)
    keys = table.column(source.key).to_pylist()
    settings = cfg.to_dict()
    identity = {k: v for k, v in settings.items() if k not in ("output", "on_existing")}
    stats: dict[str, Any] = {"source_kind": source.kind, "format": cfg.format, "listed": listed,
                             "selected": len(keys), "written": 0, "resumed_skipped": 0, "no_media": 0,
                             "shards": 0, "bytes": 0}
    with OutputSession(cfg.output, cfg.storage_options, cfg.on_existing, [cfg.source],
                       kind=KIND, settings=settings) as out:
        storage = out.storage
        plan = _Plan(storage, source.kind, cfg.format, shard_name_hash(keys, identity), source.key)
        index, done = plan.done() if out.resuming else (0, set())
        stats["resumed_skipped"] = len(done)
        todo = [k for k in keys if k not in done]
        rows = dict(zip(keys, table.to_pylist()))
        if cfg.format == "parquet":
            _write_parquet_parts(plan, index, [rows[k] for k in todo], table.schema, cfg.per_shard, stats, on_shard)
        else:
            _write_tars(plan, index, source, todo, rows, table.schema, cfg, stats, on_shard)
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        write_run_index(storage, KIND, settings, stats)
    return stats


def _write_parquet_parts(plan: _Plan, index: int, rows: list[dict], schema: pa.Schema, per: int,
                         stats: dict, on_shard) -> None:
    for start in range(0, len(rows), per):
        part = rows[start:start + per]
        rel = plan.parquet(index)
        cf = plan.storage.write_atomic(rel, _parquet_bytes(part, schema), rows=len(part))
        index += 1
        stats["written"] += len(part)
        stats["shards"] += 1
        stats["bytes"] += cf.bytes
        if on_shard is not None:
            on_shard({"parquet": rel, "samples": len(part), "bytes": cf.bytes})


def _write_tars(plan: _Plan, index: int, source, todo: list[str], rows: dict[str, dict], schema: pa.Schema,
                cfg: ExportConfig, stats: dict, on_shard) -> None:
    storage = plan.storage
    schema = pa.schema([f for f in schema if f.name not in ("tar_file", "member_name")]
                       + [pa.field("tar_file", pa.string()), pa.field("member_name", pa.string())])
    shard: TarShard | None = None
    shard_rows: list[dict] = []

    def commit() -> None:
        nonlocal shard, shard_rows, index
        done, shard = shard, None  # closed from here on: nothing left to abort
        done.close()
        par = plan.parquet(index)
        storage.set_rows(done.rel, done.samples)
        storage.write_atomic(par, _parquet_bytes(shard_rows, schema), rows=len(shard_rows))
        info = {"tar": done.rel, "parquet": par, "samples": done.samples, "bytes": done.nbytes}
        log.info("export: wrote %s (%d samples, %d bytes)", storage.url(done.rel), done.samples, done.nbytes)
        stats["shards"] += 1
        stats["bytes"] += done.nbytes
        shard_rows, index = [], index + 1
        if on_shard is not None:
            on_shard(info)

    samples = source.samples(todo, rows) if source.kind == "images" else source.samples(todo)
    try:
        for key, members in samples:
            if members is None:
                stats["no_media"] += 1
                continue
            size = sum(len(v) for v in members.values())
            if shard is not None and (shard.samples >= cfg.per_shard or (
                    cfg.max_shard_bytes is not None and shard.nbytes + size > cfg.max_shard_bytes)):
                commit()
            if shard is None:
                shard = TarShard(storage, plan.tar(index))
            names = shard.add_sample(key, members)
            shard_rows.append({**rows[key], "tar_file": storage.url(shard.rel), "member_name": names[0]})
            stats["written"] += 1
        if shard is not None:
            commit()
    except BaseException as e:
        if shard is not None:
            shard.abort(e if isinstance(e, Exception) else None)
        raise
