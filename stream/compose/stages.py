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
from curastream.compose.described import Described

log = logging.getLogger(__name__)

__all__ = [
    "FilePartitioningStage", "ImageReaderStage", "ImageFilterStage", "ImageNSFWFilterStage",
    "VideoReader", "FixedStrideExtractorStage", "SceneClipExtractionStage", "TransNetV2ClipExtractionStage",
    "ClipTranscodingStage", "MotionVectorDecodeStage", "MotionFilterStage", "ClipFrameExtractionStage",
    "PreviewStage", "InternVideo2EmbeddingStage", "CosmosEmbed1EmbeddingStage", "CaptionGenerationStage",
    "ModelScoreStage", "ClipDurationFilterStage",
]


class BuiltinStage(Described):
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
    ``file_extensions`` keeps only inputs whose file name ends with one of them.

    The CLI's other input settings are keyword arguments here, under their flag names:
    ``files_from`` (a list of inputs), ``parquet_image_column``, and ``url_list`` with
    ``url_col``, ``caption_col`` and ``save_additional_columns`` (a table of image URLs; then
    ``file_paths`` may be empty)."""

    medium = "images"

    def __init__(self, file_paths: str | list[str], files_per_partition: int | None = None,
                 file_extensions: list[str] | None = None, storage_options: dict | None = None, *,
                 files_from: str | None = None, parquet_image_column: str | None = None, url_list: str | None = None,
                 url_col: str = "url", caption_col: str | None = None,
                 save_additional_columns: list[str] | None = None, **kwargs: Any):
        self.file_paths = [file_paths] if isinstance(file_paths, str) else [str(p) for p in file_paths]
        self.files_per_partition = files_per_partition  # partitions are Curator's unit of scheduling
        self.file_extensions = [e.lower() for e in file_extensions] if file_extensions else None
        self.storage_options = storage_options
        self.settings: dict[str, Any] = dict(
            files_from=files_from, parquet_image_column=parquet_image_column, url_list=url_list, url_col=url_col,
            caption_col=caption_col, save_additional_columns=list(save_additional_columns or []))
        _ignored(self.name, kwargs)


class ImageReaderStage(BuiltinStage):
    """Read, decode (reduced size) and score: our decode and score stages. ``dali_batch_size``
    is the pipeline batch, ``num_threads`` the decode/encode threads.

    Keyword arguments under the CLI's flag names: downloads of a URL list
    (``max_download_bytes``, ``download_timeout``, ``download_retries``,
    ``download_concurrency``) and where the run is placed (``runner`` "local" or "ray",
    ``ray_address``, ``gpus_per_task``; a Ray run takes no user stages)."""

    medium = "images"

    def __init__(self, dali_batch_size: int = 32, verbose: bool = False, num_threads: int = 2,
                 decoder: str = "auto", device: str = "auto", max_pixels: int | None = None,
                 file_paths: str | list[str] | None = None, *, max_download_bytes: int = 50_000_000,
                 download_timeout: float = 10.0, download_retries: int = 2, download_concurrency: int = 64,
                 runner: str = "local", ray_address: str | None = None, gpus_per_task: float = 1.0, **kwargs: Any):
        self.batch_size = dali_batch_size
        self.verbose = verbose
        self.workers = num_threads
        self.decoder = decoder
        self.device = device
        self.max_pixels = max_pixels
        self.file_paths = [file_paths] if isinstance(file_paths, str) else file_paths
        self.settings: dict[str, Any] = dict(
            max_download_bytes=max_download_bytes, download_timeout=download_timeout,
            download_retries=download_retries, download_concurrency=download_concurrency,
            runner=runner, ray_address=ray_address, gpus_per_task=gpus_per_task)
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


class ModelScoreStage(BuiltinStage):
    """Scores from one model (the CLI's ``--model NAME``): ``nsfw``, a name a plug-in registers
    (entry points ``curastream.models``) or ``pkg.module:factory``; each adds its float32
    columns (images) or per-clip scores (videos). Models run in the order of their stages, in
    one place of the pipeline: where the first of them stands."""

    medium = ""  # images and videos alike

    def __init__(self, model: str):
        self.model = model


# -- videos -------------------------------------------------------------------------------------
class VideoReader(BuiltinStage):
    """The videos to split: a folder, glob, file or URL (or a list). ``video_limit`` keeps the
    first N in listing order.

    Keyword arguments under the CLI's flag names: how videos are decoded and placed
    (``analysis_short_side``, ``video_time_limit``, ``device``, ``runner``, ``ray_address``,
    ``gpus_per_task``, ``ray_video_chunk_s``)."""

    medium = "videos"

    def __init__(self, input_video_path: str | list[str], video_limit: int | None = None, verbose: bool = False,
                 storage_options: dict | None = None, *, analysis_short_side: int = 144,
                 video_time_limit: float | None = 600.0, device: str = "auto", runner: str = "local",
                 ray_address: str | None = None, gpus_per_task: float = 1.0,
                 ray_video_chunk_s: float | None = 300.0, **kwargs: Any):
        paths = input_video_path if isinstance(input_video_path, (list, tuple)) else [input_video_path]
        self.sources = [str(p) for p in paths]
        self.video_limit = video_limit if video_limit and video_limit > 0 else None
        self.verbose = verbose
        self.storage_options = storage_options
        self.settings: dict[str, Any] = dict(
            analysis_short_side=analysis_short_side, video_time_limit=video_time_limit, device=device,
            runner=runner, ray_address=ray_address, gpus_per_task=gpus_per_task,
            ray_video_chunk_s=ray_video_chunk_s)
        _ignored(self.name, kwargs)


def _lengths(**given: Any) -> dict[str, Any]:
    """The CLI's split lengths a splitting stage was given (None: the CLI's default). The run
    config keeps each of them, also where this split mode does not use it."""
    return {k: v for k, v in given.items() if v is not None}


class FixedStrideExtractorStage(BuiltinStage):
    """Fixed-length clips, Curator's spans and span_uuids (SPEC §2). ``max_clip_len``: the
    CLI's --max-clip-len, which fixed-stride clips do not use."""

    medium = "videos"

    def __init__(self, clip_len_s: float = 10.0, clip_stride_s: float | None = None,
                 min_clip_length_s: float = 2.0, limit_clips: int = 0, *, max_clip_len: float | None = None,
                 **kwargs: Any):
        self.settings = {"split": "fixed", **_lengths(clip_len=clip_len_s, stride=clip_stride_s,
                                                      min_clip_len=min_clip_length_s, max_clip_len=max_clip_len)}
        if limit_clips:
            log.warning("FixedStrideExtractorStage: limit_clips=%d is not supported; every clip is kept", limit_clips)
        _ignored(self.name, kwargs)


