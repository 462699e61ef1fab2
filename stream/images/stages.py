"""The image stages: decode -> score -> filter/dedup -> encode, each over IMAGE_SCHEMA batches.

Every stage takes a :class:`~curastream.engine.batch.Batch` and returns a new one with the
columns it provides. A row that fails anywhere is marked ``status="rejected"`` with the stage
and reason and flows on to the sink, which records it in the rejects file: a bad file never
stops the run. Decoded pixels travel in the batch's side data (``probe``, ``analysis``,
``reencode``) and the encode stage, the last one that needs them, drops them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from curastream.config import ImageFilters
from curastream.engine.batch import Batch, ok_rows
from curastream.engine.device import Device
from curastream.engine.pipeline import Stage
from curastream.engine.schemas import IMAGE_SCHEMA, IMAGE_SCORE_COLUMNS
from curastream.images.cpu_decode import ANALYSIS_SIZE
from curastream.images.decode import decode_for_analysis
from curastream.images.encode import EncodeSpec, needs_reencode, shard_image
from curastream.images.jpeg import check_jpeg
from curastream.images.probe import DEFAULT_MAX_PIXELS, ImageDecodeError, probe_image
from curastream.kernels.image_scores import luma, score_batch
from curastream.kernels.phash import NearDuplicateIndex, phash
from curastream.models.registry import make_models
from curastream.models.stage import ModelStage, with_model_columns

# What the source makes: the input and its status (read failures are rejected there).
SOURCE_COLUMNS = ("image_id", "source", "source_member", "source_bytes", "data", "metadata", "status",
                  "reject_stage", "reject_reason")


def failure_reason(err: BaseException) -> str:
    """A reject reason for an exception nothing expected: its type names what to chase."""
    if isinstance(err, MemoryError):
        return f"out_of_memory: MemoryError: {err or 'allocation failed'}"
    return f"error: {type(err).__name__}: {err}"


class DecodeStage(Stage):
    """Header probe (dimensions, orientation, bombs) and a reduced-size decode for scoring."""

    name = "decode"
    requires = ("data", "status")
    provides = ("source_format", "width", "height", "exif_orientation", "reject_stage", "reject_reason")

    def __init__(self, decoder: str = "auto", workers: int = 2, max_pixels: int | None = None,
                 device: Device | None = None, check_passthrough: bool = False):
        self.decoder = decoder
        self.workers = workers
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self.device = device or Device("cpu", None)
        # Whether the original bytes can go to the shard is decided here, from the same walk
        # over the JPEG's markers the decode needed (check_jpeg), and handed to the encode
        # stage, which is then left with the few re-encodes.
        self.check_passthrough = check_passthrough
        self._dali = None

    def open(self) -> None:
        from curastream.images.dali import dali_available, make_decode_pipeline, require_dali

        if self.decoder == "auto" and self.device.is_gpu and dali_available():
            self.decoder = "dali"  # nvJPEG through DALI's "mixed" decoder beats any CPU path there
        if self.decoder == "dali":
            require_dali()

            self._dali_args = dict(device="mixed" if self.device.is_gpu else "cpu",
                                   device_id=self.device.device_id, size=ANALYSIS_SIZE, max_pixels=self.max_pixels,
                                   # nvJPEG's output stays on the GPU for the score stage: no host round trip
                                   keep_on_device=self.device.is_gpu)
            self._make_dali = make_decode_pipeline

    def process(self, b: Batch) -> Batch:
        e = b.edit()
        views = b.values("data")  # into the batch's Arrow buffer; the decoders want bytes
        probes: dict[int, Any] = {}
        pixels: list[np.ndarray | None] = [None] * b.num_rows
        reencode: list[str | None] = [None] * b.num_rows
        dali = self.decoder == "dali"
        held: dict[int, bytes] = {}  # DALI decodes the batch at once; the CPU path one image at a time
        for i in e.ok_rows():
            data = bytes(views[i])
            try:
                p = probe_image(data, max_pixels=self.max_pixels)
                probes[i] = p
                e.set("source_format", i, p.format)
                e.set("width", i, p.width)
                e.set("height", i, p.height)
                e.set("exif_orientation", i, p.exif_orientation)
                if dali:
                    held[i] = data
                    continue
                # One walk over the JPEG's markers serves the decode and the pass-through check.
                jpeg = check_jpeg(data) if p.format in ("JPEG", "MPO") else None
                pixels[i] = decode_for_analysis(data, p, size=ANALYSIS_SIZE, decoder=self.decoder, jpeg=jpeg)
                if self.check_passthrough:
                    reencode[i] = needs_reencode(p, data, jpeg=jpeg)
            except ImageDecodeError as err:
                e.reject(i, "decode", str(err))  # already "<reason>: <detail>"
                pixels[i] = None
            except Exception as err:  # noqa: BLE001 - incl. MemoryError: one image, not the run
                e.reject(i, "decode", failure_reason(err))
                pixels[i] = None
        if held:
            self._decode_dali(e, held, pixels, probes)
            if self.check_passthrough:
                reencode = [None if px is None else needs_reencode(probes[i], held[i]) for i, px in enumerate(pixels)]
        side = {"probe": [probes.get(i) for i in range(b.num_rows)], "analysis": pixels}
        if self.check_passthrough:
            side["reencode"] = reencode
        return e.done(sidecar=side)

    def _decode_dali(self, e, held: dict[int, bytes], pixels: list, probes: dict) -> None:
        from curastream.images.dali import dali_decode_batch

        idx = list(held)
        if self._dali is None or self._dali_batch < len(idx):
            self._dali_batch = max(len(idx), len(pixels))
            self._dali = self._make_dali(batch_size=self._dali_batch, num_threads=self.workers, **self._dali_args)
        results = dali_decode_batch(self._dali, [held[i] for i in idx], probes=[probes[i] for i in idx])
        for i, r in zip(idx, results):
            if isinstance(r, Exception):
                e.reject(i, "decode", f"corrupt: {r}")
            else:
                pixels[i] = r


class ScoreStage(Stage):
    """All pixel scores and the perceptual hash, batched over the analysis images."""

    name = "score"
    requires = ("width", "status")
    provides = IMAGE_SCORE_COLUMNS + ("phash", "reject_stage", "reject_reason")

    def __init__(self, device: Device | None = None, host_views: bool = True):
        self.device = device or Device("cpu", None)
        # Whether a later stage reads the analysis views (dedup's analysis pass, the model
        # stage): views the GPU decoder left on the device are then brought to the host once,
        # after scoring; otherwise they never leave the device.
        self.host_views = host_views

    def process(self, b: Batch) -> Batch:
        analysis = b.sidecar["analysis"]
        ok = [i for i in ok_rows(b) if analysis[i] is not None]
        if not ok:
            return b
        cols: dict[str, list] = {name: [None] * b.num_rows for name in IMAGE_SCORE_COLUMNS + ("phash",)}
        host = {"analysis": self._on_host(analysis)} if self.host_views else None
        try:
            self._score(analysis, ok, cols)
            return b.with_columns(cols, sidecar=host)
        except Exception:  # noqa: BLE001 - find the row at fault: one at a time
            pass
        e = b.edit()
        for i in ok:
            try:
                self._score(analysis, [i], cols)
            except Exception as err:  # noqa: BLE001 - that row's reject
                for name in cols:
                    cols[name][i] = None
                e.reject(i, "score", failure_reason(err))
        for name, col in cols.items():
            e.column(name)[:] = col
        return e.done(sidecar=host)

    def _on_host(self, views: list) -> list:
        xp = self.device.xp
        if xp is np or not any(isinstance(v, xp.ndarray) for v in views):
            return views
        return [xp.asnumpy(v) if isinstance(v, xp.ndarray) else v for v in views]

    def _score(self, analysis: list, rows: list[int], cols: dict[str, list]) -> None:
        xp = self.device.xp
        # views are host arrays, or device arrays from the GPU decoder (CPU-decoded items too:
        # images.dali places them beside the rest), so the stack is built where xp computes
        stack = xp.stack([xp.asarray(analysis[i]) for i in rows])
        y = luma(stack)
        scores = score_batch(stack, y)
        hashes = phash(y)
        if xp is not np:
            scores = {k: xp.asnumpy(v) for k, v in scores.items()}
            hashes = xp.asnumpy(hashes)
        for name in IMAGE_SCORE_COLUMNS:
            for j, i in enumerate(rows):
                cols[name][i] = float(scores[name][j])
        for j, i in enumerate(rows):
            cols["phash"][i] = int(hashes[j])


def filter_reason(row: dict[str, Any], f: ImageFilters) -> str | None:
    """Why a row fails the thresholds, or None. Order: cheapest/most basic first."""
    w, h = row["width"], row["height"]
    if f.min_resolution is not None and min(w, h) < f.min_resolution:
        return f"min_resolution: {w}x{h} has a side below {f.min_resolution} px"
    if f.max_aspect is not None and max(w, h) / max(1, min(w, h)) > f.max_aspect:
        return f"max_aspect: {w}x{h} aspect {max(w, h) / max(1, min(w, h)):.1f} > {f.max_aspect}"
    checks = (
        ("sharpness", f.min_sharpness, "min"),
        ("contrast", f.min_contrast, "min"),
        ("entropy", f.min_entropy, "min"),
        ("colorfulness", f.min_colorfulness, "min"),
        ("mean_luma", f.min_brightness, "min"),
        ("mean_luma", f.max_brightness, "max"),
        ("frac_dark", f.max_frac_dark, "max"),
        ("frac_bright", f.max_frac_bright, "max"),
    )
    for col, limit, kind in checks:
        if limit is None or row.get(col) is None:
            continue
        v = row[col]
        if kind == "min" and v < limit:
            return f"min_{col}: {v:.4g} < {limit}"
        if kind == "max" and v > limit:
            return f"max_{col}: {v:.4g} > {limit}"
    return None


FILTER_COLUMNS = ("width", "height") + IMAGE_SCORE_COLUMNS


class FilterStage(Stage):
    """Thresholds, then near-duplicate removal.

    With a ``plan`` (``images.dedup.analyse``, made by a first pass) each group keeps its
    best copy, whatever the input order: the plan names every loser and the copy it loses to.
    Without one (``stream_images``, whose input can be read only once) the first copy in input
    order is kept, through ``seen``.
    """

    name = "filter"
    requires = ("image_id", "status", "phash") + FILTER_COLUMNS
    provides = ("duplicate_of", "reject_stage", "reject_reason")

    def __init__(self, filters: ImageFilters, seen: NearDuplicateIndex | None = None, plan=None):
        self.filters = filters
        self.plan = plan
        self.seen = seen if seen is not None else NearDuplicateIndex(filters.dedup_distance)

    def process(self, b: Batch) -> Batch:
        e = b.edit()
        keys, hashes = b.values("image_id"), b.values("phash")
        for i in e.ok_rows():
            reason = filter_reason(b.row(i, FILTER_COLUMNS), self.filters)
            if reason is not None:
                e.reject(i, "filter", reason)
                continue
            if not self.filters.dedup:
                continue
            if self.plan is not None:
                why = self.plan.reason(keys[i])
                if why is not None:
                    e.reject(i, "dedup", why, duplicate_of=self.plan.duplicate_of[keys[i]])
                continue
            if hashes[i] is not None:
                first = self.seen.find(hashes[i])
                if first is not None:
                    e.reject(i, "dedup", f"near_duplicate: pHash within {self.filters.dedup_distance} bits of {first}",
                             duplicate_of=first)
                    continue
                self.seen.add(hashes[i], keys[i])
        return e.done()


class EncodeStage(Stage):
    """The image bytes for the shard: by default the original JPEG when nothing changed it, an
    EXIF-rotated one turned upright (losslessly where libjpeg-turbo can), else a re-encode; with
    ``spec`` a training size (``--resize``) and/or another format. ``width``/``height`` become
    the stored size, ``original_width``/``original_height`` keep the input's."""

    name = "encode"
    requires = ("data", "source_format", "status", "width", "height")
    provides = ("image_bytes", "passthrough", "orientation_fix", "width", "height", "original_width",
                "original_height", "reject_stage", "reject_reason")

    def __init__(self, quality: int = 92, workers: int = 2, spec: EncodeSpec | None = None):
        self.spec = (spec or EncodeSpec(quality=quality)).check()
        self.quality = self.spec.quality
        self.workers = workers

    def process(self, b: Batch) -> Batch:
        probes = b.sidecar.get("probe") or [None] * b.num_rows
        reasons = b.sidecar.get("reencode")
        data = b.values("data")
        e = b.edit()
        out = e.column("image_bytes")
        passthrough = e.column("passthrough")
        orientation_fix = e.column("orientation_fix")
        width, height = e.column("width"), e.column("height")
        orig_w, orig_h = e.column("original_width"), e.column("original_height")
        for i in e.ok_rows():
            orig_w[i], orig_h[i] = width[i], height[i]
            try:
                why = reasons[i] if reasons is not None else needs_reencode(probes[i], bytes(data[i]))
                got = shard_image(data[i], probes[i], why, self.spec)
                out[i], passthrough[i], orientation_fix[i], width[i], height[i] = got
            except ImageDecodeError as err:
                e.reject(i, "encode", str(err))  # already "<reason>: <detail>"
            except Exception as err:  # noqa: BLE001 - incl. MemoryError: one image, not the run
                out[i] = None
                passthrough[i] = None
                orientation_fix[i] = None
                e.reject(i, "encode", failure_reason(err))
        # pixels are not needed past this point: free them before the batch queues for the writer
        return e.done(drop_sidecar=True)


