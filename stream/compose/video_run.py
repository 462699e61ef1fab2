"""A composed video pipeline: the stages set a VideoRunConfig, which ``run_videos`` runs.

The video stages are one analysis decode feeding every kernel (videos/analyze.py), so Curator's
separate steps (frame extraction, motion decode, transcoding, filtering) are settings of that
one pass rather than engine stages of their own; plug-ins are found here by the names the
writer uses, and a missing one stops the run before any work.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from curastream.config import VideoRunConfig
from curastream.engine.names import printable
from curastream.engine.stats import RunStats
from curastream.compose.registry import MissingPluginError, captioner_for, embedder_for
from curastream.compose import stages as S
from curastream.compose.writers import ClipWriterStage
from curastream.videos.pipeline import _common_root, run_videos
from curastream.videos.sources import list_video_inputs

log = logging.getLogger(__name__)


def video_config(reader: S.VideoReader, middle: list[Any], writer: ClipWriterStage) -> VideoRunConfig:
    settings: dict[str, Any] = {"motion_filter": False}  # a composition filters only where it says so
    settings.update(reader.settings)
    for st in middle:
        settings.update(getattr(st, "settings", {}))
    settings.update(writer.settings)
    settings["models"] = [s.model for s in middle if isinstance(s, S.ModelScoreStage)]
    settings["previews"] = writer.settings["previews"] or any(isinstance(s, S.PreviewStage) for s in middle)
    settings["verbose"] = writer.settings["verbose"] or reader.verbose
    settings.update(_embedding(middle, writer))
    settings.update(_captions(middle, writer))
    options = writer.storage_options if writer.storage_options is not None else reader.storage_options
    cfg = VideoRunConfig(sources=list(reader.sources), storage_options=options, **settings)
    if reader.video_limit is not None:
        _limit(cfg, reader.video_limit)
    return cfg


def _embedding(middle: list[Any], writer: ClipWriterStage) -> dict[str, Any]:
    stage = next((s for s in middle if isinstance(s, S._EmbeddingStage)), None)
    if stage is None and not writer.generate_embeddings:
        return {"generate_embeddings": False}
    algorithm = stage.algorithm if stage is not None else writer.embedding_algorithm
    if stage is not None and writer.generate_embeddings and algorithm != writer.embedding_algorithm:
        raise ValueError(f"{stage.name} makes {algorithm!r} embeddings, but ClipWriterStage(embedding_algorithm="
                         f"{writer.embedding_algorithm!r}) stores another kind")
    fn = stage.embedder if stage is not None else None
    factory = stage.embedder_factory if stage is not None else None
    if writer.generate_embeddings is False:  # the stage's plug-in is configured, its output not written
        return {"generate_embeddings": False, "embedding_algorithm": algorithm, "embedder": fn,
                "embedder_factory": factory}
    if fn is None and factory is None:
        fn = embedder_for(algorithm)
    if fn is None and factory is None:
        raise MissingPluginError(
            f"ClipWriterStage(generate_embeddings=True, embedding_algorithm={algorithm!r}): no {algorithm} embedder "
            f"is registered; call curastream.register_embedder({algorithm!r}, fn) with fn(frames) -> vector")
    return {"generate_embeddings": True, "embedding_algorithm": algorithm, "embedder": fn,
            "embedder_factory": factory}


def _caption_names(stage: S.CaptionGenerationStage | None, writer: ClipWriterStage) -> list[str]:
    """The caption models recorded: the stage's model first, then the writer's others."""
    listed = writer.caption_models
    if stage is None or stage.model_variant is None or listed[:1] == [stage.model_variant]:
        return list(listed)
    return [stage.model_variant, *(m for m in listed if m != stage.model_variant)]


def _captions(middle: list[Any], writer: ClipWriterStage) -> dict[str, Any]:
    stage = next((s for s in middle if isinstance(s, S.CaptionGenerationStage)), None)
    if stage is None and not writer.generate_captions:
        return {"caption_models": []}  # Curator's writer emits caption keys only with generate_captions
    names = _caption_names(stage, writer)
    fn = stage.captioner if stage is not None else None
    factory = stage.captioner_factory if stage is not None else None
    if writer.generate_captions is False:  # names recorded, the stage's plug-in configured, nothing asked of it
        return {"caption_models": names, "captioner": fn, "captioner_factory": factory}
    if fn is None and factory is None:
        if not names:
            raise MissingPluginError("ClipWriterStage(generate_captions=True) names no caption model: pass "
                                     "caption_models=[name] and call curastream.register_captioner(name, fn)")
        fn = captioner_for(names[0])
        if fn is None:
            raise MissingPluginError(
                f"ClipWriterStage(generate_captions=True, caption_models=[{names[0]!r}]): no {names[0]} captioner "
                f"is registered; call curastream.register_captioner({names[0]!r}, fn) with fn(frames) -> str")
    if writer.enhanced_caption_models:
        log.info("enhanced_caption_models %s: caption enhancement is not part of this build; only %s captions "
                 "are written", writer.enhanced_caption_models, names[:1])
    return {"caption_models": names, "captioner": fn, "captioner_factory": factory}


def _limit(cfg: VideoRunConfig, n: int) -> None:
    """VideoReader(video_limit=N): the first N videos of the listing; the output layout stays
    relative to the root of all of them, so a later run without the limit extends it."""
    found = list_video_inputs(cfg.sources, storage_options=cfg.storage_options)
    if not found:
        raise FileNotFoundError("no videos found in " + ", ".join(map(printable, cfg.sources)))
    if cfg.input_path is None:
        root = _common_root([i.path for i in found])
        cfg.input_path = os.path.abspath(root) if "://" not in root else root
    cfg.sources = [i.path for i in found[:n]]


def run_composed_videos(cfg: VideoRunConfig) -> RunStats:
    return run_videos(cfg)
