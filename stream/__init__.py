"""curastream: streaming curation of images and videos into training data.

The public API is imported lazily so ``import curastream`` stays cheap (no DALI, no PyAV).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "ImageRunConfig": "config",
    "ImageFilters": "config",
    "VideoRunConfig": "config",
    "run_images": "images.pipeline",
    "stream_images": "api",  # takes folders/globs like the runs (api.py)
    "run_videos": "videos.pipeline",
    "stream_videos": "api",  # takes folders/globs like the runs (api.py)
    "resolve_device": "engine.device",
}
# The composed form (Curator's Pipeline / add_stage / run): every name curastream.compose exports.
_LAZY.update({name: "compose" for name in (
    "Pipeline", "PipelineError", "ProcessingStage", "Resources", "UserStageError", "MissingPluginError",
    "register_embedder", "register_captioner", "ImageWriterStage", "ClipWriterStage",
    "FilePartitioningStage", "ImageReaderStage", "ImageFilterStage", "ImageNSFWFilterStage",
    "VideoReader", "FixedStrideExtractorStage", "SceneClipExtractionStage", "TransNetV2ClipExtractionStage",
    "ClipTranscodingStage", "MotionVectorDecodeStage", "MotionFilterStage", "ClipFrameExtractionStage",
    "PreviewStage", "InternVideo2EmbeddingStage", "CosmosEmbed1EmbeddingStage", "CaptionGenerationStage",
    "ModelScoreStage", "ClipDurationFilterStage", "pipeline_for",
)})

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'curastream' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)
