"""One output shared by the workers of a Curator pipeline: prepared once, recorded per worker,
indexed by whoever finishes.

Curator builds the stage where the pipeline is written (the driver) and runs a copy of it in each
worker. The driver's copy draws ``token`` (a run id), so every worker of one ``pipeline.run()``
carries the same token; a later run draws another. Worker steps, each under the output's lock
(engine/lock.py), held only for the step:

- ``open()``: the first worker of a token prepares the output as the CLI does (``on_existing``
  error / resume / overwrite, only files we wrote deleted, settings recorded and checked on
  resume, lone tars of a cut-short shard removed) and writes ``_curastream/curator.json`` with the
  token; its siblings find the token there and prepare nothing. Each worker then journals every
  file it commits (its own ownership journal), so a later overwrite or resume knows them as ours.
- ``finish(record)``: the worker writes ``_curastream/curator/<worker>.json`` (the files it
  committed with sha256 and rows, its rejects, its counts), then rewrites ``index.json`` and
  ``_curastream/rejects.parquet`` from every worker record present, plus any file of ours that no
  record lists (a worker killed before its teardown, a sibling still writing: read and hashed).
  A record is committed before its worker takes the lock to index, so the last worker to finish
  writes the complete index; ``finalize_output()`` does the same from the driver.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from curastream.engine.lock import MARK_DIR, OutputLock, OutputLockedError, is_control_file
from curastream.engine.output import prepare_output
from curastream.engine.ownership import Ownership
from curastream.engine.run_index import INDEX_NAME, write_run_index
from curastream.engine.run_settings import check_resume_settings, write_settings
from curastream.engine.storage import CommittedFile, Storage
from curastream.writers.image_shards import read_committed_shards
from curastream.writers.rejects import write_rejects

log = logging.getLogger(__name__)

MARKER_REL = f"{MARK_DIR}/curator.json"
RECORDS_DIR = f"{MARK_DIR}/curator"
LOCK_WAIT_S = 120.0  # siblings hold the lock for a listing and a few small writes


def new_token() -> str:
    return uuid.uuid4().hex[:16]


class SharedOutput:
    """A worker's handle on the output; ``settings`` shape the output (checked on resume)."""

    def __init__(self, output_dir: str, storage_options: dict | None, on_existing: str, token: str,
                 kind: str, settings: dict[str, Any]):
        self.output_dir = output_dir
        self.storage_options = storage_options
        self.on_existing = on_existing
        self.token = token
        self.kind = kind
        self.settings = settings
        self.worker = new_token()
        self.storage = Storage(output_dir, storage_options)
        self.ownership: Ownership | None = None
        self.resuming = False

    # -- the lock, shared by this run's workers in turn -------------------------------------
    def _locked(self) -> OutputLock:
        lock = OutputLock(self.storage, command=f"curastream.curator run {self.token}")
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                lock.acquire()
                return lock
            except OutputLockedError as e:
                # a sibling of this run holds it for a moment; anyone else is another run
                if self.token not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def open(self) -> bool:
        """Prepare the output if no sibling did; returns whether this run resumes."""
        lock = self._locked()
        try:
            own = Ownership(self.storage, lock.run_id)
            self.storage.owns = own.claims
            marker = self._read_json(MARKER_REL)
            if marker.get("token") == self.token:
                self.resuming = bool(marker.get("resuming"))
            else:
                if self.on_existing == "resume":
                    check_resume_settings(self.storage, self.kind, self.settings)
                self.storage.on_write = own.record
                self.resuming = prepare_output(self.storage, self.on_existing, own)
                if self.resuming:
                    self._drop_lone_tars()
                write_settings(self.storage, self.kind, self.settings)
                self._write_json(MARKER_REL, {"token": self.token, "resuming": self.resuming})
            own.close()
        finally:
            self.storage.on_write = None
            lock.release()
        # This worker's own journal: what it commits is ours before its temporary exists.
        self.ownership = Ownership(self.storage, f"curator-{self.worker}")
        self.storage.on_write = self.ownership.record
        self.storage.owns = self.ownership.claims
        return self.resuming

    def _drop_lone_tars(self) -> None:
        # A tar without its Parquet was cut short between a shard's two commits (the CLI's rule).
        committed = {f"{s}.tar" for s in read_committed_shards(self.storage)}
        for rel in self.storage.list_files():
            if (rel.startswith("images-") and rel.endswith(".tar") and "/" not in rel and rel not in committed
                    and self.storage.owns(rel)):
                self.storage.delete(rel)

    # -- the end of a worker ----------------------------------------------------------------
    def finish(self, record: dict[str, Any]) -> None:
        """Commit this worker's record, then the run's index and rejects from every record."""
        files = [c.to_dict() for c in self.storage.committed()]
        self._write_json(f"{RECORDS_DIR}/{self.worker}.json",
                         {"token": self.token, "finished_unix": time.time(), **record, "files": files})
        if self.ownership is not None:
            self.ownership.close()
        self.storage.on_write = None
        write_index(self.output_dir, self.storage_options, self.kind, self.settings, lock_token=self.token)

    def abort(self) -> None:
        if self.ownership is not None:
            self.ownership.close()
        self.storage.on_write = None

    # -- helpers ----------------------------------------------------------------------------
    def _read_json(self, rel: str) -> dict:
        try:
            doc = json.loads(self.storage.read_bytes(rel))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _write_json(self, rel: str, doc: dict) -> None:
        self.storage.write_atomic(rel, (json.dumps(doc, indent=2, default=str) + "\n").encode())


