#!/usr/bin/env python
"""Curator's image pipeline with Curator's ImageWriterStage, then with ours (one import changed).

    .venv-bench/bin/python scripts/curator_adapter_check.py [--copies 2] [--per-tar 24]
        [--batch-size 16] [--images-per-tar 20]

Runs with the Curator venv's python (README of scripts/bench_images.py: `.venv-bench` with
nemo-curator 1.4, DALI and Pillow; curastream installed there with `pip install --no-deps -e .`).
With a python that has no nemo_curator it prints SKIP and exits 0.

Input: the JPEGs of ../shared/media/images packed ``--copies`` times into WebDataset tars of
``--per-tar`` ``<key>.jpg`` members (Curator's reader reads only WebDataset tars). The pipeline,
as scripts/_curator_driver.py runs it (stages called in this process, no Ray): Curator's
ImageReaderStage (DALI, CPU decode where there is no CUDA; batches of ``--batch-size``) ->
ImageWriterStage. Run twice, the writer's import being the only difference:

    from nemo_curator.stages.image.io.image_writer import ImageWriterStage   # curator
    from curastream.curator import ImageWriterStage                          # curastream

then ours once more with on_existing="resume" over its own output (nothing may change).
Prints images written, tar fill, identical image bytes per image_id, Parquet columns, time.

Then the clip writer the same way, on ``--videos`` of ../shared/media/videos: Curator's VideoReader
-> FixedStrideExtractorStage -> ClipTranscodingStage (libx264, one thread, as the bench driver
subclasses it) -> MotionVectorDecodeStage -> MotionFilterStage -> ClipWriterStage, Curator's
then ours (``from curastream.curator import ClipWriterStage``), then ours resumed: clips, metas,
chunk and video JSON compared, clip bytes per span_uuid. Last line ``PASS`` or ``FAIL: <what>``
(exit 1).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDIA = HERE.parent.parent / "shared" / "media" / "images"


def pack_tars(files: list[Path], copies: int, per_tar: int, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    tars, tf, n = [], None, 0
    for c in range(copies):
        for f in files:
            if n % per_tar == 0:
                if tf is not None:
                    tf.close()
                tars.append(out / f"shard{len(tars):04d}.tar")
                tf = tarfile.open(tars[-1], "w", format=tarfile.PAX_FORMAT)
            data = f.read_bytes()
            info = tarfile.TarInfo(re.sub(r"[^A-Za-z0-9_-]", "_", f.stem) + f"-c{c:02d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            n += 1
    if tf is not None:
        tf.close()
    return tars


def timed(stage, into: dict) -> None:
    """Adds the seconds ``stage`` spends in process/setup/teardown to ``into["writer"]``: the
    pipeline's total includes Curator's reader (DALI start-up and decode), the same for both."""
    into["writer"] = 0.0
    for name in ("setup", "process", "teardown"):
        fn = getattr(stage, name)

        def wrapped(*a, _fn=fn, **k):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                into["writer"] += time.perf_counter() - t0

        setattr(stage, name, wrapped)


def run_pipeline(writer, tars: list[Path], batch_size: int) -> float:
    sys.path.insert(0, str(HERE))
    import torch
    from _curator_driver import make_cpu_image_reader, run_stages_inprocess
    from nemo_curator.stages.image.io.image_reader import ImageReaderStage
    from nemo_curator.tasks import FileGroupTask

    kw = dict(dali_batch_size=batch_size, num_threads=2, verbose=False)
    # DALI asserts on device_id=0 without CUDA: the driver's reader changes only that argument
    reader = ImageReaderStage(**kw) if torch.cuda.is_available() else make_cpu_image_reader(**kw)
    tasks = [FileGroupTask(dataset_name="check", data=[str(t)]) for t in tars]
    t0 = time.perf_counter()
    run_stages_inprocess([reader, writer], tasks)
    return time.perf_counter() - t0


def read_output(out: Path) -> dict:
    """What an independent reader (tarfile, pyarrow) finds in a writer's output root."""
    import pyarrow.parquet as pq

    fills, images, columns, rows = [], {}, None, 0
    for t in sorted(out.glob("*.tar")):
        with tarfile.open(t) as tf:
            jpgs = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg")]
            fills.append(len(jpgs))
            for m in jpgs:
                images[m.name[:-4]] = tf.extractfile(m).read()
    for p in sorted(out.glob("*.parquet")):
        t = pq.read_table(p)
        columns = columns or t.schema.names
        rows += t.num_rows
    return {"fills": fills, "images": images, "columns": columns or [], "rows": rows}


