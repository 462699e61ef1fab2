#!/usr/bin/env python
"""Image curation throughput: curastream vs NeMo Curator vs a plain baseline vs the hardware limit.

    .venv/bin/python scripts/bench_images.py [--images 600] [--repeat 3] [--curator-python PATH]

Input: the real JPEGs of ../shared/media/images (relative to the project root) when present,
else the built-in sample photos (``curastream.samples``, 8 photos). They are packed over and
over (about ``--images``, default 600) into WebDataset tars of ``--per-tar`` 100 ``<key>.jpg``
members, because Curator's reader only reads WebDataset tars (and decodes whole DALI batches of
100); every contender reads those same tars. The copies are the same pictures, so curastream
runs with near-duplicate removal off here (``dedup=False``; pHash is still computed) - otherwise
it would drop copies 2..N and write less than the others.

Contenders, each in its own process, ``--repeat`` times, taking turns (median reported):
  curator   NeMo Curator 1.4: ImageReaderStage (DALI, CPU decode, full size) -> ImageWriterStage
            (Pillow re-encode q92, tar + Parquet), run by scripts/_curator_driver.py with the
            Curator venv's python. Stages are called in-process (no Ray) unless --curator-executor
            xenna. Skipped, with the reason, when that python or nemo_curator is missing.
  baseline  what a user would write: tarfile loop, Pillow open -> exif_transpose -> convert RGB ->
            save q92 -> tarfile + pyarrow Parquet, one thread.
  limit     the floor for our work on this machine: simplejpeg DCT-scaled decode to >= 256 px
            (the scoring resolution) on a 2-thread pool, plus the original bytes into tars, except
            that an EXIF-rotated photo is stored upright, as SPEC requires since the trust round:
            libjpeg-turbo's lossless turn (ctypes, GIL released) where it is exact, else a
            simplejpeg decode + encode. Before that requirement the limit only copied bytes; in
            the shared media 2 photos in 22 are rotated, one of them 7 MP (~70 ms a turn).
  ours      curastream.run_images (decode at 256, scores, pHash, filters, pass-through JPEG
            bytes, tar + Parquet shards, rejects, index).
Then curastream's peak RSS with the input listed 1x and 10x (symlinks), to show memory is flat,
and threads vs processes for the per-image work (probe + scaled decode + scores), which is why
the engine runs stages in threads.

Curator lives in a separate venv so its pins (torch, Ray, PyAV 17, transformers...) never touch
the project's venv:

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install 'torch==2.13.0' 'nemo-curator[image_cpu,video_cpu,cv2]==1.4.0' \
        nvidia-dali-cuda120 av 'pillow==13.0.0'
    # (av: Curator's video stages import it but its extras do not install it; pillow: the same
    #  version as .venv, so scripts/curator_adapter_check.py can compare JPEG bytes.
    #  scripts/parity_videos.py and the adapter check also want curastream there:
    #  .venv-bench/bin/pip install --no-deps -e .)
    apt-get install ffmpeg    # videos only: Curator shells out to ffprobe and ffmpeg
    # (pyproject's `bench` extra names nemo-curator; install it into .venv-bench, not .venv.
    #  torch 2.13.0 is the local CPU wheel; PyPI's torchvision then fails at `import torchvision`,
    #  which none of the stages used here needs.)
    # Curator's ImageReaderStage builds its DALI pipeline with device_id=0, which asserts without
    # CUDA; the driver rebuilds it with device_id=None (CPU decode, otherwise Curator's code).

Numbers on a shared 2-core machine are noisy: each row is the median of --repeat runs and the
spread (min-max items/s) is printed; "CPU-s per image" (user+sys of the process tree) is the
per-item cost, which neighbours disturb much less than wall time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import (  # noqa: E402
    MEDIA,
    ROOT,
    Outs,
    Row,
    default_curator_python,
    emit_result,
    fmt,
    machine_line,
    ratio,
    repeat,
    repeat_fresh_interleaved,
    self_cmd,
    table,
    verdict,
)

SCRIPT = Path(__file__).resolve()
JPEG_MAGIC = b"\xff\xd8\xff"


# ------------------------------------------------------------------------------------ input


def source_jpegs(media_dir: Path, tmp: Path) -> tuple[list[Path], str]:
    d = media_dir / "images"
    if d.is_dir():
        files = sorted(p for p in d.iterdir() if p.is_file() and p.read_bytes()[:3] == JPEG_MAGIC)
        if files:
            return files, f"real JPEGs from {d}"
    from curastream.samples import make_sample_images

    made = make_sample_images(tmp / "samples")
    files = sorted(p for p in made if p.suffix == ".jpg" and p.read_bytes()[:3] == JPEG_MAGIC
                   and "broken" not in p.name)
    return files, f"generated sample JPEGs (curastream.samples, {len(files)} photos; no {d})"


def build_tars(files: list[Path], copies: int, out: Path, per_tar: int = 100) -> list[Path]:
    """WebDataset tars of ``per_tar`` samples (Curator's reader decodes whole DALI batches of 100
    per run and drops the wrap-around of a short last batch: full tars keep it from wasting work)."""
    out.mkdir(parents=True, exist_ok=True)
    tars: list[Path] = []
    tf = None
    n = 0
    for c in range(copies):
        for f in files:
            if n % per_tar == 0:
                if tf is not None:
                    tf.close()
                tars.append(out / f"bench-{len(tars):04d}.tar")
                tf = tarfile.open(tars[-1], "w", format=tarfile.PAX_FORMAT)
            key = re.sub(r"[^A-Za-z0-9_-]", "_", f.stem) + f"-c{c:03d}"
            data = f.read_bytes()
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            n += 1
    if tf is not None:
        tf.close()
    return tars


def iter_tar_jpegs(tars):
    for t in tars:
        with tarfile.open(t) as tf:
            for m in tf:
                if m.isfile() and m.name.endswith(".jpg"):
                    yield m.name[:-4], tf.extractfile(m).read()


# ------------------------------------------------------------------------------------ children


def child_ours(tars: list[str], out: str, dedup: bool) -> None:
    from curastream import ImageRunConfig, run_images
    from curastream.config import ImageFilters

    stats_path = out.rstrip("/") + ".stats.json"
    cfg = ImageRunConfig(sources=tars, output=out, filters=ImageFilters(dedup=dedup), progress=False,
                         stats=stats_path)
    t0 = time.perf_counter()
    stats = run_images(cfg)
    wall = time.perf_counter() - t0
    d = stats.to_dict()
    emit_result(wall_s=wall, items=stats.items_out, items_in=stats.items_in, bytes_in=stats.bytes_in,
                stages={s["name"]: s["utilisation"] for s in d["stages"]}, bottleneck=d["bottleneck"],
                rejected=stats.items_rejected)


def child_baseline(tars: list[str], out: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageOps

    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    per_tar, shard, rows, n, bytes_in = 1000, 0, [], 0, 0
    tf = None

    def close():
        nonlocal tf, rows, shard
        if tf is not None:
            tf.close()
            pq.write_table(pa.Table.from_pylist(rows), os.path.join(out, f"shard-{shard:06d}.parquet"))
            tf, rows, shard = None, [], shard + 1

    for key, data in iter_tar_jpegs(tars):
        bytes_in += len(data)
        with Image.open(io.BytesIO(data)) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")  # stored upright, as SPEC asks
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=92)
        payload = buf.getvalue()
        if tf is None:
            tar_path = os.path.join(out, f"shard-{shard:06d}.tar")
            tf = tarfile.open(tar_path, "w")
        info = tarfile.TarInfo(f"{key}.jpg")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
        rows.append({"image_id": key, "tar_file": tar_path, "member_name": f"{key}.jpg",
                     "original_path": key, "metadata": "{}", "width": rgb.width, "height": rgb.height})
        n += 1
        if len(rows) >= per_tar:
            close()
    close()
    emit_result(wall_s=time.perf_counter() - t0, items=n, bytes_in=bytes_in)


def child_limit(tars: list[str], out: str, threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import simplejpeg
    from curastream.images.orient import lossless_upright
    from PIL import Image, ImageOps

    def decode(data: bytes):
        simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=256, min_width=256)
        with Image.open(io.BytesIO(data)) as im:  # header only
            orientation = im.getexif().get(0x0112, 1)
        if orientation == 1:
            return data
        turned = lossless_upright(data, orientation)
        if turned is None:
            with Image.open(io.BytesIO(data)) as im:
                upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            turned = simplejpeg.encode_jpeg(upright, quality=92, colorspace="RGB")
        return turned

    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    n = bytes_in = 0
    with ThreadPoolExecutor(threads) as pool:
        for ti, t in enumerate(tars):
            batch = list(iter_tar_jpegs([t]))
            futs = [pool.submit(decode, d) for _, d in batch]
            with tarfile.open(os.path.join(out, f"copy-{ti:06d}.tar"), "w") as tf:
                for (key, data), f in zip(batch, futs):
                    stored = f.result()
                    info = tarfile.TarInfo(f"{key}.jpg")
                    info.size = len(stored)
                    tf.addfile(info, io.BytesIO(stored))
                    n += 1
                    bytes_in += len(data)
    emit_result(wall_s=time.perf_counter() - t0, items=n, bytes_in=bytes_in)


def _decode_and_score(data: bytes):

    from curastream.images.decode import decode_for_analysis
    from curastream.images.probe import probe_image
    from curastream.kernels.image_scores import score_batch

    px = decode_for_analysis(data, probe_image(data))
    score_batch(px[None])
    return px  # what the next stage needs: a process pool has to send it back


def child_engine(tars: list[str], seconds: float) -> None:
    """Threads vs processes for the per-image work (probe, scaled decode, scores): img/s with a
    1- and 2-thread pool and a 2-process pool (which must ship the 256x256 pixels back)."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    datas = [d for _, d in iter_tar_jpegs(tars)]
    out = {}
    for label, make in (("threads=1", lambda: ThreadPoolExecutor(1)), ("threads=2", lambda: ThreadPoolExecutor(2)),
                        ("processes=2", lambda: ProcessPoolExecutor(2))):
        with make() as pool:
            list(pool.map(_decode_and_score, datas[:8]))  # warm-up (process start, imports)
            rates, cpu = [], []
            t_end = time.perf_counter() + seconds
            while True:
                t0, c0 = time.perf_counter(), time.process_time()
                list(pool.map(_decode_and_score, datas, chunksize=4) if "process" in label
                     else pool.map(_decode_and_score, datas))
                rates.append(len(datas) / (time.perf_counter() - t0))
                cpu.append(time.process_time() - c0)
                if time.perf_counter() > t_end and len(rates) >= 2:
                    break
        import statistics

        out[label] = round(statistics.median(rates), 1)
    emit_result(wall_s=0.0, items=len(datas), engine=out)


