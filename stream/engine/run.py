"""The run harness both media share: output preparation, progress, IPC, stats and the index.

A media run (images, videos) lists its inputs, opens a :class:`Run`, builds its own sink and
stages, and calls :meth:`Run.execute` then :meth:`Run.finish`. What differs per medium is what
"resume" means (committed shards vs. finished videos) and what the sink writes; everything
around it is here, once, so both pipelines prepare, report and commit their output the same way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from curastream.engine.ipc import IpcEmitter
from curastream.engine.output import OutputSession
from curastream.engine.pipeline import Pipeline
from curastream.engine.progress import Progress
from curastream.engine.run_index import write_run_index
from curastream.engine.stats import RunStats
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)


class Run:
    """One run into one output. ``cfg`` is a run config (ImageRunConfig / VideoRunConfig)."""

    def __init__(self, kind: str, cfg: Any, sources: list[str] | None = None):
        self.kind = kind
        self.cfg = cfg
        # Refuses an output overlapping ``sources``, takes the output's lock, prepares it. Use
        # the Run as a context manager so the lock is released however the run ends.
        self.output = OutputSession(cfg.output, cfg.storage_options, cfg.on_existing,
                                    sources if sources is not None else cfg.sources,
                                    kind=kind, settings=cfg.to_dict())
        self.storage: Storage = self.output.storage
        self.resuming = self.output.resuming
        self.stats = RunStats(kind=kind)
        self.emitter = IpcEmitter(cfg.emit_ipc, include_bytes=cfg.emit_ipc_bytes) if cfg.emit_ipc else None
        self.progress: Progress | None = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.output.close(finished=exc_type is None)

    def start_progress(self, total: int | None, unit: str, sizes=None) -> Progress:
        self.progress = Progress(total, unit, enabled=self.cfg.progress, sizes=sizes)
        return self.progress

    def execute(self, pipeline: Pipeline) -> RunStats:
        try:
            pipeline.run()
        finally:
            if self.progress is not None:
                self.progress.close()
        return self.stats

    def finish(self, extra_index: dict[str, Any] | None = None) -> RunStats:
        """Write ``--stats`` and the index (the commit point, always last). A medium's own run
        files (the videos' summary) are written before this, so the index commits them too."""
        return commit_run(self.storage, self.kind, self.cfg, self.stats, extra_index)


def commit_run(storage: Storage, kind: str, cfg: Any, stats: RunStats,
               extra_index: dict[str, Any] | None = None) -> RunStats:
    """:meth:`Run.finish` for a run whose output session is held elsewhere (the Ray driver's)."""
    if cfg.stats:
        write_stats(cfg.stats, stats)
    write_run_index(storage, kind, cfg.to_dict(), stats.to_dict(), extra=extra_index)
    return stats


def write_stats(path: str, stats: RunStats) -> None:
    """``--stats PATH`` (``-``: standard output, as everywhere a path is an output)."""
    if path == "-":
        sys.stdout.write(stats.to_json() + "\n")
        sys.stdout.flush()
        return
    import fsspec

    with fsspec.open(path, "w", auto_mkdir=True) as f:
        f.write(stats.to_json())