# ------------------------------------------------------------------------------------ videos
def run_video_pipeline(writer, src: Path, clip_len: float) -> float:
    sys.path.insert(0, str(HERE))
    from _curator_driver import expand, make_transcoder, run_stages_inprocess
    from nemo_curator.stages.video.clipping.clip_extraction_stages import FixedStrideExtractorStage
    from nemo_curator.stages.video.filtering.motion_filter import MotionFilterStage, MotionVectorDecodeStage
    from nemo_curator.stages.video.io.video_reader import VideoReader
    from nemo_curator.tasks import EmptyTask

    stages = [VideoReader(input_video_path=str(src)),
              FixedStrideExtractorStage(clip_len_s=clip_len, clip_stride_s=clip_len, min_clip_length_s=0.5,
                                        limit_clips=0),
              # libx264, one thread: the same clip bytes from both runs
              make_transcoder("libx264", "veryfast", 23, 1.0, 1, 16),
              MotionVectorDecodeStage(target_fps=2.0, target_duration_ratio=0.5, num_cpus_per_worker=1.0),
              MotionFilterStage(num_gpus_per_worker=0, motion_filter_batch_size=64),
              writer]
    t0 = time.perf_counter()
    run_stages_inprocess(expand(stages), [EmptyTask])
    return time.perf_counter() - t0


def read_clips(out: Path) -> dict:
    clips = {p.stem: p.read_bytes() for d in ("clips", "filtered_clips") for p in (out / d).glob("*.mp4")}
    metas = {p.stem: json.loads(p.read_text()) for p in (out / "metas" / "v0").glob("*.json")} \
        if (out / "metas" / "v0").is_dir() else {}
    videos = sorted(p.name for p in (out / "processed_videos").rglob("*.json")) \
        if (out / "processed_videos").is_dir() else []
    chunks = {p.name: json.loads(p.read_text()) for p in (out / "processed_clip_chunks").rglob("*.json")} \
        if (out / "processed_clip_chunks").is_dir() else {}
    return {"clips": clips, "metas": metas, "videos": videos, "chunks": chunks}


