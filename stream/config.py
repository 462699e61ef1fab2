"""Run configuration objects, shared by the CLI and the Python API (the CLI only fills them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .output import ON_EXISTING


@dataclass
class ImageFilters:
    """Thresholds; ``None`` turns a filter off. Every drop is recorded with its reason."""

    min_side: int | None = 64  # --min-resolution: shorter side in pixels
    max_aspect: float | None = 10.0
    min_sharpness: float | None = None
    min_contrast: float | None = None
    min_entropy: float | None = None
    min_colorfulness: float | None = None
    min_mean_luma: float | None = None
    max_mean_luma: float | None = None
    max_frac_dark: float | None = None
    max_frac_bright: float | None = None
    dedup: bool = True
    dedup_distance: int = 4  # pHash Hamming distance that counts as a near-duplicate


@dataclass
class ImageRunConfig:
    sources: list[str]
    output: str | None = None
    images_per_tar: int = 1000
    device: str = "auto"
    decoder: str = "auto"  # auto | turbo | pillow | dali
    on_existing: str = "error"
    jpeg_quality: int = 92
    sidecar_json: bool = True
    deterministic_name: bool = True
    remove_image_data: bool = False
    batch_size: int = 32
    workers: int = 2
    max_pixels: int | None = None
    filters: ImageFilters = field(default_factory=ImageFilters)
    files_from: str | None = None
    parquet_image_column: str | None = None
    emit_ipc: str | None = None
    emit_ipc_bytes: bool = False
    stats_path: str | None = None
    verbose: bool = False
    progress: bool | None = None  # None: a bar on a TTY, quiet lines otherwise
    storage_options: dict[str, Any] | None = None

    def validate(self) -> None:
        if not self.sources and not self.files_from:
            raise ValueError("no input: give at least one source path or --files-from")
        if self.on_existing not in ON_EXISTING:
            raise ValueError(f"on_existing must be one of {ON_EXISTING}")
        if self.images_per_tar < 1:
            raise ValueError("images_per_tar must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be within 1..100")
        if self.decoder not in ("auto", "turbo", "pillow", "dali"):
            raise ValueError("decoder must be auto, turbo, pillow or dali")
        if self.batch_size < 1 or self.workers < 1:
            raise ValueError("batch_size and workers must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("storage_options", None)  # may hold credentials
        return d

    def writer_identity(self) -> dict[str, Any]:
        """The settings that change what lands in the shards: part of the shard name hash."""
        return {
            "images_per_tar": self.images_per_tar,
            "jpeg_quality": self.jpeg_quality,
            "sidecar_json": self.sidecar_json,
            "filters": asdict(self.filters),
            "max_pixels": self.max_pixels,
        }
