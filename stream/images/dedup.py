"""Near-duplicate removal that keeps the best copy: an analysis pass decides every group first.

Why two passes. Shards are written as the run streams, so a copy already in a shard cannot be
taken back when a better copy of it turns up later in the input. Holding group members back
until their group is decided is no way out: nothing says a group is complete before the last
input is read, so every item would wait with its bytes. So with dedup on, the run reads its
inputs twice:

1. the analysis pass (:func:`analyse`) runs the usual decode and score stages over every input
   and keeps, per input, only the few values the run needs later (:class:`Analysis`: header
   facts, scores, pHash, the pass-through decision, or the reject) - never pixels. It then
   decides the groups (:func:`decide`).
2. the write pass reads the bytes again and, instead of decoding and scoring, takes the
   values from pass 1 (:class:`AnalysedStage`); the filter stage rejects each loser naming the
   kept key, and the encode stage and the writer run as usual.

A cheap pre-pass of its own (a 1/8-scale grayscale decode for the pHash alone) was tried first:
libjpeg-turbo's entropy decoding is the bulk of a scaled decode, so it cost as much as the
run's own decode, ~+90% CPU on real photos. Reusing pass 1's work, the second read of the bytes
is what dedup costs (a second download for remote inputs).

The order, best first: more pixels (width x height), then higher ranking sharpness - the
Laplacian variance of the 256 px analysis view, which sees finer blur than the 64 px
``sharpness`` score (made not to depend on resolution; a blur well under one view pixel, 2 px
on a 4000 px photo, can go unseen by both) - then more file bytes, then the smaller key. It is a total order, so the result does not depend on input
order, batch size or worker count. Groups form greedily in that order: an item within
``dedup_distance`` bits of an already kept item is a duplicate of the best such item, else it
is kept (:func:`decide`, by sorting and whole-array banding in images.near_groups: a million
inputs in seconds). Inputs rejected for any other reason (unreadable, undecodable, below a
threshold) take no part, so a kept copy always passes the filters. A resume decides over all
inputs, done ones included, so it decides the same groups; pass 1's results of the inputs an
earlier run analysed are read back from the output (images.dedup_facts), not computed again.

Limits: a kept copy that then fails in the encode stage (rare: a re-encode running out of
memory) leaves its duplicates rejected, naming it. An input whose bytes change between the
passes is judged on pass 1's values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from curastream.config import ImageFilters
from curastream.engine.batch import Batch
from curastream.engine.pipeline import Stage
from curastream.engine.schemas import IMAGE_SCORE_COLUMNS
from curastream.images.near_groups import winners
from curastream.images.probe import probe_image
from curastream.images.stages import FILTER_COLUMNS, filter_reason

try:
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is installed with the project
    cv2 = None

# What pass 1 hands pass 2, in this order (plus the pass-through decision).
ANALYSED_COLUMNS = ("source_format", "width", "height", "exif_orientation") + IMAGE_SCORE_COLUMNS + ("phash",)


@dataclass(frozen=True)
class DedupFacts:
    """What the plan knows of one input; ``rank`` sorts best first."""

    key: str
    phash: int
    pixels: int
    sharpness: float
    nbytes: int

    @property
    def rank(self) -> tuple:
        return (-self.pixels, -self.sharpness, -self.nbytes, self.key)


@dataclass
class DedupPlan:
    """``duplicate_of[key]`` is the kept key for every input that loses to a better copy."""

    distance: int
    duplicate_of: dict[str, str] = field(default_factory=dict)
    planned: int = 0

    def reason(self, key: str) -> str | None:
        kept = self.duplicate_of.get(key)
        if kept is None:
            return None
        return f"near_duplicate: pHash within {self.distance} bits of {kept}"


def decide(facts: Iterable[DedupFacts], distance: int) -> DedupPlan:
    """Greedy grouping in rank order (see the module docstring), by images.near_groups."""
    facts = list(facts)
    plan = DedupPlan(distance, planned=len(facts))
    if not facts:
        return plan
    order = rank_order(facts)
    keys = [facts[i].key for i in order]
    win = winners(np.fromiter((facts[i].phash for i in order), dtype=np.uint64, count=len(facts)), distance)
    for j in np.flatnonzero(win >= 0).tolist():
        plan.duplicate_of[keys[j]] = keys[int(win[j])]
    return plan


def rank_order(facts: list[DedupFacts]) -> list[int]:
    """Indices of ``facts`` sorted by :attr:`DedupFacts.rank`, best first, sorted by NumPy."""
    keys = [f.key for f in facts]
    if any("\x00" in k for k in keys):  # NumPy's text type drops trailing NULs: sort as Python does
        return sorted(range(len(facts)), key=lambda i: facts[i].rank)
    n = len(facts)
    pixels = np.fromiter((f.pixels for f in facts), dtype=np.int64, count=n)
    sharpness = np.fromiter((f.sharpness for f in facts), dtype=np.float64, count=n)
    nbytes = np.fromiter((f.nbytes for f in facts), dtype=np.int64, count=n)
    key_rank = np.empty(n, dtype=np.int64)
    key_rank[np.argsort(np.array(keys), kind="stable")] = np.arange(n)
    # lexsort: the last key is the primary one
    return np.lexsort((key_rank, -nbytes, -sharpness, -pixels)).tolist()


@dataclass(frozen=True)
class Analysis:
    """Pass 1's result for one input: ANALYSED_COLUMNS values and the re-encode reason, or the
    reject. A tuple inside, not a dict: a million of them must stay small."""

    values: tuple | None
    reencode: str | None = None
    reject: tuple[str, str] | None = None


def _rank_sharpness(rgb: np.ndarray) -> float:
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) if cv2 is not None else rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
    return float(lap.var(dtype=np.float64))


def analyse(batches: Iterable[Batch], filters: ImageFilters) -> tuple[dict[str, Analysis], DedupPlan]:
    """Pass 1: ``batches`` are the decode and score stages' output (with the analysis view and
    the pass-through decision beside them). Returns each key's Analysis and the plan."""
    analysed, facts = analyse_facts(batches, filters)
    return analysed, decide(facts, filters.dedup_distance)


