"""The clip stage: cuts each video's spans into clip media and judges every clip (motion, frame
scores, duration, previews, plug-ins, models), because this is the last stage that needs the
analysis side data: it turns them into the clip records the writer keeps and drops the frames,
so a video's pixels never travel on to the sink.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from curastream.config import VideoRunConfig
from curastream.engine.batch import Batch, ok_rows
from curastream.engine.device import Device
from curastream.engine.huge_pages import HUGE_PAGES
from curastream.engine.memory import HEAP_TRIMMER, MMAP_THRESHOLD, trim
from curastream.engine.names import printable
from curastream.engine.pipeline import Stage
from curastream.kernels.image_scores import score_batch
from curastream.kernels.motion_score import MotionScore, aggregate_motion, passes_motion_filter, unscored
from curastream.kernels.motion_vectors import MV_MIN_SIDE, curator_clip_motion
from curastream.kernels.shots import Span, span_from_seconds
from curastream.models.contract import clip_scores, model_device
from curastream.models.registry import make_callable, make_models
from curastream.videos.clip_audio import add_audio
from curastream.videos.clip_copy import cut_copy
from curastream.videos.clip_encode import cut_reencode
from curastream.videos.clip_facts import ClipMedia
from curastream.videos.clip_preview import clip_windows, make_preview
from curastream.videos.motion_reencode import reencoded_motion
from curastream.videos.probe import VideoInfo
from curastream.videos.records import Held, clip_rows, clips_column
from curastream.videos.smart_cut import cut_exact
from curastream.videos.stages import ANALYSIS_SIDECAR, _unjpeg, failure_reason
from curastream.videos.work_budget import WorkBudget, cut_bytes
from curastream.writers.clip_model import ClipRecord

log = logging.getLogger(__name__)


class ClipStage(Stage):
    """Cut clip media, aggregate scores per clip, filter, previews, plug-ins."""

    name = "clips"
    requires = ("video", "status", "fps", "motion_method")
    provides = ("clips", "reject_stage", "reject_reason")

    def __init__(self, cfg: VideoRunConfig, workers: int = 2, device: Device | None = None,
                 work: WorkBudget | None = None):
        self.cfg = _with_plugins(cfg)
        self.workers = workers
        self.work = work or WorkBudget()  # shared with the analysis stage by the pipeline
        self.models = make_models(cfg.models)
        self.device = device or Device("cpu", None)

    def open(self) -> None:
        # Cuts free big buffers clip by clip: the biggest go back as they are freed (a pinned
        # mmap threshold), the rest while the run grows and every half second, not only when a
        # video ends (engine/memory.py). Huge pages would keep much of what a trim hands back
        # resident (engine/huge_pages.py).
        HUGE_PAGES.start()
        MMAP_THRESHOLD.start()
        HEAP_TRIMMER.start()
        for m in self.models:  # once; the stage's workers share them
            m.load(model_device(m, self.device))

    def close(self) -> None:
        HEAP_TRIMMER.stop()
        MMAP_THRESHOLD.stop()
        HUGE_PAGES.stop()

    def process(self, b: Batch) -> Batch:
        records: list[list[ClipRecord]] = [Held() for _ in range(b.num_rows)]
        e = None
        for i in ok_rows(b):
            try:
                est = cut_bytes(b.sidecar["probe"][i], self.cfg, media_made=b.sidecar["media"][i] is not None)
                with self.work.hold(est, cut=True):
                    records[i] = self._video(b, i)
            except Exception as err:  # noqa: BLE001 - incl. MemoryError: one video, not the run
                log.warning("clips of %s failed", printable(b.values("video")[i]), exc_info=True)
                e = e or b.edit()
                e.reject(i, "clips", failure_reason(err))
                records[i] = Held()
            trim()  # the cut's decoder and encoder buffers are freed now (engine/memory.py)
        if e is not None:
            b = e.done()
        methods = b.values("motion_method")
        if self.cfg.motion_source == "reencode":  # every clip's score is from its re-encode's vectors
            methods = ["motion_vectors"] * b.num_rows
        clips = [clip_rows(b.values("video")[i], methods[i], records[i]) for i in range(b.num_rows)]
        # The analysis frames end here: the batch that goes on to the sink holds clips only.
        return b.with_columns({"clips": clips_column(clips)}, sidecar={"clip_records": records},
                              drop_sidecar=ANALYSIS_SIDECAR)

    def _video(self, b: Batch, i: int) -> Held:
        cfg = self.cfg
        path, info = b.values("video")[i], b.sidecar["probe"][i]
        spans: list[Span] = b.sidecar["spans"][i]
        spans_s = [(sp.start_s, sp.end_s) for sp in spans]
        media: list[ClipMedia | Exception | None] = [None] * len(spans_s)
        # upload_clips=False still encodes, as Curator does (the writer just keeps the MP4s).
        if spans_s and not cfg.dry_run:
            if b.sidecar["media"][i] is not None:
                media = list(b.sidecar["media"][i])
            elif cfg.clip_mode == "copy":
                media = cut_copy(path, spans_s, stream_index=info.stream_index, snap="tile",
                                 include_audio=cfg.audio, encoder=cfg.encoder, preset=cfg.preset, crf=cfg.crf)
            elif cfg.clip_mode == "exact":
                # The cutter takes frames [int(s*fps), int(e*fps)): hand it frame centres so that
                # float error cannot move a shot span's frames (int(116 / 25 * 25) is 115). Where
                # the ids count another stream's frames (Curator's, at another rate), the seconds
                # are what the two streams share.
                same_rate = not info.meta_fps or abs(info.meta_fps - info.fps) < 1e-9
                centres = [((sp.start_frame + 0.5) / info.fps, (sp.end_frame + 0.5) / info.fps) if same_rate
                           else (sp.start_s, sp.end_s) for sp in spans]
                media = cut_exact(path, centres, stream_index=info.stream_index, audio=cfg.audio,
                                  encoder=cfg.encoder, preset=cfg.preset, crf=cfg.crf)
            else:
                media = cut_reencode(path, spans_s, stream_index=info.stream_index, encoder=cfg.encoder,
                                     preset=cfg.preset, crf=cfg.crf)
            if cfg.audio and cfg.clip_mode == "reencode":
                media = add_audio(path, media)
        motion, score_frames = b.sidecar["motion"][i], b.sidecar["score_frames"][i]
        preview_frames = b.sidecar["preview_frames"][i]
        scores: list[MotionScore | Exception | None] = [None] * len(spans)
        if spans and cfg.motion_source == "reencode":
            # A keyframe-snapped copy holds another span than planned: score the one it holds.
            held = [(m.start_s, m.end_s) if cfg.clip_mode == "copy" and isinstance(m, ClipMedia) else s
                    for s, m in zip(spans_s, media)]
            scores = reencoded_motion(path, held, media, stream_index=info.stream_index, clip_mode=cfg.clip_mode,
                                      encoder=cfg.encoder, preset=cfg.preset, crf=cfg.crf)
        out, seen = Held(), set()
        for sp, m, ms in zip(spans, media, scores):
            clip = self._clip(path, info, motion, score_frames, preview_frames, sp, m, ms)
            if clip.uuid in seen:
                # Stream copy cuts on keyframes: with keyframes sparser than the spans, several
                # spans come out as the same keyframe range, i.e. the same clip (same uuid).
                continue
            seen.add(clip.uuid)
            out.append(clip)
        return out

    def _clip(self, path: str, info: VideoInfo, motion, score_frames, preview_frames, sp: Span,
              m: ClipMedia | Exception | None, reencoded: MotionScore | Exception | None = None) -> ClipRecord:
        cfg = self.cfg
        errors: dict[str, str] = {}
        fields: dict[str, Any] = {}
        if isinstance(m, ClipMedia):
            if cfg.clip_mode == "copy" and (m.start_s, m.end_s) != (sp.start_s, sp.end_s):
                # A keyframe-aligned copy holds another span than planned: record that one, and
                # its id, so metas describe the file.
                sp = span_from_seconds(m.start_s, m.end_s, info.meta_fps)
            w, h = m.display_size
            fields.update(media=m.data, width=w, height=h, framerate=m.framerate, num_frames=m.num_frames,
                          video_codec=m.video_codec)
        elif isinstance(m, Exception):
            errors["transcode"] = f"{type(m).__name__}: {m}"
        s, e = sp.start_s, sp.end_s
        clip = ClipRecord.for_span(path, s, e, info.meta_fps, frames=(sp.start_frame, sp.end_frame),
                                   errors=errors, **fields)
        # The analysis side data is numbered by the decoder's frame clock, not by the id's frames.
        sf, ef = int(round(s * info.fps)), int(round(e * info.fps))
        if isinstance(reencoded, Exception):  # Curator's outcome when its decode fails: no score, an error
            clip.errors["motion_decode"] = f"{type(reencoded).__name__}: {reencoded}"
            score = unscored("motion_vectors")
        elif reencoded is not None:
            score = reencoded
        elif motion and motion[0].method == "motion_vectors":
            score = curator_clip_motion(motion, sf, ef, info.fps, (info.width, info.height))
        else:
            score = aggregate_motion(motion, sf, ef)
        if score.reason:  # Curator's error for the same clip; its filter then drops the clip
            clip.errors["motion_decode"] = (f"{score.reason}: {info.width}x{info.height} has a side under "
                                            f"{MV_MIN_SIDE} px, too small for Curator's motion vectors")
        if score.available:
            clip.motion_score = {"global_mean": score.global_mean, "per_patch_min_256": score.per_patch_min_256}
        elif reencoded is not None:  # Curator writes its -1 for a clip its decode could not score
            clip.motion_score = {"global_mean": -1.0, "per_patch_min_256": -1.0}
        frames = [f for k, f in score_frames if sf <= k < ef]
        if frames:
            sc = score_batch(np.stack(frames))
            clip.frame_scores = {k: round(float(np.mean(v)), 6) for k, v in sc.items()}
        if cfg.motion_filter:
            ok, _ = passes_motion_filter(score, cfg.motion_global_mean_threshold, cfg.motion_per_patch_min_threshold)
            if not ok:
                clip.filtered_by.append("motion")
        dur = e - s
        if cfg.min_duration is not None and dur < cfg.min_duration:
            clip.filtered_by.append("min_duration")
        if cfg.max_duration is not None and dur > cfg.max_duration:
            clip.filtered_by.append("max_duration")
        if not clip.filtered_by:  # Curator windows, previews and plug-ins passing clips only
            if frames:
                self._plugins(clip, frames)
                self._models(clip, frames)
            n = clip.num_frames if clip.num_frames else ef - sf
            self._windows(clip, clip_windows(n), sf, ef, score_frames, frames, preview_frames)
        return clip

    def _windows(self, clip: ClipRecord, windows: list[tuple[int, int]], sf: int, ef: int, score_frames,
                 clip_frames: list[np.ndarray], preview_frames) -> None:
        """Curator's windows (clip-relative frames, end inclusive), each with its WebP preview
        and, from the captioner plug-in, its caption; listed when either is asked for."""
        cfg = self.cfg
        previews = cfg.previews and not cfg.dry_run
        if not previews and cfg.captioner is None:
            return
        model = (cfg.caption_models or ["plugin"])[0]
        in_clip = [(k, x) for k, x in preview_frames if sf <= k < ef] if previews else []
        for ws, we in windows:
            lo, hi = sf + ws, sf + we
            window: dict[str, Any] = {"start_frame": ws, "end_frame": we}
            if cfg.captioner is not None:
                frames = [f for k, f in score_frames if lo <= k <= hi] or clip_frames
                if frames:
                    try:
                        window[f"{model}_caption"] = str(cfg.captioner(np.stack(frames)))
                    except Exception as err:  # noqa: BLE001 - a plug-in failure is that clip's error
                        clip.errors["caption"] = f"{type(err).__name__}: {err}"
            clip.windows.append(window)
            if not in_clip:
                continue
            # Preview frames are sampled once a second of the source: a window shorter than that
            # may hold none, and then shows the sample nearest its middle.
            pv = [x for k, x in in_clip if lo <= k <= hi] or [min(in_clip, key=lambda kx: abs(kx[0] - (lo + hi) / 2))[1]]
            try:
                clip.previews[(ws, we)] = make_preview([_unjpeg(x) for x in pv], fps_in=1.0, target_fps=1.0,
                                                       height=240)
            except Exception as err:  # noqa: BLE001 - a clip without its preview, said so
                clip.errors["preview"] = f"{type(err).__name__}: {err}"

    def _models(self, clip: ClipRecord, frames: list[np.ndarray]) -> None:
        for m in self.models:
            try:
                clip.model_scores.update(clip_scores(m, frames))
            except Exception as err:  # noqa: BLE001 - the clip's error, in the model's words
                clip.errors[m.name] = str(err)

    def _plugins(self, clip: ClipRecord, frames: list[np.ndarray]) -> None:
        cfg = self.cfg
        if cfg.embedder is not None:
            try:
                clip.embeddings[cfg.embedding_algorithm] = np.asarray(cfg.embedder(np.stack(frames)),
                                                                      np.float32).reshape(-1)
            except Exception as e:  # noqa: BLE001 - a plug-in failure is that clip's error
                clip.errors["embedding"] = f"{type(e).__name__}: {e}"


def _with_plugins(cfg: VideoRunConfig) -> VideoRunConfig:
    """``cfg`` with ``--embedder`` / ``--captioner`` factories made into the callables it runs."""
    import dataclasses

    found = {}
    if cfg.embedder is None and cfg.embedder_factory:
        found["embedder"] = make_callable(cfg.embedder_factory, "embedder")
    if cfg.captioner is None and cfg.captioner_factory:
        found["captioner"] = make_callable(cfg.captioner_factory, "captioner")
    return dataclasses.replace(cfg, **found) if found else cfg
