"""Plug-in models by name: the ``embedding_algorithm`` and ``caption_models`` a writer names.

Curator ships its models; we ship none, so a pipeline that asks for embeddings or captions
finds the callable registered under the name it uses, or stops before any work with the one
line that says what to register.
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["register_embedder", "register_captioner", "embedder_for", "captioner_for", "MissingPluginError"]

_lock = threading.Lock()
_embedders: dict[str, Callable] = {}
_captioners: dict[str, Callable] = {}


class MissingPluginError(LookupError):
    """The pipeline names a model no plug-in is registered for."""


def register_embedder(name: str, fn: Callable | None) -> None:
    """``fn(frames: uint8 array N x H x W x 3) -> 1-D vector``, stored under ``name``
    (``internvideo2`` / ``cosmos-embed1``). ``None`` removes it."""
    _put(_embedders, name, fn)


def register_captioner(name: str, fn: Callable | None) -> None:
    """``fn(frames: uint8 array N x H x W x 3) -> str``, recorded as ``<name>_caption``.
    ``None`` removes it."""
    _put(_captioners, name, fn)


def _put(table: dict[str, Callable], name: str, fn: Callable | None) -> None:
    if fn is not None and not callable(fn):
        raise TypeError(f"plug-in for {name!r} must be callable, got {type(fn).__name__}")
    with _lock:
        if fn is None:
            table.pop(name, None)
        else:
            table[name] = fn


def embedder_for(name: str) -> Callable | None:
    with _lock:
        return _embedders.get(name)


def captioner_for(name: str) -> Callable | None:
    with _lock:
        return _captioners.get(name)
