"""``ImageWriterStage`` as a NeMo Curator ``ProcessingStage``: Curator's fields, our shards.

Imports nemo_curator at the top: reach it through ``curastream.curator``, which says in one line
when Curator is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from curastream.curator.image_shards import WorkerImageShards
from curastream.curator.output import SharedOutput, new_token
from nemo_curator.stages.base import ProcessingStage
from nemo_curator.tasks.file_group import FileGroupTask
from nemo_curator.tasks.image import ImageBatch


@dataclass
class ImageWriterStage(ProcessingStage[ImageBatch, FileGroupTask]):
    """Curator's ImageWriterStage parameters, same defaults; then ours, keyword-only in spirit.

    Returns, for a batch during which shards were committed, a FileGroupTask listing their tar
    and Parquet files (a shard commits when it fills, whichever batch fills it), else None (an
    empty FileGroupTask logs a warning in Curator). The short last shard of each worker commits at
    teardown, with the worker's record and the index, which lists every file.
    """

    output_dir: str
    images_per_tar: int = 1000
    verbose: bool = False
    deterministic_name: bool = True
    remove_image_data: bool = False
    name: str = "image_writer"
    sidecar_json: bool = True
    jpeg_quality: int = 92
    on_existing: str = "error"
    storage_options: dict | None = None
    run_token: str = field(default_factory=new_token)  # drawn where the pipeline is built: one per run

    def __post_init__(self) -> None:
        if self.images_per_tar < 1:
            raise ValueError("images_per_tar must be >= 1")
        if self.on_existing not in ("error", "resume", "overwrite"):
            raise ValueError(f"on_existing must be error, resume or overwrite, not {self.on_existing!r}")
        self.output_dir = os.fspath(self.output_dir)
        self._shards: WorkerImageShards | None = None

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def settings(self) -> dict:
        """What shapes the output: a resume with other values is refused."""
        return {"images_per_tar": self.images_per_tar, "deterministic_name": self.deterministic_name,
                "sidecar_json": self.sidecar_json, "jpeg_quality": self.jpeg_quality,
                "writer": "curastream.curator.ImageWriterStage"}

    def _worker(self) -> WorkerImageShards:
        if self._shards is None:
            shared = SharedOutput(self.output_dir, self.storage_options, self.on_existing, self.run_token,
                                  "images", self.settings())
            self._shards = WorkerImageShards(shared, self.images_per_tar, self.verbose, self.deterministic_name,
                                             self.remove_image_data, self.sidecar_json, self.jpeg_quality)
            self._shards.open()
        return self._shards

    def setup(self, worker_metadata=None) -> None:
        self._worker()

    def process(self, task: ImageBatch) -> FileGroupTask | None:
        images = task.data if task is not None and isinstance(task.data, list) else []
        files = self._worker().write(images)
        if not files:
            return None
        return FileGroupTask(
            dataset_name=task.dataset_name,
            data=files,
            _metadata={**task._metadata, "output_dir": self.output_dir, "images_per_tar": self.images_per_tar,
                       "num_images": len(images)},
            _stage_perf=task._stage_perf,
        )

    def teardown(self) -> None:
        if self._shards is not None:
            shards, self._shards = self._shards, None
            shards.close()
