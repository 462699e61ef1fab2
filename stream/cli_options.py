"""Click commands generated from the run configs' field metadata.

:class:`ConfigCommand` turns every settable field of a config class into an option (flag = field
name with dashes), prints them grouped in ``--help``, merges defaults < ``--config FILE`` <
command line, validates once and calls the command with the finished config object.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from curastream.config_file import dump_config, file_format, read_config_file
from curastream.config_schema import GROUPS, ConfigError, Spec, from_flat, parse_text, range_text, settable_specs

_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)


def fail(msg: str) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


class GroupedOption(click.Option):
    def __init__(self, *args: Any, group: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedArgument(click.Argument):
    """An argument listed with its help in its group (click < 8.3 arguments take no help)."""

    def __init__(self, *args: Any, group: str | None = None, help: str = "", **kwargs: Any):  # noqa: A002
        super().__init__(*args, **kwargs)
        self.group, self.help_text = group, help

    def get_help_record(self, ctx: click.Context) -> tuple[str, str]:
        return self.make_metavar(ctx) if _takes_ctx(self.make_metavar) else self.make_metavar(), self.help_text


def _takes_ctx(method: Any) -> bool:
    return "ctx" in inspect.signature(method).parameters


def _shorthand_name(s: Spec) -> str:
    return f"{s.name}_shorthand"


def _show(s: Spec, v: Any) -> str:
    if s.base is bool:
        return "on" if v else "off"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _help(s: Spec) -> str:
    extra = []
    if s.base in (int, float) and range_text(s):
        extra.append(range_text(s) + (f", {s.opt.off} = off" if s.opt.off is not None else ""))
    if s.default is not None and not (s.opt.flag and s.default is False) and s.base is not list:
        extra.append(f"default: {_show(s, s.default)}")
    return s.opt.help + (f"  [{'; '.join(extra)}]" if extra else "")


def _metavar(s: Spec) -> str:
    if s.opt.choices:
        return "[" + "|".join(s.opt.choices) + "]"
    return s.opt.metavar or {int: "INTEGER", float: "NUMBER"}.get(s.base, "TEXT")


def _params(cls: type) -> list[click.Parameter]:
    out: list[click.Parameter] = []
    for s in settable_specs(cls):
        o = s.opt
        if o.scope == "positional":
            out.append(GroupedArgument([s.name], nargs=-1, group=o.group, help=o.help))
            continue
        if o.scope == "global":
            continue
        decls = [s.flag, s.name] + ([o.short] if o.short else [])
        common = dict(group=o.group, help=_help(s))
        if s.base is bool:
            decls[0] = s.flag if o.flag else f"{s.flag}/--no-{s.flag[2:]}"
            out.append(GroupedOption(decls, is_flag=True, default=None, **common))
        elif s.base is list:
            out.append(GroupedOption(decls, multiple=True, metavar=_metavar(s), **common))
        else:
            out.append(GroupedOption(decls, metavar=_metavar(s), **common))
        for short in o.shorthands or ():
            # one destination for all of them: the last one given wins
            out.append(GroupedOption([f"--{short}", _shorthand_name(s)], flag_value=short, default=None,
                                     group=o.group, help=f"Shorthand for {s.flag} {short}."))
    out.append(GroupedOption(["--config", "config_file"], metavar="FILE",
                             help="Read settings from a TOML (.toml) or YAML (.yaml, .yml) file; keys are the "
                                  "option names with underscores. Options given here override the file."))
    # One destination: what to print instead of running (the last of the two given wins).
    out.append(GroupedOption(["--print-config", "print_config"], flag_value="config", default=None,
                             help="Print the effective settings (defaults < --config < options) and exit: TOML, "
                                  "or YAML when --config is a YAML file. Loads back with --config."))
    out.append(GroupedOption(["--print-pipeline", "print_config"], flag_value="pipeline", default=None,
                             help="Print the stages this command runs (a curastream.Pipeline, each stage as the "
                                  "Python call that makes it) and exit; that pipeline's run() is this command's."))
    return out


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in _GIVEN


def _command_line(ctx: click.Context, s: Spec) -> tuple[bool, Any]:
    """(whether the command line sets ``s``, its value)."""
    if s.opt.scope == "global":
        root = ctx.find_root()
        return (root.params.get(s.name) or 0) > 0, True
    v = ctx.params.get(s.name)
    if s.opt.scope == "positional":
        return bool(v), list(v or ())
    if s.opt.shorthands and _given(ctx, _shorthand_name(s)):
        short = ctx.params[_shorthand_name(s)]
        if _given(ctx, s.name) and v != short:
            raise ConfigError(s.name, f"says {v}, but --{short} was given too")
        return True, short
    if not _given(ctx, s.name):
        return False, None
    if s.base is list:
        return True, list(v)
    if s.base is bool:
        return True, v
    return True, parse_text(s, v)


class ConfigCommand(click.Command):
    """A subcommand whose options are the fields of ``config``; its callback gets the config."""

    def __init__(self, *args: Any, config: type, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config_class = config
        self.params[:0] = _params(config)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str | None, list[tuple[str, str]]] = {}
        for p in self.get_params(ctx):
            rec = p.get_help_record(ctx)
            if rec:
                sections.setdefault(getattr(p, "group", None), []).append(rec)
        for g in (*GROUPS, None):
            if g in sections:
                with formatter.section(f"{GROUPS[g]} options" if g else "Other options"):
                    formatter.write_dl(sections[g])

    def build_config(self, ctx: click.Context) -> tuple[Any, bool]:
        """The config from defaults < file < command line, validated; and whether to print it."""
        path = ctx.params.get("config_file")
        printing = bool(ctx.params.get("print_config"))
        in_file = read_config_file(path, self.config_class) if path else {}
        flat: dict[str, Any] = {}
        for s in settable_specs(self.config_class):
            given, value = _command_line(ctx, s)
            if given:
                flat[s.name] = value
            elif s.name in in_file:
                v = in_file[s.name]
                # a file may give one source as a plain string
                flat[s.name] = [v] if s.base is list and isinstance(v, str) else v
        cfg = from_flat(self.config_class, flat)
        cfg.validate(require_sources=not printing)
        if not printing and not cfg.output:
            out = next(s for s in settable_specs(self.config_class) if s.name == "output")
            raise ConfigError(None, f"missing {out.flag} (on the command line or as output in --config)")
        return cfg, printing

    def invoke(self, ctx: click.Context) -> Any:
        try:
            cfg, printing = self.build_config(ctx)
            if printing:
                if ctx.params["print_config"] == "pipeline":
                    from curastream.compose.from_config import pipeline_for

                    click.echo(pipeline_for(cfg).describe())
                    return None
                path = ctx.params.get("config_file")
                fmt = file_format(path) if path else "toml"
                click.echo(dump_config(cfg.to_dict(), fmt), nl=False)
                return None
        except ConfigError as e:
            fail(e.cli_message())
        return ctx.invoke(self.callback, cfg)
