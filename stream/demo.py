"""``curastream demo``: sample data made on the fly, then the real pipelines over it."""

from __future__ import annotations

import os
from typing import Iterator

from curastream.config import ImageRunConfig
from curastream.samples import make_sample_images, make_sample_videos


def run_demo(out: str, videos: bool = True, verbose: bool = False) -> Iterator[str]:
    from curastream.images.pipeline import run_images

    samples = os.path.join(out, "samples")
    imgs = make_sample_images(os.path.join(samples, "images"))
    yield f"made {len(imgs)} sample images in {os.path.join(samples, 'images')}"
    cfg = ImageRunConfig(sources=[os.path.join(samples, "images")], output=os.path.join(out, "images"),
                         images_per_tar=4, on_existing="overwrite", verbose=verbose, progress=False)
    stats = run_images(cfg)
    yield from stats.summary_lines()
    yield f"image shards: {cfg.output}"
    if videos:
        from curastream.config import VideoRunConfig
        from curastream.videos.pipeline import run_videos

        # 256 px high: under 256 px Curator's motion rule has no score (the run says so per video)
        vids = make_sample_videos(os.path.join(samples, "videos"), size=(448, 256))
        yield f"made {len(vids)} sample videos in {os.path.join(samples, 'videos')}"
        vcfg = VideoRunConfig(sources=[os.path.join(samples, "videos")], output=os.path.join(out, "videos"),
                              input_path=os.path.join(samples, "videos"), split="scenes", previews=True,
                              on_existing="overwrite", verbose=verbose, progress=False)
        vstats = run_videos(vcfg)
        yield from vstats.summary_lines()
        yield f"clips: {vcfg.output}"
