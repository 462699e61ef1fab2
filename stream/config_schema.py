"""What each run-config field accepts, declared once on the field itself.

Every field of the run configs carries an :class:`Opt` in its ``dataclasses.field`` metadata:
help, help group, choices, numeric range, the value that means "off", and how it appears on
the command line. ``validate()``, the ``--config`` loader and the generated CLI options all read
it, so a name, a default or a range is written in exactly one place.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

META = "curastream"

# Help sections (name: title) in the order --help prints them; a command shows those it uses.
GROUPS = {"input": "Input", "output": "Output", "splitting": "Splitting", "clips": "Clip", "filters": "Filter",
          "performance": "Performance"}

_NO_VALUE = object()


class ConfigError(ValueError):
    """A setting outside what its field allows. The message names the field, its flag, the
    rule and the value given; :meth:`cli_message` is the same without the Python name."""

    def __init__(self, name: str | None, rule: str, value: Any = _NO_VALUE, flag: str | None = None):
        self.name, self.rule, self.value = name, rule, value
        self.flag = flag or (flag_of(name) if name else None)
        super().__init__(self._text(cli=False))

    def _text(self, cli: bool) -> str:
        head = "" if self.name is None else f"{self.flag} " if cli else f"{self.name} ({self.flag}) "
        tail = "" if self.value is _NO_VALUE else f", got {_shown(self.value)}"
        return f"{head}{self.rule}{tail}"

    def cli_message(self) -> str:
        return self._text(cli=True)


def _shown(v: Any) -> str:
    # -5 rather than -5.0 for "--min-sharpness -5": echo what was typed where that is exact
    return str(int(v)) if isinstance(v, float) and v.is_integer() else repr(v)


@dataclass(frozen=True)
class Opt:
    """How one config field is set, checked and documented."""

    help: str
    group: str | None = None
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    above: bool = False  # ``min`` itself is not allowed (> min)
    # The value that stands for None ("off") on the command line and in files, which have no
    # None; it is stored as None. Required for a nullable field whose default is not None.
    off: Any = None
    flag: bool = False  # a boolean given as --x only, with no --no-x
    short: str | None = None
    metavar: str | None = None
    # Flags that each set one choice, e.g. ("copy", "reencode") -> --copy, --reencode
    shorthands: tuple[str, ...] | None = None
    # command: an option of the subcommand; positional: its arguments; global: an option of the
    # `curastream` group (-v); api: settable from Python only (no flag, not in files or index.json)
    scope: str = "command"
    formerly: tuple[str, ...] = ()  # earlier names, only to point users at the new one


def opt(default: Any = MISSING, *, factory: Any = MISSING, **meta: Any) -> Any:
    """A dataclass field with its :class:`Opt`."""
    return field(default=default, default_factory=factory, metadata={META: Opt(**meta)})


def api_only(default: Any = None, *, help: str) -> Any:  # noqa: A002 - mirrors Opt.help
    return opt(default, help=help, scope="api")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Spec:
    """One flat setting: a field of the config or of a config nested in it (``filters``)."""

    name: str
    path: tuple[str, ...]  # attribute path from the top-level config
    opt: Opt
    base: type  # bool, int, float, str, list or dict
    nullable: bool
    default: Any

    @property
    def flag(self) -> str:
        return self.name.upper() if self.opt.scope == "positional" else flag_of(self.name)

    @property
    def dotted(self) -> str:
        """Where the value lives from Python (``filters.dedup_distance``): the API's name for it."""
        return ".".join(self.path)

    @property
    def settable(self) -> bool:
        return self.opt.scope != "api"


