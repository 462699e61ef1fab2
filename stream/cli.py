"""The ``curastream`` command: a thin layer that fills the same config objects the API takes.

The ``images`` / ``videos`` options are generated from the config fields (cli_options.py); the
commands run the composed pipeline of those settings (``curastream.compose.pipeline_for``),
the one ``--print-pipeline`` shows and a Python user can build: one way to run, two faces."""

from __future__ import annotations

import logging
import sys

import click

from curastream import __version__
from curastream.cli_options import ConfigCommand, GroupedArgument
from curastream.cli_options import fail as _fail
from curastream.config import ConfigError, ImageRunConfig, VideoRunConfig

log = logging.getLogger("curastream")


def _setup_logging(verbose: int, force: bool = False) -> None:
    # Only the CLI configures logging; the library never touches global logging.
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=force)
    logging.captureWarnings(True)  # warnings.warn lines then pass the progress bar like log lines
    if verbose < 2:
        logging.getLogger("nvidia").setLevel(logging.WARNING)
        # s3fs runs aiohttp on its own event loop; when the store drops a connection, asyncio
        # logs the orphaned request's traceback. The run reports that failure itself, in one line.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _echo_summary(lines: list[str], to_stderr: bool) -> None:
    for line in lines:
        click.echo(line, err=to_stderr)


def _is_storage_error(e: BaseException) -> bool:
    """An I/O failure of the input or output store (disk, S3 endpoint down, credentials...)."""
    top = (type(e).__module__ or "").split(".")[0]
    if top == "av":  # PyAV's errors subclass OSError but are about media, not storage
        return False
    return isinstance(e, OSError) or top in ("botocore", "aiobotocore", "s3fs", "aiohttp", "fsspec")


def _run(fn, cfg, kept: str):
    """Run ``fn(cfg)``; every way it can end maps to one exit code and at most one line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from curastream.engine.device import DeviceError
    from curastream.engine.output import OutputError, OutputExistsError
    from curastream.engine.storage import MissingBackendError

    try:
        # Log lines (and warnings, captured into logging) are written above the progress bar
        # instead of through it, which left a torn bar and a stale copy of it on every warning.
        with logging_redirect_tqdm():
            return fn(cfg)
    except ConfigError as e:
        _fail(e.cli_message())
    except (DeviceError, OutputExistsError, OutputError, FileNotFoundError, ValueError, MissingBackendError) as e:
        _fail(str(e))
    except ImportError as e:
        # A URL met mid-run (a line of --files-from) whose fsspec backend is not installed:
        # fsspec's own message names the package. Any other ImportError is a bug: traceback.
        if not _from_fsspec_registry(e):
            raise
        _fail(str(e))
    except KeyboardInterrupt:
        click.echo(f"interrupted{_by_signal()}: {kept}; rerun with --on-existing resume", err=True)
        _exit_now(_interrupt_code())
    except Exception as e:
        if not _is_storage_error(e):
            raise
        log.debug("storage failure", exc_info=True)
        click.echo(f"error: storage failed: {type(e).__name__}: {e}\n"
                   f"  {kept}; rerun with --on-existing resume once the store is reachable (-vv: traceback)", err=True)
        sys.exit(1)


def _from_fsspec_registry(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__") == "fsspec.registry"


def _outcome_warnings(stats, cfg) -> list[str]:
    """Lines for a run that worked but kept nothing: easy to miss in a summary of counts. The
    exit status stays 0: the run did what it was asked, and the output (rejects included) is
    complete and resumable; scripts can read items_out from --stats."""
    kind = stats.kind
    if stats.items_in and not stats.items_out:
        return [f"warning: all {stats.items_in} {kind} were rejected; nothing was written "
                f"(why: the 'rejected' lines above; one row each in _curastream/rejects.parquet)"]
    if kind != "videos" or not stats.items_out:
        return []
    clips, passed = stats.extra.get("clips", 0), stats.extra.get("clips_passed", 0)
    if not clips:
        return [f"warning: no clip of --min-clip-len ({cfg.min_clip_len:g} s) or longer came out of "
                f"{stats.items_out} videos"]
    if not passed and cfg.motion_filter:
        return [f"warning: none of the {clips} clips passed the filters; they are in filtered_clips/ "
                f"(--no-motion-filter keeps them all)"]
    return []


def _exit_now(code: int) -> None:
    """Exit at once after a stop. The pipeline has already waited for its writer (its abort
    removed the temporaries); what may still run are compute threads in a long native call (a
    video decode, a clip cut) that hold only memory. A normal exit would wait for those."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not turn the exit into a traceback
            pass
    os._exit(code)


