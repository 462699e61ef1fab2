"""``ClipWriterStage`` as a NeMo Curator ``ProcessingStage``: Curator's fields, our ClipWriter.

Imports nemo_curator at the top: reach it through ``curastream.curator``, which says in one line
when Curator is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from curastream.curator.clip_records import chunk_of
from curastream.curator.output import SharedOutput, new_token
from curastream.writers.clip_layout import ClipLayout
from curastream.writers.clip_writer import ClipWriter
from nemo_curator.stages.base import ProcessingStage
from nemo_curator.stages.resources import Resources
from nemo_curator.tasks.video import VideoTask


def _probe(clip):
    # Curator's own probe of the clip's media (what its writer puts in the metas)
    return clip.extract_metadata()


@dataclass
class ClipWriterStage(ProcessingStage[VideoTask, VideoTask]):
    """Curator's ClipWriterStage parameters and defaults, then ours.

    Per task (one clip chunk of one video) the chunk is queued to the worker's ClipWriter, which
    writes its files on ``max_workers`` threads while the pipeline goes on, and the task goes on
    with its clip buffers, embeddings and previews released, as Curator's writer does. Teardown
    waits for every write, then commits the worker's record and the index. On resume a video whose
    ``processed_videos`` JSON and chunk JSONs exist is not written again (its upstream work is
    still done: Curator decides what to read, not the writer).
    """

    output_path: str
    input_path: str
    upload_clips: bool
    dry_run: bool
    generate_embeddings: bool
    generate_previews: bool
    generate_captions: bool
    embedding_algorithm: str = "cosmos-embed1"
    caption_models: list[str] | None = None
    enhanced_caption_models: list[str] | None = None
    verbose: bool = False
    max_workers: int = 6
    log_stats: bool = False
    name: str = "clip_writer"
    clip_subdirs: bool = False
    on_existing: str = "error"
    storage_options: dict | None = None
    run_token: str = field(default_factory=new_token)

    def __post_init__(self) -> None:
        self.resources = Resources(cpus=0.25)
        if self.on_existing not in ("error", "resume", "overwrite"):
            raise ValueError(f"on_existing must be error, resume or overwrite, not {self.on_existing!r}")
        self.output_path = os.fspath(self.output_path)
        self.input_path = os.fspath(self.input_path)
        self._shared: SharedOutput | None = None
        self._writer: ClipWriter | None = None

    # Curator's static path helpers, same results (SPEC §2)
    get_output_path_clips = staticmethod(ClipLayout.get_output_path_clips)
    get_output_path_previews = staticmethod(ClipLayout.get_output_path_previews)
    get_output_path_metas = staticmethod(ClipLayout.get_output_path_metas)
    get_output_path_ce1_embd = staticmethod(ClipLayout.get_output_path_ce1_embd)
    get_output_path_ce1_embd_parquet = staticmethod(ClipLayout.get_output_path_ce1_embd_parquet)
    get_output_path_iv2_embd = staticmethod(ClipLayout.get_output_path_iv2_embd)
    get_output_path_iv2_embd_parquet = staticmethod(ClipLayout.get_output_path_iv2_embd_parquet)
    get_output_path_processed_videos = staticmethod(ClipLayout.get_output_path_processed_videos)
    get_output_path_processed_clip_chunks = staticmethod(ClipLayout.get_output_path_processed_clip_chunks)

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def settings(self) -> dict:
        return {"upload_clips": self.upload_clips, "dry_run": self.dry_run,
                "generate_embeddings": self.generate_embeddings, "generate_previews": self.generate_previews,
                "generate_captions": self.generate_captions, "embedding_algorithm": self.embedding_algorithm,
                "clip_subdirs": self.clip_subdirs, "writer": "curastream.curator.ClipWriterStage"}

    def _open(self) -> ClipWriter:
        if self._writer is None:
            self._shared = SharedOutput(self.output_path, self.storage_options, self.on_existing, self.run_token,
                                        "videos", self.settings())
            self._resuming = self._shared.open()
            self._writer = ClipWriter(
                self.output_path, self.input_path, upload_clips=self.upload_clips, dry_run=self.dry_run,
                generate_embeddings=self.generate_embeddings, generate_previews=self.generate_previews,
                generate_captions=self.generate_captions, embedding_algorithm=self.embedding_algorithm,
                caption_models=self.caption_models, enhanced_caption_models=self.enhanced_caption_models,
                verbose=self.verbose, max_workers=self.max_workers, log_stats=self.log_stats,
                clip_subdirs=self.clip_subdirs, storage_options=self.storage_options, storage=self._shared.storage)
        return self._writer

    def setup(self, worker_metadata=None) -> None:
        self._open()

    def process(self, task: VideoTask) -> VideoTask:
        writer = self._open()
        video = task.data
        chunk, record = chunk_of(video, _probe)
        if not (self._resuming and ClipLayout.is_video_done(self.output_path, self.input_path, record.path,
                                                           self.storage_options)):
            writer.write_chunk(chunk, record)
        for clip in video.clips:  # the writer holds its own references until written
            clip.buffer = None
            clip.cosmos_embed1_embedding = None
            for w in clip.windows:
                w.mp4_bytes = None
                w.webp_bytes = None
        return task

    def teardown(self) -> None:
        if self._writer is None:
            return
        writer, shared, self._writer, self._shared = self._writer, self._shared, None, None
        try:
            writer.commit()
        except BaseException:
            writer.abort()
            shared.abort()
            raise
        summary = writer.summary()
        shared.finish({"summary": summary})
