"""curastream: streaming curation of images and videos into training data.

The public API is imported lazily so ``import curastream`` stays cheap (no DALI, no PyAV).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "ImageRunConfig": "config",
    "ImageFilters": "config",
    "VideoRunConfig": "config",
    "run_images": "images.pipeline",
    "stream_images": "images.pipeline",
    "run_videos": "videos.pipeline",
    "stream_videos": "videos.pipeline",
    "resolve_device": "engine.device",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'curastream' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)
