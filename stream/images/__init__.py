"""The image slice: sources, probe, decode, stages and the image pipeline."""
