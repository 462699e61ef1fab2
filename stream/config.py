"""Run configuration objects, shared by the CLI and the Python API (the CLI only fills them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from curastream.engine.output import ON_EXISTING


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


@dataclass
class VideoRunConfig:
    sources: list[str]
    output: str | None = None
    input_path: str | None = None  # root the processed_* paths are relative to (default: common root)
    split: str = "scenes"  # scenes | fixed
    clip_len_s: float = 10.0  # fixed stride length, and the max scene length before it is split
    min_clip_s: float = 0.5  # shortest clip kept (fixed: the remainder; scenes: shorter shots merged/dropped)
    max_clip_s: float = 60.0
    clip_mode: str = "copy"  # copy (stream copy, keyframe cuts) | reencode (exact cuts)
    encoder: str = "libx264"
    encoder_preset: str = "veryfast"
    encoder_crf: int = 23
    previews: bool = False
    upload_clips: bool = True
    dry_run: bool = False
    motion_filter: bool = True
    # frames: block matching on the analysis frames (every codec, true px/frame; default).
    # vectors: codec motion vectors as Curator computes them (H.264/MPEG only; B-frame streams
    # read high because a vector spans the whole B-run). auto: vectors where the codec has them.
    motion_method: str = "frames"
    motion_global_mean_threshold: float = 0.00098
    motion_per_patch_min_threshold: float = 1e-6
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    analysis_short_side: int = 144
    clips_per_chunk: int = 32
    device: str = "auto"
    on_existing: str = "error"
    max_workers: int = 6  # writer threads
    video_time_limit_s: float | None = 600.0  # per-video limit: a hostile file cannot hang the run
    clip_subdirs: bool = False
    generate_embeddings: bool = False
    embedding_algorithm: str = "internvideo2"
    embedder: Any = None  # callable(frames) -> vector; see curastream.plugins
    captioner: Any = None  # callable(frames) -> str
    caption_models: list[str] = field(default_factory=list)
    emit_ipc: str | None = None
    emit_ipc_bytes: bool = False
    stats_path: str | None = None
    verbose: bool = False
    progress: bool | None = None
    storage_options: dict[str, Any] | None = None

    def validate(self) -> None:
        if not self.sources:
            raise ValueError("no input: give at least one video source")
        if self.on_existing not in ON_EXISTING:
            raise ValueError(f"on_existing must be one of {ON_EXISTING}")
        if self.split not in ("scenes", "fixed"):
            raise ValueError("split must be 'scenes' or 'fixed'")
        if self.motion_method not in ("frames", "vectors", "auto"):
            raise ValueError("motion_method must be frames, vectors or auto")
        if self.clip_mode not in ("copy", "reencode"):
            raise ValueError("clip_mode must be 'copy' or 'reencode'")
        if self.clip_len_s <= 0 or self.min_clip_s < 0 or self.max_clip_s <= 0:
            raise ValueError("clip lengths must be positive")
        if self.generate_embeddings and self.embedder is None:
            raise ValueError(
                "generate_embeddings needs an embedding plug-in (embedder=callable(frames) -> vector); "
                "none is configured"
            )
        if self.embedding_algorithm not in ("internvideo2", "cosmos-embed1"):
            raise ValueError("embedding_algorithm must be internvideo2 or cosmos-embed1")

    def to_dict(self) -> dict[str, Any]:
        # not asdict(): it would deep-copy the plug-ins (possibly whole models)
        skip = ("storage_options", "embedder", "captioner")
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        d["embedder"] = getattr(self.embedder, "__name__", None) if self.embedder else None
        d["captioner"] = getattr(self.captioner, "__name__", None) if self.captioner else None
        return d