# The signal that stopped the run (SIGTERM/SIGHUP), or None: Ctrl-C arrives as a plain
# KeyboardInterrupt from Python's own handler.
_stopped_by: int | None = None
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def _on_stop_signal(signum, frame) -> None:
    """SIGTERM (what orchestrators send) and SIGHUP stop a run the way Ctrl-C does, so the sink
    aborts and removes its temporaries instead of the process dying with them in place."""
    global _stopped_by
    if _stopped_by is not None:
        return  # a repeat (orchestrators resend) must not cut short the cleanup under way
    _stopped_by = signum
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _install_stop_signals() -> dict:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}  # Python allows handlers only in the main thread (e.g. an embedding test runner)
    old = {}
    for name in _STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            old[sig] = signal.signal(sig, _on_stop_signal)
    return old


def _restore_signals(old: dict) -> None:
    import signal

    for sig, handler in old.items():
        signal.signal(sig, handler)


def _interrupt_code() -> int:
    import signal

    return 128 + int(_stopped_by or signal.SIGINT)


def _by_signal() -> str:
    if _stopped_by is None:
        return ""
    import signal

    return f" by {signal.Signals(_stopped_by).name}"


class _Main(click.Group):
    def invoke(self, ctx):
        # Ctrl-C anywhere in a command (also before or after the run itself) exits with 130 and
        # one line, never click's "Aborted!" with status 1; SIGTERM/SIGHUP likewise with 128+n.
        # The handlers live only while the command runs: the library never installs any.
        old = _install_stop_signals()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(f"interrupted{_by_signal()}", err=True)
            _exit_now(_interrupt_code())
        finally:
            _restore_signals(old)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curastream")
@click.option("-v", "--verbose", count=True,
              help="More logging (-v info, -vv debug); also sets the run's verbose setting.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Curate images and videos into training data (NeMo Curator layouts), fast."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose)


@main.command(cls=ConfigCommand, config=ImageRunConfig)
def images(cfg: ImageRunConfig) -> None:
    """Curate images from SOURCES (dirs, globs, files, WebDataset tars, Parquet, URLs) into
    tar+Parquet shards (ImageWriterStage layout) with scores, filters and near-dup removal."""
    _verbose_from_config(cfg)
    stats_out = _stats_to_stdout(cfg)
    stats = _run(_run_composed, cfg, "committed shards are kept")
    _echo_summary(stats.summary_lines() + [f"output: {cfg.output}"],
                  to_stderr=cfg.emit_ipc == "-" or stats_out)
    for line in _outcome_warnings(stats, cfg):
        click.echo(line, err=True)
    if stats_out:
        click.echo(stats.to_json())


@main.command(cls=ConfigCommand, config=VideoRunConfig)
def videos(cfg: VideoRunConfig) -> None:
    """Split videos from SOURCES into clips with motion scores, filters and previews, written in
    the ClipWriterStage layout (clips/, metas/v0/, processed_videos/, ...)."""
    _verbose_from_config(cfg)
    stats_out = _stats_to_stdout(cfg)
    stats = _run(_run_composed, cfg, "finished videos are kept")
    _echo_summary(stats.summary_lines() + [f"output: {cfg.output}"],
                  to_stderr=cfg.emit_ipc == "-" or stats_out)
    for line in _outcome_warnings(stats, cfg):
        click.echo(line, err=True)
    if stats_out:
        click.echo(stats.to_json())