def analysis_views(decoder: str) -> Callable[[Batch, list[int]], list]:
    """The model stage's pixels: the decode stage's 256 px analysis view (Open-NSFW's own 256
    squash, so no second decode), or, in the dedup write pass, which has no pixels, a decode
    of the same view for the rows still in the run."""
    def views(b: Batch, rows: list[int]) -> list:
        got = b.sidecar.get("analysis")
        if got is not None:
            return got
        probes, data = b.sidecar.get("probe") or [None] * b.num_rows, b.values("data")
        out: list = [None] * b.num_rows
        for i in rows:
            try:
                p = probes[i] or probe_image(bytes(data[i]))
                out[i] = decode_for_analysis(bytes(data[i]), p, size=ANALYSIS_SIZE,
                                             decoder="auto" if decoder == "dali" else decoder)
            except Exception:  # noqa: BLE001 - the model stage rejects a row it has no pixels for
                out[i] = None
        return out
    return views


def encode_spec(cfg) -> EncodeSpec:
    """The run's output geometry and format (``--resize``, ``--encode-*``); configs without those
    fields (older callers) store the original."""
    fmt = getattr(cfg, "encode_format", "jpg")
    quality = getattr(cfg, "encode_quality", None) or cfg.jpeg_quality
    return EncodeSpec(getattr(cfg, "resize", None), getattr(cfg, "resize_mode", "no"), fmt, quality)


def image_stages(cfg, device: Device, seen: NearDuplicateIndex | None, encode: bool, plan=None,
                 models=None, schema=None) -> list[Stage]:
    """``models`` (built from ``cfg.models`` when None) run after the filters, on the rows still
    in the run; ``schema`` is the run's (IMAGE_SCHEMA plus plug-in model columns)."""
    stages: list[Stage] = [
        DecodeStage(cfg.decoder, workers=cfg.workers, max_pixels=cfg.max_pixels, device=device,
                    check_passthrough=encode),
    ]
    models = make_models(cfg.models) if models is None else models
    stages += [ScoreStage(device, host_views=bool(models) or cfg.filters.dedup), FilterStage(cfg.filters, seen, plan)]
    if models:
        stages.append(ModelStage(models, device, analysis_views(cfg.decoder),
                                 schema if schema is not None else with_model_columns(IMAGE_SCHEMA, models),
                                 max_limits=[("nsfw_score", cfg.max_nsfw)] if cfg.max_nsfw is not None else ()))
    if encode:
        stages.append(EncodeStage(workers=cfg.workers, spec=encode_spec(cfg)))
    return stages
