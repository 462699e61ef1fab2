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

from curastream.config_checks import _check_gpu_share, _check_models, _check_output_paths
from curastream.config_schema import ConfigError, api_only, canonicalise, check_all, opt, to_flat
from curastream.engine.device import DEVICES
from curastream.engine.output import ON_EXISTING
from curastream.kernels.motion_score import MOTION_GLOBAL_MEAN_THRESHOLD, MOTION_PER_PATCH_MIN_THRESHOLD

__all__ = ["ConfigError", "ImageFilters", "ImageRunConfig", "VideoRunConfig"]

_PATH, _URL = "PATH", "PATH|URL"
RUNNERS = ("local", "ray")

# Kept in step with curastream.writers.clip_writer.EMBEDDING_ALGORITHMS, which checks it again;
# importing the writer here would cost the CLI's --help a second of pyarrow import.
_EMBEDDING_ALGORITHMS = ("internvideo2", "cosmos-embed1")
# Kept in step with curastream.images.resize.RESIZE_MODES and images.encode.ENCODE_FORMATS (a
# test holds them equal), for the same reason: those modules import numpy and OpenCV.
_RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border")
_ENCODE_FORMATS = ("jpg", "webp", "png")


# Settings both media take, defined once so that their checks and help cannot drift apart;
# each config class still lists them, in its own order, as ``name: type = shared("name")``.
_SHARED: dict[str, tuple[Any, dict[str, Any]]] = {
    "output": (None, dict(group="output", short="-o", metavar=_URL,
                          help="Output directory or fsspec URL (s3://...; S3-compatible stores: set "
                               "AWS_ENDPOINT_URL).")),
    "device": ("auto", dict(group="performance", choices=DEVICES,
                            help="Where to decode and compute; gpu without a CUDA device is an error.")),
    "on_existing": ("error", dict(group="output", choices=ON_EXISTING,
                                  help="What to do when the output already has files.")),
    "runner": ("local", dict(group="performance", choices=RUNNERS,
                             help="local: this process; ray: partitions of the input as Ray tasks "
                                  "(pip install 'curastream[ray]').")),
    "ray_address": (None, dict(group="performance", metavar="HOST:PORT",
                               help="Ray cluster to join with --runner ray (default: start a local Ray runtime).")),
    "gpus_per_task": (1.0, dict(group="performance", min=0, above=True, metavar="N",
                                help="With --runner ray --device gpu: the GPUs each task reserves; a fraction "
                                     "(0.25) lets that many tasks share one GPU, above 1 it must be whole.")),
    "emit_ipc": (None, dict(group="output", metavar=_PATH,
                            help="Also stream result records as Arrow IPC (zstd) to PATH, or - for stdout.")),
    "emit_ipc_bytes": (False, dict(group="output", flag=True, help="Include encoded media bytes in the IPC stream.")),
    "stats": (None, dict(group="output", metavar=_PATH, formerly=("stats_path",),
                         help="Write per-stage timings, throughput and queue occupancy as JSON.")),
    "verbose": (False, dict(scope="global", group="output", help="Log more detail (set with curastream -v).")),
    "progress": (None, dict(group="output", help="Progress bar (default: on a terminal; quiet lines otherwise).")),
    "storage_options": (None, dict(scope="api", help="fsspec options (credentials): Python API only.")),
}


