"""The video slice: sources, probe, decode, clip media, stages and the video pipeline."""
