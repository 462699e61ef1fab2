"""Image shards (SPEC §1) as export samples: the rows of every shard Parquet, in shard order, and
each image's tar members (image, ``.json`` sidecar, ``.txt`` caption, ...) read by streaming its
tar once."""

from __future__ import annotations

import json
import re
import tarfile
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curastream.engine.storage import Storage

_SHARD = re.compile(r"^images-[0-9a-zA-Z]+-(\d{6,})\.parquet$")
_NOT_SIDECAR = {"tar_file", "member_name", "metadata"}


def shard_parquets(storage: Storage) -> list[str]:
    """Shard Parquets at the root that have their tar, in index order."""
    found = []
    for rel in storage.list_files():
        m = _SHARD.match(rel)
        if m and storage.exists(rel[: -len(".parquet")] + ".tar"):
            found.append((int(m.group(1)), rel))
    return [rel for _, rel in sorted(found)]


class ImageSource:
    kind = "images"
    key = "image_id"

    def __init__(self, storage: Storage):
        self.storage = storage
        self.shards = shard_parquets(storage)
        tables = []
        for rel in self.shards:
            t = pq.read_table(pa.BufferReader(storage.read_bytes(rel)))
            tar_rel = rel[: -len(".parquet")] + ".tar"
            tables.append(t.append_column("_tar", pa.array([tar_rel] * t.num_rows, pa.string())))
        if tables:
            table = pa.concat_tables(tables, promote_options="default")
        else:
            table = pa.table({"image_id": pa.array([], pa.string()), "_tar": pa.array([], pa.string())})
        self._tar_of = dict(zip(table.column("image_id").to_pylist(), table.column("_tar").to_pylist()))
        self.table = table.drop_columns(["_tar"])

    def sidecar(self, row: dict[str, Any]) -> bytes:
        """A ``.json`` for a shard written without sidecars (--no-sidecar-json)."""
        doc = {k: v for k, v in row.items() if k not in _NOT_SIDECAR and v is not None
               and isinstance(v, (str, int, float, bool))}
        return json.dumps(doc, sort_keys=True).encode()

    def samples(self, keys: list[str], rows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, bytes] | None]]:
        """(key, members) in the order of ``keys`` (which must follow the shards' order); the
        image member first, then the others as the tar has them."""
        by_tar: dict[str, list[str]] = {}
        for k in keys:
            by_tar.setdefault(self._tar_of[k], []).append(k)
        for tar_rel in dict.fromkeys(self._tar_of[k] for k in keys):
            wanted = by_tar[tar_rel]
            got = self._read_tar(tar_rel, set(wanted))
            for k in wanted:
                members = got.get(k)
                if members is None:
                    yield k, None
                    continue
                row = rows[k]
                image_name = row.get("member_name") or ""
                ext = image_name.split(".", 1)[1] if "." in image_name else "jpg"
                out = {ext: members.pop(ext)} if ext in members else {}
                out.update(members)
                if "json" not in out:
                    out["json"] = self.sidecar(row)
                if "txt" not in out and isinstance(row.get("caption"), str):
                    out["txt"] = row["caption"].encode("utf-8")
                yield k, out

    def _read_tar(self, tar_rel: str, wanted: set[str]) -> dict[str, dict[str, bytes]]:
        out: dict[str, dict[str, bytes]] = {}
        with self.storage.fs.open(self.storage.path(tar_rel), "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
            for m in tf:
                if not m.isfile() or "." not in m.name:
                    continue
                key, ext = m.name.split(".", 1)  # WebDataset's rule: the key ends at the first dot
                if key in wanted:
                    out.setdefault(key, {})[ext] = tf.extractfile(m).read()
        return out