def shared(name: str) -> Any:
    """A fresh dataclass field for the shared setting ``name``."""
    default, meta = _SHARED[name]
    return opt(default, **meta)


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
    output: str | None = shared("output")
    images_per_tar: int = opt(1000, group="output", min=1, help="Images per tar shard.")
    device: str = shared("device")
    decoder: str = opt("auto", group="performance", choices=("auto", "turbo", "pillow", "dali"),
                       help="Decoder for scoring (auto: libjpeg-turbo scaled decode; dali: DALI pipeline).")
    on_existing: str = shared("on_existing")
    jpeg_quality: int = opt(92, group="output", min=1, max=100, help="JPEG quality when re-encoding.")
    resize: int | None = opt(
        None, group="output", min=1, off=0, metavar="N",
        help="Store images at a training size of N px (see --resize-mode); default: the original size.")
    resize_mode: str = opt(
        "border", group="output", choices=_RESIZE_MODES,
        help="With --resize (img2dataset's meanings): keep_ratio: shorter side N; center_crop: shorter side N, "
             "centre N x N cut; border: longer side N, padded with white to N x N; no: original size.")
    encode_format: str = opt("jpg", group="output", choices=_ENCODE_FORMATS,
                             help="Stored image format; jpg keeps unchanged JPEGs byte for byte, webp and png "
                                  "re-encode every image.")
    encode_quality: int | None = opt(None, group="output", min=1, max=100,
                                     help="jpg/webp quality of re-encoded images (default: --jpeg-quality); "
                                          "png is lossless.")
    sidecar_json: bool = opt(True, group="output",
                             help="Write key.json (and key.txt captions) beside key.jpg (WebDataset sample); "
                                  "off: strict Curator parity.")
    deterministic_name: bool = opt(
        True, group="output",
        help="Name shards by a hash of the inputs and settings (reproducible, resumable); off: random names.")
    remove_image_data: bool = opt(False, group="performance", flag=True,
                                  help="Drop image bytes from memory once their shard is written.")
    batch_size: int = opt(32, group="performance", min=1, help="Images per pipeline batch.")
    workers: int = opt(2, group="performance", min=1, help="Decode/encode threads.")
    runner: str = shared("runner")
    ray_address: str | None = shared("ray_address")
    gpus_per_task: float = shared("gpus_per_task")
    max_pixels: int | None = opt(None, group="input", min=1,
                                 help="Decompression-bomb limit, in pixels per image (default: Pillow's).")
    filters: ImageFilters = opt(factory=ImageFilters, help="Thresholds; flat flags, one per field.")
    files_from: str | None = opt(None, group="input", metavar=_PATH,
                                 help="Text file listing inputs, one path or URL per line.")
    parquet_image_column: str | None = opt(None, group="input", metavar="NAME",
                                           help="Binary column holding images in Parquet inputs.")
    url_list: str | None = opt(None, group="input", metavar=_URL,
                               help="Table of image URLs to download (.parquet, .csv, .tsv, .jsonl), "
                                    "one image per row, keyed by row index; with or without SOURCES.")
    url_col: str = opt("url", group="input", metavar="NAME", help="Column of --url-list holding the URLs.")
    caption_col: str | None = opt(None, group="input", metavar="NAME",
                                  help="Column of --url-list holding captions (default: caption, when present); "
                                       "written as key.txt and the caption column.")
    save_additional_columns: list[str] = opt(
        factory=list, group="input", metavar="NAME[,NAME]",
        help="Columns of --url-list to keep (repeatable or comma-separated): scalars become typed "
             "Parquet columns, everything kept is in metadata.")
    max_download_bytes: int = opt(50_000_000, group="input", min=1,
                                  help="Largest download accepted; a bigger image is rejected (too large).")
    download_timeout: float = opt(10.0, group="input", min=0, above=True,
                                  help="Seconds to connect, and to wait for each read, per URL.")
    download_retries: int = opt(2, group="input", min=0, max=10,
                                help="Extra tries of a URL after a transient failure (timeout, 5xx, 429), with backoff.")
    download_concurrency: int = opt(64, group="performance", min=1, max=4096,
                                    help="Downloads in flight at once for --url-list.")
    models: list[str] = opt(
        factory=list, group="filters", metavar="NAME", short="--model",
        help="Score with a model (repeatable): nsfw (needs curastream[models]), a name a plug-in registers "
             "(entry points curastream.models) or pkg.module:factory. Each adds its float32 columns.")
    max_nsfw: float | None = opt(None, group="filters", min=0, max=1,
                                 help="Reject images whose nsfw_score is above this (needs --model nsfw).")
    emit_ipc: str | None = shared("emit_ipc")
    emit_ipc_bytes: bool = shared("emit_ipc_bytes")
    stats: str | None = shared("stats")
    verbose: bool = shared("verbose")
    progress: bool | None = shared("progress")
    storage_options: dict[str, Any] | None = shared("storage_options")

    def __post_init__(self) -> None:
        canonicalise(self)

    def validate(self, require_sources: bool = True) -> None:
        """Check every field against its metadata (canonicalising values in place), then the
        rules that span fields. Raises ConfigError (a ValueError)."""
        check_all(self)
        if require_sources and not self.sources and not self.files_from and not self.url_list:
            raise ConfigError(None, "no input: give at least one source path, --files-from or --url-list")
        _check_output_paths(self)
        _check_models(self)
        _check_gpu_share(self)

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
            # only when set: runs that store originals keep the shard names they had
            **({"resize": self.resize, "resize_mode": self.resize_mode}
               if self.resize and self.resize_mode != "no" else {}),
            **({"encode_format": self.encode_format} if self.encode_format != "jpg" else {}),
            **({"encode_quality": self.encode_quality} if self.encode_quality is not None else {}),
            # only when set: runs without models keep the shard names they had
            **({"models": list(self.models), "max_nsfw": self.max_nsfw} if self.models else {}),
            **({"url_col": self.url_col, "caption_col": self.caption_col,
                "save_additional_columns": list(self.save_additional_columns)} if self.url_list else {}),
        }