def write_index(output_dir: str, storage_options: dict | None, kind: str, settings: dict[str, Any],
                lock_token: str | None = None) -> dict[str, Any]:
    """``index.json`` and ``_curastream/rejects.parquet`` from every worker record in the output."""
    storage = Storage(output_dir, storage_options)
    shared = SharedOutput(output_dir, storage_options, "resume", lock_token or new_token(), kind, settings)
    shared.storage = storage
    lock = shared._locked()
    try:
        own = Ownership(storage, lock.run_id)
        storage.owns = own.claims
        storage.on_write = own.record
        present = set(storage.list_files())
        rejects: list[dict] = []
        totals: dict[str, Any] = {"workers": 0}
        records = []
        for rel in sorted(r for r in present if r.startswith(RECORDS_DIR + "/") and r.endswith(".json")):
            try:
                records.append(json.loads(storage.read_bytes(rel)))
            except (OSError, ValueError):
                continue
        # oldest first: a file a later run wrote again (a resumed video) keeps its latest sha256
        for rec in sorted(records, key=lambda r: r.get("finished_unix") or 0):
            totals["workers"] += 1
            for k, v in {**rec, **(rec.get("summary") or {})}.items():
                if k == "finished_unix":
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    totals[k] = totals.get(k, 0) + v
            rejects += rec.get("rejects") or []
            for f in rec.get("files") or []:
                if f.get("path") in present and f["path"] != INDEX_NAME:
                    # Storage has no public "record a file committed elsewhere" (hook noted in the
                    # report); adopt() would read every shard back to hash what the worker hashed.
                    storage._record(CommittedFile(**f))
        listed = {c.path for c in storage.committed()}
        for rel in sorted(present):
            # ours but in no record: a worker killed before its teardown, a sibling still running,
            # or the run's own small files (settings, marker, records). Part of the dataset all the same.
            if rel not in listed and rel != INDEX_NAME and not is_control_file(rel) and own.owns(rel):
                storage.adopt(rel)
        write_rejects(storage, rejects)
        doc = write_run_index(storage, kind, {**settings, "output": output_dir, "executor": "nemo_curator"},
                              totals, extra={"writer": "curastream.curator"})
        own.drop_journal_if_indexed()
        return doc
    finally:
        storage.on_write = None
        lock.release()


def finalize_output(output_dir: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Rewrite the index from the driver after ``pipeline.run()`` (workers that finished at the
    same instant may each have indexed before the other's record was there)."""
    storage = Storage(output_dir, storage_options)
    settings = json.loads(storage.read_bytes(f"{MARK_DIR}/run.json"))
    return write_index(output_dir, storage_options, settings["kind"], settings["settings"])
