"""Run configuration objects, shared by the CLI and the Python API.

Each field's metadata (:func:`curastream.config_schema.opt`) is the single source of its flag
name (the field name with dashes), help, group, choices and range: the ``images`` / ``videos``
commands, ``--config`` files and :meth:`validate` are all generated from it. Fields declared
with ``api_only`` (plug-in callables, ``storage_options``) are set from Python only: they have
no flag, are not read from files and are left out of ``to_dict()`` / ``index.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from curastream.config_schema import ConfigError, api_only, canonicalise, check_all, opt, to_flat
from curastream.engine.device import DEVICES
from curastream.engine.output import ON_EXISTING
from curastream.kernels.motion_score import MOTION_GLOBAL_MEAN_THRESHOLD, MOTION_PER_PATCH_MIN_THRESHOLD

__all__ = ["ConfigError", "ImageFilters", "ImageRunConfig", "VideoRunConfig"]

_PATH, _URL = "PATH", "PATH|URL"

# Kept in step with curastream.writers.clip_writer.EMBEDDING_ALGORITHMS, which checks it again;
# importing the writer here would cost the CLI's --help a second of pyarrow import.
_EMBEDDING_ALGORITHMS = ("internvideo2", "cosmos-embed1")


@dataclass
class ImageFilters:
    """Thresholds; ``None`` turns a filter off. Every drop is recorded with its reason."""

    min_resolution: int | None = opt(
        64, group="filters", min=1, off=0, formerly=("min_side",),
        help="Reject images whose shorter side is below this many pixels.")
    max_aspect: float | None = opt(
        10.0, group="filters", min=1, off=0, help="Reject images whose longer/shorter side ratio is above this.")
    min_sharpness: float | None = opt(
        None, group="filters", min=0, help="Reject below this variance of the luma Laplacian.")
    min_contrast: float | None = opt(
        None, group="filters", min=0, max=127.5, help="Reject below this RMS contrast (std of luma, 0-255 scale).")
    min_entropy: float | None = opt(
        None, group="filters", min=0, max=8, help="Reject below this luma histogram entropy, in bits.")
    min_colorfulness: float | None = opt(
        None, group="filters", min=0, help="Reject below this Hasler-Suesstrunk colorfulness.")
    min_brightness: float | None = opt(
        None, group="filters", min=0, max=255, formerly=("min_mean_luma",),
        help="Reject below this mean luma (0-255).")
    max_brightness: float | None = opt(
        None, group="filters", min=0, max=255, formerly=("max_mean_luma",),
        help="Reject above this mean luma (0-255).")
    max_frac_dark: float | None = opt(
        None, group="filters", min=0, max=1, help="Reject when more than this fraction of pixels has luma <= 16.")
    max_frac_bright: float | None = opt(
        None, group="filters", min=0, max=1, help="Reject when more than this fraction of pixels has luma >= 239.")
    dedup: bool = opt(True, group="filters", help="Drop near-duplicates (perceptual hash).")
    dedup_distance: int = opt(
        4, group="filters", min=0, max=64, help="pHash Hamming distance, in bits, that counts as a near-duplicate.")

    def __post_init__(self) -> None:
        canonicalise(self)


# Shard names hash writer_identity(), filters included. These keys keep the names the filters had
# before they were renamed to their flag names, so the same input and settings keep producing the
# same shard names (and a resume across the rename finds its shards).
_IDENTITY_FILTER_KEYS = {"min_resolution": "min_side", "min_brightness": "min_mean_luma",
                         "max_brightness": "max_mean_luma"}


@dataclass
class ImageRunConfig:
    sources: list[str] = opt(
        scope="positional", group="input",
        help="Inputs: dirs, globs, files, WebDataset tars, Parquet files, fsspec URLs.")
    output: str | None = opt(
        None, group="output", short="-o", metavar=_URL,
        help="Output directory or fsspec URL (s3://...; S3-compatible stores: set AWS_ENDPOINT_URL).")
    images_per_tar: int = opt(1000, group="output", min=1, help="Images per tar shard.")
    device: str = opt("auto", group="performance", choices=DEVICES,
                      help="Where to decode and compute; gpu without a CUDA device is an error.")
    decoder: str = opt("auto", group="performance", choices=("auto", "turbo", "pillow", "dali"),
                       help="Decoder for scoring (auto: libjpeg-turbo scaled decode; dali: DALI pipeline).")
    on_existing: str = opt("error", group="output", choices=ON_EXISTING,
                           help="What to do when the output already has files.")
    jpeg_quality: int = opt(92, group="output", min=1, max=100, help="JPEG quality when re-encoding.")
    sidecar_json: bool = opt(True, group="output",
                             help="Write key.json beside key.jpg (WebDataset sample); off: strict Curator parity.")
    deterministic_name: bool = opt(
        True, group="output",
        help="Name shards by a hash of the inputs and settings (reproducible, resumable); off: random names.")
    remove_image_data: bool = opt(False, group="performance", flag=True,
                                  help="Drop image bytes from memory once their shard is written.")
    batch_size: int = opt(32, group="performance", min=1, help="Images per pipeline batch.")
    workers: int = opt(2, group="performance", min=1, help="Decode/encode threads.")
    max_pixels: int | None = opt(None, group="input", min=1,
                                 help="Decompression-bomb limit, in pixels per image (default: Pillow's).")
    filters: ImageFilters = opt(factory=ImageFilters, help="Thresholds; flat flags, one per field.")
    files_from: str | None = opt(None, group="input", metavar=_PATH,
                                 help="Text file listing inputs, one path or URL per line.")
    parquet_image_column: str | None = opt(None, group="input", metavar="NAME",
                                           help="Binary column holding images in Parquet inputs.")
    emit_ipc: str | None = opt(None, group="output", metavar=_PATH,
                               help="Also stream result records as Arrow IPC (zstd) to PATH, or - for stdout.")
    emit_ipc_bytes: bool = opt(False, group="output", flag=True, help="Include encoded media bytes in the IPC stream.")
    stats: str | None = opt(None, group="output", metavar=_PATH, formerly=("stats_path",),
                            help="Write per-stage timings, throughput and queue occupancy as JSON.")
    verbose: bool = opt(False, scope="global", group="output",
                        help="Log more detail (set with curastream -v).")
    progress: bool | None = opt(None, group="output",
                                help="Progress bar (default: on a terminal; quiet lines otherwise).")
    storage_options: dict[str, Any] | None = api_only(help="fsspec options (credentials): Python API only.")

    def __post_init__(self) -> None:
        canonicalise(self)

    def validate(self, require_sources: bool = True) -> None:
        """Check every field against its metadata (canonicalising values in place), then the
        rules that span fields. Raises ConfigError (a ValueError)."""
        check_all(self)
        if require_sources and not self.sources and not self.files_from:
            raise ConfigError(None, "no input: give at least one source path or --files-from")
        _check_output_paths(self)

    def to_dict(self) -> dict[str, Any]:
        """Flat settings, exactly the keys ``--config`` reads (no credentials, no plug-ins)."""
        return to_flat(self)

    def writer_identity(self) -> dict[str, Any]:
        """The settings that change what lands in the shards: part of the shard name hash."""
        return {
            "images_per_tar": self.images_per_tar,
            "jpeg_quality": self.jpeg_quality,
            "sidecar_json": self.sidecar_json,
            "filters": {_IDENTITY_FILTER_KEYS.get(k, k): v for k, v in asdict(self.filters).items()},
            "max_pixels": self.max_pixels,
        }


@dataclass
class VideoRunConfig:
    sources: list[str] = opt(scope="positional", group="input",
                             help="Input videos: files, dirs, globs, fsspec URLs.")
    output: str | None = opt(
        None, group="output", short="-o", metavar=_URL,
        help="Output directory or fsspec URL (s3://...; S3-compatible stores: set AWS_ENDPOINT_URL).")
    input_path: str | None = opt(
        None, group="input", metavar=_URL,
        help="Root of the input videos; processed_* paths are relative to it (default: their common folder).")
    split: str = opt("scenes", group="splitting", choices=("scenes", "fixed"),
                     help="Shot detection or fixed-stride clips.")
    clip_len: float = opt(10.0, group="splitting", min=0, above=True, formerly=("clip_len_s",),
                          help="Fixed-stride clip length in seconds; with scenes, longer shots are split to this.")
    min_clip_len: float = opt(0.5, group="splitting", min=0, formerly=("min_clip_s",),
                              help="Shortest clip in seconds: a shorter fixed-stride remainder or shot is dropped.")
    max_clip_len: float = opt(60.0, group="splitting", min=0, above=True, formerly=("max_clip_s",),
                              help="Longest scene clip in seconds (the smaller of this and --clip-len applies).")
    clip_mode: str = opt("copy", group="clips", choices=("copy", "reencode"), shorthands=("copy", "reencode"),
                         help="copy: stream copy cut on keyframes (fast); reencode: exact cuts.")
    encoder: str = opt("libx264", group="clips", help="FFmpeg encoder for re-encoded clips.")
    preset: str = opt("veryfast", group="clips", formerly=("encoder_preset",), help="Encoder preset.")
    crf: int = opt(23, group="clips", min=0, max=63, formerly=("encoder_crf",),
                   help="Encoder constant rate factor (lower: better; libx264/libx265 use 0-51).")
    previews: bool = opt(False, group="clips", help="Animated WebP preview per clip.")
    upload_clips: bool = opt(True, group="output", help="Write clip MP4s.")
    dry_run: bool = opt(False, group="output", flag=True,
                        help="Only processed_videos/ and processed_clip_chunks/ metadata.")
    motion_filter: bool = opt(True, group="filters",
                              help="Filter clips below the motion thresholds into filtered_clips/.")
    motion_method: str = opt(
        "frames", group="filters", choices=("frames", "vectors", "auto"),
        help="frames: block matching on the analysis frames (every codec); vectors: codec motion vectors as "
             "Curator computes them (H.264/MPEG; B-frame streams read high); auto: vectors where the codec has them.")
    motion_global_mean_threshold: float = opt(
        MOTION_GLOBAL_MEAN_THRESHOLD, group="filters", min=0, help="Minimum mean motion over the clip (Curator's units).")
    motion_per_patch_min_threshold: float = opt(
        MOTION_PER_PATCH_MIN_THRESHOLD, group="filters", min=0, help="Minimum motion of the stillest patch (Curator's units).")
    min_duration: float | None = opt(None, group="filters", min=0, formerly=("min_duration_s",),
                                     help="Filter clips shorter than this many seconds.")
    max_duration: float | None = opt(None, group="filters", min=0, formerly=("max_duration_s",),
                                     help="Filter clips longer than this many seconds.")
    analysis_short_side: int = opt(144, group="splitting", min=16,
                                   help="Short side, in pixels, of the frames decoded for shot detection and motion.")
    clips_per_chunk: int = opt(32, group="output", min=1, help="Clips per processed_clip_chunks/ record.")
    device: str = opt("auto", group="performance", choices=DEVICES,
                      help="Where to decode and compute; gpu without a CUDA device is an error.")
    on_existing: str = opt("error", group="output", choices=ON_EXISTING,
                           help="What to do when the output already has files.")
    max_workers: int = opt(6, group="performance", min=1, help="Writer threads.")
    video_time_limit: float | None = opt(
        600.0, group="performance", min=0, above=True, off=0, formerly=("video_time_limit_s",),
        help="Seconds one video may take before it is rejected (a hostile file cannot hang the run).")
    clip_subdirs: bool = opt(False, group="output", flag=True,
                             help="clips/<2 chars>/<uuid>.mp4 instead of flat clips/.")
    generate_embeddings: bool = opt(False, group="clips", flag=True,
                                    help="Embed each clip (needs an embedder plug-in, Python API).")
    embedding_algorithm: str = opt("internvideo2", group="clips", choices=_EMBEDDING_ALGORITHMS,
                                   help="Name the embeddings are stored under.")
    embedder: Any = api_only(help="callable(frames) -> vector: Python API only.")
    captioner: Any = api_only(help="callable(frames) -> str: Python API only.")
    caption_models: list[str] = opt(factory=list, group="clips", metavar="NAME",
                                    help="Caption model name to record (repeatable).")
    emit_ipc: str | None = opt(None, group="output", metavar=_PATH,
                               help="Also stream result records as Arrow IPC (zstd) to PATH, or - for stdout.")
    emit_ipc_bytes: bool = opt(False, group="output", flag=True, help="Include encoded media bytes in the IPC stream.")
    stats: str | None = opt(None, group="output", metavar=_PATH, formerly=("stats_path",),
                            help="Write per-stage timings, throughput and queue occupancy as JSON.")
    verbose: bool = opt(False, scope="global", group="output",
                        help="Log more detail (set with curastream -v).")
    progress: bool | None = opt(None, group="output",
                                help="Progress bar (default: on a terminal; quiet lines otherwise).")
    storage_options: dict[str, Any] | None = api_only(help="fsspec options (credentials): Python API only.")

    def __post_init__(self) -> None:
        canonicalise(self)

    def validate(self, require_sources: bool = True) -> None:
        """Check every field against its metadata (canonicalising values in place), then the
        rules that span fields. Raises ConfigError (a ValueError)."""
        check_all(self)
        if require_sources and not self.sources:
            raise ConfigError(None, "no input: give at least one video source")
        _check_output_paths(self)
        if self.generate_embeddings and self.embedder is None:
            raise ConfigError(
                "generate_embeddings",
                "needs an embedding plug-in (embedder=callable(frames) -> vector); none is configured")

    def to_dict(self) -> dict[str, Any]:
        """Flat settings, exactly the keys ``--config`` reads (no credentials, no plug-ins)."""
        return to_flat(self)



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

    out = cfg.output
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
