"""What an export is asked to do, checked before anything is read or written."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FORMATS = ("webdataset", "parquet")
ON_EXISTING = ("error", "resume", "overwrite")  # engine.output.ON_EXISTING, without its import cost


@dataclass
class ExportConfig:
    source: str  # a curastream output: a clip tree (videos) or image shards
    output: str
    format: str = "webdataset"
    where: str | None = None  # SQL condition over the index columns (DuckDB)
    per_shard: int = 1000  # samples per tar / rows per Parquet part
    max_shard_bytes: int | None = 1 << 30  # a tar closes before it would pass this (one sample may)
    include_filtered: bool = False  # clips: also those in filtered_clips/
    on_existing: str = "error"
    storage_options: dict[str, Any] | None = None

    def validate(self) -> "ExportConfig":
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.on_existing not in ON_EXISTING:
            raise ValueError(f"--on-existing must be one of {', '.join(ON_EXISTING)}, got {self.on_existing!r}")
        if self.per_shard < 1:
            raise ValueError(f"--per-shard must be at least 1, got {self.per_shard}")
        if self.max_shard_bytes is not None and self.max_shard_bytes < 1:
            raise ValueError(f"--max-shard-bytes must be at least 1, got {self.max_shard_bytes}")
        if self.where is not None and not self.where.strip():
            raise ValueError("--where needs a condition, e.g. \"sharpness > 100\"")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings index.json records and a resume compares (no credentials)."""
        d = asdict(self)
        d.pop("storage_options")
        return d
