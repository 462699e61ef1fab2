"""What one read input becomes: :class:`LoadedImage`, and the WebDataset and Parquet conventions
that turn a tar sample's side members or a row's scalar columns into JSON-safe metadata and a
caption, kept apart from the reading so that every container kind (files, tars, Parquet, URL
lists) hands its items on in the same shape.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
from dataclasses import dataclass, field
from typing import Any

from curastream.images.containers import is_image_ext
from curastream.images.inputs import ImageInput


@dataclass
class LoadedImage:
    input: ImageInput
    data: bytes | None
    metadata: dict = field(default_factory=dict)
    error: str | None = None
    caption: str | None = None  # a URL list's caption column, a sample's .txt, a row's "caption"


def _json_safe(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    return str(v)


def _side_metadata(members: list[tuple[str, bytes | None, int]]) -> tuple[bytes | None, dict]:
    """(image bytes, metadata) of one tar sample, webdataset conventions."""
    image = None
    meta: dict[str, Any] = {}
    skipped: list[str] = []
    for ext, data, size in members:
        if is_image_ext(ext):
            if image is None:
                image = data
            else:
                skipped.append(ext)
            continue
        if data is None:
            skipped.append(ext)
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            meta[ext + "_b64"] = base64.b64encode(data).decode("ascii")
            continue
        if ext.rsplit(".", 1)[-1].lower() == "json":
            try:
                meta[ext] = json.loads(text)
                continue
            except ValueError:
                pass
        meta[ext] = text
    if skipped:
        meta["skipped_members"] = skipped
    return image, meta


def _sample(inp: ImageInput, members: list) -> LoadedImage:
    image, meta = _side_metadata(members)
    if image is None:
        return LoadedImage(inp, None, meta, "no image member in sample", _caption(meta, "txt"))
    return _checked(inp, image, meta, _caption(meta, "txt"))


def _caption(meta: dict, name: str) -> str | None:
    """WebDataset's caption member (``.txt``) or a Parquet ``caption`` column; it stays in
    ``metadata`` as well, where earlier versions put it."""
    v = meta.get(name)
    return v if isinstance(v, str) else None


def _checked(inp: ImageInput, data: bytes, meta: dict | None = None, caption: str | None = None) -> LoadedImage:
    if not data:
        return LoadedImage(inp, None, meta or {}, "empty file (0 bytes)", caption)
    return LoadedImage(inp, data, meta or {}, None, caption)


def _plain(v: Any) -> Any:
    """A kept list column's value as JSON: lists and structs stay structured."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return _json_safe(v)
