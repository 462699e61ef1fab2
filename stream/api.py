"""The embedded Python API: the same runs the CLI makes, from config objects."""

from __future__ import annotations

from curastream.config import ImageFilters, ImageRunConfig, VideoRunConfig
from curastream.engine.device import resolve_device
from curastream.images.pipeline import run_images, stream_images
from curastream.videos.pipeline import run_videos, stream_videos

__all__ = ["ImageFilters", "ImageRunConfig", "VideoRunConfig", "resolve_device", "run_images", "stream_images",
           "run_videos", "stream_videos"]
