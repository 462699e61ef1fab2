"""The ``curastream`` command: a thin layer that fills the same config objects the API takes."""

from __future__ import annotations

import logging
import sys

import click

from curastream import __version__
from curastream.config import ImageFilters, ImageRunConfig
from curastream.engine.output import ON_EXISTING

log = logging.getLogger("curastream")


def _setup_logging(verbose: int) -> None:
    # Only the CLI configures logging; the library never touches global logging.
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        logging.getLogger("nvidia").setLevel(logging.WARNING)
        # s3fs runs aiohttp on its own event loop; when the store drops a connection, asyncio
        # logs the orphaned request's traceback. The run reports that failure itself, in one line.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _echo_summary(lines: list[str], to_stderr: bool) -> None:
    for line in lines:
        click.echo(line, err=to_stderr)


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _is_storage_error(e: BaseException) -> bool:
    """An I/O failure of the input or output store (disk, S3 endpoint down, credentials...)."""
    top = (type(e).__module__ or "").split(".")[0]
    if top == "av":  # PyAV's errors subclass OSError but are about media, not storage
        return False
    return isinstance(e, OSError) or top in ("botocore", "aiobotocore", "s3fs", "aiohttp", "fsspec")


def _run(fn, cfg, kept: str):
    """Run ``fn(cfg)``; every way it can end maps to one exit code and at most one line."""
    from curastream.engine.device import DeviceError
    from curastream.engine.output import OutputExistsError

    try:
        return fn(cfg)
    except (DeviceError, OutputExistsError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        click.echo(f"interrupted: {kept}; rerun with --on-existing resume", err=True)
        _exit_now(130)
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


class _Main(click.Group):
    def invoke(self, ctx):
        # Ctrl-C anywhere in a command (also before or after the run itself) exits with 130 and
        # one line, never click's "Aborted!" with status 1.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            _exit_now(130)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
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
        click.option("--output", "-o", required=True,
                     help="Output directory or fsspec URL (s3://...; S3-compatible stores: set AWS_ENDPOINT_URL)."),
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
    stats = _run(_run_images, cfg, "committed shards are kept")
    _echo_summary(stats.summary_lines() + [f"output: {output}"], to_stderr=emit_ipc == "-")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@common_run_options
@click.option("--input-path", default=None,
              help="Root of the input videos; processed_* paths are relative to it (default: their common folder).")
@click.option("--split", type=click.Choice(["scenes", "fixed"]), default="scenes", show_default=True,
              help="Shot detection or fixed-stride clips.")
@click.option("--clip-len", "clip_len_s", type=float, default=10.0, show_default=True,
              help="Fixed-stride clip length; with scenes, longer shots are split to at most this.")
@click.option("--min-clip-len", "min_clip_s", type=float, default=0.5, show_default=True,
              help="Shortest clip: a shorter fixed-stride remainder or shot is dropped.")
@click.option("--copy/--reencode", "copy", default=True, show_default=True,
              help="Stream-copy clips cut on keyframes (fast) or re-encode for exact cuts.")
@click.option("--encoder", default="libx264", show_default=True, help="Encoder for --reencode.")
@click.option("--preset", "encoder_preset", default="veryfast", show_default=True)
@click.option("--crf", "encoder_crf", type=int, default=23, show_default=True)
@click.option("--previews/--no-previews", default=False, show_default=True, help="Animated WebP per clip.")
@click.option("--upload-clips/--no-upload-clips", default=True, show_default=True, help="Write clip MP4s.")
@click.option("--dry-run", is_flag=True, help="Only processed_videos/ and processed_clip_chunks/ metadata.")
@click.option("--motion-filter/--no-motion-filter", default=True, show_default=True,
              help="Filter clips below Curator's motion thresholds into filtered_clips/.")
@click.option("--motion-method", type=click.Choice(["frames", "vectors", "auto"]), default="frames", show_default=True,
              help="frames: block matching, every codec; vectors: codec motion vectors as Curator does (H.264/MPEG).")
@click.option("--motion-global-mean-threshold", type=float, default=0.00098, show_default=True)
@click.option("--motion-per-patch-min-threshold", type=float, default=1e-6, show_default=True)
@click.option("--min-duration", "min_duration_s", type=float, default=None, help="Filter clips shorter than this (s).")
@click.option("--max-duration", "max_duration_s", type=float, default=None, help="Filter clips longer than this (s).")
@click.option("--clip-subdirs", is_flag=True, help="clips/<2 chars>/<uuid>.mp4 instead of flat clips/.")
@click.option("--max-workers", type=int, default=6, show_default=True, help="Writer threads.")
@click.option("--video-time-limit", "video_time_limit_s", type=float, default=600.0, show_default=True,
              help="Seconds one video may take before it is rejected.")
@click.pass_context
def videos(ctx, sources, output, device, on_existing, emit_ipc, emit_ipc_bytes, stats_path, progress, input_path,
           split, clip_len_s, min_clip_s, copy, encoder, encoder_preset, encoder_crf, previews, upload_clips, dry_run,
           motion_filter, motion_method, motion_global_mean_threshold, motion_per_patch_min_threshold, min_duration_s,
           max_duration_s, clip_subdirs, max_workers, video_time_limit_s):
    """Split videos from SOURCES into clips with motion scores, filters and previews, written in
    the ClipWriterStage layout (clips/, metas/v0/, processed_videos/, ...)."""
    from curastream.config import VideoRunConfig

    cfg = VideoRunConfig(
        sources=list(sources), output=output, input_path=input_path, split=split, clip_len_s=clip_len_s,
        min_clip_s=min_clip_s, clip_mode="copy" if copy else "reencode", encoder=encoder,
        encoder_preset=encoder_preset, encoder_crf=encoder_crf, previews=previews, upload_clips=upload_clips,
        dry_run=dry_run, motion_filter=motion_filter, motion_method=motion_method,
        motion_global_mean_threshold=motion_global_mean_threshold,
        motion_per_patch_min_threshold=motion_per_patch_min_threshold, min_duration_s=min_duration_s,
        max_duration_s=max_duration_s, device=device, on_existing=on_existing, max_workers=max_workers,
        video_time_limit_s=video_time_limit_s, clip_subdirs=clip_subdirs, emit_ipc=emit_ipc,
        emit_ipc_bytes=emit_ipc_bytes, stats_path=stats_path, verbose=ctx.obj["verbose"] > 0, progress=progress,
    )
    stats = _run(_run_videos, cfg, "finished videos are kept")
    _echo_summary(stats.summary_lines() + [f"output: {output}"], to_stderr=emit_ipc == "-")


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
