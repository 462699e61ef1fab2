"""Compose a pipeline as NeMo Curator's tutorials do, run it on our streaming engine.

    from curastream import Pipeline, FilePartitioningStage, ImageReaderStage, ImageWriterStage

    pipeline = Pipeline(name="image_curation", description="...")
    pipeline.add_stage(FilePartitioningStage(file_paths="photos/"))
    pipeline.add_stage(ImageReaderStage())
    pipeline.add_stage(ImageWriterStage(output_dir="out/", images_per_tar=1000))
    pipeline.run()
"""

from __future__ import annotations

from curastream.compose.pipeline import Pipeline, PipelineError
from curastream.compose.from_config import pipeline_for
from curastream.compose.registry import MissingPluginError, register_captioner, register_embedder
from curastream.compose.stages import (
    CaptionGenerationStage,
    ClipDurationFilterStage,
    ClipFrameExtractionStage,
    ClipTranscodingStage,
    CosmosEmbed1EmbeddingStage,
    FilePartitioningStage,
    FixedStrideExtractorStage,
    ImageFilterStage,
    ImageNSFWFilterStage,
    ImageReaderStage,
    InternVideo2EmbeddingStage,
    MotionFilterStage,
    ModelScoreStage,
    MotionVectorDecodeStage,
    PreviewStage,
    SceneClipExtractionStage,
    TransNetV2ClipExtractionStage,
    VideoReader,
)
from curastream.compose.user_stage import ProcessingStage, Resources, UserStageError
from curastream.compose.writers import ClipWriterStage, ImageWriterStage

__all__ = [
    "Pipeline", "PipelineError", "ProcessingStage", "Resources", "UserStageError", "MissingPluginError",
    "register_embedder", "register_captioner", "ImageWriterStage", "ClipWriterStage",
    "FilePartitioningStage", "ImageReaderStage", "ImageFilterStage", "ImageNSFWFilterStage",
    "VideoReader", "FixedStrideExtractorStage", "SceneClipExtractionStage", "TransNetV2ClipExtractionStage",
    "ClipTranscodingStage", "MotionVectorDecodeStage", "MotionFilterStage", "ClipFrameExtractionStage",
    "PreviewStage", "InternVideo2EmbeddingStage", "CosmosEmbed1EmbeddingStage", "CaptionGenerationStage",
    "ModelScoreStage", "ClipDurationFilterStage", "pipeline_for",
]
