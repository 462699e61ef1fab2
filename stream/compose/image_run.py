"""A composed image pipeline, run by ``run_images`` itself: same listing, Run harness (lock,
resume, rejects, index), two-pass dedup, shard writer and engine stages; the composition only
places its stages in the writing pass (``images.pipeline.Composed``). A test holds the CLI's
composition byte-equal to ``run_images``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curastream.config import ImageRunConfig
from curastream.engine.device import Device
from curastream.engine.pipeline import Stage
from curastream.engine.schemas import IMAGE_SCHEMA
from curastream.engine.stats import RunStats
from curastream.images.pipeline import Composed, run_images
from curastream.images.stages import SOURCE_COLUMNS, FilterStage, image_stages
from curastream.models.registry import make_models
from curastream.models.stage import with_model_columns

# The middle of a composition: "filter" (our thresholds and dedup), "models" (our model stage:
# NSFW and model plug-ins) or a factory of one user stage's engine adapter.
Middle = list[Any]


def arranged(middle: Middle):
    """The writing pass's stages (reading stages, filter, models, encode) in the composition's
    order: what the reader makes first, encode last, ``middle`` between."""
    def arrange(stages: list[Stage]) -> list[Stage]:
        k = next(i for i, st in enumerate(stages) if isinstance(st, FilterStage))
        head, ours = stages[:k], {"filter": [stages[k]], "models": stages[k + 1:-1]}
        out = list(head)
        for m in middle:
            out += ours[m] if isinstance(m, str) else [m()]
        return out + [stages[-1]]
    return arrange


def run_composed_images(cfg: ImageRunConfig, middle: Middle, user_fields: list[pa.Field],
                        identity: dict[str, Any] | None, file_extensions: list[str] | None) -> RunStats:
    return run_images(cfg, Composed(arrange=arranged(middle), fields=tuple(user_fields), identity=identity or {},
                                    extensions=tuple(e.lower() for e in file_extensions or ())))


def available_columns(cfg: ImageRunConfig, middle_before: Middle, user_provides: list[str]) -> set[str]:
    """Columns a stage placed after the reader and ``middle_before`` can read."""
    models = make_models(cfg.models) if "models" in middle_before else []
    built = image_stages(cfg, Device("cpu", None), None, encode=True, models=models,
                         schema=with_model_columns(IMAGE_SCHEMA, models))
    cols = set(SOURCE_COLUMNS) | set(built[0].provides) | set(built[1].provides)
    if "filter" in middle_before:
        cols |= set(built[2].provides)
    if "models" in middle_before:
        cols |= {c for st in built[3:-1] for c in st.provides}
    return cols | set(user_provides)
