"""Batch image decode + resize with NVIDIA DALI, for the analysis view (``ANALYSIS_SIZE`` squares).

One pipeline definition serves both devices: ``device="mixed"`` (nvJPEG, GPU) on machines with a
GPU and ``device="cpu"`` (libjpeg-turbo) elsewhere. On CPU it is slower than
``images.cpu_decode`` (DALI decodes at full resolution, simplejpeg decodes DCT-scaled; see
scripts/bench_decoders.py), so the CPU path exists for parity and testing, and the GPU path is
the reason for the module.

``nvidia.dali`` is imported inside functions only: the import alone costs ~1.2 s, and DALI is
an optional extra (``curastream[gpu]``), so this module imports without it and
:func:`require_dali` turns its absence into one clear error before any work.

DALI gotchas handled here (see shared FACTS.md):
* CPU-only pipelines need ``device_id=None``.
* ``external_source`` fed with ``feed_input`` needs ``prefetch_queue_depth=1``; with the default 2
  the first ``run()`` asks for a second batch that was never fed and the pipeline dies.
* The "mixed" decoder's output is a TensorListGPU in DALI's own buffers, reused by the next
  ``run()``: with ``keep_on_device`` the batch is copied once into a CuPy array on the same GPU
  (device to device) and scoring runs on it; nothing goes through the host.
* One undecodable image fails the whole batch AND leaves the pipeline object unusable
  ("Current pipeline object is no longer valid"), so recovery means building a new pipeline.
  Building costs ~10-30 ms on CPU; a header pre-check (``probe_image`` + JPEG scan check) keeps
  that rare.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from curastream.images.cpu_decode import ANALYSIS_SIZE, decode_cpu
from curastream.images.jpeg import check_jpeg_complete
from curastream.images.probe import DEFAULT_MAX_PIXELS, ImageDecodeError, parse_jpeg_header, probe_image

__all__ = [
    "DaliDecodePipeline",
    "dali_available",
    "dali_decode_batch",
    "decode_one",
    "make_decode_pipeline",
    "require_dali",
]

DALI_MISSING = "the DALI decoder needs NVIDIA DALI: pip install 'curastream[gpu]'"


@lru_cache(maxsize=1)
def dali_available() -> bool:
    """True when ``nvidia.dali`` imports (it does without a GPU driver)."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception:
        return False
    return True


def require_dali() -> None:
    """Raise ``ValueError`` (one line, how to install it) unless ``nvidia.dali`` imports. Call it
    where the decoder is chosen, so a missing extra fails the run before any input is read."""
    if not dali_available():
        raise ValueError(DALI_MISSING)


@lru_cache(maxsize=1)
def _decode_graph():
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def
    def decode_graph(device: str = "cpu", size: int = ANALYSIS_SIZE):
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        images = fn.decoders.image(
            encoded, device=device, output_type=types.RGB, adjust_orientation=True
        )
        # Antialiased linear (triangle filter) shrink: close to the INTER_AREA of the CPU path.
        return fn.resize(images, resize_x=size, resize_y=size, antialias=True)

    return decode_graph


class DaliDecodePipeline:
    """A built DALI decode pipeline plus what is needed to rebuild it after a failed batch."""

    def __init__(self, batch_size: int, num_threads: int, device: str = "cpu",
                 device_id: int | None = None, size: int = ANALYSIS_SIZE,
                 max_pixels: int = DEFAULT_MAX_PIXELS, keep_on_device: bool = False):
        require_dali()
        if device not in ("cpu", "mixed"):
            raise ValueError(f"device must be 'cpu' or 'mixed', got {device!r}")
        if device == "mixed" and device_id is None:
            raise ValueError("device='mixed' needs a GPU device_id")
        self.batch_size = int(batch_size)
        self.num_threads = int(num_threads)
        self.device = device
        self.device_id = device_id
        self.size = int(size)
        # The run's --max-pixels: the probe before DALI refuses what the CPU path refuses, no more.
        self.max_pixels = int(max_pixels)
        # "mixed" only: results stay on the GPU as CuPy arrays (see the module docstring).
        self.keep_on_device = bool(keep_on_device) and device == "mixed"
        self.rebuilds = 0
        self.pipe = None
        self.build()

    def build(self) -> None:
        pipe = _decode_graph()(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,
            prefetch_queue_depth=1,
            device=self.device,
            size=self.size,
        )
        pipe.build()
        self.pipe = pipe

    def rebuild(self) -> None:
        self.pipe = None  # drop the dead pipeline (and its thread pool) before making a new one
        self.build()
        self.rebuilds += 1

    def run(self, datas: list[bytes]) -> list:
        """Decode up to ``batch_size`` encoded images; raises whatever DALI raises. NumPy
        arrays, or CuPy arrays on the pipeline's GPU with ``keep_on_device``."""
        if not datas:
            return []
        if len(datas) > self.batch_size:
            raise ValueError(f"{len(datas)} images > batch_size {self.batch_size}")
        self.pipe.feed_input("encoded", [np.frombuffer(d, dtype=np.uint8) for d in datas])
        (out,) = self.pipe.run()
        if self.keep_on_device:
            return list(_device_copy(out, self.device_id))
        if hasattr(out, "as_cpu"):  # TensorListGPU from the "mixed" decoder
            out = out.as_cpu()
        return [np.array(out.at(i), dtype=np.uint8, copy=True) for i in range(len(out))]


