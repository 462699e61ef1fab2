"""The writer stages, with the seed documents' parameters: the last stage of a pipeline.

They describe where and how to write; the composed run builds the same ImageShardWriter /
ClipWriter (and their run harness: resume, rejects, index) that ``run_images``/``run_videos``
build. ``on_existing`` ("error", "resume", "overwrite") is ours: Curator writes over. The
CLI's other output settings are keyword arguments under their flag names.
"""

from __future__ import annotations

import os
from typing import Any

from curastream.compose.described import Described
from curastream.writers.clip_layout import EMBEDDING_ALGORITHMS, ClipLayout

__all__ = ["ImageWriterStage", "ClipWriterStage"]


class ImageWriterStage(Described):
    """``images-{hash}-{index:06d}.tar`` + one Parquet per tar (SPEC §1); ``resize``,
    ``resize_mode``, ``encode_format`` and ``encode_quality`` choose how images are stored."""

    medium = "images"
    name = "ImageWriterStage"

    def __init__(self, output_dir: str | os.PathLike, images_per_tar: int = 1000, verbose: bool = False,
                 deterministic_name: bool = True, remove_image_data: bool = False, *,
                 sidecar_json: bool = True, jpeg_quality: int = 92, on_existing: str = "error",
                 storage_options: dict | None = None, progress: bool | None = None, stats: str | None = None,
                 emit_ipc: str | None = None, emit_ipc_bytes: bool = False, resize: int | None = None,
                 resize_mode: str = "border", encode_format: str = "jpg", encode_quality: int | None = None):
        self.output_dir = os.fspath(output_dir) if output_dir is not None else None
        self.settings: dict[str, Any] = dict(
            output=self.output_dir, images_per_tar=images_per_tar, verbose=verbose,
            deterministic_name=deterministic_name, remove_image_data=remove_image_data,
            sidecar_json=sidecar_json, jpeg_quality=jpeg_quality, on_existing=on_existing,
            progress=progress, stats=stats, emit_ipc=emit_ipc, emit_ipc_bytes=emit_ipc_bytes, resize=resize,
            resize_mode=resize_mode, encode_format=encode_format, encode_quality=encode_quality)
        self.storage_options = storage_options


class ClipWriterStage(Described, ClipLayout):
    """The ClipWriterStage layout (SPEC §2); the ``get_output_path_*`` helpers are Curator's.

    ``generate_embeddings`` / ``generate_captions``: None (the default) follows the pipeline
    (an embedding or caption stage turns them on); False keeps that stage's plug-in in the run
    config without writing its output."""

    medium = "videos"
    name = "ClipWriterStage"

    def __init__(self, output_path: str | os.PathLike, input_path: str | os.PathLike | None = None,
                 upload_clips: bool = True, dry_run: bool = False, generate_embeddings: bool | None = None,
                 generate_previews: bool = False, generate_captions: bool | None = None,
                 embedding_algorithm: str = "internvideo2", caption_models: list[str] | None = None,
                 enhanced_caption_models: list[str] | None = None, verbose: bool = False, max_workers: int = 6,
                 log_stats: bool = False, *, clip_subdirs: bool = False, on_existing: str = "error",
                 storage_options: dict | None = None, progress: bool | None = None, stats: str | None = None,
                 emit_ipc: str | None = None, emit_ipc_bytes: bool = False):
        if embedding_algorithm not in EMBEDDING_ALGORITHMS:
            raise ValueError(f"ClipWriterStage: embedding_algorithm must be one of {sorted(EMBEDDING_ALGORITHMS)}, "
                             f"got {embedding_algorithm!r}")
        self.output_path = os.fspath(output_path) if output_path is not None else None
        self.generate_embeddings = generate_embeddings
        self.generate_captions = generate_captions
        self.embedding_algorithm = embedding_algorithm
        self.caption_models = list(caption_models or [])
        self.enhanced_caption_models = list(enhanced_caption_models or [])
        self.settings: dict[str, Any] = dict(
            output=self.output_path, input_path=os.fspath(input_path) if input_path is not None else None,
            upload_clips=upload_clips, dry_run=dry_run, previews=generate_previews,
            generate_embeddings=bool(generate_embeddings), embedding_algorithm=embedding_algorithm,
            verbose=verbose, max_workers=max_workers, clip_subdirs=clip_subdirs, on_existing=on_existing,
            progress=progress, stats=stats, emit_ipc=emit_ipc, emit_ipc_bytes=emit_ipc_bytes)
        self.storage_options = storage_options
        self.log_stats = log_stats  # Curator: "reserved for future detailed stats logging"
