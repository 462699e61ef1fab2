"""The analysis stage: one probe and one decode per video feed every kernel (shots, motion, frame
scores, previews and, in single-pass re-encode, the clip encoders), because decoding is the dear
part of a video run and doing it once is what keeps the run fast. Its workers admit decodes
by frame size (videos/pixel_budget.py), since only this stage decodes whole videos, and by
their estimated memory beside the clip stage's cuts (videos/work_budget.py).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from curastream.config import VideoRunConfig
from curastream.engine.batch import Batch
from curastream.engine.device import Device
from curastream.engine.memory import trim
from curastream.engine.names import printable
from curastream.engine.pipeline import Stage
from curastream.kernels._xp import to_host
from curastream.kernels.motion_accumulator import MotionAccumulator
from curastream.kernels.motion_vectors import MV_MIN_SIDE, curator_sample_frames
from curastream.kernels.shots import (
    ShotDetector,
    Span,
    fixed_stride_spans,
    frame_features,
    span_from_frames,
    split_scenes,
)
from curastream.models.contract import model_device
from curastream.models.registry import make_model_ref
from curastream.models.transnet import ShotFrames
from curastream.videos.clip_encode import ClipEncoder
from curastream.videos.clip_facts import ClipMedia
from curastream.videos.decode import VideoDecodeError, iter_analysis_frames
from curastream.videos.gpu_decode import iter_analysis_frames_gpu, max_sessions
from curastream.videos.pixel_budget import PixelBudget
from curastream.videos.read_ahead import read_ahead
from curastream.videos.work_budget import WorkBudget, decode_bytes
from curastream.videos.probe import VideoInfo, VideoProbeError
from curastream.videos.records import Held
from curastream.videos.stages import (
    ANALYSIS_SIDECAR,
    PROBE_COLUMNS,
    _jpeg,
    _probe_retrying,
    av_errors,
    failure_reason,
)
from curastream.writers.rejects import is_transient_error, transient_reason

log = logging.getLogger(__name__)

# Shots shorter than this join a neighbour (a flash guard, below the detector's own 0.6 s gap):
# Curator's 2 s fixed-stride minimum would merge real one-second shots across their cuts.
SCENE_MIN_LEN_S = 0.5
SCORE_FPS = 1.0  # per-clip frame scores and plug-in frames: one frame a second is plenty
MOTION_FPS = 2.0  # Curator samples motion at about 2 frames/s
# Decoded frames per chunk. The decoder runs one chunk ahead of the kernels (read_ahead), so a
# video holds up to three chunks: 3 x 128 frames keep a worker's frames at or below the 2 x 256
# it held before read-ahead (~14 MB per chunk at 256x144), and the kernels of the last chunk,
# which nothing overlaps, stay short.
ANALYSIS_CHUNK = 128
# A 720p decode beside a smaller one, never two 720p at once: see videos/pixel_budget.py.
DECODE_PIXEL_BUDGET = 1280 * 720 * 3 // 2
# The smallest frame side the scoring kernels take (a 3x3 neighbourhood); a video under it
# has nothing to score and is rejected at probe, naming its size.
MIN_SIDE = 3


class AnalyzeStage(Stage):
    """Probe and one analysis decode per video: shots, motion samples, score and preview frames."""

    name = "analyze"
    requires = ("video", "status")
    provides = ("status", "reject_stage", "reject_reason", *PROBE_COLUMNS, "decode_errors", "analysis_s",
                "motion_method", "warnings")

    def __init__(self, cfg: VideoRunConfig, device: Device, span_range: tuple[int, int] | None = None,
                 work: WorkBudget | None = None):
        self.cfg = cfg
        self.device = device
        # shared with the clip stage by the pipeline, so that decodes wait while cuts fill it
        self.work = work or WorkBudget()
        # (i, j): analyse fixed spans i..j-1 only, decoding just their part (a Ray task's share
        # of a long video, distributed/video_plan.py); None: the whole video
        self.span_range = span_range
        self.workers = 2  # two videos at once: one decode + its kernels leave a core idle
        self._budget = PixelBudget(DECODE_PIXEL_BUDGET)
        if device.is_gpu:  # one NVDEC session per worker; their surfaces live on the GPU
            self.workers = max_sessions()
            self._budget = PixelBudget(DECODE_PIXEL_BUDGET * self.workers)
        self._transnet = None

    def open(self) -> None:
        if self.cfg.split == "transnetv2":  # loaded once; both workers share it
            self._transnet = make_model_ref("curastream.models.transnet:TransNetV2", "transnetv2")
            self._transnet.load(model_device(self._transnet, self.device))

    def process(self, b: Batch) -> Batch:
        e = b.edit()
        side: dict[str, list] = {k: [None] * b.num_rows for k in ANALYSIS_SIDECAR}
        for i in e.ok_rows():
            t0 = time.perf_counter()
            path = b.values("video")[i]
            try:
                waited = self._one(e, side, i, path)
            except Exception as err:  # noqa: BLE001 - incl. MemoryError: one video, not the run
                log.warning("analysing %s failed", printable(path), exc_info=True)
                e.reject(i, "analyze", failure_reason(err))
                for k in side:
                    side[k][i] = None
                waited = 0.0
            e.set("analysis_s", i, time.perf_counter() - t0 - waited)
            trim()  # the decoder's frames are freed now, not when some video next finishes (engine/memory.py)
        return e.done(sidecar=side)

    def _one(self, e, side: dict[str, list], i: int, path: str) -> float:
        """Analyse row ``i``; returns the seconds it waited for the decode budget."""
        waited = 0.0
        try:
            info = _probe_retrying(path)
        except VideoProbeError as err:
            # err.reason, not str(err): the path it adds is already the reject's source column
            e.reject(i, "probe", transient_reason(err.reason) if is_transient_error(err) else err.reason)
            return waited
        except Exception as err:  # noqa: BLE001 - PyAV raises assorted types on malformed files
            # One odd file must not end the run (a 2%-long MP4 once gave an AttributeError
            # from inside PyAV's objects); the reason names the type so it can be chased.
            log.warning("probing %s failed unexpectedly", printable(path), exc_info=True)
            why = f"unreadable ({type(err).__name__}: {err})"
            e.reject(i, "probe", transient_reason(why) if is_transient_error(err) else why)
            return waited
        for name in PROBE_COLUMNS:
            e.set(name, i, getattr(info, name))
        # The video's facts as processed_videos reports them: Curator's metadata rule.
        for name in ("fps", "num_frames", "duration"):
            e.set(name, i, getattr(info, f"meta_{name}"))
        small = [v for v in (info.width, info.height, info.display_width, info.display_height)
                 if v is not None and v < MIN_SIDE]
        if small:
            e.reject(i, "probe", f"frame too small: {info.width}x{info.height} (display "
                                 f"{info.display_width}x{info.display_height}) has a side under {MIN_SIDE} px")
            return waited
        side["probe"][i] = info
        est = decode_bytes(info, self.cfg, on_gpu=self.device.is_gpu, single_pass=self._single_pass())
        try:
            # the pixel budget first, in every worker: a worker waiting for it holds no work share
            with self._budget.hold(info.width * info.height) as waited_px, self.work.hold(est) as waited_work:
                waited = waited_px + waited_work
                res = self._analyze(path, info)
        except VideoDecodeError as err:
            e.reject(i, "decode", str(err))
            return waited
        except av_errors() as err:  # anything FFmpeg raises mid-stream that the decoder did not catch
            e.reject(i, "decode", f"{type(err).__name__}: {err}")
            return waited
        spans, motion, score_frames, preview_frames, media, decode_errors, short = res
        side["spans"][i] = spans
        side["motion"][i] = motion
        side["score_frames"][i] = score_frames
        side["preview_frames"][i] = preview_frames
        side["media"][i] = media
        e.set("decode_errors", i, decode_errors)
        # With --motion-source reencode every clip is scored from its re-encode's vectors.
        method = "motion_vectors" if self.cfg.motion_source == "reencode" else motion[0].method if motion else None
        e.set("motion_method", i, method)
        warnings = []
        if info.counted:
            warnings.append("no duration/frame count in the container header; counted from packets")
        if decode_errors:
            warnings.append(f"{decode_errors} undecodable packet(s) skipped")
        if short is not None:
            warnings.append(f"truncated: decoded {short[0]} of {short[1]} frames the container declares")
        # A re-encode is H.264 at the source's size, whatever the source's codec.
        from_reencode = self.cfg.motion_source == "reencode"
        if min(info.width, info.height) < MV_MIN_SIDE and (from_reencode or (info.has_motion_vectors_codec and motion)):
            if from_reencode or motion[0].method == "motion_vectors":
                warnings.append(f"{info.width}x{info.height}: under {MV_MIN_SIDE} px, no motion score from vectors "
                                "(Curator's -1): the motion filter drops every clip")
            else:
                warnings.append(f"{info.width}x{info.height}: under {MV_MIN_SIDE} px Curator gives no motion score "
                                "(-1) and drops every clip; motion scored from decoded frames instead")
        e.set("warnings", i, "\n".join(warnings) or None)
        return waited

    def _single_pass(self) -> bool:
        """Whether the analysis decode also feeds the clip encoders (fixed spans, --reencode, CPU)."""
        cfg = self.cfg
        return cfg.split == "fixed" and cfg.clip_mode == "reencode" and not cfg.dry_run and not self.device.is_gpu

    def _analyze(self, path: str, info: VideoInfo):
        cfg = self.cfg
        fps = info.fps
        scenes = cfg.split in ("scenes", "transnetv2")  # both read every frame
        detector = ShotDetector(fps) if cfg.split == "scenes" else None
        shot_model = ShotFrames() if cfg.split == "transnetv2" else None
        # NVDEC exports no motion vectors: GPU runs match blocks on the device frames. Under
        # 256 px Curator's vectors give -1 (its filter drops every clip): "auto" scores such a
        # video from frames, as a codec without vectors, and says so in the video's warnings.
        # --motion-source reencode scores every clip from its own re-encode (the clip stage): the
        # source's motion would go unused, and without vectors the decoder may use frame threads.
        source_motion = cfg.motion_source != "reencode"
        use_mvs = (source_motion and info.has_motion_vectors_codec and not self.device.is_gpu
                   and (cfg.motion_method == "vectors"
                        or (cfg.motion_method == "auto" and min(info.width, info.height) >= MV_MIN_SIDE)))
        on_frame = None
        spans: list[Span] = []
        window: dict[str, float] = {}
        if not scenes:
            # Curator's spans and ids: its frame rate and frame count, not the decoder's.
            # A minimum above the clip length would drop every clip (Curator's outcome for
            # --clip-len 1 with its default minimum of 2): it is capped at the clip length.
            spans = fixed_spans(info, cfg)
            if self.span_range is not None:
                spans, window = _span_window(spans, *self.span_range)
            # upload_clips=False still encodes, as Curator does: the metas keep the clip's facts.
            if self._single_pass():  # the decode that feeds the kernels also feeds the encoders
                on_frame = _Feeder(spans, info, cfg)
        score_frames, preview_frames = Held(), Held()
        decode_errors = 0
        last_frame = -1
        score_next = 0.0
        preview_next = 0.0
        if window:
            # A part's once-a-second score and preview picks start at its first span: where a
            # whole decode's picks fall when frame times meet whole seconds (docs/RAY.md).
            score_next = preview_next = window.get("start_s", 0.0)
        motion = MotionAccumulator(fps, mv_size=(info.width, info.height) if use_mvs else None,
                                   source_size=None if use_mvs else (info.display_width, info.display_height),
                                   sample_fps=MOTION_FPS)
        kw: dict[str, Any] = {"device_id": self.device.device_id} if self.device.is_gpu else {}
        kw["mv_sample_fps"] = MOTION_FPS
        if use_mvs:
            # Curator reads each clip's vectors on the clip's own frame grid (ClipStage keeps the
            # first half's): fixed spans name those frames now; shot spans are known only after
            # the decode, and copy mode moves spans to keyframes, so there every frame's are kept.
            kw["mv_sample_fps"] = None
            # Each frame's vectors become its few patch sums as it is decoded (on the decoding
            # thread), so chunks never hold thousands of records per frame.
            kw["mv_reduce"] = motion.reduce_mvs
            if spans and cfg.clip_mode != "copy":
                wanted = {k for sp in spans
                          for k in curator_sample_frames(int(round(sp.start_s * fps)), int(round(sp.end_s * fps)), fps)}
                kw["mv_frames"] = wanted.__contains__
        chunks = (iter_analysis_frames_gpu if self.device.is_gpu else iter_analysis_frames)(
            path, info, **kw, short_side=cfg.analysis_short_side,
            sample_fps=None if scenes else MOTION_FPS, motion_pairs=source_motion and not scenes and not use_mvs,
            motion_vectors=use_mvs, time_limit_s=cfg.video_time_limit,
            on_frame=on_frame, preview_fps=1.0 if cfg.previews else None, preview_height=240, **window,
            chunk_size=ANALYSIS_CHUNK,
        )
        # Closed here, not when garbage collected: an exception stored with its traceback
        # would otherwise keep the reading thread and the open container alive.
        chunks = read_ahead(chunks)
        try:
            for chunk in chunks:
                if len(chunk.frame_indices) == 0:
                    continue
                if detector is not None:
                    detector.update(frame_features(chunk.frames), chunk.frame_indices)
                if shot_model is not None:
                    shot_model.add(to_host(chunk.frames), chunk.frame_indices)
                if source_motion:
                    motion.add(chunk.frames, chunk.frame_indices, chunk.times, chunk.mv_samples)
                for k, t in enumerate(chunk.times):
                    if t + 1e-9 >= score_next:
                        score_next = t + 1.0 / SCORE_FPS
                        score_frames.append((int(chunk.frame_indices[k]), to_host(chunk.frames[k]).copy()))
                for t, idx, rgb in getattr(chunk, "preview_frames", None) or ():
                    if t + 1e-9 >= preview_next:
                        preview_next = t + 1.0
                        preview_frames.append((int(idx), _jpeg(rgb)))
                decode_errors = chunk.decode_errors
                last_frame = max(last_frame, int(chunk.frame_indices[-1]))
        finally:
            chunks.close()
        samples = motion.mv_samples if use_mvs else motion.frame_samples
        if detector is not None:
            cuts = detector.finish()
            spans = [span_from_frames(a, b, info.meta_fps)
                     for a, b in split_scenes(cuts, info.num_frames, fps, min(cfg.min_clip_len, SCENE_MIN_LEN_S),
                                              min(cfg.clip_len, cfg.max_clip_len))]
        if shot_model is not None:
            spans = [span_from_frames(a, b, info.meta_fps)
                     for a, b in shot_model.scenes(self._transnet, fps, cfg.min_clip_len,
                                                   min(cfg.clip_len, cfg.max_clip_len))]
        media = Held(on_frame.finish()) if on_frame is not None else None
        # Frames are sampled at MOTION_FPS in fixed mode: the last one seen may sit up to one
        # sampling interval before the real end without anything being missing.
        slack = 1 + (0 if scenes else int(math.ceil(fps / MOTION_FPS)))
        short = (last_frame + 1, info.num_frames) if last_frame + 1 + slack < info.num_frames else None
        if "stop_s" in window:  # a part that ends before the video does
            short = None
        return spans, samples, score_frames, preview_frames, media, decode_errors, short


def fixed_spans(info: VideoInfo, cfg: VideoRunConfig) -> list[Span]:
    """A video's fixed-stride spans, from the probe alone (a Ray driver plans tasks with them)."""
    return fixed_stride_spans(info.meta_num_frames, info.meta_fps, cfg.clip_len,
                              min(cfg.min_clip_len, cfg.clip_len), cfg.stride)


