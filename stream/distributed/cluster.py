"""The Ray side both media share: connecting, task resources, and worker commits as the run's own.

Ownership (engine/ownership.py) requires each final name to be journaled before its temporary
exists, so that whatever a killed writer leaves is known as ours. A worker cannot know in
advance which names it will commit (clip ids come from the analysis), so each task journals
its own names, as the local run does, in its own journal file under the driver's run id
(``_curastream/journal/<run id>-<task>.jsonl``): a resume after a driver kill reads every
journal of the output. The task also returns its committed files (path, bytes, sha256, rows);
the driver adds them to its storage's record, so ``index.json`` lists them without reading a
byte again, and to its own journal, so the journals are dropped only when the index covers
every file a worker wrote.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from typing import Any, Callable, Iterator

from curastream.engine.ownership import Ownership
from curastream.engine.progress import Progress
from curastream.engine.storage import CommittedFile, Storage

log = logging.getLogger(__name__)

# A worker killed mid-task (OOM, a lost node) is retried this many times; its commits are
# atomic under names fixed by the plan, so a retry rewrites the same files.
MAX_RETRIES = 3


def import_ray():
    try:
        import ray
    except ImportError as e:
        from curastream.config import ConfigError

        raise ConfigError("runner", "ray needs Ray: pip install 'curastream[ray]'") from e
    return ray


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """Ray, joined to ``address`` or to a runtime started here (stopped again at the end)."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at runtime
    if ray.is_initialized():  # the caller's own session (a notebook, a test): leave it to them
        yield ray
        return
    t0 = time.perf_counter()
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    log.info("ray: connected in %.1f s (%s)", time.perf_counter() - t0, address or "local runtime")
    try:
        yield ray
    finally:
        ray.shutdown()


def task_options(cpus: int, device_kind: str, gpus_per_task: float = 1.0) -> dict[str, Any]:
    """The resources and placement of one task. SPREAD: Ray's default packs tasks onto the node
    that submits them until it is half busy, so a few short videos all ran on the head node
    while the workers idled; the work here is coarse (a partition, a whole video), so spreading
    costs nothing and uses every node from the first task."""
    share = float(gpus_per_task)
    return dict(num_cpus=cpus, num_gpus=(int(share) if share >= 1 else share) if device_kind == "gpu" else 0,
                max_retries=MAX_RETRIES, scheduling_strategy="SPREAD")


def task_cpus(ray, wanted: int) -> int:
    """CPUs one task declares (and then runs that many stage threads on): ``wanted``, but never
    more than the largest node has, or the task would never be scheduled."""
    most = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(1, min(int(wanted), int(most)))


def node_name(ray) -> str:
    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


class TaskOutput:
    """A worker's handle on the run's output: every name journaled before its temporary."""

    def __init__(self, url: str, storage_options: dict | None, run_id: str, tag: str):
        self.storage = Storage(url, storage_options)
        self.journal = Ownership(self.storage, f"{run_id}-{tag}")
        self.storage.on_write = self.journal.record

    def close(self) -> list[dict]:
        self.storage.on_write = None
        self.journal.close()
        return [c.to_dict() for c in self.storage.committed()]


def adopt_commits(storage: Storage, ownership: Ownership, files: list[dict]) -> None:
    for d in files:
        ownership.record(d["path"])
        storage._record(CommittedFile(**d))  # the worker hashed it as it wrote: no second read


def remove_orphan_temps(storage: Storage, ownership: Ownership) -> int:
    """Temporaries of attempts Ray killed and retried. Every task has finished and the driver
    holds the lock, so any temporary of ours left now is an orphan."""
    temps = [r for r in storage.list_files() if ownership.is_ours_temp(r)]
    for rel in temps:
        storage.delete(rel)
    if temps:
        log.info("ray: removed %d temporary file(s) of retried tasks", len(temps))
    return len(temps)


def gather(ray, refs: list, progress: Progress | None = None,
           count: Callable[[dict], int] = lambda r: r.get("items", 0),
           on_result: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Task results in submission order, progress updated as each finishes (after
    ``on_result(index, result)``, on this thread). The first task that fails for good cancels
    the rest and raises."""
    index = {ref: i for i, ref in enumerate(refs)}
    out: list[dict | None] = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                r = ray.get(ref)
                out[index[ref]] = r
                if on_result is not None:
                    on_result(index[ref], r)
                if progress is not None:
                    progress.update(count(r))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if progress is not None:
            progress.close()
    return out  # type: ignore[return-value]


def planned_device(requested: str) -> str:
    """The device tasks run on, decided at the driver without looking at the driver's own
    hardware (a CPU-only head is fine): "gpu" only when asked for, so each such task reserves its
    GPU (num_gpus=1) and "auto" never lands on a GPU it did not reserve. Tasks resolve it on
    their node, where a missing GPU is that task's one-line error."""
    return "gpu" if requested == "gpu" else "cpu"
