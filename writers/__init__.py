"""Sinks: image shards, clip directories, rejects, the run index; storage with atomic commit."""