def _base_type(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        base, _ = _base_type(rest[0]) if len(rest) == 1 else (object, False)
        return base, type(None) in args
    origin = typing.get_origin(hint) or hint
    return (origin if isinstance(origin, type) else object), hint is Any


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


@functools.cache
def specs(cls: type, expand: bool = True) -> tuple[Spec, ...]:
    """The flat settings of config class ``cls``, nested config dataclasses expanded in place."""
    hints = typing.get_type_hints(cls)
    out: list[Spec] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            if expand:
                out += [dataclasses.replace(s, path=(f.name, *s.path)) for s in specs(hint)]
            continue
        o = f.metadata.get(META)
        if o is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no Opt metadata")
        base, nullable = _base_type(hint)
        d = _default(f)
        if nullable and d is not None and d is not MISSING and o.off is None and o.scope != "api":
            raise TypeError(f"{cls.__name__}.{f.name} needs off=: files and flags have no None")
        if base in (int, float) and o.scope != "api" and o.min is None and o.max is None:
            # the range is what a wrong value's message names, and what --help shows
            raise TypeError(f"{cls.__name__}.{f.name} needs a range: min= and/or max=")
        out.append(Spec(f.name, (f.name,), o, base, nullable, d))
    return tuple(out)


def settable_specs(cls: type) -> tuple[Spec, ...]:
    return tuple(s for s in specs(cls) if s.settable)


def _num(x: float) -> str:
    return f"{x:g}"


def range_text(s: Spec) -> str:
    o = s.opt
    if o.min is not None and o.max is not None:
        return f"in {_num(o.min)}..{_num(o.max)}"
    if o.min is not None:
        return f"{'>' if o.above else '>='} {_num(o.min)}"
    if o.max is not None:
        return f"<= {_num(o.max)}"
    return ""


def rule(s: Spec) -> str:
    """What ``s`` accepts, as the end of "--flag must be ..."."""
    if s.base is bool:
        text = "must be true or false"
    elif s.opt.choices:
        text = "must be one of " + ", ".join(s.opt.choices)
    elif s.base is list:
        text = "must be a list of strings"
    elif s.base in (int, float):
        text = f"must be {'an integer' if s.base is int else 'a number'} {range_text(s)}".rstrip()
    else:
        text = "must be a string"
    if s.opt.off is not None:
        text += f" ({s.opt.off} = off)"
    return text


def _in_range(s: Spec, v: float) -> bool:
    o = s.opt
    if isinstance(v, float) and not math.isfinite(v):
        return False
    if o.min is not None and (v <= o.min if o.above else v < o.min):
        return False
    return o.max is None or v <= o.max


def check(s: Spec, value: Any) -> Any:
    """``value`` in its canonical form (off value -> None, int -> float for a float field), or
    ConfigError when ``s`` does not accept it."""
    if value is None and s.nullable:
        return None
    o, base = s.opt, s.base
    if o.off is not None and s.nullable and not isinstance(value, bool) and value == o.off:
        return None
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and _in_range(s, value)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _in_range(s, value)
        value = float(value) if ok else value
    elif base is list:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = list(value) if ok else value
    elif base is str:
        ok = isinstance(value, str) and (not o.choices or value in o.choices)
    else:  # API-only objects (plug-ins, credentials) are not checked here
        ok = True
    if not ok:
        raise ConfigError(s.dotted, rule(s), value, s.flag)
    return value


def parse_text(s: Spec, text: str) -> Any:
    """A command-line string as the type of ``s`` (the range is checked by :func:`check`)."""
    try:
        return int(text) if s.base is int else float(text) if s.base is float else text
    except ValueError:
        raise ConfigError(s.dotted, rule(s), text, s.flag) from None


def canonicalise(obj: Any) -> None:
    """Store off values as None and ints of float fields as floats, on ``obj``'s own fields:
    the API, the flags and files then give equal configs (and equal shard names)."""
    for s in specs(type(obj), expand=False):
        v = getattr(obj, s.name)
        if s.opt.off is not None and s.nullable and not isinstance(v, bool) and v == s.opt.off:
            setattr(obj, s.name, None)
        elif s.base is float and isinstance(v, int) and not isinstance(v, bool):
            setattr(obj, s.name, float(v))


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        obj = getattr(obj, p)
    return obj


def _set(obj: Any, path: tuple[str, ...], value: Any) -> None:
    setattr(_get(obj, path[:-1]), path[-1], value)


def check_all(obj: Any) -> None:
    """Check every settable field of ``obj`` (nested configs too), storing canonical values."""
    for s in settable_specs(type(obj)):
        _set(obj, s.path, check(s, _get(obj, s.path)))


def to_flat(obj: Any) -> dict[str, Any]:
    """Settable fields as one flat dict, the keys ``--config`` reads. None stays None where it is
    the default; where it is not, the off value stands for it (files cannot say None)."""
    out = {}
    for s in settable_specs(type(obj)):
        v = _get(obj, s.path)
        if v is None and s.default is not None and s.opt.off is not None:
            v = s.opt.off
        out[s.name] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def from_flat(cls: type, flat: dict[str, Any]) -> Any:
    """An instance of ``cls`` from flat settings (missing ones keep their defaults)."""
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for s in settable_specs(cls):
        if s.name in flat:
            if len(s.path) == 1:
                kwargs[s.name] = flat[s.name]
            else:
                nested.setdefault(s.path[0], {})[s.path[1]] = flat[s.name]
    hints = typing.get_type_hints(cls)
    for name, sub in nested.items():
        kwargs[name] = hints[name](**sub)
    for s in specs(cls, expand=False):
        if s.default is MISSING and s.name not in kwargs:
            kwargs[s.name] = [] if s.base is list else None
    return cls(**kwargs)
