"""NeMo Curator adapters: our writers as Curator ``ProcessingStage``s, by changing one import.

    # from nemo_curator.stages.image.io.image_writer import ImageWriterStage
    from curastream.curator import ImageWriterStage
    # from nemo_curator.stages.video.io.clip_writer import ClipWriterStage
    from curastream.curator import ClipWriterStage

    pipeline.add_stage(ImageWriterStage(output_dir="out/", images_per_tar=1000, remove_image_data=True))

What the Curator pipeline gets: tars filled to exactly ``images_per_tar`` across batches (Curator
cuts a tar per batch, so its tars come out short whenever a batch is smaller), tar and Parquet
committed atomically (a temporary renamed into place), any fsspec output (``s3://...`` with
``storage_options``), ``on_existing`` error / resume / overwrite as in the CLI, rejects and an
``index.json``. The Parquet has Curator's five columns plus ``width, height, aesthetic_score,
nsfw_score``; ``metadata`` is JSON rather than a Python repr. Curator's readers need no change.
``ClipWriterStage`` writes Curator's clip layout with our ClipWriter (SPEC §2: metas keys in
Curator's order, ``valid`` as the SPEC defines it, writes on a thread pool while the pipeline goes
on, the per-video resume rule); curator/clip_records.py says how Curator's clips are read.

Where the writer's state lives (Curator calls ``process(task)`` per batch, maybe in several
workers, each holding its own copy of the stage):

- The stage built in the driver draws a run token; every worker's copy carries it.
- ``setup()`` (or the first ``process()``) opens the worker's writer: the first worker of the run
  prepares the output under the output's lock (``on_existing``), the others see the token and
  join (curator/output.py). On resume each worker skips images already in a committed shard.
- Images: one open shard per worker, named ``images-<hash>-<index>`` with ``hash`` over the
  worker's first batch's image ids and the settings: distinct between workers, and the same on a
  rerun of the same input. A worker's shards are full except its last.
- ``teardown()`` commits the short last shard, the worker's record (files with sha256 and rows,
  rejects) in ``_curastream/curator/``, then rewrites ``index.json`` and
  ``_curastream/rejects.parquet`` from every record, under the lock. Each worker commits its record
  before it takes the lock to index, so the last teardown's index is complete; files of a worker
  that died without its teardown are found by ownership and hashed. ``finalize_output(output_dir)``
  rewrites the index from the driver (after ``pipeline.run()``, or after such a death).
- Clips: one ClipWriter per worker; each task (a chunk of one video) is queued to it, and a
  resumed run does not write a video whose completion marker exists.
- Images without pixels, or that cannot be encoded, become rejects (Curator's writer raises).
  A teardown after a failed run still commits what was written: resume continues from there.

This package imports without Curator; the two stages need it and say so in one line.
"""

from __future__ import annotations

import importlib
import sys

from curastream.curator.output import finalize_output

__all__ = ["ClipWriterStage", "CuratorMissingError", "ImageWriterStage", "finalize_output", "missing_message"]

# adapter name -> module that defines it (and imports nemo_curator)
_ADAPTERS = {"ImageWriterStage": "curastream.curator.images", "ClipWriterStage": "curastream.curator.clips"}


class CuratorMissingError(ImportError):
    """NeMo Curator is not importable in this python."""


def missing_message(name: str) -> str:
    return (f"curastream.curator.{name} needs NeMo Curator, which this python ({sys.executable}) "
            f"cannot import: pip install nemo-curator")


def __getattr__(name: str):
    if name not in _ADAPTERS:
        raise AttributeError(f"module 'curastream.curator' has no attribute {name!r}")
    try:
        importlib.import_module("nemo_curator")
    except ImportError:
        raise CuratorMissingError(missing_message(name)) from None
    return getattr(importlib.import_module(_ADAPTERS[name]), name)
