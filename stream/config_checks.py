"""The checks that span a run config's fields (outputs, backends, models, GPU share), run by validate()."""

from __future__ import annotations

from curastream.config_schema import ConfigError


def _check_gpu_share(cfg) -> None:
    # Ray schedules fractions of one GPU or whole GPUs, never 1.5
    if cfg.gpus_per_task > 1 and not float(cfg.gpus_per_task).is_integer():
        raise ConfigError("gpus_per_task", "must be a fraction of one GPU (0 < N <= 1) or a whole number",
                          cfg.gpus_per_task)


def _is_local(path: str) -> bool:
    import re

    return not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) or path.lower().startswith("file://")


def _local(path: str) -> str:
    import os

    return os.path.abspath(os.path.expanduser(path[len("file://"):] if path.lower().startswith("file://") else path))


def _check_output_paths(cfg) -> None:
    """Where the run writes, checked before any work: a stats file that cannot be created used
    to fail only after the whole run, and an output that is a file failed with a puzzling
    "unsafe output path"."""
    import os

    from curastream.engine.names import printable

    _check_backends(cfg)
    out = cfg.output
    if out == "-":
        raise ConfigError("output", "must be a folder or URL: - (stdout) cannot hold a dataset; "
                                    "--emit-ipc - streams the records there")
    if out and _is_local(out) and os.path.exists(_local(out)) and not os.path.isdir(_local(out)):
        raise ConfigError(None, f"--output {printable(out)} is a file, not a folder")
    if cfg.stats == "-" and cfg.emit_ipc == "-":
        raise ConfigError("stats", "cannot be - (stdout) together with --emit-ipc -: both would write there")
    for name in ("stats", "emit_ipc"):
        path = getattr(cfg, name)
        if not path or path == "-" or not _is_local(path):
            continue
        full = _local(path)
        parent = os.path.dirname(full)
        if os.path.isdir(full):
            raise ConfigError(name, "names a folder; give a file path", path)
        # A missing folder is made when the file is written (stats beside or inside --output
        # are common); what must hold now is that the nearest existing folder takes new files.
        anchor = parent
        while not os.path.exists(anchor) and os.path.dirname(anchor) != anchor:
            anchor = os.path.dirname(anchor)
        if not os.path.isdir(anchor):
            raise ConfigError(name, f"cannot be written: {printable(anchor)} is a file, not a folder", path)
        if not os.access(anchor, os.W_OK | os.X_OK) or (os.path.exists(full) and not os.access(full, os.W_OK)):
            raise ConfigError(name, "cannot be written: permission denied", path)


# Every field that names a place to read or write: a URL among them whose fsspec backend is not
# installed fails here, in one line, instead of as a traceback once the run reaches it.
_LOCATION_FIELDS = ("sources", "output", "input_path", "files_from", "url_list", "stats", "emit_ipc")


def _check_backends(cfg) -> None:
    from curastream.engine.storage import MissingBackendError, require_backend

    for name in _LOCATION_FIELDS:
        value = getattr(cfg, name, None)
        for url in (value if isinstance(value, list) else [value]):
            if not url or _is_local(url):
                continue
            try:
                require_backend(url)
            except MissingBackendError as e:
                why = f"{e.url} needs the {e.package} package: pip install {e.package}"
            except ValueError as e:  # fsspec: "Protocol not known: ..."
                why = f"{url}: {e}"
            else:
                continue
            # sources are positional: no flag to name
            raise ConfigError(None, f"input {why}") if name == "sources" else ConfigError(name, why)


def _check_models(cfg) -> None:
    for bad in [m for m in cfg.models if not m.strip()]:
        raise ConfigError("models", "needs a model name or pkg.module:factory", bad, flag="--model")
    if getattr(cfg, "max_nsfw", None) is not None and "nsfw" not in cfg.models:
        raise ConfigError("max_nsfw", "needs --model nsfw (the score it filters on)")
