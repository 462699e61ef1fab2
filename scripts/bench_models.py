"""Models in the loop, measured on real media (../shared/media beside the repo, or --media).

``shots``: TransNetV2 (Curator's threshold 0.4) beside the kernel shot detector, per video with
cut times in the media MANIFEST: cuts found within 0.2 s of a listed cut, extra cuts, frames/s
of the detector alone (decode not counted).

``nsfw``: an image run with ``--model nsfw`` against the same run without it (decode-only) and
the model alone on the same analysis views; prints wall(run) / max(decode-only, model-only),
which is near 1 when the model stage overlaps decode and writing (aim <= 1.15).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
TOLERANCE_S = 0.2


def manifest_cuts(media: Path) -> dict[str, list[float] | None]:
    """file -> listed cut times; [] for "none"; videos without an entry are left out."""
    out = {}
    with open(media / "MANIFEST.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            cuts = (row.get("scene_cuts_s") or "").strip()
            if row["file"].startswith("videos/") and cuts:
                out[row["file"]] = [] if cuts == "none" else [float(x) for x in cuts.split()]
    return out


def decode_all(path: str):
    from curastream.videos.decode import iter_analysis_frames
    from curastream.videos.probe import probe

    info = probe(path)
    chunks = list(iter_analysis_frames(path, info, short_side=144, chunk_size=128))
    return info, chunks


def kernel_cuts(info, chunks) -> tuple[list[float], float]:
    from curastream.kernels.shots import ShotDetector, frame_features

    t0 = time.perf_counter()
    det = ShotDetector(info.fps)
    for ch in chunks:
        if len(ch.frame_indices):
            det.update(frame_features(ch.frames), ch.frame_indices)
    cuts = det.finish()
    return [c / info.fps for c in cuts], time.perf_counter() - t0


def transnet_cuts(model, info, chunks) -> tuple[list[float], float]:
    from curastream.models.transnet import ShotFrames, transition_frames

    t0 = time.perf_counter()
    sf = ShotFrames()
    for ch in chunks:
        sf.add(ch.frames, ch.frame_indices)
    pred, idx = sf.predictions(model)
    return [idx[i] / info.fps for i in transition_frames(pred)], time.perf_counter() - t0


def score(found: list[float], truth: list[float]) -> tuple[int, int]:
    hit = sum(any(abs(f - t) <= TOLERANCE_S for f in found) for t in truth)
    extra = sum(not any(abs(f - t) <= TOLERANCE_S for t in truth) for f in found)
    return hit, extra


def bench_shots(media: Path) -> None:
    from curastream.engine.device import Device
    from curastream.models.transnet import TransNetV2

    model = TransNetV2()
    model.load(Device("cpu", None))
    print("| video | MANIFEST cuts (s) | kernel found | kernel extra | kernel frames/s | "
          "TransNetV2 found | TransNetV2 extra | TransNetV2 frames/s |")
    print("|---|---|---|---|---|---|---|---|")
    for rel, truth in sorted(manifest_cuts(media).items()):
        try:
            info, chunks = decode_all(str(media / rel))
        except Exception as err:  # noqa: BLE001 - a file the decoder refuses is a row saying so
            print(f"| {rel} | {truth} | decode failed: {err} |")
            continue
        n = sum(len(c.frame_indices) for c in chunks)
        kc, kt = kernel_cuts(info, chunks)
        tc, tt = transnet_cuts(model, info, chunks)
        kh, ke = score(kc, truth)
        th, te = score(tc, truth)
        print(f"| {Path(rel).name} | {' '.join(map(str, truth)) or 'none'} | {kh}/{len(truth)} | {ke} "
              f"{[round(float(c), 2) for c in kc] if ke else ''} | {n / kt:.0f} | {th}/{len(truth)} | {te} "
              f"{[round(float(c), 2) for c in tc] if te else ''} | {n / tt:.0f} |")


def _run(sources: list[str], models: list[str]) -> float:
    from curastream.config import ImageFilters, ImageRunConfig
    from curastream.images.pipeline import run_images

    out = tempfile.mkdtemp(prefix="bench-models-")
    try:
        cfg = ImageRunConfig(sources=sources, output=out, models=models, progress=False,
                             filters=ImageFilters(dedup=False))
        t0 = time.perf_counter()
        run_images(cfg)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _model_only(sources: list[str], name: str) -> tuple[float, int, float]:
    """The model alone over the analysis views the run would hand it (decoded beforehand):
    (seconds, views, CPU seconds)."""
    from curastream.engine.device import Device
    from curastream.images.decode import decode_for_analysis
    from curastream.images.listing import list_image_inputs
    from curastream.images.probe import probe_image
    from curastream.models.contract import run_batched
    from curastream.models.registry import make_model

    views = []
    for inp in list_image_inputs(sources):
        data = Path(inp.source).read_bytes()
        try:
            views.append(decode_for_analysis(data, probe_image(data)))
        except Exception:  # noqa: BLE001 - the run rejects these too
            pass
    model = make_model(name)
    model.load(Device("cpu", None))
    t0, c0 = time.perf_counter(), time.process_time()
    run_batched(model, views)
    return time.perf_counter() - t0, len(views), time.process_time() - c0


def bench_nsfw(media: Path, repeat: int) -> None:
    sources = [str(media / "images")] * 1
    src = tempfile.mkdtemp(prefix="bench-models-src-")
    try:
        # the photos several times over, under distinct names, so the run lasts long enough to time
        for k in range(repeat):
            for p in sorted((media / "images").iterdir()):
                os.symlink(p, Path(src) / f"r{k}_{p.name}")
        sources = [src]
        base, base_cpu = min(_timed(_run, sources, []) for _ in range(2))
        model_s, n, model_cpu = _model_only(sources, "nsfw")
        full, full_cpu = min(_timed(_run, sources, ["nsfw"]) for _ in range(2))
    finally:
        shutil.rmtree(src, ignore_errors=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"images: {n}  decode-only run: {base:.2f} s  model only: {model_s:.2f} s ({n / model_s:.1f} img/s)  "
          f"run with --model nsfw: {full:.2f} s")
    print(f"CPU seconds: decode-only {base_cpu:.2f}  model only {model_cpu:.2f}  run with the model {full_cpu:.2f}  "
          f"(cores: {cores}; load now {os.getloadavg()[0]:.1f})")
    print(f"ratio run / max(decode-only, model-only) = {full / max(base, model_s):.2f} (aim <= 1.15)")
    # Where the model shares the CPU with decoding (no GPU), the run cannot beat the two jobs'
    # CPU seconds spread over every core, whatever the overlap: that bound is printed beside.
    bound = max(base, model_s, (base_cpu + model_cpu) / cores)
    print(f"ratio run / max(decode-only, model-only, CPU seconds of both / cores) = {full / bound:.2f}")


def _timed(fn, *args):
    """(fn's result, CPU seconds of this process and its threads while it ran)."""
    c0 = time.process_time()
    r = fn(*args)
    return r, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("shots", "nsfw", "all"))
    ap.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    ap.add_argument("--repeat", type=int, default=4, help="copies of the photo set for the nsfw timing")
    a = ap.parse_args(argv)
    if not (a.media / "MANIFEST.tsv").exists():
        print(f"no media at {a.media}", file=sys.stderr)
        return 2
    if a.what in ("shots", "all"):
        bench_shots(a.media)
    if a.what in ("nsfw", "all"):
        bench_nsfw(a.media, a.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
