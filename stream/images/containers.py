"""The two container formats an input can live in, as listing and reading both see them:
WebDataset tars (how member names split into sample key and extension, and which members form
one sample) and Parquet files (which column holds the image, which the key). Listing a
container reads headers, a footer and a key column only, never image data.
"""

from __future__ import annotations

import collections
import logging
import re
import tarfile
import zlib
from typing import Callable

from curastream.engine.names import printable
from curastream.images.inputs import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

PARQUET_KEY_COLUMNS = ("key", "__key__")
_PARQUET_IMAGE_NAMES = ("image", "jpg", "png", "webp", "img")
_WDS_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


# -- WebDataset tars ----------------------------------------------------------------------------


def wds_split(name: str) -> tuple[str, str] | None:
    """(sample key, extension) the way webdataset splits a member name; None = not a sample."""
    m = _WDS_NAME.match(name)
    if not m:
        return None  # no dot in the basename, or a dot-name like "._x.jpg": webdataset skips it
    return m.group(1), m.group(2)


def is_image_ext(ext: str) -> bool:
    return "." + ext.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


class SampleIds:
    """Sample identities in a tar, identical in listing and reading.

    Like webdataset, a sample is a run of consecutive members with the same key; a key that
    comes back later (an unsorted tar) starts another sample, told apart as ``key#1``, ``key#2``.
    """

    def __init__(self) -> None:
        self.current: str | None = None
        self._seen: collections.Counter[str] = collections.Counter()

    def feed(self, key: str) -> str | None:
        """The new sample's id when ``key`` starts one, else None."""
        if key == self.current:
            return None
        self.current = key
        occ = self._seen[key]
        self._seen[key] += 1
        return key if occ == 0 else f"{key}#{occ}"


TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


def list_tar(opener: Callable, source: str) -> list[tuple[str, str, int | None]] | None:
    """(sample id, sample key, image size) per sample, from member headers only.

    Mode ``r:*`` on a seekable file jumps over member data, so listing an uncompressed shard
    reads its headers, not its images.
    """
    samples: list[list] = []
    ids = SampleIds()
    try:
        with opener() as f, tarfile.open(fileobj=f, mode="r:*") as tf:
            try:
                while True:
                    ti = tf.next()
                    if ti is None:
                        break
                    tf.members = []  # headers already used; keep listing memory flat
                    if not ti.isreg():
                        continue
                    split = wds_split(ti.name)
                    if split is None:
                        continue
                    new = ids.feed(split[0])
                    if new is not None:
                        samples.append([new, split[0], None])
                    if samples[-1][2] is None and is_image_ext(split[1]):
                        samples[-1][2] = ti.size
            except TAR_ERRORS as e:
                # Keep what was listed: reading reports the damaged samples one by one.
                log.warning("tar %s is damaged after %d sample(s): %s", printable(source),
                            len(samples), e)
    except TAR_ERRORS as e:
        log.warning("cannot read tar %s: %s", printable(source), e)
        return None
    return [(s[0], s[1], s[2]) for s in samples]


# -- Parquet -----------------------------------------------------------------------------------


class NoImageColumn(Exception):
    pass


def image_field(schema, wanted: str | None):
    import pyarrow as pa

    def is_image(t) -> bool:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            return True
        # Hugging Face's Image feature: struct<bytes: binary, path: string>
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and is_image(t.field("bytes").type)

    if wanted:
        if wanted not in schema.names:
            raise NoImageColumn(f"no column {wanted!r} (columns: {schema.names})")
        if not is_image(schema.field(wanted).type):
            raise NoImageColumn(f"column {wanted!r} is {schema.field(wanted).type}, not binary")
        return wanted
    cands = [f.name for f in schema if is_image(f.type)]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise NoImageColumn("no binary image column")
    for name in _PARQUET_IMAGE_NAMES:
        if name in cands:
            return name
    raise NoImageColumn(f"several binary columns {cands}; choose one with parquet_image_column")


def _key_column(schema) -> str | None:
    import pyarrow as pa

    for name in PARQUET_KEY_COLUMNS:
        if name in schema.names:
            t = schema.field(name).type
            if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t):
                return name
    return None


def list_parquet(opener: Callable, wanted_col: str | None) -> tuple[str, list[str | None]]:
    """(image column, key column value or None per row). Reads the footer and the key column."""
    import pyarrow.parquet as pq

    with opener() as f:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        column = image_field(schema, wanted_col)
        kcol = _key_column(schema)
        if kcol is None:
            return column, [None] * pf.metadata.num_rows
        out: list[str | None] = []
        for b in pf.iter_batches(batch_size=65536, columns=[kcol]):
            out.extend(None if v is None else str(v) for v in b.column(0).to_pylist())
        return column, out
