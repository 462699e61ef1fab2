"""A run config as the composed pipeline that runs it: how ``curastream images`` and
``curastream videos`` run, and what ``--print-pipeline`` shows.

Every setting lands on the stage a Curator user would look for it (input listing on
FilePartitioningStage, decode and placement on the reader, output on the writer...), so
``pipeline_for(cfg).build().config == cfg`` for every valid config; tests/test_compose_cli.py
holds that over the CLI's command lines and random configs.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields
from typing import Any

from curastream.compose import stages as S
from curastream.compose.pipeline import Pipeline
from curastream.compose.writers import ClipWriterStage, ImageWriterStage
from curastream.config import ImageFilters, ImageRunConfig, VideoRunConfig

__all__ = ["pipeline_for"]


def pipeline_for(cfg: ImageRunConfig | VideoRunConfig) -> Pipeline:
    """The composition whose ``build()`` gives back ``cfg`` (validated first)."""
    cfg.validate(require_sources=False)
    if isinstance(cfg, ImageRunConfig):
        return Pipeline(name="images", description="curastream images", stages=_image_stages(cfg))
    if isinstance(cfg, VideoRunConfig):
        return Pipeline(name="videos", description="curastream videos", stages=_video_stages(cfg))
    raise TypeError(f"pipeline_for takes an ImageRunConfig or VideoRunConfig, not {type(cfg).__name__}")


def _image_stages(cfg: ImageRunConfig) -> list[Any]:
    stages: list[Any] = [
        S.FilePartitioningStage(
            file_paths=list(cfg.sources), files_from=cfg.files_from, parquet_image_column=cfg.parquet_image_column,
            url_list=cfg.url_list, url_col=cfg.url_col, caption_col=cfg.caption_col,
            save_additional_columns=list(cfg.save_additional_columns) or None),
        S.ImageReaderStage(
            dali_batch_size=cfg.batch_size, num_threads=cfg.workers, decoder=cfg.decoder, device=cfg.device,
            max_pixels=cfg.max_pixels, max_download_bytes=cfg.max_download_bytes,
            download_timeout=cfg.download_timeout, download_retries=cfg.download_retries,
            download_concurrency=cfg.download_concurrency, runner=cfg.runner, ray_address=cfg.ray_address,
            gpus_per_task=cfg.gpus_per_task),
        S.ImageFilterStage(**_changed(cfg.filters)),
    ]
    for model in cfg.models:
        # the CLI's max_nsfw needs --model nsfw, so it has an NSFW stage to sit on
        stages.append(S.ImageNSFWFilterStage(score_threshold=cfg.max_nsfw) if model == "nsfw"
                      and not any(isinstance(s, S.ImageNSFWFilterStage) for s in stages)
                      else S.ModelScoreStage(model))
    stages.append(ImageWriterStage(
        output_dir=cfg.output, images_per_tar=cfg.images_per_tar, verbose=cfg.verbose,
        deterministic_name=cfg.deterministic_name, remove_image_data=cfg.remove_image_data,
        sidecar_json=cfg.sidecar_json, jpeg_quality=cfg.jpeg_quality, on_existing=cfg.on_existing,
        storage_options=cfg.storage_options, progress=cfg.progress, stats=cfg.stats, emit_ipc=cfg.emit_ipc,
        emit_ipc_bytes=cfg.emit_ipc_bytes, resize=cfg.resize, resize_mode=cfg.resize_mode,
        encode_format=cfg.encode_format, encode_quality=cfg.encode_quality))
    return stages


_EMBEDDING_STAGES = {S.InternVideo2EmbeddingStage.algorithm: S.InternVideo2EmbeddingStage,
                     S.CosmosEmbed1EmbeddingStage.algorithm: S.CosmosEmbed1EmbeddingStage}


def _video_stages(cfg: VideoRunConfig) -> list[Any]:
    stages: list[Any] = [
        S.VideoReader(input_video_path=list(cfg.sources), storage_options=cfg.storage_options,
                      analysis_short_side=cfg.analysis_short_side, video_time_limit=cfg.video_time_limit,
                      device=cfg.device, runner=cfg.runner, ray_address=cfg.ray_address,
                      gpus_per_task=cfg.gpus_per_task, ray_video_chunk_s=cfg.ray_video_chunk_s),
        _splitting(cfg),
        S.ClipTranscodingStage(encoder=cfg.encoder, clip_mode=cfg.clip_mode,
                               num_clips_per_chunk=_set(cfg, "clips_per_chunk"), preset=_set(cfg, "preset"),
                               crf=_set(cfg, "crf"), audio=cfg.audio),
        S.MotionFilterStage(score_only=not cfg.motion_filter,
                            global_mean_threshold=_set(cfg, "motion_global_mean_threshold"),
                            per_patch_min_256_threshold=_set(cfg, "motion_per_patch_min_threshold"),
                            motion_method=cfg.motion_method, motion_source=cfg.motion_source),
    ]
    if cfg.min_duration is not None or cfg.max_duration is not None:
        stages.append(S.ClipDurationFilterStage(min_duration_s=cfg.min_duration, max_duration_s=cfg.max_duration))
    stages += [S.ModelScoreStage(m) for m in cfg.models]
    embeds = cfg.generate_embeddings or cfg.embedder is not None or cfg.embedder_factory is not None
    if embeds:
        stages.append(_EMBEDDING_STAGES[cfg.embedding_algorithm](embedder=cfg.embedder,
                                                                  embedder_factory=cfg.embedder_factory))
    captions = cfg.captioner is not None or cfg.captioner_factory is not None
    if captions or cfg.caption_models:
        # names without a plug-in: recorded, nothing captioned (generate_captions=False below)
        stages.append(S.CaptionGenerationStage(model_variant=(cfg.caption_models or [None])[0],
                                               captioner=cfg.captioner, captioner_factory=cfg.captioner_factory))
    stages.append(ClipWriterStage(
        output_path=cfg.output, input_path=cfg.input_path, upload_clips=cfg.upload_clips, dry_run=cfg.dry_run,
        # explicit only beside their stage: False there keeps the plug-in configured, unused
        generate_embeddings=cfg.generate_embeddings if embeds else None, generate_previews=cfg.previews,
        generate_captions=captions if captions or cfg.caption_models else None,
        embedding_algorithm=cfg.embedding_algorithm, caption_models=list(cfg.caption_models) or None, verbose=cfg.verbose,
        max_workers=cfg.max_workers, clip_subdirs=cfg.clip_subdirs, on_existing=cfg.on_existing,
        storage_options=cfg.storage_options, progress=cfg.progress, stats=cfg.stats, emit_ipc=cfg.emit_ipc,
        emit_ipc_bytes=cfg.emit_ipc_bytes))
    return stages


def _splitting(cfg: VideoRunConfig) -> Any:
    # The lengths this split mode does not use ride along only when they differ from the CLI's
    # defaults (None), so the stage reads as Curator's and the config still comes back whole.
    if cfg.split == "fixed":
        return S.FixedStrideExtractorStage(clip_len_s=cfg.clip_len, clip_stride_s=cfg.stride,
                                           min_clip_length_s=cfg.min_clip_len, max_clip_len=_set(cfg, "max_clip_len"))
    if cfg.split == "transnetv2":
        return S.TransNetV2ClipExtractionStage(min_length_s=cfg.min_clip_len, max_length_s=cfg.clip_len,
                                               max_clip_len=_set(cfg, "max_clip_len"), stride=cfg.stride)
    return S.SceneClipExtractionStage(min_length_s=cfg.min_clip_len, max_length_s=cfg.max_clip_len,
                                      clip_len=_set(cfg, "clip_len"), stride=cfg.stride)


def _default(cls: type, name: str) -> Any:
    f = next(f for f in fields(cls) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def _set(cfg: Any, name: str) -> Any:
    """The value, or None (the stage's "the CLI's default") where it is the default."""
    value = getattr(cfg, name)
    return None if value == _default(type(cfg), name) else value


def _changed(filters: ImageFilters) -> dict[str, Any]:
    return {k: v for k, v in asdict(filters).items() if v != _default(ImageFilters, k)}
