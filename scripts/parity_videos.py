#!/usr/bin/env python
"""Field-by-field parity of curastream's video output with NeMo Curator's on the same videos.

    .venv/bin/python scripts/parity_videos.py [--videos DIR_OR_FILES...] [--clip-len 10]
        [--min-clip-len 2] [--encoder libx264] [--curator-python PATH] [--keep DIR] [--strict]
        [--ours KEY=VALUE ...]

Runs Curator 1.4's fixed-stride pipeline (VideoReader -> FixedStrideExtractorStage ->
ClipTranscodingStage -> MotionVectorDecodeStage -> MotionFilterStage -> ClipWriterStage, via
scripts/_curator_driver.py in the Curator venv ``.venv-bench``, as scripts/bench_videos.py does)
and curastream (``split="fixed"``, same clip length and minimum, default motion method; ``--ours
motion_source=reencode`` and the like add VideoRunConfig settings) on a copy of the same input
folder, then compares the two output trees:

  * clip ids (span_uuid): only in Curator's, only in ours, common;
  * per common clip, every metas/v0 key: missing/extra keys, JSON type differences, and value
    differences of the fields that must agree (spans, source size/rate, frame counts);
    fields expected to differ (bytes, paths, codec of the re-encode, scores) are listed apart;
  * filter decisions: passed (clips/) or filtered (filtered_clips/), with both motion scores;
  * processed_videos/*.json, per video, the same key/type/value comparison.

Default encoder libx264: Curator's CPU default (libvpx-vp9) writes VP9 clips, which carry no
motion vectors, so every Curator clip would get -1 and be filtered (see docs/PERFORMANCE.md).

Without ``.venv-bench`` (or if Curator does not import there) it prints why and exits 0: the
comparison itself (:func:`compare_trees`) is tested on hand-made trees in
tests/test_motion_parity.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import MEDIA, ROOT, default_curator_python, run_child  # noqa: E402

CURATOR_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# Per-clip fields that MUST agree (SPEC §2: same spans, same ids, same source facts).
IDENTITY_FIELDS = ("span_uuid", "source_video", "duration_span", "width_source", "height_source",
                   "framerate_source", "num_frames", "width", "height", "framerate")
# Fields that legitimately differ between two encoders / output folders / score methods.
INFO_FIELDS = ("clip_location", "num_bytes", "video_codec", "motion_score", "aesthetic_score", "errors",
               "valid", "windows", "filtered_by")
VIDEO_IDENTITY_FIELDS = ("video", "height", "width", "framerate", "num_frames", "duration", "video_codec",
                         "pixel_format", "num_total_clips")
FLOAT_TOL = 1e-3  # seconds / fps / pixels: JSON floats written by two programs


# ---------------------------------------------------------------------------------- reading


def json_type(v: Any) -> str:
    """JSON type name; int and float are told apart (a strict reader of 25 vs 25.0 differs)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "dict"
    return type(v).__name__


def _mp4_ids(d: Path) -> set[str]:
    """Clip ids with media under d, flat (Curator) or in two-character prefix folders."""
    return {p.stem for p in d.rglob("*.mp4")} if d.is_dir() else set()


@dataclass
class Tree:
    metas: dict[str, dict]  # span_uuid -> metas/v0 JSON
    decisions: dict[str, str | None]  # span_uuid -> "passed" | "filtered" | None (unknown)
    videos: dict[str, dict]  # processed_videos relative path -> JSON


def load_tree(out: Path) -> Tree:
    out = Path(out)
    metas: dict[str, dict] = {}
    mdir = out / "metas" / "v0"
    for p in sorted(mdir.glob("*.json")) if mdir.is_dir() else ():
        m = json.loads(p.read_text())
        metas[str(m.get("span_uuid", p.stem))] = m
    passed, filtered = _mp4_ids(out / "clips"), _mp4_ids(out / "filtered_clips")
    decisions: dict[str, str | None] = {}
    for uid, m in metas.items():
        if uid in filtered:
            decisions[uid] = "filtered"
        elif uid in passed:
            decisions[uid] = "passed"
        else:  # dry run or no media: what the meta says, if anything
            loc = str(m.get("clip_location") or "")
            decisions[uid] = ("filtered" if "filtered_clips" in loc else "passed") if loc else None
    videos: dict[str, dict] = {}
    vdir = out / "processed_videos"
    for p in sorted(vdir.rglob("*.json")) if vdir.is_dir() else ():
        videos[str(p.relative_to(vdir))] = json.loads(p.read_text())
    return Tree(metas, decisions, videos)


# ---------------------------------------------------------------------------------- comparing


@dataclass
class FieldDiff:
    item: str  # span_uuid or processed_videos path
    field: str
    kind: str  # "missing_in_ours" | "extra_in_ours" | "type" | "value" | "info"
    curator: Any = None
    ours: Any = None