def _stats_to_stdout(cfg) -> bool:
    """``--stats -``: the stats JSON goes to stdout (and the summary to stderr) instead of a
    file named ``-``; the run itself is told to write no stats file."""
    if cfg.stats != "-":
        return False
    cfg.stats = None
    return True


def _verbose_from_config(cfg) -> None:
    # verbose = true in a --config file logs as much as -v would
    if cfg.verbose and logging.getLogger().level > logging.INFO:
        _setup_logging(1, force=True)


def _run_composed(cfg):
    from curastream.compose.from_config import pipeline_for

    return pipeline_for(cfg).run()


@main.command()
@click.option("--output", "-o", default="demo-output", show_default=True, help="Where samples and results go.")
@click.option("--videos/--no-videos", default=True, show_default=True, help="Also run the video pipeline.")
@click.pass_context
def demo(ctx, output, videos):
    """Make built-in sample data (real photos, rendered pans and cuts) and curate it."""
    import os

    from curastream.demo import run_demo

    for line in run_demo(os.path.abspath(output), videos=videos, verbose=ctx.obj["verbose"] > 0):
        click.echo(line)


def _byte_size(text: str) -> int | None:
    """``--max-shard-bytes``: 500000, 512M, 1G, 1GiB (powers of 1024); 0 or none: no byte limit."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t in ("0", "none", "off"):
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    mult = units.get(t[-1:], 1)
    try:
        value = int(float(t[:-1] if t[-1:] in units else t) * mult)
    except ValueError:
        raise click.BadParameter(f"expected a byte count such as 512M or 1G, got {text!r}") from None
    if value < 1:
        raise click.BadParameter(f"must be positive, got {text!r}")
    return value


@main.command()
@click.argument("source", cls=GroupedArgument, help="A curastream output: a clip tree or image shards.")
@click.option("--output", "-o", required=True, help="Where the shards go (folder or fsspec URL).")
@click.option("--format", "fmt", type=click.Choice(["webdataset", "parquet"]), default="webdataset", show_default=True,
              help="webdataset: tars of <key>.mp4/.jpg + .json (+ .txt captions, .npy embeddings), a Parquet beside "
                   "each; parquet: an index, one row per clip or image, pointing at the source's media.")
@click.option("--where", default=None, metavar="SQL",
              help='Keep only rows matching this condition over the index columns, e.g. "sharpness > 100 and '
                   'nsfw_score < 0.2" (DuckDB SQL; needs curastream[export]).')
@click.option("--per-shard", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Samples per tar (rows per Parquet part).")
@click.option("--max-shard-bytes", default="1G", show_default=True, metavar="SIZE",
              help="Close a tar before it passes this many bytes of members (512M, 1G; 0: no limit).")
@click.option("--include-filtered", is_flag=True, help="Clip trees: also export the clips in filtered_clips/.")
@click.option("--on-existing", type=click.Choice(["error", "resume", "overwrite"]), default="error", show_default=True,
              help="What to do when the output already has files.")
def export(source, output, fmt, where, per_shard, max_shard_bytes, include_filtered, on_existing):
    """Turn a curastream output at SOURCE (a clip tree or image shards) into training shards."""
    from curastream.export import ExportConfig

    cfg = ExportConfig(source=source, output=output, format=fmt, where=where, per_shard=per_shard,
                       max_shard_bytes=_byte_size(max_shard_bytes), include_filtered=include_filtered,
                       on_existing=on_existing)
    stats = _run(_run_export, cfg, "committed shards are kept")
    click.echo(f"{stats['written']} of {stats['listed']} {stats['source_kind']} exported "
               f"({stats['selected']} selected, {stats['resumed_skipped']} already done) into {stats['shards']} "
               f"shard(s), {stats['bytes']} bytes: {output}")
    if stats["no_media"]:
        click.echo(f"warning: {stats['no_media']} selected item(s) had no media file and were left out", err=True)


def _run_export(cfg):
    from curastream.export import run_export

    return run_export(cfg)


if __name__ == "__main__":  # pragma: no cover
    main()