class SceneClipExtractionStage(BuiltinStage):
    """Clips at shot boundaries, found from the one analysis decode (our shot detector, not the
    TransNetV2 model): ``min_length_s``..``max_length_s`` seconds. ``clip_len``: longer shots
    are split to this (the CLI's --clip-len); ``stride`` is kept for the config, unused here."""

    medium = "videos"

    def __init__(self, min_length_s: float = 2.0, max_length_s: float = 60.0, threshold: float | None = None,
                 limit_clips: int = 0, verbose: bool = False, *, clip_len: float | None = None,
                 stride: float | None = None, **kwargs: Any):
        self.settings = {"split": "scenes", **_lengths(min_clip_len=min_length_s, max_clip_len=max_length_s,
                                                       clip_len=clip_len, stride=stride)}
        if threshold is not None:
            kwargs["threshold"] = threshold  # a TransNetV2 probability: our detector has no such knob
        _ignored(self.name, kwargs)


class TransNetV2ClipExtractionStage(BuiltinStage):
    """The TransNetV2 model's shots with Curator's post-processing and defaults (threshold 0.4,
    2-10 s scenes, 0.5 s cropped off each end); needs ``curastream[models]``.
    ``min_length_s`` is the CLI's --min-clip-len and ``max_length_s`` its --clip-len (scenes
    are cut to at most the smaller of that and ``max_clip_len``); ``stride`` is kept for the
    config, unused here."""

    medium = "videos"
    CURATOR_DEFAULTS = {"threshold": 0.4, "crop_s": 0.5}

    def __init__(self, threshold: float = 0.4, min_length_s: float = 2.0, max_length_s: float = 10.0,
                 crop_s: float = 0.5, limit_clips: int = 0, verbose: bool = False, *,
                 max_clip_len: float | None = None, stride: float | None = None, **kwargs: Any):
        given = {"threshold": threshold, "crop_s": crop_s}
        changed = {k: v for k, v in given.items() if v != self.CURATOR_DEFAULTS[k]}
        if changed:
            raise ValueError(f"TransNetV2ClipExtractionStage: this build runs Curator's threshold and crop only; "
                             f"{changed} cannot be changed")
        self.settings = {"split": "transnetv2", **_lengths(min_clip_len=min_length_s, clip_len=max_length_s,
                                                           max_clip_len=max_clip_len, stride=stride)}
        _ignored(self.name, kwargs)


