"""What an interrupted image run already did, read back from its output: the sources done, the
keys in use, the next shard index, the dedup index and the rejects, because a resume must skip
exactly what was committed, rebuild what was cut short and give a new input never a key an
earlier run gave to another source.
"""

from __future__ import annotations

import dataclasses
import io
from typing import NamedTuple

import pyarrow.parquet as pq

from curastream.engine.storage import Storage
from curastream.images.inputs import ImageInput, sha8, source_identity, with_suffix
from curastream.kernels.phash import NearDuplicateIndex
from curastream.writers.image_shards import read_committed_shards
from curastream.writers.rejects import read_rejects


def load_resume_state(storage: Storage, dedup_distance: int) -> ResumeState:
    """What an interrupted run already committed: done sources, keys in use, next shard index,
    dedup state, rejects."""
    stems = read_committed_shards(storage)
    done: set[str] = set()
    keys: set[str] = set()
    seen = NearDuplicateIndex(dedup_distance)
    for stem in stems:
        t = pq.read_table(io.BytesIO(storage.read_bytes(f"{stem}.parquet")),
                          columns=["image_id", "original_path", "phash"])
        rows = t.num_rows
        for key, origin, h in zip(t.column("image_id").to_pylist(), t.column("original_path").to_pylist(),
                                  t.column("phash").to_pylist()):
            done.add(origin)
            keys.add(key.lower())
            if h is not None:
                seen.add(h, key)
        storage.adopt(f"{stem}.tar", rows=rows)
        storage.adopt(f"{stem}.parquet", rows=rows)
    # A tar without its Parquet was cut short between the two commits: rebuild it.
    committed = {f"{s}.tar" for s in stems}
    for rel in storage.list_files():
        # only a tar this tool wrote: a user's images-*.tar beside our shards is not ours to delete
        if (rel.startswith("images-") and rel.endswith(".tar") and "/" not in rel and rel not in committed
                and storage.owns(rel)):
            storage.delete(rel)
    # A transient reject (store unreachable, a timeout) is not done: it is read again, and its
    # row goes, so that a retry that succeeds leaves no stale reject (one that fails again
    # writes a new row).
    rejects = [r for r in read_rejects(storage) if not r["transient"]]
    for r in rejects:
        done.add(source_identity(r["source"], r.get("source_member")))
        if r.get("image_id"):
            keys.add(r["image_id"].lower())
    next_index = 0
    if stems:
        next_index = int(stems[-1].rsplit("-", 1)[1]) + 1
    return ResumeState(done, keys, next_index, seen, rejects)


class ResumeState(NamedTuple):
    done: set[str]  # source identities (shards' original_path) written or rejected for good
    keys: set[str]  # ids in use (lowercased): a new input may not take one
    next_index: int
    seen: NearDuplicateIndex
    rejects: list[dict]


def unclash_keys(inputs: list[ImageInput], state: ResumeState) -> list[ImageInput]:
    """Inputs not done whose key an earlier run gave to another source (day2/IMG_1.jpg after
    day1/IMG_1.jpg) get the listing's unique-key suffix, from their identity: same result on
    every resume."""
    out = []
    for i in inputs:
        ident = source_identity(i.source, i.member)
        if ident not in state.done and i.key.lower() in state.keys:
            i = dataclasses.replace(i, key=with_suffix(i.key, sha8(ident)))
        out.append(i)
    return out
