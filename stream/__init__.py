"""curastream: streaming curation of images and videos into training data."""

__version__ = "0.1.0"
