"""ImageWriterStage layout: ``images-{hash}-{index:06d}.tar`` + one Parquet per tar (SPEC §1).

Shards are packed to exactly ``images_per_tar`` across batches (only a run's last shard may be
short) and named from content that does not depend on scheduling: 12 hex chars of sha256 over
the sorted keys of the run plus the writer configuration.

Commit order per shard: tar, then Parquet. A shard counts as done when its Parquet exists; on
resume a tar without its Parquet is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import time
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from curastream.engine.columns import table
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

CURATOR_COLUMNS = ("image_id", "tar_file", "member_name", "original_path", "metadata")


def image_extension(data: bytes | memoryview) -> str:
    """The member extension for stored image bytes, from their signature: WebDataset decoders
    pick the decoder by extension, so a WebP must not travel as ``.jpg``."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "jpg"


def shard_name_hash(keys: Iterable[str], config: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for k in sorted(keys):
        h.update(k.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()[:12]


def shard_stem(name_hash: str, index: int) -> str:
    return f"images-{name_hash}-{index:06d}"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    # Curator's member attributes: they make tars byte-reproducible.
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = 0o644
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


# The 512-byte ustar header tarfile writes for _tarinfo() in PAX format when no PAX record is
# needed, built from constant pieces: tarfile's general path (copy, field checks, one encode
# per field) cost ~0.25 ms per member, two members per image. Names that need a PAX record
# (non-ASCII, over 100 bytes) and sizes from 8 GiB go through tarfile; a test holds the bytes
# equal to tarfile's for both.
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_MODE_UID_GID = b"%07o\0" % 0o644 + b"%07o\0" % 0 + b"%07o\0" % 0
_MTIME = b"%011o\0" % 0
_AFTER_CHKSUM = tarfile.REGTYPE + b"\0" * 100 + tarfile.POSIX_MAGIC + b"\0" * (32 + 32 + 8 + 8 + 155 + 12)
_TAIL_SUM = 8 * ord(" ") + sum(_AFTER_CHKSUM)  # the checksum counts its own field as spaces
_MAX_SIZE = 8**11


def member_header(name: str, size: int) -> bytes:
    """The tar header block(s) for a regular member ``name`` of ``size`` bytes."""
    if name.isascii() and len(name) <= 100 and 0 <= size < _MAX_SIZE:
        raw = name.encode("ascii")
        head = raw + b"\0" * (100 - len(raw)) + _MODE_UID_GID + b"%011o\0" % size + _MTIME
        return head + b"%06o\0 " % (sum(head) + _TAIL_SUM) + _AFTER_CHKSUM
    return _tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


class _OpenShard:
    def __init__(self, storage: Storage, stem: str):
        self.stem = stem
        self.tar_rel = f"{stem}.tar"
        self._cm = storage.open_atomic(self.tar_rel)
        self._file = self._cm.__enter__()
        self._offset = 0
        self.rows = 0
        # Parquet columns: rows of the current write_rows call, then Arrow per call, so the
        # commit at the end of a run (with every core idle) has little left to do.
        self.pending: list[dict[str, Any]] = []
        self.tables: list[pa.Table] = []
        self.nbytes = 0
        self.t0 = time.perf_counter()

    def add(self, name: str, data: bytes) -> None:
        size = len(data)
        pad = b"\0" * (-size % _BLOCK)
        header = member_header(name, size)
        if size <= 4 * _BLOCK:  # sidecar JSON: one write (each is a sha256 update + a write)
            self._file.write(header + data + pad)
        else:
            self._file.write(header)
            self._file.write(data)
            self._file.write(pad)
        self._offset += len(header) + size + len(pad)
        self.nbytes += size

    def close(self) -> None:
        # End of archive as tarfile writes it: two zero blocks, then zeros to a whole record.
        end = self._offset + 2 * _BLOCK
        self._file.write(b"\0" * (2 * _BLOCK + (-end % _RECORD)))
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        # No trailer goes into a file being dropped.
        err = RuntimeError("shard aborted")
        self._cm.__exit__(RuntimeError, err, None)


class ImageShardWriter:
    """Writes kept images into tar+Parquet shards. The seed's parameters, same defaults.

    ``write_rows`` takes dicts with at least ``key, image_bytes, source``; other keys become
    Parquet columns (typed by ``columns_schema``). Not thread-safe: one writer thread owns it.
    """

    def __init__(
        self,
        output_dir: str,
        images_per_tar: int = 1000,
        verbose: bool = False,
        deterministic_name: bool = True,
        remove_image_data: bool = False,
        *,
        name_hash: str | None = None,
        start_index: int = 0,
        sidecar_json: bool = True,
        columns_schema: pa.Schema | None = None,
        storage: Storage | None = None,
        storage_options: dict | None = None,
        on_shard_committed=None,
    ):
        if images_per_tar < 1:
            raise ValueError("images_per_tar must be >= 1")
        self.output_dir = output_dir
        self.images_per_tar = images_per_tar
        self.verbose = verbose
        self.deterministic_name = deterministic_name
        self.remove_image_data = remove_image_data
        self.sidecar_json = sidecar_json
        self.storage = storage or Storage(output_dir, storage_options)
        if name_hash is None:
            if deterministic_name:
                raise ValueError("deterministic names need name_hash (see shard_name_hash)")
            import uuid

            name_hash = uuid.uuid4().hex[:16]
        self.name_hash = name_hash
        self.index = start_index
        self.columns_schema = columns_schema or pa.schema([])
        self._shard: _OpenShard | None = None
        self.on_shard_committed = on_shard_committed  # called after each shard commit
        self.shards_written: list[dict[str, Any]] = []

    # -- sink contract ----------------------------------------------------------------------
    def write_rows(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append rows; returns them with ``tar_file`` and ``member_name`` filled in."""
        out = []
        for row in rows:
            if self._shard is None:
                self._shard = _OpenShard(self.storage, shard_stem(self.name_hash, self.index))
            sh = self._shard
            key = row["image_id"]
            member = f"{key}.{image_extension(row['image_bytes'])}"
            sh.add(member, row["image_bytes"])
            meta = row.get("metadata_obj") or {}
            if self.sidecar_json:
                sh.add(f"{key}.json", json.dumps(self._sidecar(row, meta), sort_keys=True).encode())
            if self.sidecar_json and row.get("caption") is not None:
                # WebDataset's caption member: what loaders (and img2dataset users) read as "txt";
                # strict Curator parity (no sidecars) keeps it in the Parquet caption column only
                sh.add(f"{key}.txt", row["caption"].encode("utf-8", "surrogateescape"))
            row = dict(row)
            row["tar_file"] = self.storage.url(sh.tar_rel)
            row["member_name"] = member
            if self.remove_image_data:
                row["image_bytes"] = None
            # The shard keeps only what its Parquet needs: holding whole rows (source and JPEG
            # bytes) until the shard is full made memory grow with images_per_tar x image size.
            sh.pending.append(self._parquet_row(row))
            sh.rows += 1
            out.append(row)
            if sh.rows >= self.images_per_tar:
                self._commit_shard()
        if self._shard is not None and self._shard.pending:
            self._shard.tables.append(self._table(self._shard.pending))
            self._shard.pending = []
        return out

    def commit(self) -> None:
        if self._shard is not None and self._shard.rows:
            self._commit_shard()

    def abort(self) -> None:
        if self._shard is not None:
            self._shard.abort()
            self._shard = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- internals -------------------------------------------------------------------------
    def _sidecar(self, row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        doc = {"image_id": row["image_id"], "original_path": row.get("original_path"),
               "width": row.get("width"), "height": row.get("height")}
        for f in self.columns_schema:
            v = row.get(f.name)
            if v is not None and pa.types.is_floating(f.type):
                doc[f.name] = round(float(v), 6)
        if meta:
            doc["metadata"] = meta
        return doc

    def _parquet_row(self, row: dict[str, Any]) -> dict[str, Any]:
        keep = ("image_id", "tar_file", "member_name", "original_path", "metadata_obj", *self.columns_schema.names)
        return {k: row.get(k) for k in keep}

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        cols: dict[str, list] = {
            "image_id": [r["image_id"] for r in rows],
            "tar_file": [r["tar_file"] for r in rows],
            "member_name": [r["member_name"] for r in rows],
            "original_path": [r.get("original_path") for r in rows],
            "metadata": [json.dumps(r.get("metadata_obj") or {}, sort_keys=True) for r in rows],
        }
        fields = [pa.field(c, pa.string()) for c in CURATOR_COLUMNS]
        for f in self.columns_schema:
            if f.name in cols:
                continue
            cols[f.name] = [r.get(f.name) for r in rows]
            fields.append(f)
        return table(cols, pa.schema(fields))

    def _commit_shard(self) -> None:
        sh = self._shard
        assert sh is not None  # internal invariant, not data validation
        self._shard = None
        try:
            sh.close()
        except BaseException:
            sh.abort()
            raise
        if sh.pending:
            sh.tables.append(self._table(sh.pending))
        # One chunk per column: the Parquet bytes must not depend on how rows were batched (a
        # resumed run batches differently and must write the same files).
        table = pa.concat_tables(sh.tables).combine_chunks()
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        par_rel = f"{sh.stem}.parquet"
        self.storage.write_atomic(par_rel, buf.getvalue(), rows=sh.rows)
        self.storage.set_rows(sh.tar_rel, sh.rows)  # known only once the shard is full
        info = {"tar": sh.tar_rel, "parquet": par_rel, "rows": sh.rows, "bytes": sh.nbytes,
                "seconds": round(time.perf_counter() - sh.t0, 3)}
        self.shards_written.append(info)
        if self.verbose:
            log.info("wrote shard %s (%d images, %d bytes, %.2f s)", self.storage.url(sh.tar_rel),
                     info["rows"], info["bytes"], info["seconds"])
        self.index += 1
        if self.on_shard_committed is not None:
            self.on_shard_committed(info, table)


def read_committed_shards(storage: Storage) -> list[str]:
    """Stems of our shards whose Parquet exists (the per-shard commit point), sorted by index.
    A user's ``images-*.parquet`` beside them is not a shard of this output: names are not
    ownership (engine/ownership.py), so it is neither read as done work nor renumbered past."""
    stems = []
    for rel in storage.list_files():
        if "/" in rel or not rel.startswith("images-") or not rel.endswith(".parquet"):
            continue
        if not storage.owns(rel):
            continue
        stem = rel[: -len(".parquet")]
        if storage.exists(f"{stem}.tar"):
            stems.append(stem)
    return sorted(stems, key=lambda s: int(s.rsplit("-", 1)[1]))
