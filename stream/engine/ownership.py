"""Which files in an output this tool wrote, so overwrite and resume delete only those.

An output may hold files that are not ours (a README, the user's photos when ``--output`` was
mistyped). Names cannot tell them apart (a user may call a file ``images-…-000000.tar``), so
ownership is recorded: every final name a run commits is journaled in ``_curastream/journal/``
*before* its temporary is created, so whatever a killed run left under a final or temporary name
is already known as ours. A finished run's ``index.json`` lists its files too (also an earlier
version's); once it is written and lists every owned file present, the journal is dropped and
the finished output holds exactly its dataset, the index being the record.

A name written for one item of a run (a video's clips, metas, previews and records) is journaled
with that item's key, ``[name, key]``: a resume finds what a killed run left of an item it does
again (:meth:`Ownership.files_of`) and removes it first, so an item rejected this time keeps none.

Local journals are one append-only file per run, a line per name. Object stores get no appends
and a PUT per clip would double the requests, so names are buffered and written as one segment
object per ``FLUSH_EVERY`` names, per lock heartbeat, and at the end. A run killed on an object
store can leave the files of its last unflushed segment (at most a heartbeat's worth) unowned:
later runs keep them as foreign, never delete them.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import threading
import time

from curastream.engine.lock import JOURNAL_DIR, MARK_DIR, is_control_file
from curastream.engine.run_index import INDEX_NAME
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

# Where the two layouts write (image shards at the root; ClipWriterStage folders). Used only for
# an output that has no record at all (an earlier version's interrupted run, a deleted index)
# and that the user resumes, i.e. says is ours: its temporaries and layout files are claimed.
LAYOUT_DIRS = frozenset({"clips", "filtered_clips", "previews", "metas", "iv2_embd", "ce1_embd",
                         "iv2_embd_parquet", "ce1_embd_parquet", "processed_videos", "processed_clip_chunks"})
# Run files: where this version writes them, and (root) where earlier versions did.
RUN_FILES = frozenset({f"{MARK_DIR}/rejects.parquet", f"{MARK_DIR}/summary.json", f"{MARK_DIR}/run.json",
                       f"{MARK_DIR}/dedup_facts.parquet"})
LEGACY_RUN_FILES = frozenset({"rejects.parquet", "summary.json"})
# A shard's Parquet (writers/image_shards.py), at the root: the commit point of a shard, so
# what an unrecorded run that the user resumes committed. A lone tar is not claimed by its name:
# a user's images-*.tar there must survive the resume.
_SHARD_PARQUET = re.compile(r"^images-[0-9a-f]{12,16}-\d{6}\.parquet$")
FLUSH_EVERY = 1000
INDEX_FORMAT = "curastream-index/"
# Exactly what storage._temp_name makes: ".tmp-<pid>-<8 hex>" at the end of the name. A user's
# "x.tmp-1.jpg" is not one.
_OUR_TEMP = re.compile(r"\.tmp-\d+-[0-9a-f]{8}$")


def read_index_files(storage: Storage) -> set[str] | None:
    """The files a curastream ``index.json`` at the root lists (with itself), or None."""
    try:
        doc = json.loads(storage.read_bytes(INDEX_NAME))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith(INDEX_FORMAT):
        return None
    files = {f["path"] for f in doc.get("files", []) if isinstance(f, dict) and isinstance(f.get("path"), str)}
    files.add(INDEX_NAME)
    return files


class Ownership:
    def __init__(self, storage: Storage, run_id: str):
        self.storage = storage
        self.run_id = run_id
        self.owned: set[str] = set()
        self.groups: dict[str, str] = {}  # name -> the key of the item it was written for
        self._lock = threading.Lock()
        self._pending: list[str | list[str]] = []
        self._seq = 0
        self._flushed_at = time.monotonic()
        self._fh = None
        self._load()

    def _load(self) -> None:
        st = self.storage
        for rel in st.list_files(JOURNAL_DIR):
            try:
                text = st.read_bytes(rel).decode("utf-8", "surrogateescape")
            except OSError:
                continue
            if rel.endswith(".json"):  # a segment, written whole
                try:
                    names = json.loads(text)
                except ValueError:
                    names = []
            else:  # the local append-only journal
                names = []
                for line in text.splitlines():
                    try:
                        names.append(json.loads(line))
                    except ValueError:
                        continue  # a line cut short by a kill
            for n in names:
                if isinstance(n, str):
                    self.owned.add(n)
                elif isinstance(n, list) and len(n) == 2 and all(isinstance(x, str) for x in n):
                    self.owned.add(n[0])
                    self.groups[n[0]] = n[1]
        from_index = read_index_files(st) or set()
        self._index_only = sorted(from_index - self.owned)
        self.owned |= from_index
        self.recorded = bool(self.owned)

    def carry_index(self) -> None:
        """Before a resume deletes index.json: copy what only it lists into the journal, or a
        kill before the new index would leave those files unowned."""
        if self._index_only:
            self._write_segment(self._index_only, tag="index")
            self._index_only = []

    # -- queries ----------------------------------------------------------------------------
    def owns(self, rel: str) -> bool:
        return rel in self.owned and not is_control_file(rel)

    def claims(self, rel: str) -> bool:
        """Owned; or, in an output with no record that is being resumed, a file of our layout
        (what an interrupted run of an earlier version left). Used to adopt files into the new
        index, never to delete by name."""
        if self.owns(rel):
            return True
        if self.recorded:
            return False
        return (rel in RUN_FILES or rel in LEGACY_RUN_FILES or bool(_SHARD_PARQUET.match(rel))
                or ("/" in rel and rel.split("/", 1)[0] in LAYOUT_DIRS))

    def is_ours_temp(self, rel: str) -> bool:
        """A temporary (exactly storage._temp_name's pattern) of a final name that is ours, or
        one in a folder we write into: the root, a layout folder, a folder of owned files (long
        names get a hashed temporary whose final name cannot be read back)."""
        m = _OUR_TEMP.search(posixpath.basename(rel))
        if not m:
            return False
        final = rel[: len(rel) - len(m.group(0))]
        if final in self.owned:
            return True
        folder = posixpath.dirname(rel)
        if not folder or folder == MARK_DIR or folder.split("/", 1)[0] in LAYOUT_DIRS:
            return True
        return any(posixpath.dirname(o) == folder for o in self.owned)

    def is_deletable(self, rel: str) -> bool:
        return self.owns(rel) or self.is_ours_temp(rel)

    def files_of(self, keys: set[str]) -> list[str]:
        """The owned names journaled for any of the item ``keys``."""
        with self._lock:
            return sorted(rel for rel, key in self.groups.items() if key in keys and self.owns(rel))

    # -- recording --------------------------------------------------------------------------
    def record(self, rel: str, group: str | None = None) -> None:
        """Called by Storage before a file's temporary is created; ``group``: the key of the
        item the file is written for, if any."""
        with self._lock:
            if rel in self.owned and (group is None or self.groups.get(rel) == group):
                return
            self.owned.add(rel)
            entry: str | list[str] = rel
            if group is not None:
                self.groups[rel] = group
                entry = [rel, group]
            if self.storage.is_local:
                if self._fh is None:
                    p = self.storage.path(f"{JOURNAL_DIR}/{self.run_id}.jsonl")
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    self._fh = open(p, "a", encoding="utf-8", errors="surrogateescape")
                # flushed to the OS per name: survives a kill of this process
                self._fh.write(json.dumps(entry) + "\n")
                self._fh.flush()
                return
            self._pending.append(entry)
            due = len(self._pending) >= FLUSH_EVERY
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            names, self._pending = self._pending, []
            if self._fh is not None:
                self._fh.flush()
        if names:
            self._write_segment(names)

    def _write_segment(self, names: list, tag: str | None = None) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
        rel = f"{JOURNAL_DIR}/{self.run_id}-{tag or f'{seq:06d}'}.json"
        data = json.dumps(names, indent=0).encode("utf-8", "surrogateescape")
        p = self.storage.path(rel)
        if self.storage.is_local:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            tmp = f"{p}.new"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        else:
            self.storage.fs.pipe_file(p, data)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    # -- clearing ---------------------------------------------------------------------------
    def forget_all(self) -> None:
        """After an overwrite removed every file we owned: start the record afresh."""
        self.close()
        for rel in self.storage.list_files(JOURNAL_DIR):
            self.storage.remove(rel)
        self.owned.clear()
        self.groups.clear()
        self.recorded = True  # an empty record now, not an unknown output

    def drop_journal_if_indexed(self) -> bool:
        """After index.json: when it lists every owned file still present, it is the record."""
        self.close()
        listed = read_index_files(self.storage)
        if listed is None:
            return False
        present = {r for r in self.storage.list_files() if not is_control_file(r)}
        if (self.owned & present) - listed:
            return False
        for rel in self.storage.list_files(JOURNAL_DIR):
            self.storage.remove(rel)
        return True
