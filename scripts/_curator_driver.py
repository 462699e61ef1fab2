#!/usr/bin/env python
"""Runs NeMo Curator's own image / video pipeline for scripts/bench_images.py and bench_videos.py.

This file runs with the *Curator* venv's python (``.venv-bench/bin/python``), never with the
project's: Curator pulls torch, Ray, transformers and its own pinned PyAV, which must not land in
the project's venv. It imports nothing from curastream. Set-up (see bench_images.py docstring):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install 'torch==2.13.0' 'nemo-curator[image_cpu,video_cpu,cv2]==1.4.0' nvidia-dali-cuda120
    apt-get install ffmpeg      # Curator's VideoReader calls ffprobe, ClipTranscodingStage calls ffmpeg

Modes:
    images --tars T1.tar T2.tar ... --out DIR   ImageReaderStage (DALI, CPU) -> ImageWriterStage
    videos --dir DIR --out DIR [--encoder libvpx-vp9|libx264]
        VideoReader -> FixedStrideExtractorStage -> ClipTranscodingStage -> MotionVectorDecodeStage
        -> MotionFilterStage -> ClipWriterStage

Executors: ``--executor stages`` (default) calls each stage's setup()/process() in this process,
depth-first, task by task: Curator's per-stage work without Ray's start-up and scheduling, so the
most favourable number Curator can give on one small machine. ``--executor xenna`` runs the same
stage list through ``Pipeline.run(XennaExecutor())`` (Ray), as Curator's tutorials do.

Prints one line ``BENCH_RESULT {json}`` (wall_s of the run, items, bytes_in, and notes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

RESULT_TAG = "BENCH_RESULT "


def emit(**kw) -> None:
    print(RESULT_TAG + json.dumps(kw, default=str), flush=True)


def run_stages_inprocess(stages, initial_tasks) -> list:
    """Depth-first: every task goes through all stages before the next input starts."""
    for st in stages:
        st.setup_on_node(None, None)
        st.setup(None)

    def push(i: int, task) -> list:
        if i == len(stages):
            return [task]
        out = stages[i].process(task)
        if out is None:
            return []
        outs = out if isinstance(out, list) else [out]
        done = []
        for o in outs:
            done.extend(push(i + 1, o))
        return done

    results = []
    try:
        for t in initial_tasks:
            results.extend(push(0, t))
    finally:
        for st in stages:
            try:
                st.teardown()
            except Exception:  # noqa: BLE001
                pass
    return results


def expand(stages) -> list:
    from nemo_curator.stages.base import CompositeStage

    out = []
    for s in stages:
        out.extend(expand(s.decompose()) if isinstance(s, CompositeStage) else [s])
    return out


# ------------------------------------------------------------------------------------ images


def make_cpu_image_reader(**kw):
    """Curator's ImageReaderStage builds its DALI pipeline with device_id=0, which asserts in
    DALI without a CUDA device ("CPU-only pipelines need device_id=None"). The subclass changes
    only that argument; decode stays fn.decoders.image(device="cpu") exactly as Curator has it."""
    from nemo_curator.stages.image.io.image_reader import ImageReaderStage

    class CpuImageReaderStage(ImageReaderStage):
        def _create_dali_pipeline(self, tar_paths):
            from nvidia.dali import fn, pipeline_def, types

            @pipeline_def(batch_size=self.dali_batch_size, num_threads=self.num_threads, device_id=None)
            def webdataset_pipeline():
                img_raw = fn.readers.webdataset(paths=tar_paths, ext=["jpg"], missing_component_behavior="skip")
                return fn.decoders.image(img_raw, device="cpu", output_type=types.RGB)

            pipe = webdataset_pipeline()
            pipe.build()
            return pipe

    return CpuImageReaderStage(**kw)


def images(args) -> None:
    from nemo_curator.stages.image.io.image_reader import ImageReaderStage
    from nemo_curator.stages.image.io.image_writer import ImageWriterStage
    from nemo_curator.tasks import FileGroupTask

    notes = []
    reader_kw = dict(dali_batch_size=args.batch_size, num_threads=args.threads, verbose=False)
    reader = ImageReaderStage(**reader_kw)
    if args.patch_device_id:
        reader = make_cpu_image_reader(**reader_kw)
        notes.append("ImageReaderStage's DALI pipeline built with device_id=None (device_id=0 asserts without CUDA)")
    writer = ImageWriterStage(output_dir=args.out, images_per_tar=args.images_per_tar, remove_image_data=True)
    tars = [str(Path(t).resolve()) for t in args.tars]
    bytes_in = sum(os.path.getsize(t) for t in tars)
    t0 = time.perf_counter()
    if args.executor == "stages":
        tasks = [FileGroupTask(task_id=f"tar{i}", dataset_name="bench", data=[t]) if _has_task_id_init()
                 else FileGroupTask(dataset_name="bench", data=[t]) for i, t in enumerate(tars)]
        run_stages_inprocess([reader, writer], tasks)
    else:
        from nemo_curator.pipeline import Pipeline
        from nemo_curator.stages.file_partitioning import FilePartitioningStage

        p = Pipeline(name="bench_images")
        p.add_stage(FilePartitioningStage(file_paths=tars, files_per_partition=1, file_extensions=[".tar"]))
        p.add_stage(reader)
        p.add_stage(writer)
        p.run(_executor(args.executor))
    wall = time.perf_counter() - t0
    written = 0
    import pyarrow.parquet as pq

    for f in Path(args.out).glob("*.parquet"):
        written += pq.read_metadata(f).num_rows
    emit(wall_s=wall, items=written, bytes_in=bytes_in, notes=notes, executor=args.executor)


def _has_task_id_init() -> bool:
    import dataclasses

    from nemo_curator.tasks import FileGroupTask

    return any(f.name == "task_id" and f.init for f in dataclasses.fields(FileGroupTask))


def _executor(name: str):
    if name == "xenna":
        from nemo_curator.backends.xenna import XennaExecutor

        return XennaExecutor()
    if name == "ray_data":
        from nemo_curator.backends.ray_data import RayDataExecutor

        return RayDataExecutor()
    raise ValueError(name)


# ------------------------------------------------------------------------------------ videos


def make_transcoder(encoder: str, preset: str, crf: int, cpus: float, threads: int, batch: int):
    """Curator's ClipTranscodingStage. libvpx-vp9 is its CPU default (h264_nvenc needs a GPU,
    libopenh264 is not in Debian's FFmpeg). For the same-encoder comparison the stage is
    subclassed to accept libx264 and to pass ``-preset/-crf`` (Curator 1.4 removed libx264 from
    SUPPORTED_ENCODERS; everything else - one ffmpeg process per batch of clips, ``-ss/-to``
    input seeking, audio copy - stays Curator's code)."""
    from nemo_curator.stages.video.clipping import clip_extraction_stages as ces

    kw = dict(encoder=encoder, num_cpus_per_worker=cpus, encoder_threads=threads, encode_batch_size=batch)
    if encoder != "libx264":
        return ces.ClipTranscodingStage(**kw)

    class X264ClipTranscodingStage(ces.ClipTranscodingStage):
        def setup(self, worker_metadata=None):
            import shutil

            if not shutil.which("ffmpeg"):
                raise RuntimeError("ffmpeg not on PATH")

        def _add_video_encoding_options(self, command, use_bit_rate, force_pix_fmt):
            command.extend(["-preset", preset, "-crf", str(crf)])
            if force_pix_fmt:
                command.extend(["-pix_fmt", "yuv420p"])

    return X264ClipTranscodingStage(**kw)


def videos(args) -> None:
    from nemo_curator.stages.video.clipping.clip_extraction_stages import FixedStrideExtractorStage
    from nemo_curator.stages.video.filtering.motion_filter import MotionFilterStage, MotionVectorDecodeStage
    from nemo_curator.stages.video.io.clip_writer import ClipWriterStage
    from nemo_curator.stages.video.io.video_reader import VideoReader

    src = str(Path(args.dir).resolve())
    exts = (".mp4", ".mov", ".avi", ".mkv", ".webm")
    files = [p for p in Path(src).rglob("*") if p.suffix.lower() in exts]
    bytes_in = sum(p.stat().st_size for p in files)
    stages = [
        VideoReader(input_video_path=src),
        FixedStrideExtractorStage(clip_len_s=args.clip_len, clip_stride_s=args.clip_len,
                                  min_clip_length_s=args.min_clip_len, limit_clips=0),
        make_transcoder(args.encoder, args.preset, args.crf, args.cpus, args.encoder_threads, args.batch),
    ]
    if not args.no_motion:
        stages += [
            MotionVectorDecodeStage(target_fps=2.0, target_duration_ratio=0.5, num_cpus_per_worker=args.cpus),
            MotionFilterStage(num_gpus_per_worker=0, motion_filter_batch_size=64),
        ]
    stages.append(ClipWriterStage(output_path=args.out, input_path=src, upload_clips=True, dry_run=False,
                                  generate_embeddings=False, generate_previews=False, generate_captions=False))
    t0 = time.perf_counter()
    if args.executor == "stages":
        from nemo_curator.tasks import EmptyTask

        run_stages_inprocess(expand(stages), [EmptyTask])
    else:
        from nemo_curator.pipeline import Pipeline

        p = Pipeline(name="bench_videos")
        for s in stages:
            p.add_stage(s)
        p.run(_executor(args.executor))
    wall = time.perf_counter() - t0
    out = Path(args.out)
    clips = len(list((out / "clips").glob("*.mp4"))) if (out / "clips").exists() else 0
    filtered = len(list((out / "filtered_clips").glob("*.mp4"))) if (out / "filtered_clips").exists() else 0
    metas = len(list((out / "metas" / "v0").glob("*.json"))) if (out / "metas" / "v0").exists() else 0
    errors = 0
    motion_m1 = 0
    for m in (out / "metas" / "v0").glob("*.json") if metas else ():
        d = json.loads(m.read_text())
        errors += bool(d.get("errors"))
        ms = d.get("motion_score") or {}
        motion_m1 += ms.get("global_mean") == -1.0
    emit(wall_s=wall, items=clips + filtered, clips_passed=clips, clips_filtered=filtered, metas=metas,
         clips_with_errors=errors, motion_minus1=motion_m1, videos=len(files), bytes_in=bytes_in,
         encoder=args.encoder, executor=args.executor)


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("images")
    a.add_argument("--tars", nargs="+", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--batch-size", type=int, default=100)
    a.add_argument("--images-per-tar", type=int, default=100)
    a.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    a.add_argument("--executor", default="stages", choices=["stages", "xenna", "ray_data"])
    a.add_argument("--no-patch-device-id", dest="patch_device_id", action="store_false")
    v = sub.add_parser("videos")
    v.add_argument("--dir", required=True)
    v.add_argument("--out", required=True)
    v.add_argument("--encoder", default="libvpx-vp9")
    v.add_argument("--preset", default="veryfast")
    v.add_argument("--crf", type=int, default=23)
    v.add_argument("--clip-len", type=float, default=10.0)
    v.add_argument("--min-clip-len", type=float, default=2.0)
    v.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2))
    v.add_argument("--encoder-threads", type=int, default=1)
    v.add_argument("--batch", type=int, default=16)
    v.add_argument("--no-motion", action="store_true")
    v.add_argument("--executor", default="stages", choices=["stages", "xenna", "ray_data"])
    args = ap.parse_args()
    os.environ.setdefault("LOGURU_LEVEL", "WARNING")
    try:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level=os.environ["LOGURU_LEVEL"])
    except ImportError:
        pass
    try:
        images(args) if args.mode == "images" else videos(args)
    except Exception as e:  # noqa: BLE001 - reported to the bench, which prints why the row is skipped
        traceback.print_exc()
        emit(error=f"{type(e).__name__}: {e}".strip()[:800])
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
