"""The built-in stages, under the names NeMo Curator's tutorials use.

Each is a small description of a step our engine already runs, not a second implementation:
the composed pipeline (compose/pipeline.py) turns them into the same run config and the same
engine stages ``run_images``/``run_videos`` build. Parameters that only steer Curator's own
scheduling or models (``num_gpus_per_worker``, ``model_dir``, batch sizes of GPU models...) are
accepted, so a tutorial's code runs, and have no effect here.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any, Callable

from curastream.config import ImageFilters

log = logging.getLogger(__name__)

__all__ = [
    "FilePartitioningStage", "ImageReaderStage", "ImageFilterStage", "ImageNSFWFilterStage",
    "VideoReader", "FixedStrideExtractorStage", "SceneClipExtractionStage", "TransNetV2ClipExtractionStage",
    "ClipTranscodingStage", "MotionVectorDecodeStage", "MotionFilterStage", "ClipFrameExtractionStage",
    "PreviewStage", "InternVideo2EmbeddingStage", "CosmosEmbed1EmbeddingStage", "CaptionGenerationStage",
]


class BuiltinStage:
    """A step of our own pipelines. ``medium``: the pipeline kind it belongs to."""

    medium = ""

    @property
    def name(self) -> str:
        return type(self).__name__


def _ignored(stage: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        log.debug("%s: %s steer Curator's scheduler or models and have no effect here", stage, sorted(kwargs))


# -- images -------------------------------------------------------------------------------------
class FilePartitioningStage(BuiltinStage):
    """Where the inputs are: folders, globs, files, WebDataset tars, Parquet, fsspec URLs.
    ``file_extensions`` keeps only inputs whose file name ends with one of them."""

    medium = "images"

    def __init__(self, file_paths: str | list[str], files_per_partition: int | None = None,
                 file_extensions: list[str] | None = None, storage_options: dict | None = None, **kwargs: Any):
        self.file_paths = [file_paths] if isinstance(file_paths, str) else [str(p) for p in file_paths]
        self.files_per_partition = files_per_partition  # partitions are Curator's unit of scheduling
        self.file_extensions = [e.lower() for e in file_extensions] if file_extensions else None
        self.storage_options = storage_options
        _ignored(self.name, kwargs)


class ImageReaderStage(BuiltinStage):
    """Read, decode (reduced size) and score: our decode and score stages. ``dali_batch_size``
    is the pipeline batch, ``num_threads`` the decode/encode threads."""

    medium = "images"

    def __init__(self, dali_batch_size: int = 32, verbose: bool = False, num_threads: int = 2,
                 decoder: str = "auto", device: str = "auto", max_pixels: int | None = None,
                 file_paths: str | list[str] | None = None, **kwargs: Any):
        self.batch_size = dali_batch_size
        self.verbose = verbose
        self.workers = num_threads
        self.decoder = decoder
        self.device = device
        self.max_pixels = max_pixels
        self.file_paths = [file_paths] if isinstance(file_paths, str) else file_paths
        _ignored(self.name, kwargs)


class ImageFilterStage(BuiltinStage):
    """Thresholds and near-duplicate removal, every drop recorded with its reason. Defaults are
    the CLI's (``curastream images``); ``ImageFilterStage(**off)`` fields take None to switch off."""

    medium = "images"

    def __init__(self, **thresholds: Any):
        names = {f.name for f in fields(ImageFilters)}
        unknown = sorted(set(thresholds) - names)
        if unknown:
            raise TypeError(f"ImageFilterStage: unknown thresholds {unknown}; known: {sorted(names)}")
        self.filters = ImageFilters(**thresholds)


class ImageNSFWFilterStage(BuiltinStage):
    """The NSFW model's ``nsfw_score`` per image (needs ``curastream[models]``); rows scoring
    above ``score_threshold`` are rejected (None: score only)."""

    medium = "images"

    def __init__(self, score_threshold: float | None = 0.5, **kwargs: Any):
        self.score_threshold = score_threshold
        _ignored(self.name, kwargs)


# -- videos -------------------------------------------------------------------------------------
class VideoReader(BuiltinStage):
    """The videos to split: a folder, glob, file or URL (or a list). ``video_limit`` keeps the
    first N in listing order."""

    medium = "videos"

    def __init__(self, input_video_path: str | list[str], video_limit: int | None = None, verbose: bool = False,
                 storage_options: dict | None = None, **kwargs: Any):
        paths = input_video_path if isinstance(input_video_path, (list, tuple)) else [input_video_path]
        self.sources = [str(p) for p in paths]
        self.video_limit = video_limit if video_limit and video_limit > 0 else None
        self.verbose = verbose
        self.storage_options = storage_options
        _ignored(self.name, kwargs)


class FixedStrideExtractorStage(BuiltinStage):
    """Fixed-length clips, Curator's spans and span_uuids (SPEC §2)."""

    medium = "videos"

    def __init__(self, clip_len_s: float = 10.0, clip_stride_s: float | None = None,
                 min_clip_length_s: float = 2.0, limit_clips: int = 0, **kwargs: Any):
        self.settings = {"split": "fixed", "clip_len": clip_len_s, "min_clip_len": min_clip_length_s}
        if clip_stride_s is not None and clip_stride_s != clip_len_s:
            self.settings["stride"] = clip_stride_s
        if limit_clips:
            log.warning("FixedStrideExtractorStage: limit_clips=%d is not supported; every clip is kept", limit_clips)
        _ignored(self.name, kwargs)


