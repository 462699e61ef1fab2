"""Run statistics: per-stage counters and timings, returned by the API and printed by the CLI."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageStats:
    name: str
    workers: int = 1
    items_in: int = 0
    items_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0  # size of the items taken in, as queued (engine.item_nbytes)
    bytes_out: int = 0
    busy_s: float = 0.0  # summed over workers: time inside the stage's own code

    def to_dict(self, wall_s: float) -> dict[str, Any]:
        capacity = wall_s * max(1, self.workers)
        return {
            "name": self.name,
            "workers": self.workers,
            "items_in": self.items_in,
            "items_out": self.items_out,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "busy_s": round(self.busy_s, 4),
            # share of the stage's worker capacity it was busy: the bottleneck is near 1.0
            "utilisation": round(self.busy_s / capacity, 4) if capacity > 0 else 0.0,
            # throughput over the whole run (rows and bytes taken in per wall second) ...
            "rows_per_s": round(self.rows_in / wall_s, 2) if wall_s > 0 else None,
            "bytes_per_s": round(self.bytes_in / wall_s, 1) if wall_s > 0 else None,
            # ... and what the stage could do alone: rows per second of its busy time (summed
            # over workers, so a 2-worker stage's ceiling is about twice this)
            "rows_per_s_busy": round(self.rows_in / self.busy_s, 2) if self.busy_s > 0 else None,
        }


@dataclass
class RunStats:
    kind: str  # "images" | "videos"
    wall_s: float = 0.0
    items_in: int = 0
    items_out: int = 0
    items_rejected: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    stages: list[StageStats] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_reject(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.items_rejected += n
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + n

    @property
    def items_per_s(self) -> float:
        return self.items_in / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_in / 1e6 / self.wall_s if self.wall_s > 0 else 0.0

    def bottleneck(self) -> str | None:
        if not self.stages:
            return None
        return max(self.stages, key=lambda s: s.busy_s / max(1, s.workers)).name

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "wall_s": round(self.wall_s, 4),
            "items_in": self.items_in,
            "items_out": self.items_out,
            "items_rejected": self.items_rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "items_per_s": round(self.items_per_s, 3),
            "mb_per_s": round(self.mb_per_s, 3),
            "bottleneck": self.bottleneck(),
            "stages": [s.to_dict(self.wall_s) for s in self.stages],
            "queues": self.queues,
            **({"extra": self.extra} if self.extra else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary_lines(self) -> list[str]:
        unit = "images" if self.kind == "images" else "videos"
        lines = [
            f"{unit}: {self.items_in} in, {self.items_out} written, {self.items_rejected} rejected"
            f" in {self.wall_s:.2f} s ({self.items_per_s:.1f} {unit}/s, {self.mb_per_s:.1f} MB/s in)",
        ]
        for k, v in self.extra.items():
            if isinstance(v, (int, float, str)):
                lines.append(f"  {k}: {v}")
        for reason, n in sorted(self.rejected_by_reason.items(), key=lambda kv: -kv[1]):
            lines.append(f"  rejected {reason}: {n}")
        if self.stages:
            parts = [
                f"{s['name']} {100 * s['utilisation']:.0f}%"
                for s in (st.to_dict(self.wall_s) for st in self.stages)
            ]
            lines.append(f"  stage busy: {', '.join(parts)} (bottleneck: {self.bottleneck()})")
        return lines
