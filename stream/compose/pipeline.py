"""``Pipeline(name=..., description=...)``, ``add_stage(...)``, ``run()``: NeMo Curator's shape,
run on our streaming engine (threads joined by bounded queues, resume, rejects, index).

A composition is checked when it is built (``build()``, which ``run()`` calls first): the
stages belong to one medium, in an order the engine can run, every column a user stage reads
is made by an earlier stage, and every plug-in the writer names is registered. Nothing is read
or written before that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curastream.config import ImageFilters, ImageRunConfig
from curastream.engine.pipeline import PipelineError
from curastream.engine.schemas import IMAGE_SCHEMA, MODEL_SCORE_COLUMNS
from curastream.engine.stats import RunStats
from curastream.compose import stages as S
from curastream.compose.user_stage import (UserStageAdapter, declared_inputs, declared_outputs, is_user_stage,
                                           stage_name)
from curastream.compose.writers import ClipWriterStage, ImageWriterStage

__all__ = ["Pipeline", "PipelineError"]

# No filtering unless an ImageFilterStage says so (a Curator reader -> writer pipeline keeps
# everything it can read); ImageFilterStage() brings the CLI's defaults.
NO_FILTERS = dict(min_resolution=None, max_aspect=None, dedup=False)


@dataclass
class _Plan:
    """A built pipeline: ``config`` is the run config it runs (the CLI's for the same settings)."""

    medium: str
    run: Any  # () -> RunStats
    summary: list[str] = field(default_factory=list)
    config: Any = None


class Pipeline:
    def __init__(self, name: str = "pipeline", description: str = "", stages: list[Any] | None = None):
        self.name = name
        self.description = description
        self.stages: list[Any] = []
        for st in stages or []:
            self.add_stage(st)

    def add_stage(self, stage: Any) -> "Pipeline":
        if isinstance(stage, type):
            raise PipelineError(f"add_stage({stage.__name__}): pass an instance, e.g. {stage.__name__}(...)")
        if not (isinstance(stage, (S.BuiltinStage, ImageWriterStage, ClipWriterStage)) or is_user_stage(stage)):
            raise PipelineError(f"add_stage: {type(stage).__name__} is not a stage (a built-in one, or a "
                                "ProcessingStage with inputs, outputs and process())")
        self.stages.append(stage)
        return self

    def describe(self) -> str:
        """The name, then one line per stage: a built-in stage as the call that makes it."""
        return "\n".join([f"{self.name}: {self.description}".rstrip(": "),
                          *(f"  {i}. {_shown(s)}" for i, s in enumerate(self.stages))])

    __repr__ = describe

    # -- build ----------------------------------------------------------------------------------
    def build(self) -> _Plan:
        if not self.stages:
            raise PipelineError(f"pipeline {self.name!r} has no stages")
        media = {getattr(s, "medium", "") for s in self.stages} - {""}
        if len(media) != 1:
            raise PipelineError(f"pipeline {self.name!r} mixes image and video stages" if media else
                                f"pipeline {self.name!r} has no reader or writer: add ImageReaderStage/"
                                "ImageWriterStage or VideoReader/ClipWriterStage")
        writer = self.stages[-1]
        if not isinstance(writer, (ImageWriterStage, ClipWriterStage)):
            want = "ImageWriterStage" if media == {"images"} else "ClipWriterStage"
            raise PipelineError(f"the last stage of {self.name!r} must be a {want} (got {stage_name(writer)})")
        writers = [s for s in self.stages[:-1] if isinstance(s, (ImageWriterStage, ClipWriterStage))]
        if writers:
            raise PipelineError("only one writer, as the last stage")
        return self._build_images(writer) if media == {"images"} else self._build_videos(writer)

    def _build_images(self, writer: ImageWriterStage) -> _Plan:
        from curastream.compose.image_run import available_columns, run_composed_images
        from curastream.images.pipeline import run_images

        body = self.stages[:-1]
        parts = [s for s in body if isinstance(s, S.FilePartitioningStage)]
        readers = [s for s in body if isinstance(s, S.ImageReaderStage)]
        if len(readers) != 1 or len(parts) > 1:
            raise PipelineError("an image pipeline reads once: one ImageReaderStage (after at most one "
                                f"FilePartitioningStage); got {len(readers)} readers, {len(parts)} partitionings")
        reader = readers[0]
        head = body.index(reader)
        if [s for s in body[:head] if s not in parts] or [s for s in body[head:] if s in parts]:
            raise PipelineError("FilePartitioningStage, then ImageReaderStage, come first")
        sources = parts[0].file_paths if parts else (reader.file_paths or [])
        listing = parts[0].settings if parts else {}
        if not (sources or listing.get("files_from") or listing.get("url_list")):
            raise PipelineError("no input: add FilePartitioningStage(file_paths=...) before ImageReaderStage")
        filt = [s for s in body if isinstance(s, S.ImageFilterStage)]
        if len(filt) > 1:
            raise PipelineError("one ImageFilterStage per pipeline (it holds every threshold)")
        nsfw = [s for s in body if isinstance(s, S.ImageNSFWFilterStage)]
        if len(nsfw) > 1:
            raise PipelineError("one ImageNSFWFilterStage per pipeline")
        model_stages = [s for s in body if isinstance(s, (S.ImageNSFWFilterStage, S.ModelScoreStage))]
        models = {"models": ["nsfw" if isinstance(s, S.ImageNSFWFilterStage) else s.model for s in model_stages],
                  "max_nsfw": nsfw[0].score_threshold if nsfw else None}
        options = writer.storage_options
        if options is None and parts:
            options = parts[0].storage_options
        cfg = ImageRunConfig(
            sources=list(sources), **models, **listing, **reader.settings, batch_size=reader.batch_size,
            workers=reader.workers, decoder=reader.decoder, device=reader.device, max_pixels=reader.max_pixels,
            filters=filt[0].filters if filt else ImageFilters(**NO_FILTERS), storage_options=options,
            **{**writer.settings, "verbose": writer.settings["verbose"] or reader.verbose})
        cfg.validate()
        middle: list[Any] = []
        user_fields: list[pa.Field] = []
        identity: list[str] = []
        for st in body[head + 1:]:
            if isinstance(st, S.ImageFilterStage):
                middle.append("filter")
                continue
            if isinstance(st, (S.ImageNSFWFilterStage, S.ModelScoreStage)):
                if "models" not in middle:  # every model runs where the first model stage stands
                    middle.append("models")
                continue
            if isinstance(st, S.BuiltinStage):
                raise PipelineError(f"{st.name} belongs before the reader or is not an image stage")
            fields = declared_outputs(st)
            name = stage_name(st)
            taken = set(IMAGE_SCHEMA.names) | set(MODEL_SCORE_COLUMNS) | {f.name for f in user_fields}
            clash = [f.name for f in fields if f.name in taken]
            if clash:
                raise PipelineError(f"stage {name!r} declares outputs {clash}, which an earlier or built-in stage "
                                    "already makes: give them new names")
            have = available_columns(cfg, middle, [f.name for f in user_fields])
            missing = [c for c in declared_inputs(st) if c not in have]
            if missing:
                raise PipelineError(f"stage {name!r} reads {missing}, which no earlier stage makes; "
                                    f"columns here: {sorted(have)}")
            middle.append(lambda st=st, fields=fields: UserStageAdapter(st, fields))
            user_fields += fields
            identity.append(f"{type(st).__module__}.{type(st).__qualname__}:{name}")
        ident = {"user_stages": identity} if identity else None
        exts = parts[0].file_extensions if parts else None
        # The CLI's order (filter, then models) and nothing of the composition's own: the run is
        # run_images' own, which also runs on Ray.
        plain = not user_fields and not exts and middle in (["filter"], ["filter", "models"])
        if cfg.runner == "ray" and not plain:
            raise PipelineError("runner='ray' runs the CLI's stages only: an ImageFilterStage, then any model "
                                "stages, and no user stages or file_extensions")
        run = (lambda: run_images(cfg)) if plain else (
            lambda: run_composed_images(cfg, middle, user_fields, ident, exts))
        return _Plan("images", run, [stage_name(s) for s in self.stages], cfg)

    def _build_videos(self, writer: ClipWriterStage) -> _Plan:
        from curastream.compose.video_run import run_composed_videos, video_config

        body = self.stages[:-1]
        if not body or not isinstance(body[0], S.VideoReader) or any(isinstance(s, S.VideoReader) for s in body[1:]):
            raise PipelineError("a video pipeline starts with one VideoReader(input_video_path=...)")
        users = [stage_name(s) for s in body if not isinstance(s, S.BuiltinStage)]
        if users:
            raise PipelineError(f"stages {users}: user stages run in image pipelines; a video pipeline takes the "
                                "built-in stages in this version")
        splits = [s for s in body if isinstance(s, (S.FixedStrideExtractorStage, S.SceneClipExtractionStage))]
        if len(splits) > 1:
            raise PipelineError("one splitting stage per pipeline")
        cfg = video_config(body[0], body[1:], writer)
        cfg.validate()
        return _Plan("videos", lambda: run_composed_videos(cfg), [stage_name(s) for s in self.stages], cfg)

    # -- run ------------------------------------------------------------------------------------
    def run(self, executor: Any = None) -> RunStats:
        """Build, then run to the end on the streaming engine; returns the run's stats.
        ``executor`` is accepted for Curator's signature: our engine is the executor."""
        return self.build().run()


def _shown(stage: Any) -> str:
    return repr(stage) if isinstance(stage, (S.BuiltinStage, ImageWriterStage, ClipWriterStage)) else stage_name(stage)