def check_videos(tmp: Path, names: list[str], clip_len: float) -> list[str]:
    from curastream.curator import ClipWriterStage as OurClipWriter
    from nemo_curator.stages.video.io.clip_writer import ClipWriterStage as CuratorClipWriter

    src = tmp / "videos"
    src.mkdir()
    for n in names:
        (src / n).symlink_to(MEDIA.parent / "videos" / n)
    runs = {}
    for label, cls in (("curator", CuratorClipWriter), ("curastream", OurClipWriter)):
        out = tmp / f"clips-{label}"
        w = cls(output_path=str(out), input_path=str(src), upload_clips=True, dry_run=False, generate_embeddings=False,
                generate_previews=False, generate_captions=False)
        wall = run_video_pipeline(w, src, clip_len)
        runs[label] = {**read_clips(out), "wall": wall}
    cur, ours = runs["curator"], runs["curastream"]
    same = sum(cur["clips"].get(k) == v for k, v in ours["clips"].items())
    print(f"\nvideos: {', '.join(names)}; fixed stride {clip_len} s, libx264 (1 thread)")
    print(f"{'':24}{'curator':>14}{'curastream':>14}")
    for what, f in (("clips (passed+filtered)", lambda r: len(r["clips"])), ("metas", lambda r: len(r["metas"])),
                    ("filtered by motion", lambda r: sum("/filtered_clips/" in m["clip_location"]
                                                         for m in r["metas"].values())),
                    ("processed_videos", lambda r: len(r["videos"])), ("time (s)", lambda r: f"{r['wall']:.2f}")):
        print(f"{what:24}{f(cur)!s:>14}{f(ours)!s:>14}")
    print(f"identical clip bytes per span_uuid: {same} of {len(ours['clips'])}")
    failures = []
    if not ours["clips"] or set(ours["clips"]) != set(cur["clips"]):
        failures.append("the clip writers wrote different span_uuids")
    if same != len(ours["clips"]):
        failures.append(f"{len(ours['clips']) - same} clips differ in bytes from Curator's")
    if ours["videos"] != cur["videos"]:
        failures.append(f"processed_videos differ: {ours['videos']} vs {cur['videos']}")
    for k, m in ours["metas"].items():
        c = cur["metas"].get(k, {})
        if any(m.get(x) != c.get(x) for x in ("duration_span", "source_video", "motion_score", "num_frames")) or \
                m["clip_location"].split("/")[-2] != c["clip_location"].split("/")[-2]:
            failures.append(f"metas {k} differ in span or source")
            break
    if sorted(ours["chunks"]) != sorted(cur["chunks"]):
        failures.append(f"processed_clip_chunks differ: {sorted(ours['chunks'])} vs {sorted(cur['chunks'])}")
    for name, d in ours["chunks"].items():
        c = cur["chunks"].get(name, {})
        for k in ("num_clips_filtered_by_motion", "num_clips_passed", "num_clips_transcoded", "clips", "filtered_clips"):
            a, b = d.get(k), c.get(k)
            if (sorted(a) if isinstance(a, list) else a) != (sorted(b) if isinstance(b, list) else b):
                failures.append(f"{name}: {k} {a} vs Curator's {b}")
    # Resume over the finished output: every video is done, no file is written again.
    out = tmp / "clips-curastream"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "_curastream" not in p.parts}
    wall = run_video_pipeline(OurClipWriter(output_path=str(out), input_path=str(src), upload_clips=True, dry_run=False,
                                            generate_embeddings=False, generate_previews=False,
                                            generate_captions=False, on_existing="resume"), src, clip_len)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "_curastream" not in p.parts}
    rewritten = sorted(str(p.relative_to(out)) for p in after if before.get(p) != after[p] and p.name != "index.json")
    print(f"resume over the finished clip output: {len(rewritten)} files rewritten ({wall:.2f} s)")
    if rewritten:
        failures.append(f"resume rewrote {rewritten[:3]}")
    missing = sorted(set(next(iter(cur["metas"].values()), {})) - set(next(iter(ours["metas"].values()), {})))
    if missing:
        failures.append(f"our metas lack Curator's keys {missing}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--per-tar", type=int, default=24, help="images per input tar")
    ap.add_argument("--batch-size", type=int, default=16, help="the reader's DALI batch (Curator's batches)")
    ap.add_argument("--images-per-tar", type=int, default=20)
    ap.add_argument("--videos", nargs="*", default=["imageio_realshort.mp4", "imageio_cockatoo.mp4"],
                    help="videos of ../shared/media/videos for the clip writer comparison (none: skip it)")
    ap.add_argument("--clip-len", type=float, default=2.0)
    args = ap.parse_args()
    try:
        import nemo_curator  # noqa: F401
    except ImportError:
        print(f"SKIP: NeMo Curator is not importable by {sys.executable}; run this with .venv-bench/bin/python")
        return 0
    os.environ.setdefault("LOGURU_LEVEL", "WARNING")
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=os.environ["LOGURU_LEVEL"])
    files = sorted(p for p in MEDIA.glob("*") if p.is_file() and p.read_bytes()[:3] == b"\xff\xd8\xff")
    if not files:
        print(f"SKIP: no JPEGs in {MEDIA}")
        return 0

    from curastream.curator import ImageWriterStage as OurWriter
    from nemo_curator.stages.image.io.image_writer import ImageWriterStage as CuratorWriter

    failures: list[str] = []
    n = args.images_per_tar
    with tempfile.TemporaryDirectory(prefix="curator-adapter-") as tmp:
        tmp = Path(tmp)
        tars = pack_tars(files, args.copies, args.per_tar, tmp / "in")
        total = len(files) * args.copies
        print(f"input: {total} images ({len(files)} JPEGs x {args.copies}) in {len(tars)} tars of {args.per_tar}; "
              f"reader batches of {args.batch_size}; images_per_tar={n}")
        runs = {}
        # a first pass warms DALI and the imports, so neither contender pays for them
        run_pipeline(CuratorWriter(output_dir=str(tmp / "warm-up"), images_per_tar=n), tars[:1], args.batch_size)
        for label, cls in (("curator", CuratorWriter), ("curastream", OurWriter)):
            out = tmp / label
            writer, spent = cls(output_dir=str(out), images_per_tar=n, remove_image_data=True), {}
            timed(writer, spent)
            wall = run_pipeline(writer, tars, args.batch_size)
            runs[label] = {**read_output(out), "wall": wall, "writer": spent["writer"], "out": out}
        cur, ours = runs["curator"], runs["curastream"]

        print(f"\n{'':24}{'curator':>14}{'curastream':>14}")
        for what, f in (("images written", lambda r: len(r["images"])), ("parquet rows", lambda r: r["rows"]),
                        ("tars", lambda r: len(r["fills"])),
                        (f"tars with {n} images", lambda r: sum(x == n for x in r["fills"])),
                        ("under-full tars", lambda r: sum(x < n for x in r["fills"])),
                        ("tar fill (images)", lambda r: ",".join(map(str, r["fills"]))),
                        ("pipeline time (s)", lambda r: f"{r['wall']:.2f}"),
                        ("writer time (s)", lambda r: f"{r['writer']:.2f}")):
            print(f"{what:24}{f(cur)!s:>14}{f(ours)!s:>14}")
        same = sum(cur["images"].get(k) == v for k, v in ours["images"].items())
        print(f"identical image bytes per image_id: {same} of {len(ours['images'])}")
        print(f"parquet columns, curator:    {cur['columns']}")
        print(f"parquet columns, curastream: {ours['columns']}")

        if len(ours["images"]) != total or ours["rows"] != total:
            failures.append(f"curastream wrote {len(ours['images'])} images / {ours['rows']} rows of {total}")
        if set(ours["images"]) != set(cur["images"]):
            failures.append("the two writers wrote different image_ids")
        if same != len(ours["images"]):
            failures.append(f"{len(ours['images']) - same} images differ in bytes from Curator's")
        short = [x for x in ours["fills"] if x != n]
        if len(short) > 1 or any(x > n for x in ours["fills"]):
            failures.append(f"curastream tars not full: {ours['fills']}")
        if not set(cur["columns"]) <= set(ours["columns"]):
            failures.append(f"curastream Parquet lacks {sorted(set(cur['columns']) - set(ours['columns']))}")

        # The index lists every shard file with its real sha256 (read back here, not trusted).
        index = json.loads((ours["out"] / "index.json").read_text())
        listed = {f["path"]: f["sha256"] for f in index["files"]}
        for p in sorted(ours["out"].glob("images-*")):
            if listed.get(p.name) != hashlib.sha256(p.read_bytes()).hexdigest():
                failures.append(f"index.json does not list {p.name} with its sha256")

        # Resume over the finished output: every image is done, nothing is written again.
        before = {p.name: p.read_bytes() for p in ours["out"].glob("images-*")}
        wall = run_pipeline(OurWriter(output_dir=str(ours["out"]), images_per_tar=n, remove_image_data=True,
                                      on_existing="resume"), tars, args.batch_size)
        after = {p.name: p.read_bytes() for p in ours["out"].glob("images-*")}
        print(f"resume over the finished output: {len(after)} shard files, "
              f"{'unchanged' if after == before else 'CHANGED'} ({wall:.2f} s)")
        if after != before:
            failures.append("resume changed the finished output")

        if args.videos:
            failures += check_videos(tmp, args.videos, args.clip_len)

    print("FAIL: " + "; ".join(failures) if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
