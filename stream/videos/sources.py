"""Video inputs: files, directories (recursive), globs and fsspec URLs, in a stable order."""

from __future__ import annotations

import os
from dataclasses import dataclass

import fsspec

from curastream.engine.storage import with_store_timeouts

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".ogv", ".ogg", ".flv", ".wmv", ".3gp", ".h264", ".264", ".h265", ".265", ".hevc", ".ivf", ".y4m",
}


@dataclass(frozen=True)
class VideoInput:
    path: str  # local absolute path, or a full URL for remote files
    size: int | None
    is_local: bool


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def list_video_inputs(srcs: list[str], storage_options: dict | None = None) -> list[VideoInput]:
    """Expand ``srcs``; directories contribute files with video extensions, named files are
    taken whatever their extension (the probe decides). Missing paths are an error."""
    found: dict[str, VideoInput] = {}
    for src in srcs:
        fs, path = fsspec.core.url_to_fs(src, **with_store_timeouts(src, storage_options))
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))

        def full(p: str) -> str:
            return os.path.abspath(p) if local else fs.unstrip_protocol(p)

        if any(ch in path for ch in "*?["):
            matches = sorted(fs.glob(path))
            if not matches:
                raise FileNotFoundError(f"no files match {src}")
            for p in matches:
                if fs.isfile(p):
                    found.setdefault(full(p), VideoInput(full(p), fs.size(p), local))
            continue
        if local and not fs.exists(path) and os.path.islink(path):
            # A dangling link the user named: listed, so the probe rejects it naming its target
            # (not "input not found", which points at the wrong thing).
            found.setdefault(full(path), VideoInput(full(path), None, local))
            continue
        if not fs.exists(path):
            raise FileNotFoundError(f"input not found: {src}")
        if fs.isdir(path):
            for p, info in sorted(fs.find(path, detail=True).items()):
                base = os.path.basename(p)
                if base.startswith(".") or not _is_video_name(base):
                    continue
                found.setdefault(full(p), VideoInput(full(p), info.get("size"), local))
        else:
            found.setdefault(full(path), VideoInput(full(path), fs.size(path), local))
    return [found[k] for k in sorted(found)]
