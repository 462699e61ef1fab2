"""The ``curastream`` command: a thin layer that fills the same config objects the API takes.

The ``images`` / ``videos`` options are generated from the config fields (cli_options.py)."""

from __future__ import annotations

import logging
import sys

import click

from curastream import __version__
from curastream.cli_options import ConfigCommand
from curastream.cli_options import fail as _fail
from curastream.config import ConfigError, ImageRunConfig, VideoRunConfig

log = logging.getLogger("curastream")


def _setup_logging(verbose: int, force: bool = False) -> None:
    # Only the CLI configures logging; the library never touches global logging.
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=force)
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
    from curastream.engine.device import DeviceError
    from curastream.engine.output import OutputError, OutputExistsError

    try:
        return fn(cfg)
    except ConfigError as e:
        _fail(e.cli_message())
    except (DeviceError, OutputExistsError, OutputError, FileNotFoundError, ValueError) as e:
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
    stats = _run(_run_images, cfg, "committed shards are kept")
    _echo_summary(stats.summary_lines() + [f"output: {cfg.output}"],
                  to_stderr=cfg.emit_ipc == "-" or stats_out)
    if stats_out:
        click.echo(stats.to_json())


@main.command(cls=ConfigCommand, config=VideoRunConfig)
def videos(cfg: VideoRunConfig) -> None:
    """Split videos from SOURCES into clips with motion scores, filters and previews, written in
    the ClipWriterStage layout (clips/, metas/v0/, processed_videos/, ...)."""
    _verbose_from_config(cfg)
    stats_out = _stats_to_stdout(cfg)
    stats = _run(_run_videos, cfg, "finished videos are kept")
    _echo_summary(stats.summary_lines() + [f"output: {cfg.output}"],
                  to_stderr=cfg.emit_ipc == "-" or stats_out)
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


def _run_images(cfg):
    from curastream.images.pipeline import run_images

    return run_images(cfg)


def _run_videos(cfg):
    from curastream.videos.pipeline import run_videos

    return run_videos(cfg)


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


if __name__ == "__main__":  # pragma: no cover
    main()
