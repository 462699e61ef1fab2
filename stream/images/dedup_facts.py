"""Dedup's pass-1 results kept in the output (``_curastream/dedup_facts.parquet``), so a resume
decodes and scores only the inputs it has not seen (images.dedup, pass 1).

One row per analysed input, by source identity (images.inputs.source_identity, what resume
skips by), never by key: a key is only a name and a later listing may give another one. A row
holds the input's :class:`~curastream.images.dedup.Analysis` (JSON: a handful of values whose
types must come back exactly, floats included, which JSON's shortest repr does) and, for an
input that takes part in grouping, its dedup facts as typed columns.

A row is used again only when

- the file's ``fingerprint`` (the output-shaping settings plus what else changes pass 1's
  numbers: decoder and device kind) equals the run's. engine.run_settings already refuses a
  resume with other shaping settings; decoder and device are not among those, but a GPU decode
  may round differently, so they invalidate the facts instead of refusing the resume;
- the input's ``stamp`` is unchanged: size and modification time of a local file (of the
  container for a tar or Parquet member), the listed size otherwise (a URL: nothing better is
  known without asking the server).

Transient failures (a timeout) are not kept: the resume tries such inputs again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from curastream.engine.columns import column
from curastream.engine.lock import MARK_DIR
from curastream.engine.run_settings import shaping_settings
from curastream.engine.storage import Storage
from curastream.images.dedup import Analysis, DedupFacts
from curastream.images.inputs import ImageInput, source_identity
from curastream.writers.rejects import is_transient_reason

log = logging.getLogger(__name__)

FACTS_NAME = f"{MARK_DIR}/dedup_facts.parquet"
FORMAT = "curastream-dedup-facts/1"

SCHEMA = pa.schema([
    pa.field("identity", pa.string()),
    pa.field("stamp", pa.string()),
    pa.field("analysis", pa.string()),
    pa.field("phash", pa.uint64()),
    pa.field("pixels", pa.int64()),
    pa.field("sharpness", pa.float64()),
    pa.field("nbytes", pa.int64()),
], metadata={"format": FORMAT})


def fingerprint(cfg, device_kind: str) -> str:
    doc = {"settings": shaping_settings(cfg.to_dict()), "decoder": getattr(cfg, "decoder", None),
           "device": device_kind}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def stamp(inp: ImageInput) -> str:
    if "://" not in inp.source or inp.source.startswith("file://"):
        path = inp.source.removeprefix("file://")
        try:
            st = os.stat(path)
            return f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return "missing"
    return f"{inp.size}"


def save(storage: Storage, fp: str, inputs: list[ImageInput], analysed: dict[str, Analysis],
         facts: list[DedupFacts]) -> int:
    """Commit pass 1's results for ``inputs`` (keyed by their current keys) atomically."""
    by_key = {f.key: f for f in facts}
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    for inp in sorted(inputs, key=lambda i: source_identity(i.source, i.member)):
        a = analysed.get(inp.key)
        if a is None or (a.reject is not None and is_transient_reason(a.reject[1])):
            continue
        f = by_key.get(inp.key)
        cols["identity"].append(source_identity(inp.source, inp.member))
        cols["stamp"].append(stamp(inp))
        cols["analysis"].append(json.dumps([list(a.values) if a.values is not None else None, a.reencode,
                                            list(a.reject) if a.reject is not None else None]))
        cols["phash"].append(f.phash if f else None)
        cols["pixels"].append(f.pixels if f else None)
        cols["sharpness"].append(f.sharpness if f else None)
        cols["nbytes"].append(f.nbytes if f else None)
    # engine.columns, not pa.table(dict): that asks pandas whether the dict is a DataFrame,
    # importing it (~0.5 s and 100 MB an image run otherwise never pays)
    schema = SCHEMA.with_metadata({"format": FORMAT, "fingerprint": fp})
    t = pa.Table.from_arrays([column(cols[f.name], f.type) for f in schema], schema=schema)
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    storage.write_atomic(FACTS_NAME, buf.getvalue(), rows=t.num_rows)
    return t.num_rows


def adopt(storage: Storage) -> None:
    """A resume with nothing left to analyse keeps the earlier run's file: into this run's
    index, as if written now."""
    if storage.owns(FACTS_NAME) and storage.exists(FACTS_NAME):
        rows = pq.ParquetFile(io.BytesIO(storage.read_bytes(FACTS_NAME))).metadata.num_rows
        storage.adopt(FACTS_NAME, rows=rows)


def load(storage: Storage, fp: str) -> dict[str, tuple[str, Analysis, dict[str, Any] | None]]:
    """identity -> (stamp, Analysis, fact fields or None); empty when there is no usable file."""
    if not (storage.owns(FACTS_NAME) and storage.exists(FACTS_NAME)):
        return {}
    try:
        t = pq.read_table(io.BytesIO(storage.read_bytes(FACTS_NAME)))
    except Exception as e:  # noqa: BLE001 - a damaged file only costs the work it saved
        log.warning("dedup: ignoring unreadable %s (%s: %s)", FACTS_NAME, type(e).__name__, e)
        return {}
    meta = t.schema.metadata or {}
    if meta.get(b"format") != FORMAT.encode() or meta.get(b"fingerprint") != fp.encode():
        log.info("dedup: the saved analysis was made with other settings; analysing every input again")
        return {}
    out = {}
    for r in t.to_pylist():
        values, reencode, reject = json.loads(r["analysis"])
        a = Analysis(tuple(values) if values is not None else None, reencode,
                     tuple(reject) if reject is not None else None)
        fact = None if r["phash"] is None else {k: r[k] for k in ("phash", "pixels", "sharpness", "nbytes")}
        out[r["identity"]] = (r["stamp"], a, fact)
    return out


def reuse(saved: dict, inputs: list[ImageInput]) -> tuple[list[ImageInput], dict[str, Analysis], list[DedupFacts]]:
    """Split ``inputs`` into those to analyse and the saved results of the rest, under the
    inputs' current keys."""
    todo: list[ImageInput] = []
    analysed: dict[str, Analysis] = {}
    facts: list[DedupFacts] = []
    for inp in inputs:
        hit = saved.get(source_identity(inp.source, inp.member))
        if hit is None or hit[0] != stamp(inp):
            todo.append(inp)
            continue
        _, a, fact = hit
        analysed[inp.key] = a
        if fact is not None:
            facts.append(DedupFacts(inp.key, **fact))
    return todo, analysed, facts