@dataclass
class DecisionDiff:
    span_uuid: str
    curator: str | None
    ours: str | None
    curator_motion: Any = None
    ours_motion: Any = None
    video: str = ""  # source file name
    span: Any = None  # duration_span


@dataclass
class ParityResult:
    only_curator: list[str] = field(default_factory=list)
    only_ours: list[str] = field(default_factory=list)
    common: list[str] = field(default_factory=list)
    field_diffs: list[FieldDiff] = field(default_factory=list)
    decision_diffs: list[DecisionDiff] = field(default_factory=list)
    decisions_agree: int = 0
    video_diffs: list[FieldDiff] = field(default_factory=list)
    videos_only_curator: list[str] = field(default_factory=list)
    videos_only_ours: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        """Differences that break parity (not the informational ones)."""
        hard = [d for d in self.field_diffs + self.video_diffs if d.kind != "info"]
        return (len(self.only_curator) + len(self.only_ours) + len(hard) + len(self.decision_diffs)
                + len(self.videos_only_curator) + len(self.videos_only_ours))


def values_equal(a: Any, b: Any, tol: float = FLOAT_TOL) -> bool:
    """Equal, with numbers (also inside lists and dicts) within ``tol``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= tol
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k], tol) for k in a)
    return a == b


def compare_records(item: str, cur: dict, ours: dict, identity: tuple[str, ...],
                    tol: float = FLOAT_TOL) -> list[FieldDiff]:
    """Key, type and value differences of one JSON record; ``identity`` fields must be equal,
    other common fields are reported as "info" when their values differ."""
    out: list[FieldDiff] = []
    for k in cur.keys() - ours.keys():
        out.append(FieldDiff(item, k, "missing_in_ours", cur[k], None))
    for k in ours.keys() - cur.keys():
        out.append(FieldDiff(item, k, "extra_in_ours", None, ours[k]))
    for k in cur.keys() & ours.keys():
        a, b = cur[k], ours[k]
        if json_type(a) != json_type(b):
            out.append(FieldDiff(item, k, "type", json_type(a), json_type(b)))
        elif not values_equal(a, b, tol):
            out.append(FieldDiff(item, k, "value" if k in identity else "info", a, b))
    return sorted(out, key=lambda d: (d.item, d.field, d.kind))


def compare_trees(curator_out: Path, ours_out: Path, tol: float = FLOAT_TOL) -> ParityResult:
    """Compare two output trees of the same input videos (Curator's, then ours)."""
    cur, ours = load_tree(curator_out), load_tree(ours_out)
    r = ParityResult()
    r.only_curator = sorted(cur.metas.keys() - ours.metas.keys())
    r.only_ours = sorted(ours.metas.keys() - cur.metas.keys())
    r.common = sorted(cur.metas.keys() & ours.metas.keys())
    for uid in r.common:
        a, b = cur.metas[uid], ours.metas[uid]
        r.field_diffs += compare_records(uid, a, b, IDENTITY_FIELDS, tol)
        da, db = cur.decisions.get(uid), ours.decisions.get(uid)
        if da == db:
            r.decisions_agree += 1
        else:
            r.decision_diffs.append(DecisionDiff(uid, da, db, a.get("motion_score"), b.get("motion_score"),
                                                 Path(str(a.get("source_video", ""))).name, a.get("duration_span")))
    r.videos_only_curator = sorted(cur.videos.keys() - ours.videos.keys())
    r.videos_only_ours = sorted(ours.videos.keys() - cur.videos.keys())
    for key in sorted(cur.videos.keys() & ours.videos.keys()):
        r.video_diffs += compare_records(key, cur.videos[key], ours.videos[key], VIDEO_IDENTITY_FIELDS, tol)
    return r


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 3] + "..."


def _span(v: Any) -> str:
    try:
        return f"{float(v[0]):g}-{float(v[1]):g} s"
    except (TypeError, ValueError, IndexError):
        return _short(v)


def _motion(v: Any) -> str:
    """global_mean / per_patch_min_256, short enough to read both scores on one line."""
    if isinstance(v, dict) and {"global_mean", "per_patch_min_256"} <= v.keys():
        try:
            return f"(mean {float(v['global_mean']):.3g}, patch min {float(v['per_patch_min_256']):.3g})"
        except (TypeError, ValueError):
            pass
    return _short(v)