def child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["ours", "baseline", "limit", "engine"])
    ap.add_argument("--tars", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dedup", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    try:
        if a.kind == "ours":
            child_ours(a.tars, a.out, a.dedup)
        elif a.kind == "baseline":
            child_baseline(a.tars, a.out)
        elif a.kind == "engine":
            child_engine(a.tars, 6.0)
        else:
            child_limit(a.tars, a.out, a.threads)
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        emit_result(error=f"{type(e).__name__}: {e}")
        return 1
    return 0


# ------------------------------------------------------------------------------------ parent


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        return child_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", default=str(MEDIA), help="shared media folder (images/ inside)")
    ap.add_argument("--images", type=int, default=600,
                    help="about this many images: the JPEG set is packed into tars this many times over (rounded up)")
    ap.add_argument("--per-tar", type=int, default=100, help="samples per input tar")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--curator-python", default=default_curator_python(),
                    help="python of the venv holding nemo-curator (default .venv-bench/bin/python)")
    ap.add_argument("--curator-executor", default="stages", choices=["stages", "xenna", "ray_data"])
    ap.add_argument("--skip", default="", help="comma list to skip: curator,baseline,limit,ours,rss,engine")
    ap.add_argument("--rss-factor", type=int, default=10)
    ap.add_argument("--json", default=None, help="also write the medians here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    tmp = Path(tempfile.mkdtemp(prefix="bench-images-"))
    outs = Outs(tmp / "out")
    files, what = source_jpegs(Path(args.media), tmp)
    copies = max(1, -(-args.images // len(files)))
    tars = build_tars(files, copies, tmp / "in", args.per_tar)
    n_img = len(files) * copies
    mb = sum(f.stat().st_size for f in files) * copies / 1e6
    print(f"# bench_images\n{machine_line()}\ninput: {what}: {len(files)} JPEGs x {copies} copies = "
          f"{n_img} images, {mb:.1f} MB in {len(tars)} tars; repeat {args.repeat}\n", flush=True)
    targs = [str(t) for t in tars]
    rows: dict[str, Row] = {}

    # All contenders take turns (run 1 of each, then run 2 of each, ...), so the VM's drift in
    # speed over minutes does not land on one of them.
    specs: dict[str, tuple] = {}
    if "curator" not in skip:
        cp = args.curator_python
        if not cp or not Path(cp).exists():
            rows["curator"] = Row("NeMo Curator 1.4 (DALI CPU reader -> ImageWriterStage)", [],
                                  skipped=f"no Curator python (looked for {cp or '.venv-bench/bin/python'}; "
                                          "see this script's docstring to install it)")
        else:
            drv = str(ROOT / "scripts" / "_curator_driver.py")
            specs["curator"] = (
                f"NeMo Curator 1.4 (DALI CPU reader -> ImageWriterStage, {args.curator_executor})",
                lambda out: [cp, drv, "images", "--tars", *targs, "--out", out, "--executor", args.curator_executor],
                {"unit": "images", "timeout": 1800})
    if "baseline" not in skip:
        specs["baseline"] = ("baseline: Pillow loop q92 + tarfile + pyarrow", lambda out: self_cmd(
            SCRIPT, "_child", "baseline", "--tars", *targs, "--out", out), {"unit": "images"})
    if "limit" not in skip:
        specs["limit"] = ("limit: simplejpeg scaled decode >=256 (2 thr) + upright turn of rotated + byte copy to tars",
                          lambda out: self_cmd(SCRIPT, "_child", "limit", "--tars", *targs, "--out", out),
                          {"unit": "images"})
    if "ours" not in skip:
        specs["ours"] = ("curastream (CPU, dedup off)", lambda out: self_cmd(
            SCRIPT, "_child", "ours", "--tars", *targs, "--out", out), {"unit": "images"})
    rows.update(repeat_fresh_interleaved(specs, outs, args.repeat))

    order = [rows[k] for k in ("curator", "baseline", "limit", "ours") if k in rows]
    print("\n## Throughput (median of runs; items/s spread in brackets)\n")
    print(table(order, "images"))

    ours = rows.get("ours")
    o = ours.rate() if ours else None
    r_cur = ratio(o, rows["curator"].rate()) if "curator" in rows else None
    r_base = ratio(o, rows["baseline"].rate()) if "baseline" in rows else None
    r_lim = ratio(o, rows["limit"].rate()) if "limit" in rows else None
    print("\n## Ratios (images/s)\n")
    print(f"- ours / Curator:  {fmt(r_cur)}x  target >= 4x    {verdict(r_cur, 4.0)}")
    print(f"- ours / baseline: {fmt(r_base)}x")
    print(f"- ours / limit:    {fmt(r_lim)}x  target >= 0.8x  {verdict(r_lim, 0.8)}")
    if ours and ours.good:
        print(f"- ours stage utilisation (last run): {ours.good[-1].result.get('stages')}")
        cur = rows.get("curator")
        if cur and cur.good:
            print(f"- CPU-s per image: ours {fmt(ours.good[-1].cpu_s / ours.good[-1].result['items'])}, "
                  f"Curator {fmt(cur.good[-1].cpu_s / cur.good[-1].result['items'])}")

    rss = {}
    if "rss" not in skip:
        print(f"\n## curastream peak RSS, input 1x vs {args.rss_factor}x (dedup off, same tars listed again "
              "through symlinks)\n", flush=True)
        big = tmp / "in10"
        for c in range(args.rss_factor):
            d = big / f"rep{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for t in tars:
                (d / t.name).symlink_to(t)
        for label, srcs in (("1x", targs), (f"{args.rss_factor}x", [str(big)])):
            out = outs("rss")
            r = repeat(f"rss {label}", self_cmd(SCRIPT, "_child", "ours", "--tars", *srcs, "--out", out), 1,
                       unit="images").runs[0]
            shutil.rmtree(out, ignore_errors=True)
            rss[label] = r
        print("| input | images | run wall s | images/s | peak RSS MB (tree) |\n|---|---|---|---|---|")
        for label, r in rss.items():
            if r.ok:
                print(f"| {label} | {r.result['items']} | {fmt(r.wall_s)} | {fmt(r.result['items'] / r.wall_s)} | "
                      f"{fmt(r.tree_rss_mb)} |")
            else:
                print(f"| {label} | failed: {r.error} | | | |")

    engine = {}
    if "engine" not in skip:
        print("\n## Threads vs processes: probe + scaled decode + scores per image (median img/s)\n", flush=True)
        r = repeat("engine", self_cmd(SCRIPT, "_child", "engine", "--tars", targs[0], "--out", "-"), 1,
                   verbose=False).runs[0]
        engine = r.result.get("engine", {}) if r.ok else {"error": r.error}
        print(" | ".join(f"{k}: {v}" for k, v in engine.items()))

    if args.json:
        doc = {"machine": machine_line(), "input": {"what": what, "images": n_img, "mb": mb}, "engine": engine,
               "rows": {k: {"name": v.name, "images_per_s": v.rate(), "mb_per_s": (v.rate("bytes_in") or 0) / 1e6,
                            "wall_s": v.med("wall_s"), "proc_wall_s": v.med("proc_wall_s"),
                            "tree_rss_mb": v.med("tree_rss_mb"), "runs": len(v.good),
                            "skipped": v.skipped or (v.runs[-1].error if v.runs and not v.good else "")}
                        for k, v in rows.items()},
               "ratios": {"ours/curator": r_cur, "ours/baseline": r_base, "ours/limit": r_lim},
               "rss": {k: {"items": r.result.get("items"), "tree_rss_mb": r.tree_rss_mb, "wall_s": r.wall_s}
                       for k, r in rss.items()}}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
    if args.keep:
        print(f"\n(temp dir kept: {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
