#!/usr/bin/env python
"""Throughput of the CPU image decoders on real JPEGs, 1 and 2 threads.

    .venv/bin/python scripts/bench_decoders.py [--dir /work/shared/media/images] [--seconds 1.5]

Bytes are preloaded; each row maps one decode function over all files with a
ThreadPoolExecutor (DALI uses its own thread pool instead: num_threads=1/2, one batch of all
files). A row's number is the median over timed passes of images/second, after one warm-up
pass; the last column is images per second of process CPU time (the per-image cost, which
noise from other workers on a shared machine distorts far less than wall time). OpenCV's internal thread pool is pinned to 1 thread (the executor already provides the
parallelism; letting both fight over 2 cores made resize slower).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curastream.images.cpu_decode import ANALYSIS_SIZE  # noqa: E402
from curastream.images.decode import decode_for_analysis  # noqa: E402
from curastream.images.probe import probe_image  # noqa: E402

JPEG_EXT = {".jpg", ".jpeg"}


def pillow_full(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def pillow_draft_quarter(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (im.width // 4, im.height // 4))
        return np.asarray(im.convert("RGB").resize((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.Resampling.BOX))


def simplejpeg_full(data: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def analysis(decoder: str):
    def run(data: bytes) -> np.ndarray:
        return decode_for_analysis(data, probe_image(data), decoder=decoder)

    return run


def cv2_reduced2(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)


def _timed_passes(one_pass, n: int, seconds: float) -> tuple[float, float]:
    """(median wall img/s, median img per process-CPU-second). The CPU figure is what other
    workers on a shared machine cannot distort much: it is the per-image cost."""
    one_pass()  # warm-up
    wall, cpu = [], []
    t_end = time.perf_counter() + seconds
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        one_pass()
        t1, c1 = time.perf_counter(), time.process_time()
        wall.append(n / (t1 - t0))
        cpu.append(n / max(c1 - c0, 1e-9))
        if t1 >= t_end and len(wall) >= 2:
            break
    return statistics.median(wall), statistics.median(cpu)


def time_pool(fn, datas: list[bytes], threads: int, seconds: float) -> tuple[float, float]:
    with ThreadPoolExecutor(threads) as pool:
        return _timed_passes(lambda: list(pool.map(fn, datas)), len(datas), seconds)


def time_dali(datas: list[bytes], threads: int, seconds: float) -> tuple[float, float]:
    from curastream.images.dali import dali_decode_batch, make_decode_pipeline

    pipe = make_decode_pipeline(batch_size=len(datas), num_threads=threads)

    def one_pass():
        # prevalidate=False times DALI alone; probe costs are in the "analysis" rows.
        out = dali_decode_batch(pipe, datas, prevalidate=False)
        assert not any(isinstance(o, Exception) for o in out)

    return _timed_passes(one_pass, len(datas), seconds)


def _cells(results: list[tuple[float, float]]) -> str:
    walls = [f"{w:.0f}" for w, _ in results]
    cpu = results[0][1]
    return " | ".join(walls) + f" | {cpu:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=str(ROOT.parent / "shared" / "media" / "images"))
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per row and thread count")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-dali", action="store_true")
    args = ap.parse_args()

    cv2.setNumThreads(1)
    files = sorted(p for p in Path(args.dir).iterdir() if p.suffix.lower() in JPEG_EXT)
    if not files:
        print(f"no JPEGs in {args.dir}", file=sys.stderr)
        return 1
    datas = [p.read_bytes() for p in files]
    probes = [probe_image(d) for d in datas]
    mpix = sum(p.width * p.height for p in probes) / 1e6
    threads = [int(t) for t in args.threads.split(",")]
    print(f"{len(files)} JPEGs, {mpix:.1f} Mpx total ({mpix / len(files):.2f} Mpx mean), "
          f"{args.seconds:.1f} s per cell, median pass, img/s\n")

    rows = [
        ("Pillow open+convert RGB (full)", "full", pillow_full),
        ("Pillow draft 1/4 + Image.resize BOX 256", "256", pillow_draft_quarter),
        ("analysis path, decoder='pillow' (probe+draft>=256+INTER_AREA+EXIF)", "256", analysis("pillow")),
        ("simplejpeg full", "full", simplejpeg_full),
        ("analysis path, decoder='auto' (probe+simplejpeg scaled+INTER_AREA+EXIF)", "256", analysis("auto")),
        ("cv2.imdecode IMREAD_REDUCED_COLOR_2 (BGR)", "1/2", cv2_reduced2),
    ]
    header = ("| decoder | output | " + " | ".join(f"{t} thr img/s" for t in threads)
              + f" | img per CPU-s ({threads[0]} thr) |")
    print(header)
    print("|" + "---|" * (3 + len(threads)))
    for name, out, fn in rows:
        cells = _cells([time_pool(fn, datas, t, args.seconds) for t in threads])
        print(f"| {name} | {out} | {cells} |", flush=True)
    if not args.no_dali:
        from curastream.images.dali import dali_available

        if dali_available():
            cells = _cells([time_dali(datas, t, args.seconds) for t in threads])
            print(f"| DALI CPU batch={len(datas)}, decoders.image+resize (num_threads) | 256 | {cells} |",
                  flush=True)
        else:
            print("| DALI CPU | - | not importable |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
