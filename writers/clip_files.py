"""Writes one clip's files (media, previews, embedding, metas); ClipWriter orders the commits."""

from __future__ import annotations

import logging
import pickle

import numpy as np

from curastream.writers.clip_layout import CLIPS_DIR, FILTERED_CLIPS_DIR, METAS_DIR, PREVIEWS_DIR, dumps
from curastream.writers.clip_meta import clip_windows, meta_doc
from curastream.writers.clip_model import ClipRecord, VideoRecord
from curastream.writers.clip_summary import ClipOutcome

# The clip writer's logger, as before these methods moved here: logging set up for it still applies.
log = logging.getLogger("curastream.writers.clip_writer")


class ClipFiles:
    """:class:`~curastream.writers.clip_writer.ClipWriter`'s per-clip task, which inherits it: the
    writer's settings, ``storage`` and ``_put`` are its own."""

    def _clip_rel(self, uid: str, filtered: bool) -> str:
        d = FILTERED_CLIPS_DIR if filtered else CLIPS_DIR
        return f"{d}/{uid[:2]}/{uid}.mp4" if self.clip_subdirs else f"{d}/{uid}.mp4"

    def _write_clip(self, clip: ClipRecord, video: VideoRecord, key: str) -> ClipOutcome:
        """``key``: the video's path under input_path, which every file is journaled under."""
        passed = not clip.filtered_by
        out = ClipOutcome(clip.uuid, passed, list(clip.filtered_by), clip.duration)
        errors = dict(clip.errors)
        write_files = not self.dry_run

        # Curator records where the clip goes whether or not it is uploaded (upload_clips=False
        # still encodes: the metas keep the clip's own facts, only the MP4 is not written).
        clip_rel = self._clip_rel(clip.uuid, not passed)
        clip_location = self.storage.url(clip_rel)
        if clip.media:
            out.transcoded = True
            if self.upload_clips and write_files:
                clip_location = self._put(clip_rel, clip.media, key)
        elif not self.dry_run:
            log.warning("clip %s from %s has no media; nothing to upload", clip.uuid, video.path)

        # Curator writes previews and embeddings for passing clips only.
        if passed:
            if clip.previews:
                out.has_webp = True
                if self.generate_previews and write_files:
                    # One per window, named by the window's clip-relative frames (end inclusive).
                    for (ws, we), webp in clip.previews.items():
                        self._put(f"{PREVIEWS_DIR}/{clip.uuid}/{ws}_{we}.webp", webp, key)
            elif self.generate_previews:
                out.preview_missing = True
                log.error("clip %s from %s has no preview; nothing to write", clip.uuid, video.path)
            emb = clip.embeddings.get(self.embedding_algorithm)
            if emb is not None:
                vec = np.asarray(emb).reshape(-1)
                out.embedding = vec.astype(np.float32)
                if write_files:
                    arr = vec.astype(np.float16).reshape(1, -1)
                    self._put(f"{self._emb_prefix}_embd/{clip.uuid}.pickle", pickle.dumps(arr), key)
            elif self.generate_embeddings:
                out.embedding_missing = True
                # the plug-in's own message, when it failed, says more than that it is missing
                errors.setdefault("embedding", f"no {self.embedding_algorithm} embedding")
                log.error("clip %s from %s has no %s embedding", clip.uuid, video.path,
                          self.embedding_algorithm)

        windows = clip_windows(clip, out, self.caption_models, self.enhanced_caption_models)
        if passed and self.generate_captions and not out.has_caption:
            log.warning("clip %s from %s has no caption", clip.uuid, video.path)
        out.has_errors = bool(errors)
        out.valid = bool((clip.media or self.dry_run) and passed and not errors)

        if write_files:
            doc = meta_doc(clip, video, clip_location, errors, windows, out.valid)
            self._put(f"{METAS_DIR}/{clip.uuid}.json", dumps(doc), key)
        return out
