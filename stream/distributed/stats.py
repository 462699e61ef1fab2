"""One RunStats for a distributed run, from its tasks' stats: totals, stages, and per node."""

from __future__ import annotations

from typing import Any

from curastream.engine.stats import RunStats, StageStats

_STAGE_SUMS = ("items_in", "items_out", "rows_in", "rows_out", "bytes_in", "bytes_out", "busy_s")


def merge_stats(kind: str, results: list[dict[str, Any]], wall_s: float, *, prefix: str = "") -> RunStats:
    """``results``: task results with ``stats`` (RunStats.to_dict), ``node`` and ``seconds``.
    Stage throughput is over the driver's wall time; a stage's ``workers`` is its threads per
    task times the nodes that ran tasks, so utilisation reads against the cluster's capacity."""
    total = RunStats(kind=kind, wall_s=wall_s)
    stages: dict[str, StageStats] = {}
    nodes: dict[str, dict[str, Any]] = {}
    threads: dict[str, int] = {}
    for r in results:
        d = r["stats"]
        total.items_in += d["items_in"]
        total.items_out += d["items_out"]
        total.bytes_in += d["bytes_in"]
        total.bytes_out += d["bytes_out"]
        for reason, n in d["rejected_by_reason"].items():
            total.count_reject(reason, n)
        for s in d["stages"]:
            name = prefix + s["name"]
            st = stages.setdefault(name, StageStats(name))
            for k in _STAGE_SUMS:
                setattr(st, k, getattr(st, k) + s[k])
            threads[name] = max(threads.get(name, 1), s["workers"])
        n = nodes.setdefault(r["node"], {"tasks": 0, "items_in": 0, "items_out": 0, "task_s": 0.0})
        n["tasks"] += 1
        n["items_in"] += d["items_in"]
        n["items_out"] += d["items_out"]
        n["task_s"] = round(n["task_s"] + r["seconds"], 3)
    for name, st in stages.items():
        st.workers = threads[name] * max(1, len(nodes))
    total.stages = list(stages.values())
    for n in nodes.values():
        n["items_per_s"] = round(n["items_in"] / wall_s, 2) if wall_s > 0 else None
    total.extra.update(runner="ray", tasks=len(results), nodes=dict(sorted(nodes.items())))
    return total


def merge_into(into: RunStats, first: RunStats) -> None:
    """A second pass's stats after the first's (images dedup): both passes' stages, one total."""
    into.stages = first.stages + into.stages
    for name, node in first.extra.get("nodes", {}).items():
        mine = into.extra.setdefault("nodes", {}).setdefault(name, {"tasks": 0, "items_in": 0, "items_out": 0,
                                                                    "task_s": 0.0})
        mine["tasks"] += node["tasks"]
        mine["task_s"] = round(mine["task_s"] + node["task_s"], 3)
    into.extra["tasks"] = into.extra.get("tasks", 0) + first.extra.get("tasks", 0)
