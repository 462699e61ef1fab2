#!/usr/bin/env python
"""Video curation throughput: curastream vs NeMo Curator vs a plain PyAV baseline vs the limit.

    .venv/bin/python scripts/bench_videos.py [--repeat 3] [--clip-len 10] [--curator-python PATH]

Input: the H.264 MP4/MOV files of ../shared/media/videos (relative to the project root; the
codec Curator's motion filter can score and the common case) when present, else the built-in
sample videos (``curastream.samples``, 640x360 H.264 pans and cuts). ``--all-codecs`` takes
every video Curator's reader lists (.mp4 .mov .avi .mkv .webm) instead. All contenders cut
back-to-back fixed spans of ``--clip-len`` seconds; a last remainder shorter than
``--min-clip-len`` (Curator's default 2 s) is dropped by everyone.

Rows, each in its own process, ``--repeat`` times (median reported):
  curator-default  NeMo Curator 1.4 CPU pipeline: VideoReader -> FixedStrideExtractorStage ->
                   ClipTranscodingStage (libvpx-vp9: its CPU encoder; h264_nvenc needs a GPU and
                   libopenh264 is not in Debian's FFmpeg) -> MotionVectorDecodeStage ->
                   MotionFilterStage -> ClipWriterStage (scripts/_curator_driver.py, Curator venv).
  curator-x264     the same with libx264 at our settings (preset veryfast, crf 23).
  baseline         a plain PyAV loop a user would write: decode, to_ndarray/from_ndarray, cut at
                   the fixed spans by re-encoding with libx264 (veryfast, crf 23), write files.
  bare-encode      decode once (frame threads) + libx264 (veryfast, crf 23) of the same spans,
                   nothing else: the floor for any re-encoding pipeline.
  limit            bare PyAV decode of every frame to analysis size (144 px short side, one reused
                   reformatter, codec frame threads): the floor for our analysis pass.
  ours-default     curastream videos --split fixed --previews: the default clip mode, exact (smart
                   cut: GOPs inside a span copied, partial edge GOPs re-encoded), motion, writer.
  ours-exact       curastream videos --split fixed --exact (no previews): the clip modes side by side,
  ours-copy        --copy (keyframe-snapped stream copy)
  ours-reencode    and --reencode (every frame re-encoded; single decode feeds the encoders).
  ours-analysis    curastream videos --split scenes --dry-run (decode, shots, motion; metadata only).
Targets (PASS/MISS printed): ours-default >= 10x curator-default clips/s; ours-reencode >= 1.5x
curator-x264 clips/s and <= 1.25x bare-encode wall; ours-analysis >= 0.8x limit frames/s;
ours-exact >= 3x ours-reencode clips/s.
Then curastream's peak RSS at 1x and 10x the input (the same files copied into 10 folders);
target: 10x within 1.1x of 1x (memory flat in the number of videos).

Curator runs from a separate venv (see scripts/bench_images.py for the install lines) and needs
the ``ffmpeg``/``ffprobe`` programs on PATH (``apt-get install ffmpeg``); rows that cannot run
are printed as skipped with the reason. Shared 2-core machine: medians over --repeat runs, the
min-max spread is shown, and CPU-s per clip is given as the less noise-sensitive cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import (  # noqa: E402
    Outs,
    repeat_fresh,
    MEDIA,
    ROOT,
    Row,
    repeat_fresh_interleaved,
    default_curator_python,
    emit_result,
    fmt,
    machine_line,
    ratio,
    self_cmd,
    tree_rss,
    table,
    verdict,
)

SCRIPT = Path(__file__).resolve()
CURATOR_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
PRESET, CRF = "veryfast", 23


# ------------------------------------------------------------------------------------ input


def pick_videos(media: Path, tmp: Path, all_codecs: bool) -> tuple[list[Path], str]:
    from curastream.videos.probe import VideoProbeError, probe

    d = media / "videos"
    picked = []
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in CURATOR_EXTS:
                continue
            try:
                info = probe(str(p))
            except VideoProbeError:
                continue
            if all_codecs or (info.video_codec == "h264" and p.suffix.lower() in (".mp4", ".mov")):
                picked.append(p)
        if picked:
            return picked, f"{'all Curator-readable' if all_codecs else 'H.264 MP4/MOV'} videos from {d}"
    from curastream.samples import make_sample_videos

    vids = make_sample_videos(tmp / "samples", size=(640, 360))
    return [v.path for v in vids if v.path.suffix == ".mp4"], "generated sample videos (curastream.samples, 640x360)"


def link_inputs(files: list[Path], dst: Path, reps: int = 1) -> Path:
    """Copies (the benched runs read real files of their own; symlinks work too since clip
    paths are compared as given, which the --memory mode uses)."""
    for r in range(reps):
        d = dst / f"rep{r:02d}" if reps > 1 else dst
        d.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, d / f.name)
    return dst


def list_inputs(src: str) -> list[str]:
    return sorted(str(p) for p in Path(src).rglob("*") if p.suffix.lower() in CURATOR_EXTS)


# ------------------------------------------------------------------------------------ children


def _spans(info, clip_len: float, min_len: float) -> list[tuple[float, float]]:
    from curastream.kernels.shots import fixed_stride_spans

    return [(sp.start_s, sp.end_s) for sp in fixed_stride_spans(info.meta_num_frames, info.meta_fps, clip_len, min_len)]


def child_ours(src: str, out: str, mode: str, clip_len: float, min_len: float) -> None:
    from curastream import VideoRunConfig, run_videos

    kw = dict(sources=[src], output=out, clip_len=clip_len, min_clip_len=min_len, progress=False,
              stats=out.rstrip("/") + ".stats.json", encoder="libx264", preset=PRESET,
              crf=CRF)
    if mode == "default":
        cfg = VideoRunConfig(split="fixed", previews=True, **kw)
    elif mode in ("exact", "copy", "reencode"):
        cfg = VideoRunConfig(split="fixed", clip_mode=mode, previews=False, **kw)
    else:  # analysis
        cfg = VideoRunConfig(split="scenes", dry_run=True, previews=False, **kw)
    t0 = time.perf_counter()
    stats = run_videos(cfg)
    wall = time.perf_counter() - t0
    d = stats.to_dict()
    analysis_s = None
    try:
        summ = json.loads(Path(out, "summary.json").read_text())
        analysis_s = sum(v.get("analysis_s", 0) for v in summ["videos"])
    except (OSError, KeyError, ValueError):
        pass
    emit_result(wall_s=wall, items=stats.extra.get("clips", 0), videos=stats.items_in, bytes_in=stats.bytes_in,
                clips_passed=stats.extra.get("clips_passed"), rejected=stats.items_rejected,
                stages={s["name"]: s["utilisation"] for s in d["stages"]}, bottleneck=d["bottleneck"],
                analysis_s=analysis_s)


def child_limit(src: str, short_side: int) -> None:
    import av
    from av.video.reformatter import VideoReformatter

    from curastream.videos.decode import analysis_size
    from curastream.videos.probe import probe

    # swscale on one thread, as ours: PyAV >= 17 threads it per core by default, and for a 144p
    # output that is slower here, wall and CPU (all 9 videos, 3 runs each, interleaved: 2.49-2.66
    # s default vs 2.35-2.44 s one thread), so the floor must use it too.
    sws = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}
    t0 = time.perf_counter()
    frames = bytes_in = 0
    for path in list_inputs(src):
        info = probe(path)
        w, h = analysis_size(info, short_side)
        if info.rotation % 180:
            w, h = h, w
        bytes_in += os.path.getsize(path)
        with av.open(path) as c:
            s = c.streams.video[info.stream_index]
            s.codec_context.thread_type = "AUTO"
            s.codec_context.thread_count = 0
            ref = VideoReformatter()
            for f in c.decode(s):
                ref.reformat(f, width=w, height=h, format="rgb24", interpolation="AREA", **sws).to_ndarray()
                frames += 1
    emit_result(wall_s=time.perf_counter() - t0, items=frames, bytes_in=bytes_in)


def _new_encoder(path: str, fps: float, w: int, h: int):
    import av

    rate = Fraction(fps).limit_denominator(100000)
    c = av.open(path, "w")
    s = c.add_stream("libx264", rate=rate)
    s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
    s.time_base = s.codec_context.time_base = 1 / rate
    s.options = {"preset": PRESET, "crf": str(CRF)}
    return c, s


def _close(c, s) -> None:
    for pkt in s.encode():
        c.mux(pkt)
    c.close()


def child_encode(src: str, out: str, clip_len: float, min_len: float, naive: bool) -> None:
    """bare-encode (naive=False): one threaded decode pass, frames go to the span's encoder as
    they are. baseline (naive=True): PyAV defaults, RGB ndarray round trip, as users write it."""
    import av

    from curastream.videos.probe import probe

    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    clips = bytes_in = 0
    for vi, path in enumerate(list_inputs(src)):
        info = probe(path)
        spans = _spans(info, clip_len, min_len)
        bytes_in += os.path.getsize(path)
        if not spans:
            continue
        with av.open(path) as c:
            s = c.streams.video[info.stream_index]
            if not naive:
                s.codec_context.thread_type = "AUTO"
            k, enc, pts = 0, None, 0
            t_first = None
            for f in c.decode(s):
                t = float(f.time) if f.time is not None else (pts / info.fps)
                if t_first is None:
                    t_first = t
                t -= t_first
                while k < len(spans) and t >= spans[k][1] - 1e-6:
                    if enc is not None:
                        _close(*enc)
                        enc = None
                        clips += 1
                    k += 1
                if k >= len(spans):
                    break
                if t < spans[k][0] - 1e-6:
                    continue
                if enc is None:
                    enc = _new_encoder(os.path.join(out, f"v{vi:03d}_{k:04d}.mp4"), info.fps, f.width, f.height)
                    pts = 0
                ec, es = enc
                if naive:
                    nf = av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")
                else:
                    nf = f
                if (nf.width, nf.height, nf.format.name) != (es.width, es.height, "yuv420p"):
                    nf = nf.reformat(width=es.width, height=es.height, format="yuv420p")
                nf.pts, nf.time_base = pts, es.codec_context.time_base
                pts += 1
                for pkt in es.encode(nf):
                    ec.mux(pkt)
            if enc is not None:
                _close(*enc)
                clips += 1
    emit_result(wall_s=time.perf_counter() - t0, items=clips, bytes_in=bytes_in)


def child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["ours-default", "ours-exact", "ours-copy", "ours-reencode", "ours-analysis",
                                     "limit", "bare-encode", "baseline"])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--clip-len", type=float, default=10.0)
    ap.add_argument("--min-clip-len", type=float, default=2.0)
    ap.add_argument("--short-side", type=int, default=144)
    a = ap.parse_args(argv)
    try:
        if a.kind.startswith("ours-"):
            child_ours(a.src, a.out, a.kind[5:], a.clip_len, a.min_clip_len)
        elif a.kind == "limit":
            child_limit(a.src, a.short_side)
        else:
            child_encode(a.src, a.out, a.clip_len, a.min_clip_len, naive=a.kind == "baseline")
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        emit_result(error=f"{type(e).__name__}: {e}")
        return 1
    return 0


# ------------------------------------------------------------------------------------ --memory


def link_copies(files: list[Path], dst: Path, reps: int) -> Path:
    """``reps`` folders of symlinks to ``files``: the same bytes under ``reps`` x as many names
    (the layout keeps a link's own name under input_path), nothing copied."""
    for r in range(reps):
        d = dst / f"rep{r:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for f in files:
            (d / f.name).symlink_to(f.resolve())
    return dst


def memory_child(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", choices=["fixed", "scenes"], required=True)
    ap.add_argument("--block", type=int, default=0, help="report the peak RSS of every block of this many videos")
    a = ap.parse_args(argv)
    from curastream import VideoRunConfig, run_videos

    cfg = VideoRunConfig(sources=[a.src], output=a.out, split=a.split, progress=False)
    blocks = _BlockPeaks(Path(a.out), a.block) if a.block else None
    t0 = time.perf_counter()
    try:
        stats = run_videos(cfg)
    finally:
        if blocks is not None:
            blocks.stop()
    emit_result(wall_s=time.perf_counter() - t0, items=stats.items_in, clips=stats.extra.get("clips", 0),
                rejected=stats.items_rejected, block_peaks_mb=blocks.peaks if blocks is not None else None)
    return 0


class _BlockPeaks(threading.Thread):
    """This process's peak RSS while each block of ``block`` videos was being written (videos
    counted by their processed_videos record). One number for a whole run cannot tell growth
    from the largest of more overlaps of big videos; the series can."""

    def __init__(self, out: Path, block: int):
        super().__init__(daemon=True)
        self.out, self.block, self.peaks = out, block, []
        self._stop_event = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            self._sample()
        self._sample()

    def _sample(self) -> None:
        records = self.out / "processed_videos"
        k = (sum(1 for _ in records.rglob("*.json")) if records.is_dir() else 0) // self.block
        while len(self.peaks) <= k:
            self.peaks.append(0)
        self.peaks[k] = max(self.peaks[k], round(tree_rss(os.getpid()) / 2**20))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def memory_main(args: argparse.Namespace) -> int:
    """Peak RSS (process tree) of a default videos run at 1x and Nx the input, per split mode:
    memory should be bounded by the work in flight, not grow with the number of videos."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-videos-mem-"))
    outs = Outs(tmp / "out")
    d = Path(args.media) / "videos"
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.endswith(".txt")) if d.is_dir() else []
    if not files:
        from curastream.samples import make_sample_videos

        files = [v.path for v in make_sample_videos(tmp / "samples", size=(640, 360))]
    n = args.memory_factor
    inputs = {"1x": link_copies(files, tmp / "in1", 1), f"{n}x": link_copies(files, tmp / f"in{n}", n)}
    print(f"# bench_videos --memory\n{machine_line()}\ninput: {len(files)} videos from {files[0].parent} "
          f"({sum(f.stat().st_size for f in files) / 1e6:.1f} MB), 1x and {n}x (symlinks); "
          f"median of {args.memory_repeat}\n", flush=True)
    rows: dict = {}
    for split in args.memory_splits.split(","):
        for label, src in inputs.items():
            rows[split, label] = repeat_fresh(f"{split} {label}", lambda out, src=src, split=split: self_cmd(
                SCRIPT, "_memchild", "--src", str(src), "--out", out, "--split", split, "--block", str(len(files))),
                outs, args.memory_repeat, unit="videos")
    print("\n| split | input | videos | clips | wall s | peak RSS MB (tree) | runs |\n|---|---|---|---|---|---|---|")
    for (split, label), r in rows.items():
        if r.good:
            res = r.good[0].result
            print(f"| {split} | {label} | {res.get('items')} | {res.get('clips')} | {fmt(r.med('wall_s'))} | "
                  f"{fmt(r.med('tree_rss_mb'))} | {', '.join(fmt(x.tree_rss_mb) for x in r.good)} |")
        else:
            print(f"| {split} | {label} | failed: {r.runs[-1].error if r.runs else '?'} | | | | |")
    print()
    for split in args.memory_splits.split(","):
        one, many = rows[split, "1x"].med("tree_rss_mb"), rows[split, f"{n}x"].med("tree_rss_mb")
        growth = ratio(many, one)
        print(f"- {split}: peak RSS {n}x / 1x: {fmt(growth)}x  target <= 1.1x  "
              f"{verdict(growth, 1.1, higher_is_better=False)}")
        for r in rows[split, f"{n}x"].good:
            peaks = (r.result.get("block_peaks_mb") or [])[:n]  # the entry after the last block is the commit
            if len(peaks) >= 4:
                half = len(peaks) // 2
                trend = ratio(sum(peaks[half:]) / (len(peaks) - half), sum(peaks[:half]) / half)
                print(f"  peak RSS (MB, this process) of each block of {len(files)} videos: {peaks}; "
                      f"second half / first half: {fmt(trend)}x (growth with the number of videos, without "
                      "the largest-overlap effect of one peak over a longer run)")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{s} {l}": {"tree_rss_mb": r.med("tree_rss_mb"),
                                                            "wall_s": r.med("wall_s"),
                                                            "runs_tree_rss_mb": [x.tree_rss_mb for x in r.good]}
                                               for (s, l), r in rows.items()}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ------------------------------------------------------------------------------------ --mv-scenes


MV_SCENES_VIDEOS = ("imageio_cockatoo.mp4", "pyscenedetect_testvideo.mp4")
MV_VARIANTS = {
    "after": "each frame's vectors reduced to patch sums as decoded (MotionVectorReducer)",
    "before": "every frame's records kept per chunk, reduced in add() by the pre-issue-14 kernel",
    "after-main": "the new reduction, but records kept per chunk and reduced in add() (main thread)",
    "2fps": "vectors of 2 frames/s only (the cost before every frame's were kept; other scores)",
}


def mv_scenes_child(argv: list[str]) -> int:
    """One ``--split scenes --dry-run`` run of one video in this process, the motion-vector path
    switched to ``--variant``: "before" puts back the old path (tests/motion_reference.py's
    kernel, records handed whole to the accumulator), "2fps" the rate vectors had before."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", choices=list(MV_VARIANTS), required=True)
    a = ap.parse_args(argv)
    from curastream import VideoRunConfig, run_videos
    from curastream.kernels import motion_accumulator
    from curastream.videos import analyze

    real = analyze.iter_analysis_frames
    if a.variant == "before":
        sys.path.insert(0, str(ROOT / "tests"))
        import motion_reference

        class _Before:
            def __init__(self, w, h, curator_blocks=False):
                self.w, self.h, self.cb = w, h, curator_blocks

            def __call__(self, m, i=0, t=0.0):
                return motion_reference.motion_sample_from_mvs(m, self.w, self.h, i, t, self.cb)

        motion_accumulator.MotionVectorReducer = _Before
        analyze.iter_analysis_frames = lambda *args, mv_reduce=None, **kw: real(*args, **kw)
    elif a.variant == "after-main":
        analyze.iter_analysis_frames = lambda *args, mv_reduce=None, **kw: real(*args, **kw)
    elif a.variant == "2fps":
        analyze.iter_analysis_frames = lambda *args, mv_reduce=None, mv_sample_fps=None, **kw: real(
            *args, mv_sample_fps=2.0, **kw)
    cfg = VideoRunConfig(sources=[a.src], output=a.out, split="scenes", dry_run=True, previews=False,
                         progress=False)
    t0 = time.perf_counter()
    stats = run_videos(cfg)
    wall = time.perf_counter() - t0
    summ = json.loads(Path(a.out, "_curastream", "summary.json").read_text())
    emit_result(wall_s=wall, items=stats.items_in, clips=stats.extra.get("clips", 0),
                analysis_s=sum(v.get("analysis_s") or 0 for v in summ["videos"]))
    return 0


def mv_scenes_main(args: argparse.Namespace) -> int:
    """Issue 14: the default --split scenes analysis with every frame's motion vectors, before
    (records kept, old kernel) vs after (reduced as decoded), and at the old 2 frames/s rate."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-videos-mv-"))
    outs = Outs(tmp / "out")
    print(f"# bench_videos --mv-scenes\n{machine_line()}\n"
          + "".join(f"{k}: {v}\n" for k, v in MV_VARIANTS.items())
          + f"interleaved, median of {args.repeat} (min-max); analysis_s = the stage's own time\n", flush=True)
    table_rows, ratios = [], {}
    for name in MV_SCENES_VIDEOS:
        f = Path(args.media) / "videos" / name
        if not f.exists():
            print(f"- {name}: absent, skipped")
            continue
        src = tmp / "in" / name
        src.mkdir(parents=True)
        (src / name).symlink_to(f.resolve())
        specs = {v: (f"{name} {v}", lambda out, v=v, src=src: self_cmd(
            SCRIPT, "_mvchild", "--src", str(src), "--out", out, "--variant", v), {"unit": "videos"})
                 for v in MV_VARIANTS}
        rows = repeat_fresh_interleaved(specs, outs, args.repeat)
        for v, r in rows.items():
            vals = sorted(x.result.get("analysis_s") or 0 for x in r.good)
            spread = f"{vals[0]:.2f}-{vals[-1]:.2f}" if vals else ""
            table_rows.append(f"| {name} | {v} | {fmt(r.med_result('analysis_s'))} | {spread} | "
                              f"{fmt(r.med('wall_s'))} | {fmt(r.med('cpu_s'))} | {fmt(r.med('tree_rss_mb'))} |")
        # CPU seconds as well: on a shared machine they move far less than wall time.
        ratios[name] = [ratio(rows[a].med_result("analysis_s"), rows[b].med_result("analysis_s"))
                        for a, b in (("before", "after"), ("after", "2fps"))]
        ratios[name] += [ratio(rows[a].med("cpu_s"), rows[b].med("cpu_s")) for a, b in (("before", "after"), ("after", "2fps"))]
    print("\n| video | variant | analysis s | spread | wall s | CPU s | peak RSS MB |\n|---|---|---|---|---|---|---|")
    print("\n".join(table_rows))
    for name, (speedup, over, cpu_speedup, cpu_over) in ratios.items():
        print(f"- {name}: analysis s before / after {fmt(speedup)}x, after / 2fps {fmt(over)}x; "
              f"CPU s before / after {fmt(cpu_speedup)}x, after / 2fps {fmt(cpu_over)}x")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ------------------------------------------------------------------------------------ parent


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        return child_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_memchild":
        return memory_child(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_mvchild":
        return mv_scenes_child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", default=str(MEDIA))
    ap.add_argument("--all-codecs", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--curator-repeat", type=int, default=None, help="repeats for the (slow) Curator rows")
    ap.add_argument("--clip-len", type=float, default=10.0)
    ap.add_argument("--min-clip-len", type=float, default=2.0)
    ap.add_argument("--curator-python", default=default_curator_python())
    ap.add_argument("--curator-executor", default="stages", choices=["stages", "xenna", "ray_data"])
    ap.add_argument("--skip", default="",
                    help="comma list: curator-default,curator-x264,baseline,bare-encode,limit,ours-default,"
                         "ours-exact,ours-copy,ours-reencode,ours-analysis,rss")
    ap.add_argument("--rss-factor", type=int, default=10)
    ap.add_argument("--rss-repeat", type=int, default=2,
                    help="runs per RSS row (median): one peak on a shared machine moves by ~10%%")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--memory", action="store_true",
                    help="only measure peak RSS at 1x and --memory-factor x the input (symlinks), per split")
    ap.add_argument("--memory-factor", type=int, default=5)
    ap.add_argument("--memory-repeat", type=int, default=1)
    ap.add_argument("--memory-splits", default="fixed,scenes")
    ap.add_argument("--mv-scenes", action="store_true",
                    help="only time --split scenes analysis of cockatoo and pyscenedetect_testvideo with "
                         "every frame's motion vectors: before vs after issue 14, and at 2 frames/s")
    args = ap.parse_args()
    if args.memory:
        return memory_main(args)
    if args.mv_scenes:
        return mv_scenes_main(args)
    skip = set(filter(None, args.skip.split(",")))
    cur_rep = args.curator_repeat or args.repeat

    tmp = Path(tempfile.mkdtemp(prefix="bench-videos-"))
    outs = Outs(tmp / "out")
    files, what = pick_videos(Path(args.media), tmp, args.all_codecs)
    src = str(link_inputs(files, tmp / "in"))
    mb = sum(f.stat().st_size for f in files) / 1e6
    from curastream.videos.probe import probe

    infos = [probe(str(f)) for f in files]
    dur = sum(i.duration for i in infos)
    n_clips = sum(len(_spans(i, args.clip_len, args.min_clip_len)) for i in infos)
    print(f"# bench_videos\n{machine_line()}\ninput: {what}: {len(files)} videos, {mb:.1f} MB, {dur:.0f} s of video, "
          f"{sum(i.num_frames for i in infos)} frames (headers); fixed spans {args.clip_len:g} s "
          f"(min {args.min_clip_len:g} s) -> {n_clips} clips; repeat {args.repeat}\n"
          f"files: {', '.join(f.name for f in files)}\n", flush=True)
    common = ["--src", src, "--clip-len", str(args.clip_len), "--min-clip-len", str(args.min_clip_len)]
    rows: dict[str, Row] = {}

    cp = args.curator_python
    drv = str(ROOT / "scripts" / "_curator_driver.py")
    for key, enc in (("curator-default", "libvpx-vp9"), ("curator-x264", "libx264")):
        if key in skip:
            continue
        name = f"NeMo Curator 1.4 CPU: fixed stride, {enc} transcode, motion, ClipWriter ({args.curator_executor})"
        if not cp or not Path(cp).exists():
            rows[key] = Row(name, [], skipped=f"no Curator python ({cp or '.venv-bench/bin/python'} missing)")
        elif not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
            rows[key] = Row(name, [], skipped="ffmpeg/ffprobe not on PATH (Curator shells out to both; "
                                              "apt-get install ffmpeg)")
        else:
            rows[key] = repeat_fresh(name, lambda out, enc=enc: [
                cp, drv, "videos", "--dir", src, "--out", out, "--encoder", enc, "--preset", PRESET, "--crf", str(CRF),
                "--clip-len", str(args.clip_len), "--min-clip-len", str(args.min_clip_len),
                "--executor", args.curator_executor], outs, cur_rep, unit="clips", timeout=3600)
    plan = [
        ("baseline", "baseline: PyAV loop, ndarray round trip, libx264 cut", "clips"),
        ("bare-encode", "bare encode: 1 threaded decode + libx264 of the same spans", "clips"),
        ("limit", "limit: bare PyAV decode to 144p (reused reformatter, 1 swscale thread, frame threads)", "frames"),
        ("ours-default", "curastream default: fixed, exact (smart cut), motion, previews, writer", "clips"),
        ("ours-exact", "curastream --exact (smart cut, edges veryfast crf 23), motion, writer", "clips"),
        ("ours-copy", "curastream --copy (keyframe-snapped stream copy), motion, writer", "clips"),
        ("ours-reencode", "curastream --reencode (libx264 veryfast crf 23), motion, writer", "clips"),
        ("ours-analysis", "curastream --split scenes --dry-run (analysis only)", "clips"),
    ]
    for key, name, unit in plan:
        if key in skip:
            continue
        rows[key] = repeat_fresh(name, lambda out, key=key: self_cmd(SCRIPT, "_child", key, *common, "--out", out),
                                 outs, args.repeat, unit=unit)

    frames = rows["limit"].med_result("items") if "limit" in rows and rows["limit"].good else None

    def fps_col(row: Row) -> str:
        if frames is None or not row.good:
            return "-"
        return fmt(frames / row.med("wall_s"))

    clip_rows = [rows[k] for k in ("curator-default", "curator-x264", "baseline", "bare-encode", "ours-default",
                                   "ours-exact", "ours-copy", "ours-reencode") if k in rows]
    print("\n## Clip pipelines (median of runs; clips/s spread in brackets)\n")
    print(table(clip_rows, "clips", extra_cols=[("frames/s (input)", fps_col)]))
    ana_rows = [rows[k] for k in ("limit", "ours-analysis") if k in rows]
    if ana_rows:
        print("\n## Analysis decode\n")
        print(table(ana_rows, "items", extra_cols=[("frames/s", fps_col)]))

    def rate(k):
        return rows[k].rate() if k in rows and rows[k].good else None

    def wall(k):
        return rows[k].med("wall_s") if k in rows and rows[k].good else None

    t1 = ratio(rate("ours-default"), rate("curator-default"))
    t2 = ratio(rate("ours-reencode"), rate("curator-x264"))
    t3 = ratio(wall("ours-reencode"), wall("bare-encode"))
    t4 = ratio(wall("limit"), wall("ours-analysis"))  # same frames: fps ratio = inverse wall ratio
    t5 = ratio(rate("ours-exact"), rate("ours-reencode"))
    print("\n## Targets\n")
    print(f"- ours default / Curator default CPU (clips/s):   {fmt(t1)}x  target >= 10x   {verdict(t1, 10)}")
    print(f"- ours reencode / Curator libx264 (clips/s):      {fmt(t2)}x  target >= 1.5x  {verdict(t2, 1.5)}")
    print(f"- ours reencode wall / bare encode wall:          {fmt(t3)}x  target <= 1.25x "
          f"{verdict(t3, 1.25, higher_is_better=False)}")
    print(f"- ours analysis fps / bare decode fps:            {fmt(t4)}x  target >= 0.8x  {verdict(t4, 0.8)}")
    print(f"- ours exact / ours reencode (clips/s):           {fmt(t5)}x  target >= 3x    {verdict(t5, 3)}")
    other = {
        "ours default / baseline (clips/s)": ratio(rate("ours-default"), rate("baseline")),
        "ours reencode / baseline (clips/s)": ratio(rate("ours-reencode"), rate("baseline")),
        "ours default / Curator libx264 (clips/s)": ratio(rate("ours-default"), rate("curator-x264")),
    }
    for k, v in other.items():
        print(f"- {k}: {fmt(v)}x")
    for k in ("ours-default", "ours-exact", "ours-copy", "ours-reencode", "ours-analysis"):
        if k in rows and rows[k].good:
            r = rows[k].good[-1].result
            print(f"- {k} stage utilisation (last run): {r.get('stages')}, analysis busy {fmt(r.get('analysis_s'))} s")
    for k in ("curator-default", "curator-x264"):
        if k in rows and rows[k].good:
            r = rows[k].good[-1].result
            print(f"- {k}: {r.get('clips_passed')} passed, {r.get('clips_filtered')} filtered, "
                  f"{r.get('motion_minus1')} with motion score -1, {r.get('clips_with_errors')} with errors")

    rss = {}
    if "rss" not in skip:
        print(f"\n## curastream default peak RSS, input 1x vs {args.rss_factor}x (copies), "
              f"median of {args.rss_repeat}\n", flush=True)
        big = link_inputs(files, tmp / "in10", reps=args.rss_factor)
        for label, s in (("1x", src), (f"{args.rss_factor}x", str(big))):
            rss[label] = repeat_fresh(f"rss {label}", lambda out, s=s: self_cmd(
                SCRIPT, "_child", "ours-default", "--src", s, "--out", out, "--clip-len", str(args.clip_len),
                "--min-clip-len", str(args.min_clip_len)), outs, args.rss_repeat, unit="clips")
        print("| input | videos | clips | run wall s | clips/s | peak RSS MB (tree) | runs |\n|---|---|---|---|---|---|---|")
        for label, r in rss.items():
            if r.good:
                print(f"| {label} | {r.good[0].result.get('videos')} | {r.good[0].result['items']} | "
                      f"{fmt(r.med('wall_s'))} | {fmt(r.rate())} | {fmt(r.med('tree_rss_mb'))} | "
                      f"{', '.join(fmt(x.tree_rss_mb) for x in r.good)} |")
            else:
                print(f"| {label} | failed: {r.runs[-1].error if r.runs else '?'} | | | | | |")
        one, many = (rss[k].med("tree_rss_mb") for k in rss)
        if one and many:
            growth = many / one
            print(f"\n- peak RSS {args.rss_factor}x / 1x: {growth:.2f}x  target <= 1.1x  "
                  f"{'PASS' if growth <= 1.1 else 'MISS'}")

    if args.json:
        doc = {"machine": machine_line(), "input": {"what": what, "files": [f.name for f in files], "mb": mb,
                                                    "duration_s": dur, "frames": frames},
               "rows": {k: {"name": v.name, "rate": v.rate(), "unit": v.unit, "wall_s": v.med("wall_s"),
                            "proc_wall_s": v.med("proc_wall_s"), "tree_rss_mb": v.med("tree_rss_mb"),
                            "cpu_s": v.med("cpu_s"), "runs": len(v.good),
                            "result": v.good[-1].result if v.good else None,
                            "skipped": v.skipped or (v.runs[-1].error if v.runs and not v.good else "")}
                        for k, v in rows.items()},
               "targets": {"default_vs_curator": t1, "reencode_vs_curator_x264": t2,
                           "reencode_vs_bare_encode_wall": t3, "analysis_vs_limit_fps": t4,
                           "exact_vs_reencode": t5},
               "rss": {k: {"items": r.good[0].result.get("items") if r.good else None,
                           "tree_rss_mb": r.med("tree_rss_mb"), "wall_s": r.med("wall_s"),
                           "runs_tree_rss_mb": [x.tree_rss_mb for x in r.good]} for k, r in rss.items()}}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
    if args.keep:
        print(f"\n(temp dir kept: {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