# Decoded past a part's last span: the frame after a clip's last (its motion pair) and the next
# sample times, so the part's spans see every frame a whole decode gives them.
PART_TAIL_S = 1.0


def _span_window(spans: list[Span], i: int, j: int) -> tuple[list[Span], dict[str, float]]:
    """Spans i..j-1 and the decoder's start_s / stop_s for them (none at the video's ends)."""
    part = spans[i:j]
    window: dict[str, float] = {}
    if i > 0:
        window["start_s"] = part[0].start_s
    if j < len(spans):
        window["stop_s"] = max(sp.end_s for sp in part) + PART_TAIL_S
    return part, window


class _Feeder:
    """Gives every full-size decoded frame to the clip encoders whose span holds it.

    Encoders are made at the first frame: its display rotation (CCW, as PyAV reports it) is
    what they turn the pixels by. Each is finished as soon as the frames pass its end, so only
    clips in progress are held.
    """

    def __init__(self, spans: list[Span], info: VideoInfo, cfg: VideoRunConfig):
        self.spans_s = [(sp.start_s, sp.end_s) for sp in spans]
        self.info, self.cfg = info, cfg
        self.encoders: list[ClipEncoder | None] | None = None
        self.results: list[ClipMedia | Exception | None] = [None] * len(spans)

    def __call__(self, t: float, frame) -> None:
        if self.encoders is None:
            from fractions import Fraction

            sar = Fraction(self.info.sar).limit_denominator(1000) if self.info.sar and self.info.sar != 1 else None
            self.encoders = [ClipEncoder(s, e, self.info.fps, frame.width, frame.height, encoder=self.cfg.encoder,
                                         preset=self.cfg.preset, crf=self.cfg.crf,
                                         rotation=getattr(frame, "rotation", 0) or 0, sar=sar)
                             for s, e in self.spans_s]
        for k, enc in enumerate(self.encoders):
            if enc is None:
                continue
            if enc.accepts(t):
                enc.push(frame, t)
            elif t >= enc.end_s:
                self._close(k)

    def _close(self, k: int) -> None:
        enc = self.encoders[k]
        self.encoders[k] = None
        try:
            self.results[k] = enc.finish()
        except Exception as e:  # noqa: BLE001 - one clip's failure is recorded on that clip
            self.results[k] = e

    def finish(self) -> list[ClipMedia | Exception]:
        for k in range(len(self.results)):
            if self.encoders is not None and self.encoders[k] is not None:
                self._close(k)
            elif self.results[k] is None:
                self.results[k] = ValueError("no frame decoded in this span")
        return self.results