def format_report(r: ParityResult) -> str:
    lines = [f"clips: {len(r.common)} common, {len(r.only_curator)} only in Curator's output, "
             f"{len(r.only_ours)} only in ours"]
    for uid in r.only_curator:
        lines.append(f"  only Curator: {uid}")
    for uid in r.only_ours:
        lines.append(f"  only ours:    {uid}")
    lines.append(f"filter decisions: {r.decisions_agree} of {len(r.common)} agree")
    for d in r.decision_diffs:
        where = f" ({d.video} {_span(d.span)})" if d.video else ""
        lines.append(f"  {d.span_uuid}{where}: Curator {d.curator} {_motion(d.curator_motion)} | ours {d.ours} "
                     f"{_motion(d.ours_motion)}")
    for title, diffs in (("clip metas", r.field_diffs), ("processed_videos", r.video_diffs)):
        hard = [d for d in diffs if d.kind != "info"]
        info = [d for d in diffs if d.kind == "info"]
        lines.append(f"{title}: {len(hard)} mismatches, {len(info)} expected differences")
        for d in hard + info:
            lines.append(f"  {d.kind:15} {d.item[:36]:36} {d.field:18} Curator {_short(d.curator)} | ours "
                         f"{_short(d.ours)}")
    for key in r.videos_only_curator:
        lines.append(f"  processed_videos only in Curator's: {key}")
    for key in r.videos_only_ours:
        lines.append(f"  processed_videos only in ours: {key}")
    lines.append(f"parity mismatches: {r.mismatches}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- running


def curator_ready(python: str | None) -> str | None:
    """None when Curator can run, else why not."""
    if not python or not Path(python).exists():
        return (f"no Curator venv ({ROOT / '.venv-bench'} not found; set-up in scripts/_curator_driver.py, "
                "or pass --curator-python)")
    try:
        subprocess.run([python, "-c", "import nemo_curator"], check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as e:
        return f"NeMo Curator does not import with {python} ({type(e).__name__})"
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        return "Curator's VideoReader/ClipTranscodingStage need ffmpeg and ffprobe on PATH"
    return None


def pick_inputs(args_videos: list[str]) -> list[Path]:
    if args_videos:
        out: list[Path] = []
        for a in args_videos:
            p = Path(a)
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in CURATOR_EXTS) if p.is_dir() else [p]
        return out
    from curastream.videos.probe import VideoProbeError, probe

    picked = []
    for p in sorted((MEDIA / "videos").glob("*")) if (MEDIA / "videos").is_dir() else ():
        if p.suffix.lower() not in (".mp4", ".mov"):
            continue
        try:
            if probe(str(p)).video_codec == "h264":
                picked.append(p)
        except VideoProbeError:
            continue
    return picked


def run_ours(src: Path, out: Path, clip_len: float, min_len: float, extra: dict[str, Any] | None = None) -> None:
    from curastream import VideoRunConfig, run_videos

    run_videos(VideoRunConfig(sources=[str(src)], output=str(out), split="fixed", clip_len=clip_len,
                              min_clip_len=min_len, progress=False, **(extra or {})))


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as VideoRunConfig keyword arguments (VALUE read as JSON when it is,
    else as a string: ``crf=20``, ``motion_source=reencode``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"parity_videos: --ours wants KEY=VALUE, got {pair!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", nargs="*", default=[], help="files or folders (default: H.264 MP4/MOV of the media)")
    ap.add_argument("--clip-len", type=float, default=10.0)
    ap.add_argument("--min-clip-len", type=float, default=2.0)
    ap.add_argument("--encoder", default="libx264", help="Curator's transcode encoder (libvpx-vp9 is its default)")
    ap.add_argument("--curator-python", default=default_curator_python())
    ap.add_argument("--keep", default=None, help="write both output trees here instead of a temporary folder")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any parity mismatch is found")
    ap.add_argument("--ours", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra curastream settings (VideoRunConfig fields), e.g. motion_source=reencode")
    args = ap.parse_args()
    extra = parse_settings(args.ours)

    why = curator_ready(args.curator_python)
    if why:
        print(f"parity_videos: skipped: {why}")
        return 0
    files = pick_inputs(args.videos)
    if not files:
        print("parity_videos: skipped: no input videos")
        return 0
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="parity_"))
    src, cur_out, our_out = base / "input", base / "curator", base / "ours"
    src.mkdir(parents=True, exist_ok=True)
    for f in files:  # copies: curastream refuses inputs that resolve outside input_path
        shutil.copyfile(f, src / f.name)
    print(f"{len(files)} videos, clip_len {args.clip_len:g} s, min {args.min_clip_len:g} s; outputs in {base}"
          + (f"; curastream settings {extra}" if extra else ""))
    drv = str(ROOT / "scripts" / "_curator_driver.py")
    run = run_child([args.curator_python, drv, "videos", "--dir", str(src), "--out", str(cur_out),
                     "--encoder", args.encoder, "--clip-len", str(args.clip_len),
                     "--min-clip-len", str(args.min_clip_len)], env=dict(os.environ), timeout=7200)
    if not run.ok:
        print(f"parity_videos: Curator run failed: {run.error}")
        return 1
    run_ours(src, our_out, args.clip_len, args.min_clip_len, extra)
    result = compare_trees(cur_out, our_out)
    print(format_report(result))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if args.strict and result.mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
