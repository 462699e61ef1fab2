"""The ``curastream`` command: a thin layer that fills the same config objects the API takes."""

from __future__ import annotations

import logging
import sys

import click

from . import __version__
from .config import ImageFilters, ImageRunConfig
from .output import ON_EXISTING

log = logging.getLogger("curastream")


def _setup_logging(verbose: int) -> None:
    # Only the CLI configures logging; the library never touches global logging.
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        logging.getLogger("nvidia").setLevel(logging.WARNING)


def _echo_summary(lines: list[str], to_stderr: bool) -> None:
    for line in lines:
        click.echo(line, err=to_stderr)


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curastream")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Curate images and videos into training data (NeMo Curator layouts), fast."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose)


def common_run_options(f):
    opts = [
        click.option("--output", "-o", required=True, help="Output directory or fsspec URL (s3://...)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
                     help="Where to decode and compute; gpu without a CUDA device is an error."),
        click.option("--on-existing", type=click.Choice(ON_EXISTING), default="error", show_default=True,
                     help="What to do when the output already has files."),
        click.option("--emit-ipc", metavar="PATH", default=None,
                     help="Also stream result records as Arrow IPC (zstd) to PATH, or - for stdout."),
        click.option("--emit-ipc-bytes", is_flag=True, help="Include encoded media bytes in the IPC stream."),
        click.option("--stats", "stats_path", metavar="PATH", default=None,
                     help="Write per-stage timings, throughput and queue occupancy as JSON."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar (default: on a terminal; quiet lines otherwise)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@main.command()
@click.argument("sources", nargs=-1)
@common_run_options
@click.option("--images-per-tar", type=int, default=1000, show_default=True, help="Images per tar shard.")
@click.option("--files-from", type=click.Path(dir_okay=False), default=None,
              help="Text file listing inputs, one path or URL per line.")
@click.option("--parquet-image-column", default=None, help="Binary column holding images in Parquet inputs.")
@click.option("--decoder", type=click.Choice(["auto", "turbo", "pillow", "dali"]), default="auto", show_default=True,
              help="Decoder for scoring (auto = libjpeg-turbo scaled decode; dali = DALI pipeline).")
@click.option("--jpeg-quality", type=int, default=92, show_default=True, help="Quality when re-encoding.")
@click.option("--sidecar-json/--no-sidecar-json", default=True, show_default=True,
              help="Write key.json beside key.jpg (WebDataset sample); off = strict Curator parity.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Decode/encode threads.")
@click.option("--max-pixels", type=int, default=None, help="Decompression-bomb limit (pixels).")
@click.option("--min-resolution", type=int, default=64, show_default=True,
              help="Reject images whose shorter side is below this (0 = off).")
@click.option("--max-aspect", type=float, default=10.0, show_default=True, help="Reject longer/shorter side above this (0 = off).")
@click.option("--min-sharpness", type=float, default=None, help="Reject below this variance of Laplacian.")
@click.option("--min-contrast", type=float, default=None)
@click.option("--min-entropy", type=float, default=None)
@click.option("--min-colorfulness", type=float, default=None)
@click.option("--min-brightness", "min_mean_luma", type=float, default=None, help="Minimum mean luma (0-255).")
@click.option("--max-brightness", "max_mean_luma", type=float, default=None, help="Maximum mean luma (0-255).")
@click.option("--dedup/--no-dedup", default=True, show_default=True, help="Drop near-duplicates (pHash).")
@click.option("--dedup-distance", type=int, default=4, show_default=True, help="pHash Hamming distance for duplicates.")
@click.option("--remove-image-data", is_flag=True, help="Drop image bytes from memory once their shard is written.")
@click.pass_context
def images(ctx, sources, output, device, on_existing, emit_ipc, emit_ipc_bytes, stats_path, progress,
           images_per_tar, files_from, parquet_image_column, decoder, jpeg_quality, sidecar_json, batch_size,
           workers, max_pixels, min_resolution, max_aspect, min_sharpness, min_contrast, min_entropy,
           min_colorfulness, min_mean_luma, max_mean_luma, dedup, dedup_distance, remove_image_data):
    """Curate images from SOURCES (dirs, globs, files, WebDataset tars, Parquet, URLs) into
    tar+Parquet shards (ImageWriterStage layout) with scores, filters and near-dup removal."""
    from .device import DeviceError
    from .image_pipeline import run_images
    from .output import OutputExistsError

    cfg = ImageRunConfig(
        sources=list(sources), output=output, images_per_tar=images_per_tar, device=device, decoder=decoder,
        on_existing=on_existing, jpeg_quality=jpeg_quality, sidecar_json=sidecar_json, batch_size=batch_size,
        workers=workers, max_pixels=max_pixels, files_from=files_from, parquet_image_column=parquet_image_column,
        emit_ipc=emit_ipc, emit_ipc_bytes=emit_ipc_bytes, stats_path=stats_path, verbose=ctx.obj["verbose"] > 0,
        progress=progress, remove_image_data=remove_image_data,
        filters=ImageFilters(
            min_side=min_resolution or None, max_aspect=max_aspect or None, min_sharpness=min_sharpness,
            min_contrast=min_contrast, min_entropy=min_entropy, min_colorfulness=min_colorfulness,
            min_mean_luma=min_mean_luma, max_mean_luma=max_mean_luma, dedup=dedup, dedup_distance=dedup_distance,
        ),
    )
    try:
        stats = run_images(cfg)
    except (DeviceError, OutputExistsError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        click.echo("interrupted: committed shards are kept; rerun with --on-existing resume", err=True)
        sys.exit(130)
    _echo_summary(stats.summary_lines() + [f"output: {output}"], to_stderr=emit_ipc == "-")


@main.command()
@click.option("--output", "-o", default="demo-output", show_default=True, help="Where samples and results go.")
@click.option("--videos/--no-videos", default=True, show_default=True, help="Also run the video pipeline.")
@click.pass_context
def demo(ctx, output, videos):
    """Make built-in sample data (real photos, rendered pans and cuts) and curate it."""
    import os

    from .demo import run_demo

    for line in run_demo(os.path.abspath(output), videos=videos, verbose=ctx.obj["verbose"] > 0):
        click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    main()
