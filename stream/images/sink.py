"""The image run's sink: kept rows go to the shard writer, the rest to rejects.parquet, and every
row to the IPC tee, stats and progress, in one place so that a row is counted, written or
rejected exactly once whichever runner (local or Ray partitions) feeds it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from curastream.engine.batch import Batch, iter_rows
from curastream.engine.ipc import IpcEmitter
from curastream.engine.progress import Progress
from curastream.engine.sink import Sink
from curastream.engine.stats import RunStats
from curastream.engine.storage import Storage
from curastream.images.inputs import source_identity
from curastream.writers.image_shards import ImageShardWriter
from curastream.writers.rejects import reject_row, write_rejects

REJECTS_EVERY_S = 30.0


class ImageRunSink(Sink):
    """Shards for kept rows, rejects.parquet for the rest, the IPC tee, stats and progress."""

    name = "write"

    def __init__(self, storage: Storage, writer: ImageShardWriter, stats: RunStats,
                 prior_rejects: list[dict[str, Any]], emitter: IpcEmitter | None,
                 progress: Progress | None, kept_columns: Iterable[str] = ()):
        self.storage = storage
        # URL-list columns kept as typed shard columns: they ride in metadata up to here
        self.kept_columns = tuple(kept_columns)
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
        for i, row in enumerate(iter_rows(b)):
            self.stats.items_in += 1
            self.stats.bytes_in += row["source_bytes"] or 0
            if row["status"] == "ok":
                row["original_path"] = source_identity(row["source"], row["source_member"])
                row["metadata_obj"] = json.loads(row["metadata"]) if row["metadata"] else {}
                for c in self.kept_columns:
                    row[c] = row["metadata_obj"].get(c)
                kept_rows.append((i, row))
                self.stats.bytes_out += len(row["image_bytes"])
            else:
                self.stats.count_reject(f"{row['reject_stage']}:{row['reject_reason'].split(':', 1)[0]}")
                self.rejects.append(reject_row(row["image_id"], row["source"], row["source_member"], row["reject_stage"],
                                               row["reject_reason"], row.get("duplicate_of")))
                self._rejects_dirty = True
        tar_file, member_name = [None] * b.num_rows, [None] * b.num_rows
        for (i, _), written in zip(kept_rows, self.writer.write_rows([r for _, r in kept_rows])):
            tar_file[i] = written["tar_file"]
            member_name[i] = written["member_name"]
            self.stats.items_out += 1
        if self.emitter is not None:
            cols = {"tar_file": tar_file, "member_name": member_name}
            if self.writer.remove_image_data:
                cols["image_bytes"] = [None] * b.num_rows
            out = b.with_columns(cols)
            self.emitter.emit(out.to_arrow(drop=() if self.emitter.include_bytes else ("data",)))
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