class SceneClipExtractionStage(BuiltinStage):
    """Clips at shot boundaries, found from the one analysis decode (our shot detector, not the
    TransNetV2 model): ``min_length_s``..``max_length_s`` seconds."""

    medium = "videos"

    def __init__(self, min_length_s: float = 2.0, max_length_s: float = 60.0, threshold: float | None = None,
                 limit_clips: int = 0, verbose: bool = False, **kwargs: Any):
        self.settings = {"split": "scenes", "min_clip_len": min_length_s, "max_clip_len": max_length_s}
        if threshold is not None:
            kwargs["threshold"] = threshold  # a TransNetV2 probability: our detector has no such knob
        _ignored(self.name, kwargs)


class TransNetV2ClipExtractionStage(BuiltinStage):
    """The TransNetV2 model's shots with Curator's post-processing and defaults (threshold 0.4,
    2-10 s scenes, 0.5 s cropped off each end); needs ``curastream[models]``."""

    medium = "videos"
    CURATOR_DEFAULTS = {"threshold": 0.4, "min_length_s": 2.0, "max_length_s": 10.0, "crop_s": 0.5}

    def __init__(self, threshold: float = 0.4, min_length_s: float = 2.0, max_length_s: float = 10.0,
                 crop_s: float = 0.5, limit_clips: int = 0, verbose: bool = False, **kwargs: Any):
        given = {"threshold": threshold, "min_length_s": min_length_s, "max_length_s": max_length_s, "crop_s": crop_s}
        changed = {k: v for k, v in given.items() if v != self.CURATOR_DEFAULTS[k]}
        if changed:
            raise ValueError(f"TransNetV2ClipExtractionStage: this build runs Curator's defaults only; {changed} "
                             "cannot be changed (SceneClipExtractionStage takes min/max lengths)")
        self.settings = {"split": "transnetv2"}
        _ignored(self.name, kwargs)


class ClipTranscodingStage(BuiltinStage):
    """Cut the clips: ``clip_mode`` exact (frame-exact, re-encoding only around the cuts; the
    CLI's default), copy (keyframe-aligned stream copy) or reencode. ``num_clips_per_chunk``
    groups clips per chunk record, as Curator."""

    medium = "videos"

    def __init__(self, encoder: str = "libx264", clip_mode: str = "exact", num_clips_per_chunk: int | None = None,
                 preset: str | None = None, crf: int | None = None, verbose: bool = False, **kwargs: Any):
        if encoder in ("libopenh264", "h264_nvenc"):
            log.info("ClipTranscodingStage: encoder %s -> libx264 (the encoder this build ships)", encoder)
            encoder = "libx264"
        self.settings: dict[str, Any] = {"clip_mode": clip_mode, "encoder": encoder}
        if num_clips_per_chunk is not None:
            self.settings["clips_per_chunk"] = num_clips_per_chunk
        if preset is not None:
            self.settings["preset"] = preset
        if crf is not None:
            self.settings["crf"] = crf
        _ignored(self.name, kwargs)


class MotionVectorDecodeStage(BuiltinStage):
    """Motion is measured in the one analysis decode (codec motion vectors where the codec has
    them): this stage is kept so a Curator pipeline reads the same; it adds no work."""

    medium = "videos"

    def __init__(self, **kwargs: Any):
        _ignored(self.name, kwargs)


class MotionFilterStage(BuiltinStage):
    """Curator's motion filter; ``score_only=True`` keeps every clip and records the scores."""

    medium = "videos"

    def __init__(self, score_only: bool = False, global_mean_threshold: float | None = None,
                 per_patch_min_256_threshold: float | None = None, verbose: bool = False, **kwargs: Any):
        self.settings: dict[str, Any] = {"motion_filter": not score_only}
        if global_mean_threshold is not None:
            self.settings["motion_global_mean_threshold"] = global_mean_threshold
        if per_patch_min_256_threshold is not None:
            self.settings["motion_per_patch_min_threshold"] = per_patch_min_256_threshold
        _ignored(self.name, kwargs)


class ClipFrameExtractionStage(BuiltinStage):
    """Frames for scores and plug-ins come from the analysis decode: no work of its own."""

    medium = "videos"

    def __init__(self, **kwargs: Any):
        _ignored(self.name, kwargs)


class PreviewStage(BuiltinStage):
    """Animated WebP previews per caption window (1 fps, 240 px high)."""

    medium = "videos"

    def __init__(self, **kwargs: Any):
        self.settings = {"previews": True}
        _ignored(self.name, kwargs)


class _EmbeddingStage(BuiltinStage):
    medium = "videos"
    algorithm = ""

    def __init__(self, embedder: Callable | None = None, **kwargs: Any):
        self.embedder = embedder
        _ignored(self.name, kwargs)


class InternVideo2EmbeddingStage(_EmbeddingStage):
    """Clip embeddings stored as ``internvideo2``: ``embedder(frames) -> vector``, or the one
    registered with ``register_embedder("internvideo2", fn)``."""

    algorithm = "internvideo2"


class CosmosEmbed1EmbeddingStage(_EmbeddingStage):
    """Clip embeddings stored as ``cosmos-embed1`` (see InternVideo2EmbeddingStage)."""

    algorithm = "cosmos-embed1"


class CaptionGenerationStage(BuiltinStage):
    """Window captions from ``captioner(frames) -> str``, or the one registered under
    ``model_variant`` with ``register_captioner``."""

    medium = "videos"

    def __init__(self, model_variant: str = "qwen", captioner: Callable | None = None, **kwargs: Any):
        self.model_variant = model_variant
        self.captioner = captioner
        _ignored(self.name, kwargs)