def analyse_facts(batches: Iterable[Batch], filters: ImageFilters) -> tuple[dict[str, Analysis], list[DedupFacts]]:
    """Pass 1 without the decision: a distributed run analyses partitions apart and decides
    once over every partition's facts."""
    analysed: dict[str, Analysis] = {}
    facts: list[DedupFacts] = []
    for b in batches:
        cols = {name: b.values(name) for name in ("image_id", "status", "reject_stage", "reject_reason", "source_bytes")
                + ANALYSED_COLUMNS}
        views = b.sidecar.get("analysis") or [None] * b.num_rows
        reencode = b.sidecar.get("reencode") or [None] * b.num_rows
        for i in range(b.num_rows):
            key = cols["image_id"][i]
            if cols["status"][i] != "ok":
                analysed[key] = Analysis(None, reject=(cols["reject_stage"][i], cols["reject_reason"][i]))
                continue
            analysed[key] = Analysis(tuple(cols[c][i] for c in ANALYSED_COLUMNS), reencode[i])
            row = {c: cols[c][i] for c in FILTER_COLUMNS}
            if cols["phash"][i] is None or views[i] is None or filter_reason(row, filters) is not None:
                continue
            facts.append(DedupFacts(key, int(cols["phash"][i]), int(row["width"]) * int(row["height"]),
                                    _rank_sharpness(views[i]), int(cols["source_bytes"][i] or 0)))
    return analysed, facts


class AnalysedStage(Stage):
    """Pass 2's stand-in for decode + score: pass 1's values, and the header probe the encode
    stage needs (a header parse, no decode)."""

    name = "analysed"
    requires = ("image_id", "data", "status")
    provides = ANALYSED_COLUMNS + ("reject_stage", "reject_reason")

    def __init__(self, analysed: dict[str, Analysis], max_pixels: int):
        self.analysed = analysed
        self.max_pixels = max_pixels

    def process(self, b: Batch) -> Batch:
        e = b.edit()
        keys, data = b.values("image_id"), b.values("data")
        probes: list = [None] * b.num_rows
        reencode: list = [None] * b.num_rows
        for i in e.ok_rows():
            a = self.analysed.get(keys[i])
            if a is None:  # unreadable in pass 1, readable now: judge it next run
                e.reject(i, "read", "unstable_input: not readable in the analysis pass")
                continue
            if a.reject is not None:
                e.reject(i, *a.reject)
                continue
            for name, v in zip(ANALYSED_COLUMNS, a.values):
                e.set(name, i, v)
            reencode[i] = a.reencode
            # the encode stage reads the probe even for pass-through rows (EXIF orientation)
            probes[i] = probe_image(bytes(data[i]), max_pixels=self.max_pixels)
        return e.done(sidecar={"probe": probes, "reencode": reencode})