@dataclass
class VideoRunConfig:
    sources: list[str] = opt(scope="positional", group="input",
                             help="Input videos: files, dirs, globs, fsspec URLs.")
    output: str | None = shared("output")
    input_path: str | None = opt(
        None, group="input", metavar=_URL,
        help="Root of the input videos; processed_* paths are relative to it (default: their common folder).")
    split: str = opt("scenes", group="splitting", choices=("scenes", "fixed", "transnetv2"),
                     help="Shot detection (kernel), fixed-stride clips, or TransNetV2 shots with Curator's defaults "
                          "(threshold 0.4, 2-10 s, 0.5 s crop; needs curastream[models]).")
    clip_len: float = opt(10.0, group="splitting", min=0, above=True, formerly=("clip_len_s",),
                          help="Fixed-stride clip length in seconds; with scenes, longer shots are split to this.")
    # Defaults of Curator's video split tutorial (--fixed-stride-split-duration 10,
    # --fixed-stride-min-clip-length-s 2, stride = duration), so the same video gets its span_uuids.
    stride: float | None = opt(None, group="splitting", min=0, above=True,
                               help="Fixed-stride step between clip starts in seconds (default: --clip-len).")
    min_clip_len: float = opt(2.0, group="splitting", min=0, formerly=("min_clip_s",),
                              help="Shortest fixed-stride clip in seconds (at most --clip-len): a shorter remainder is "
                                   "dropped. Shots shorter than this, at most 0.5 s, join a neighbour.")
    max_clip_len: float = opt(60.0, group="splitting", min=0, above=True, formerly=("max_clip_s",),
                              help="Longest scene clip in seconds (the smaller of this and --clip-len applies).")
    clip_mode: str = opt("exact", group="clips", choices=("exact", "copy", "reencode"),
                         shorthands=("exact", "copy", "reencode"),
                         help="exact: frame-exact clips by smart cut (GOPs inside the span copied, the edges "
                              "re-encoded in the source's codec); copy: stream copy cut on keyframes (fastest, "
                              "clips snap to keyframes); reencode: every frame re-encoded with --encoder.")
    audio: bool = opt(True, group="clips",
                      help="Keep the source's audio in each clip, trimmed to the span (to the nearest packet).")
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
        "auto", group="filters", choices=("frames", "vectors", "auto"),
        help="auto: codec motion vectors as Curator scores them where the codec has them (H.264/MPEG family), "
             "block matching on the analysis frames, calibrated to the same scale, elsewhere (VP9, AV1, ...); "
             "vectors: only codec vectors (-1 without them, as Curator); frames: block matching for every codec.")
    motion_source: str = opt(
        "source", group="filters", choices=("source", "reencode"),
        help="source: score motion from the source (see --motion-method); reencode: from the vectors of a "
             "libx264 re-encode of each clip at --preset/--crf, as Curator scores its own transcode (x264 codes "
             "still areas as skip blocks: filter decisions closer to Curator's, for every source codec). Costs one "
             "extra encode per clip (about 2x a run's CPU); almost nothing with --reencode --encoder libx264 "
             "(the clip itself is scored).")
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
    clips_per_chunk: int = opt(
        32, group="output", min=1,
        help="Curator's num_clips_per_chunk: a processed_clip_chunks/ record closes at 8x this many seconds of clips.")
    device: str = shared("device")
    on_existing: str = shared("on_existing")
    max_workers: int = opt(6, group="performance", min=1, help="Writer threads.")
    runner: str = shared("runner")
    ray_address: str | None = shared("ray_address")
    gpus_per_task: float = shared("gpus_per_task")
    ray_video_chunk_s: float | None = opt(
        300.0, group="performance", min=0, above=True, off=0, metavar="SECONDS",
        help="With --runner ray --split fixed: a longer video runs as several tasks of about this many seconds "
             "of video each (same output either way).")
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
    models: list[str] = opt(
        factory=list, group="clips", metavar="NAME", short="--model",
        help="Score each clip's sampled frames with a model (repeatable): nsfw (max over the frames, in metas), "
             "a plug-in name (entry points curastream.models) or pkg.module:factory.")
    embedder_factory: str | None = opt(None, group="clips", metavar="pkg.module:factory", short="--embedder",
                                       help="Embedding plug-in: a factory returning callable(frames) -> vector.")
    captioner_factory: str | None = opt(None, group="clips", metavar="pkg.module:factory", short="--captioner",
                                        help="Caption plug-in: a factory returning callable(frames) -> str.")
    emit_ipc: str | None = shared("emit_ipc")
    emit_ipc_bytes: bool = shared("emit_ipc_bytes")
    stats: str | None = shared("stats")
    verbose: bool = shared("verbose")
    progress: bool | None = shared("progress")
    storage_options: dict[str, Any] | None = shared("storage_options")

    def __post_init__(self) -> None:
        canonicalise(self)

    def validate(self, require_sources: bool = True) -> None:
        """Check every field against its metadata (canonicalising values in place), then the
        rules that span fields. Raises ConfigError (a ValueError)."""
        check_all(self)
        if require_sources and not self.sources:
            raise ConfigError(None, "no input: give at least one video source")
        _check_output_paths(self)
        _check_models(self)
        _check_gpu_share(self)
        if self.generate_embeddings and self.embedder is None and not self.embedder_factory:
            raise ConfigError(
                "generate_embeddings",
                "needs an embedding plug-in (embedder=callable(frames) -> vector); none is configured")

    def to_dict(self) -> dict[str, Any]:
        """Flat settings, exactly the keys ``--config`` reads (no credentials, no plug-ins)."""
        return to_flat(self)
