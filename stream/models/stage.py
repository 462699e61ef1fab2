"""The model stage: one more stage of the engine's pipeline, in its own thread, so a model
scores one batch while the decode stage reads the next and the writer writes the last.

Models are loaded in :meth:`ModelStage.open`, once per stage (the stage's thread pool shares
them: onnxruntime sessions and torch modules in eval mode take concurrent calls). Pixels come
from a function the media side gives (images: the analysis view), so this module knows nothing
of images or videos.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from curastream.engine.batch import Batch, ok_rows
from curastream.engine.device import Device
from curastream.engine.pipeline import Stage
from curastream.models.contract import Model, model_device, run_batched

# (column, limit): reject a row whose score is above the limit, as a filter.
MaxLimits = Sequence[tuple[str, float]]


def model_columns(models: Sequence[Model]) -> list[str]:
    return [c for m in models for c in m.outputs]


def with_model_columns(schema: pa.Schema, models: Sequence[Model]) -> pa.Schema:
    """``schema`` plus a float32 field for each model output it does not declare yet."""
    for col in model_columns(models):
        if schema.get_field_index(col) < 0:
            schema = schema.append(pa.field(col, pa.float32()))
    return schema


def load_models(models: Sequence[Model], device: Device) -> None:
    for m in models:
        m.load(model_device(m, device))


class ModelStage(Stage):
    name = "model"
    requires = ("status",)

    def __init__(self, models: Sequence[Model], device: Device,
                 pixels: Callable[[Batch, list[int]], list[np.ndarray | None]],
                 schema: pa.Schema, max_limits: MaxLimits = ()):
        self.models = list(models)
        self.device = device
        self.pixels = pixels
        self.schema = schema
        self.max_limits = list(max_limits)
        self.provides = tuple(model_columns(self.models)) + ("status", "reject_stage", "reject_reason")

    def open(self) -> None:
        load_models(self.models, self.device)

    def process(self, b: Batch) -> Batch:
        if b.schema is not self.schema:
            # Plug-in outputs are declared in the run's schema, not the source's: re-type the batch.
            b = Batch(self.schema, b.records, b.sidecar, b.seq)
        rows = ok_rows(b)
        if not rows:
            return b
        got = self.pixels(b, rows)
        images: list[np.ndarray | None] = [None] * b.num_rows
        e = b.edit()
        for i in rows:
            images[i] = got[i]
            if got[i] is None:
                e.reject(i, "model", "no decoded pixels to score")
        for m in self.models:
            cols, errors = run_batched(m, images)
            for i, why in errors.items():
                e.reject(i, "model", why)
                images[i] = None  # later models skip a rejected row
            for name, col in cols.items():
                e.column(name)[:] = col
        for col, limit in self.max_limits:
            values = e.column(col)
            for i in e.ok_rows():
                v = values[i]
                if v is not None and v > limit:
                    e.reject(i, "filter", f"max_{col}: {v:.4g} > {limit}")
        return e.done()
