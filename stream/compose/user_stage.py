"""Stages users write: declared columns and ``process(pyarrow.RecordBatch) -> pyarrow.RecordBatch``.

A user stage sees Arrow, never our :class:`~curastream.engine.batch.Batch`: the rows still in
the run (rejected rows pass it by, untouched) and only the columns it declares, so a stage that
reads an undeclared column fails on its first batch instead of depending on what happened to
be there. It may add its declared output columns and may drop rows (a filter); a dropped row is
rejected with the stage's name as the reason, recorded like any other reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from curastream.engine.batch import Batch
from curastream.engine.pipeline import Stage

__all__ = ["ProcessingStage", "Resources", "UserStageError"]


class UserStageError(ValueError):
    """A user stage is declared or behaves against its contract (named in the message)."""


@dataclass(frozen=True)
class Resources:
    """What one copy of a stage needs. ``cpus`` is the number of threads the engine runs its
    ``process`` on (results still leave in input order); ``gpus`` is recorded for placement
    (the thread engine runs every stage in this process)."""

    cpus: float = 1.0
    gpus: float = 0.0


class ProcessingStage:
    """Base class for a stage of your own (the name and shape of NeMo Curator's).

    ``inputs``: the columns ``process`` reads (``key`` is always there). ``outputs``: the
    columns it adds, ``{name: pyarrow type}``. ``process`` returns the batch with the outputs
    filled in, or fewer rows to filter. ``setup``/``teardown`` run once, in the stage's thread.
    """

    name: str = ""
    inputs: tuple[str, ...] = ()
    outputs: Mapping[str, pa.DataType] = {}
    resources: Resources = Resources()

    def setup(self) -> None:
        """Load what ``process`` needs (a model, a lookup table)."""

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what ``setup`` took."""


def _declared(stage: Any, attr: str) -> Any:
    v = getattr(stage, attr, None)
    return v() if callable(v) else v  # Curator declares inputs()/outputs() as methods


def stage_name(stage: Any) -> str:
    return getattr(stage, "name", "") or type(stage).__name__


def is_user_stage(stage: Any) -> bool:
    return isinstance(stage, ProcessingStage) or (callable(getattr(stage, "process", None))
                                                  and hasattr(stage, "outputs") and hasattr(stage, "inputs"))


def declared_inputs(stage: Any) -> tuple[str, ...]:
    v = _declared(stage, "inputs") or ()
    if isinstance(v, str):
        v = (v,)
    return tuple(v)


def declared_outputs(stage: Any) -> list[pa.Field]:
    v = _declared(stage, "outputs") or {}
    items = v.items() if isinstance(v, Mapping) else [(f.name, f.type) for f in v]
    fields = []
    for name, typ in items:
        if not isinstance(typ, pa.DataType):
            raise UserStageError(f"stage {stage_name(stage)!r}: output {name!r} needs a pyarrow type, got {typ!r}")
        fields.append(pa.field(name, typ))
    return fields


class UserStageAdapter(Stage):
    """Runs a user stage as one of the engine's: same thread, queues and ordering as ours."""

    def __init__(self, user: Any, fields: list[pa.Field]):
        self.user = user
        self.name = stage_name(user)
        self.fields = fields
        self.reads = ("image_id", *[c for c in declared_inputs(user) if c != "image_id"])
        self.requires = self.reads + ("status",)
        self.provides = (*[f.name for f in fields], "status", "reject_stage", "reject_reason")
        res = getattr(user, "resources", None) or Resources()
        self.workers = max(1, int(getattr(res, "cpus", 1) or 1))

    def open(self) -> None:
        setup = getattr(self.user, "setup", None)
        if callable(setup):
            setup()

    def close(self) -> None:
        teardown = getattr(self.user, "teardown", None)
        if callable(teardown):
            teardown()

    def process(self, b: Batch) -> Batch:
        status = b.values("status")
        ok = np.fromiter((s == "ok" for s in status), dtype=bool, count=b.num_rows)
        if not ok.any():
            return b
        view = b.to_arrow(columns=list(self.reads))
        if not ok.all():
            view = view.filter(pa.array(ok))
        out = self.user.process(view)
        if isinstance(out, pa.Table):
            out = out.combine_chunks().to_batches()[0] if out.num_rows else pa.RecordBatch.from_pylist([], out.schema)
        if not isinstance(out, pa.RecordBatch):
            raise UserStageError(f"stage {self.name!r}: process() returned {type(out).__name__}, not a RecordBatch")
        return self._merge(b, view, out, np.flatnonzero(ok))

    def _merge(self, b: Batch, view: pa.RecordBatch, out: pa.RecordBatch, ok_idx: np.ndarray) -> Batch:
        known = set(self.reads) | {f.name for f in self.fields}
        extra = [c for c in out.schema.names if c not in known]
        if extra:
            raise UserStageError(f"stage {self.name!r} returned columns {extra} it does not declare in outputs")
        missing = [f.name for f in self.fields if f.name not in out.schema.names]
        if missing:
            raise UserStageError(f"stage {self.name!r} did not return its output columns {missing}")
        # Which input row each output row is: by key when the stage returns keys (it may
        # reorder or drop), else by position (then it must keep every row).
        if "image_id" in out.schema.names:
            place = {k: j for j, k in enumerate(view.column("image_id").to_pylist())}
            try:
                rows = [ok_idx[place[k]] for k in out.column("image_id").to_pylist()]
            except KeyError as e:
                raise UserStageError(f"stage {self.name!r} returned a key it was not given: {e.args[0]!r}") from None
        elif out.num_rows == view.num_rows:
            rows = list(ok_idx)
        else:
            raise UserStageError(f"stage {self.name!r} returned {out.num_rows} of {view.num_rows} rows without "
                                 "an 'image_id' column: keep 'image_id' to filter rows")
        cols: dict[str, list] = {}
        for f in self.fields:
            try:
                arr = out.column(f.name).cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise UserStageError(f"stage {self.name!r}: column {f.name!r} is {out.column(f.name).type}, "
                                     f"declared {f.type}: {e}") from None
            col = list(b.values(f.name)) if f.name in b else [None] * b.num_rows
            for i, v in zip(rows, arr.to_pylist()):
                col[i] = v
            cols[f.name] = col
        kept = {int(i) for i in rows}
        dropped = [int(i) for i in ok_idx if int(i) not in kept]
        if dropped:
            status, stage, reason = (list(b.values(c)) for c in ("status", "reject_stage", "reject_reason"))
            for i in dropped:
                status[i], stage[i], reason[i] = "rejected", self.name, f"filtered: dropped by stage {self.name!r}"
            cols.update(status=status, reject_stage=stage, reject_reason=reason)
        return b.with_columns(cols) if cols else b