class ClipTranscodingStage(BuiltinStage):
    """Cut the clips: ``clip_mode`` exact (frame-exact, re-encoding only around the cuts; the
    CLI's default), copy (keyframe-aligned stream copy) or reencode. ``num_clips_per_chunk``
    groups clips per chunk record, as Curator. ``audio``: keep the source's audio track."""

    medium = "videos"

    def __init__(self, encoder: str = "libx264", clip_mode: str = "exact", num_clips_per_chunk: int | None = None,
                 preset: str | None = None, crf: int | None = None, verbose: bool = False, *, audio: bool = True,
                 **kwargs: Any):
        if encoder == "libopenh264" and not _has_encoder(encoder):
            # Curator's CPU default; this FFmpeg build has no OpenH264. h264_nvenc is kept: it is
            # in the build and encodes wherever a GPU is.
            log.warning("ClipTranscodingStage: encoder %s is not in this FFmpeg build; using libx264", encoder)
            encoder = "libx264"
        self.settings: dict[str, Any] = {"clip_mode": clip_mode, "encoder": encoder, "audio": audio}
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
    """Curator's motion filter; ``score_only=True`` keeps every clip and records the scores.
    ``motion_method``: the CLI's --motion-method (auto, vectors, frames); ``motion_source``: its
    --motion-source (source, or reencode: score an x264 re-encode of each clip, as Curator does)."""

    medium = "videos"

    def __init__(self, score_only: bool = False, global_mean_threshold: float | None = None,
                 per_patch_min_256_threshold: float | None = None, verbose: bool = False, *,
                 motion_method: str = "auto", motion_source: str = "source", **kwargs: Any):
        self.settings: dict[str, Any] = {"motion_filter": not score_only, "motion_method": motion_method,
                                         "motion_source": motion_source}
        if global_mean_threshold is not None:
            self.settings["motion_global_mean_threshold"] = global_mean_threshold
        if per_patch_min_256_threshold is not None:
            self.settings["motion_per_patch_min_threshold"] = per_patch_min_256_threshold
        _ignored(self.name, kwargs)


class ClipDurationFilterStage(BuiltinStage):
    """Clips shorter than ``min_duration_s`` or longer than ``max_duration_s`` go to
    filtered_clips/ (the CLI's --min-duration / --max-duration; None: no limit)."""

    medium = "videos"

    def __init__(self, min_duration_s: float | None = None, max_duration_s: float | None = None):
        self.settings = {"min_duration": min_duration_s, "max_duration": max_duration_s}


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

    def __init__(self, embedder: Callable | None = None, *, embedder_factory: str | None = None, **kwargs: Any):
        self.embedder = embedder
        self.embedder_factory = embedder_factory  # the CLI's --embedder pkg.module:factory
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
    ``model_variant`` with ``register_captioner``; ``captioner_factory`` is the CLI's
    --captioner pkg.module:factory. ``model_variant=None``: captions recorded as the plug-in's."""

    medium = "videos"

    def __init__(self, model_variant: str | None = "qwen", captioner: Callable | None = None, *,
                 captioner_factory: str | None = None, **kwargs: Any):
        self.model_variant = model_variant
        self.captioner = captioner
        self.captioner_factory = captioner_factory
        _ignored(self.name, kwargs)


def _has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError, or a build without it
        return False
    return True