def _device_copy(out, device_id: int):
    """(N, size, size, 3) CuPy copy of a TensorListGPU of same-shape images (the resize makes
    them so): one device-to-device copy out of DALI's buffers, which the next run reuses."""
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.array(out.as_tensor(), dtype=cupy.uint8, copy=True)


def make_decode_pipeline(batch_size: int, num_threads: int, device: str = "cpu",
                         device_id: int | None = None, size: int = ANALYSIS_SIZE,
                         max_pixels: int = DEFAULT_MAX_PIXELS, keep_on_device: bool = False) -> DaliDecodePipeline:
    """external_source("encoded") -> decoders.image(RGB, EXIF orientation applied) -> resize to
    size x size. Same graph for "cpu" and "mixed"; returned wrapped so a batch failure can rebuild
    it (see module docstring)."""
    return DaliDecodePipeline(batch_size, num_threads, device=device, device_id=device_id, size=size,
                              max_pixels=max_pixels, keep_on_device=keep_on_device)


def _dali_error(e: BaseException) -> ImageDecodeError:
    text = str(e)
    # DALI wraps the cause in a traceback of the graph definition: keep what follows
    # "encountered:" and drop the "pipeline object is no longer valid" trailer.
    if "encountered:" in text:
        text = text.split("encountered:", 1)[1]
    text = " ".join(
        line.strip() for line in text.splitlines()
        if line.strip() and "no longer valid" not in line and "Critical error" not in line
    )
    return ImageDecodeError("corrupt", f"DALI decode failed: {text[:300]}")


def dali_decode_batch(pipe: DaliDecodePipeline, datas: list[bytes], *, prevalidate: bool = True,
                      max_pixels: int | None = None, probes: list | None = None) -> list:
    """Decode many images; one result per input, in order: an (size, size, 3) uint8 RGB array
    (CuPy with ``pipe.keep_on_device``) or the ``ImageDecodeError`` for that item.

    With ``prevalidate`` each item is probed first (bombs, junk, truncated JPEG scans never reach
    DALI), against ``max_pixels`` (default: the pipeline's, i.e. the run's ``--max-pixels``).
    ``probes``: the caller's probe of each item (an ``ImageProbe``), so nothing is probed twice. Only 8-bit YCbCr/gray JPEGs go to DALI: for alpha, 16-bit and CMYK images DALI's
    conversions differ from ours (alpha dropped instead of composited over white), so those take
    the CPU path, which gives identical results to ``decode_for_analysis``.
    If a DALI batch still fails, the pipeline is rebuilt and that batch retried one image at a
    time so only the bad items fail.
    """
    limit = pipe.max_pixels if max_pixels is None else max_pixels
    if probes is not None and len(probes) != len(datas):
        raise ValueError(f"{len(probes)} probes for {len(datas)} images")
    results: list = [None] * len(datas)
    to_dali: list[int] = []
    for i, data in enumerate(datas):
        if not prevalidate:
            to_dali.append(i)
            continue
        try:
            probe = probes[i] if probes is not None else probe_image(data, max_pixels=limit)
            if probe.format in ("JPEG", "MPO") and probe.mode in ("RGB", "L"):
                check_jpeg_complete(data, parse_jpeg_header(data))
                to_dali.append(i)
            else:
                results[i] = _placed(pipe, decode_cpu(data, probe, size=pipe.size))
        except ImageDecodeError as e:
            results[i] = e

    for start in range(0, len(to_dali), pipe.batch_size):
        chunk = to_dali[start : start + pipe.batch_size]
        try:
            arrays = pipe.run([datas[i] for i in chunk])
        except RuntimeError:
            pipe.rebuild()
            for i in chunk:
                try:
                    (results[i],) = pipe.run([datas[i]])
                except RuntimeError as e:
                    results[i] = _dali_error(e)
                    pipe.rebuild()
            continue
        for i, arr in zip(chunk, arrays):
            results[i] = arr
    return results  # type: ignore[return-value]


def _placed(pipe: DaliDecodePipeline, rgb: np.ndarray):
    """A CPU-decoded item where the pipeline's results live (the GPU with keep_on_device)."""
    if not pipe.keep_on_device:
        return rgb
    import cupy

    with cupy.cuda.Device(pipe.device_id):
        return cupy.asarray(rgb)


_local = threading.local()


def decode_one(data: bytes, size: int = ANALYSIS_SIZE) -> np.ndarray:
    """Single-image DALI decode for ``decode_for_analysis(decoder="dali")``; raises
    ``ImageDecodeError``. Keeps one batch-1 CPU pipeline per thread (DALI pipelines are not
    thread-safe to feed concurrently)."""
    pipes = getattr(_local, "pipes", None)
    if pipes is None:
        pipes = _local.pipes = {}
    pipe = pipes.get(size)
    if pipe is None:
        pipe = pipes[size] = make_decode_pipeline(batch_size=1, num_threads=1, size=size)
    (result,) = dali_decode_batch(pipe, [data])
    if isinstance(result, Exception):
        raise result
    return result
