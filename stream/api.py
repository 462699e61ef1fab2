"""The embedded Python API: the same runs the CLI makes, from config objects.

``stream_images`` / ``stream_videos`` take the inputs the runs take (folders, globs, files,
WebDataset tars, Parquet, fsspec URLs, ``files_from`` lists) and check their config the same
way, so moving from a run to a stream is a change of function, not of arguments.

One process-wide effect to know when embedding: on glibc, the first video run or stream caps
the process's malloc arenas at two for the rest of its life, because per-thread arenas kept a
long video run's freed frames resident (``engine/memory.py`` has the numbers). Image runs
after a video run in the same process were no slower for it (600 images from tars, 3 runs in
each of 3 processes: medians 4.36-4.40 s capped, 4.50-4.57 s uncapped). While a video run cuts,
the process also runs with transparent huge pages off (``engine/huge_pages.py``; the earlier
setting comes back after) and malloc's mmap threshold pinned at 1 MiB (afterwards 32 MiB, since
glibc cannot return to its sliding threshold); image runs after one took 2.84-2.89 s against
2.98-3.01 s in a process that never pinned (ninth stop).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import pyarrow as pa

from curastream.config import ConfigError, ImageFilters, ImageRunConfig, VideoRunConfig
from curastream.engine.batch import Batch
from curastream.engine.device import resolve_device
from curastream.engine.names import printable
from curastream.engine.pipeline import Pipeline
from curastream.engine.schemas import IMAGE_SCHEMA
from curastream.engine.stats import RunStats
from curastream.images.listing import list_image_inputs
from curastream.images.pipeline import _coerce_inputs, batches_from_inputs, run_images
from curastream.images.stages import SOURCE_COLUMNS, image_stages
from curastream.videos.pipeline import run_videos
from curastream.videos.pipeline import stream_videos as _stream_video_files
from curastream.videos.sources import list_video_inputs

__all__ = ["ImageFilters", "ImageRunConfig", "VideoRunConfig", "resolve_device", "run_images", "stream_images",
           "run_videos", "stream_videos"]


def _is_path(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike))


def _checked(cfg: Any, items: Any) -> None:
    cfg.validate(require_sources=False)
    if items is None and not cfg.sources and not getattr(cfg, "files_from", None):
        raise ConfigError(None, "no input: pass items, or set sources (or files_from) in the config")


def _listed_images(sources: list, cfg: ImageRunConfig, files_from: str | None = None) -> list:
    inputs = list_image_inputs([os.fspath(s) for s in sources], storage_options=cfg.storage_options,
                               files_from=files_from, parquet_image_column=cfg.parquet_image_column)
    if not inputs:  # as run_images: an empty folder or glob is reported, not streamed as nothing
        named = [*map(os.fspath, sources), *([files_from] if files_from else [])]
        raise FileNotFoundError("no images found in " + ", ".join(map(printable, named)))
    return inputs


def _image_groups(items: Any, cfg: ImageRunConfig) -> Iterable[tuple[bool, list]]:
    """(listed?, inputs) groups. Paths are listed as run_images lists them, a list of paths at
    once (keys unique across it) and before the first result, so a missing one fails at the
    call; in-memory items (bytes, pairs, dicts) pass through, and an iterator is read lazily."""
    if items is None:
        return [(True, _listed_images(cfg.sources, cfg, cfg.files_from))]
    if _is_path(items):
        return [(True, _listed_images([items], cfg))]
    if isinstance(items, (list, tuple)) and items and all(_is_path(i) for i in items):
        return [(True, _listed_images(list(items), cfg))]
    return _per_item(items, cfg)


def _per_item(items: Iterable[Any], cfg: ImageRunConfig) -> Iterator[tuple[bool, list]]:
    raw: list = []
    for n, it in enumerate(items):
        if not _is_path(it):
            # bytes are named by their place in ``items``, not in the chunk handed on
            raw.append({"image_id": f"item{n:09d}", "data": it} if isinstance(it, (bytes, bytearray, memoryview)) else it)
            if len(raw) >= cfg.batch_size:
                yield False, raw
                raw = []
            continue
        if raw:
            yield False, raw
            raw = []
        yield True, _listed_images([it], cfg)
    if raw:
        yield False, raw


def _image_batches(groups: Iterable[tuple[bool, list]], cfg: ImageRunConfig) -> Iterator[Batch]:
    seq = 0
    for listed, group in groups:
        if listed:
            batches = batches_from_inputs(group, cfg.batch_size, cfg.storage_options, workers=cfg.workers)
        else:
            batches = _coerce_inputs(group, cfg.batch_size)
        for b in batches:
            b.seq, seq = seq, seq + 1  # the engine emits in seq order: one numbering over all groups
            yield b


def stream_images(items: Any = None, cfg: ImageRunConfig | None = None, encode: bool = False,
                  include_bytes: bool = False) -> Iterator[pa.RecordBatch]:
    """Score images and yield Arrow record batches as they are done; nothing is written.

    ``items``: anything ``run_images`` takes as sources (folders, globs, image files, WebDataset
    tars, Parquet files, URLs), or images in memory: bytes, ``(key, bytes)`` pairs or
    ``{"image_id" (or "key"), "data", "metadata"}`` dicts; mixed is fine. ``None``: ``cfg.sources`` and
    ``cfg.files_from``. Rejected rows are yielded too, with ``status="rejected"`` and the reason.
    Raises ConfigError for an invalid config, FileNotFoundError for inputs that are not there.
    """
    cfg = cfg if cfg is not None else ImageRunConfig(sources=[])
    _checked(cfg, items)
    device = resolve_device(cfg.device)
    groups = _image_groups(items, cfg)
    pipe = Pipeline(_image_batches(groups, cfg), image_stages(cfg, device, None, encode), schema=IMAGE_SCHEMA,
                    source_columns=SOURCE_COLUMNS, stats=RunStats(kind="images"))
    drop = () if include_bytes else ("data", "image_bytes")
    return (b.to_arrow(drop=drop) for b in pipe)


def _listed_videos(src: Any, cfg: VideoRunConfig) -> list[str]:
    found = list_video_inputs([os.fspath(src)], storage_options=cfg.storage_options)
    if not found:  # as run_videos: an empty folder or glob is reported, not streamed as nothing
        raise FileNotFoundError(f"no videos found in {printable(os.fspath(src))}")
    return [inp.path for inp in found]


def _video_paths(paths: Any, cfg: VideoRunConfig) -> Iterable[str]:
    """Paths as run_videos lists them; a list is listed before the first result (a missing
    input fails at the call), an iterator as it is read."""
    if _is_path(paths):
        paths = [paths]
    if isinstance(paths, (list, tuple)):
        return [p for src in paths for p in _listed_videos(src, cfg)]
    return (p for src in paths for p in _listed_videos(src, cfg))


def stream_videos(paths: Any = None, cfg: VideoRunConfig | None = None) -> Iterator[pa.RecordBatch]:
    """Analyse videos and yield one clip record batch per video; nothing is written.

    ``paths``: anything ``run_videos`` takes as sources (video files, folders, globs, URLs), one
    or an iterable of them; ``None``: ``cfg.sources``. Rejected videos yield no rows (they are
    logged). Raises ConfigError for an invalid config, FileNotFoundError for missing inputs.
    """
    cfg = cfg if cfg is not None else VideoRunConfig(sources=[])
    _checked(cfg, paths)
    return _stream_video_files(_video_paths(cfg.sources if paths is None else paths, cfg), cfg)
