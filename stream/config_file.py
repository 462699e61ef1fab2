"""``--config FILE`` and ``--print-config``: flat settings files in TOML or YAML.

Keys are the config field names (the flags without dashes), filters at the top level too, the
same keys ``to_dict()`` writes into ``index.json``. Values are checked by ``validate()`` like
values from flags. Files have no None: a key left out keeps its default, and the fields whose
default is not None take their off value (``0``) instead.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from typing import Any

from curastream.config_schema import ConfigError, settable_specs, specs

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}


def file_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ConfigError(None, f"--config {path}: unknown file type {ext or '(none)'!r}; use .toml, .yaml or .yml")
    return FORMATS[ext]


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _unknown_key(cls: type, key: str, path: str) -> ConfigError:
    for s in specs(cls):
        if not s.settable and s.name == key:
            return ConfigError(None, f"--config {path}: {key!r} can only be set from the Python API")
        if key in s.opt.formerly:
            return ConfigError(None, f"--config {path}: unknown key {key!r}; it is now called {s.name!r}")
    names = [s.name for s in settable_specs(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "--print-config lists the valid keys"
    return ConfigError(None, f"--config {path}: unknown key {key!r}; {hint}")


def read_config_file(path: str, cls: type) -> dict[str, Any]:
    """The settings in ``path`` as a flat dict of known keys (values are not checked yet)."""
    fmt = file_format(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(None, f"--config {path}: {e.strerror or _one_line(e)}") from None
    try:
        if fmt == "toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            import yaml

            data = yaml.safe_load(raw)
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault: one line
        raise ConfigError(None, f"--config {path}: not valid {fmt.upper()}: {_one_line(e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(None, f"--config {path}: expected key = value settings, got a {type(data).__name__}")
    known = {s.name for s in settable_specs(cls)}
    for key in data:
        if key not in known:
            raise _unknown_key(cls, str(key), path)
    return data


def dump_config(flat: dict[str, Any], fmt: str = "toml") -> str:
    """``flat`` (a ``to_dict()``) as file text; None values are left out (they are the defaults)."""
    flat = {k: v for k, v in flat.items() if v is not None}
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(flat, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "".join(f"{k} = {_toml_value(k, v)}\n" for k, v in flat.items())


# TOML for flat scalars and lists of strings, which is all a config holds.
def _toml_value(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _toml_string(key, v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(key, x) for x in v) + "]"
    raise ConfigError(key, f"cannot be written to a config file ({type(v).__name__})")


def _toml_string(key: str, s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if 0xD800 <= o <= 0xDFFF:  # a file name's undecodable byte: TOML text must be Unicode
            raise ConfigError(key, "holds bytes that are not UTF-8 and cannot be written to TOML", s)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20 or o == 0x7F:
            out.append(json.dumps(ch)[1:-1] if ch in "\b\t\n\f\r" else f"\\u{o:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
