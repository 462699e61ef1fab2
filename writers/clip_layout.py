"""ClipWriterStage layout (SPEC §2): where every file of the clip dataset goes, how its JSON is
formatted, and the resume rule that reads the layout back (:meth:`ClipLayout.is_video_done`)."""

from __future__ import annotations

import json
import numbers
import os
import posixpath
from typing import Any

import numpy as np

from curastream.engine.storage import Storage

EMBEDDING_ALGORITHMS = {"internvideo2": "iv2", "cosmos-embed1": "ce1"}

CLIPS_DIR = "clips"
FILTERED_CLIPS_DIR = "filtered_clips"
PREVIEWS_DIR = "previews"
METAS_DIR = "metas/v0"
PROCESSED_VIDEOS_DIR = "processed_videos"
PROCESSED_CHUNKS_DIR = "processed_clip_chunks"


def _normalize(path: str, resolve_links: bool = True) -> str:
    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path:
        return path.rstrip("/")
    path = os.path.expanduser(path)
    return os.path.realpath(path) if resolve_links else os.path.abspath(path)


def relative_video_path(input_path: str, video_path: str) -> str:
    """``video_path`` relative to ``input_path`` (both resolved first), posix separators.

    The prefix must end at a path separator: ``/data/vid`` is not a prefix of
    ``/data/videos/a.mp4``, where plain ``str.startswith`` would say it is.
    Paths are compared as given (made absolute) first, so a symlink inside ``input_path``
    that points elsewhere keeps its name under ``input_path``; then with links resolved
    (``input_path`` itself may be reached through a link).
    """
    try:
        return _relative(_normalize(input_path, False), _normalize(video_path, False), input_path, video_path)
    except ValueError:
        return _relative(_normalize(input_path), _normalize(video_path), input_path, video_path)


def _relative(root: str, video: str, input_path: str, video_path: str) -> str:
    if video == root:  # input_path names the single video itself
        return posixpath.basename(video.replace(os.sep, "/"))
    prefix = root if root.endswith(("/", os.sep)) else root + "/"
    if os.sep != "/":
        video, prefix = video.replace(os.sep, "/"), prefix.replace(os.sep, "/")
    if not video.startswith(prefix):
        raise ValueError(
            f"video {video_path!r} is not under input_path {input_path!r} "
            f"(resolved: {video!r} vs {root!r}); input_path must be a prefix of every video path"
        )
    return video[len(prefix):]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, numbers.Real):  # Fraction frame rates and the like
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(doc: dict[str, Any]) -> bytes:
    # 4-space indent is Curator's format; readers diffing the two outputs see the same text.
    return json.dumps(doc, indent=4, default=_json_default).encode()


def num(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v




class ClipLayout:
    """The layout's path helpers (names and results fixed by SPEC §2) and its resume rule, as
    static methods; :class:`~curastream.writers.clip_writer.ClipWriter` inherits them."""

    @staticmethod
    def _join(output_path: str, extra: str) -> str:
        return str(output_path).rstrip("/") + "/" + extra.strip("/")

    @staticmethod
    def get_output_path_clips(output_path: str, filtered: bool = False) -> str:
        return ClipLayout._join(output_path, FILTERED_CLIPS_DIR if filtered else CLIPS_DIR)

    @staticmethod
    def get_output_path_previews(output_path: str) -> str:
        return ClipLayout._join(output_path, PREVIEWS_DIR)

    @staticmethod
    def get_output_path_metas(output_path: str, version: str) -> str:
        return ClipLayout._join(output_path, f"metas/{version}")

    @staticmethod
    def get_output_path_iv2_embd(output_path: str) -> str:
        return ClipLayout._join(output_path, "iv2_embd")

    @staticmethod
    def get_output_path_ce1_embd(output_path: str) -> str:
        return ClipLayout._join(output_path, "ce1_embd")

    @staticmethod
    def get_output_path_iv2_embd_parquet(output_path: str) -> str:
        return ClipLayout._join(output_path, "iv2_embd_parquet")

    @staticmethod
    def get_output_path_ce1_embd_parquet(output_path: str) -> str:
        return ClipLayout._join(output_path, "ce1_embd_parquet")

    @staticmethod
    def get_output_path_processed_videos(output_path: str) -> str:
        return ClipLayout._join(output_path, PROCESSED_VIDEOS_DIR)

    @staticmethod
    def get_output_path_processed_clip_chunks(output_path: str) -> str:
        return ClipLayout._join(output_path, PROCESSED_CHUNKS_DIR)

    # -- resume ---------------------------------------------------------------------------
    @staticmethod
    def processed_video_rel(input_path: str, video_path: str) -> str:
        return f"{PROCESSED_VIDEOS_DIR}/{relative_video_path(input_path, video_path)}.json"

    @staticmethod
    def processed_chunk_rel(input_path: str, video_path: str, chunk_index: int) -> str:
        rel = relative_video_path(input_path, video_path)
        return f"{PROCESSED_CHUNKS_DIR}/{rel}_{int(chunk_index)}.json"

    @staticmethod
    def is_video_done(output_path: str, input_path: str, video_path: str,
                      storage_options: dict | None = None) -> bool:
        """SPEC's resume rule: the video's processed_videos JSON and all its chunk JSONs exist."""
        st = Storage(output_path, storage_options)
        try:
            doc = json.loads(st.read_bytes(ClipLayout.processed_video_rel(input_path, video_path)))
        except (OSError, ValueError):  # missing, or unreadable: not a completion marker
            return False
        n = doc.get("num_clip_chunks") if isinstance(doc, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return False
        return all(
            st.exists(ClipLayout.processed_chunk_rel(input_path, video_path, i)) for i in range(n)
        )
