#!/usr/bin/env python
"""URL-list throughput: curastream --url-list vs img2dataset, on the same loopback HTTP server.

    .venv/bin/python scripts/bench_urls.py [--images 600] [--latency-ms 0] [--repeat 1]

The server (a process of its own: http.server, threaded) serves the real JPEGs of
../shared/media/images under distinct URLs, optionally waiting ``--latency-ms`` before each
answer, which is what makes concurrency matter on loopback. Both contenders get the same
Parquet list (url, caption) and keep the original JPEG bytes:

  ours        curastream.run_images --url-list: download (aiohttp, --concurrency in flight),
              256 px scaled decode, scores, pHash, pass-through JPEG, tar + Parquet shards with
              captions; dedup off (img2dataset does none).
  img2dataset  1 process x --concurrency threads, resize_mode=no, skip_reencode (JPEG bytes
              kept, but decoded once with cv2 for the size), webdataset output, captions.

img2dataset lives in its own venv so its pins (albumentations, old pyarrow) never touch ours:

    python3 -m venv .venv-i2d && .venv-i2d/bin/pip install img2dataset

It is skipped, with the reason, when that venv is missing. Images/s = images written / the run's
own wall time (child start-up excluded); CPU-s are the child process tree's user+sys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import MEDIA, ROOT, run_child  # noqa: E402

I2D_PYTHON = ROOT / ".venv-i2d" / "bin" / "python"

SERVER = r"""
import sys, time, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
photos = [p.read_bytes() for p in sorted(Path(sys.argv[1]).iterdir()) if p.suffix.lower() in (".jpg", ".jpeg")]
latency = float(sys.argv[2]) / 1000
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        i = int(self.path.rsplit("/", 2)[1])
        data = photos[i % len(photos)]
        if latency: time.sleep(latency)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    def handle_error(self, *a): pass
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], len(photos), flush=True)
s.serve_forever()
"""

OURS = r"""
import json, sys, time
from curastream.config import ImageFilters, ImageRunConfig
from curastream.images.pipeline import run_images
lst, out, conc = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
stats = run_images(ImageRunConfig(sources=[], url_list=lst, output=out, download_concurrency=conc,
                                  filters=ImageFilters(dedup=False), progress=False))
wall = time.perf_counter() - t
print("BENCH_RESULT " + json.dumps({"wall_s": wall, "items": stats.items_out, "rejected": stats.items_in - stats.items_out}))
"""

I2D = r"""
import glob, json, os, sys, time
import pyarrow.parquet as pq
from img2dataset import download
lst, out, conc = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
download(url_list=lst, input_format="parquet", url_col="url", caption_col="caption", output_folder=out,
         output_format="webdataset", processes_count=1, thread_count=conc, resize_mode="no",
         skip_reencode=True, number_sample_per_shard=1000, timeout=10, retries=0, enable_wandb=False,
         distributor="multiprocessing")
wall = time.perf_counter() - t
ok = sum(pq.read_table(p, columns=["status"]).column("status").to_pylist().count("success")
         for p in glob.glob(os.path.join(out, "*.parquet")))
print("BENCH_RESULT " + json.dumps({"wall_s": wall, "items": ok}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="server wait before each answer")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    photos = MEDIA / "images"
    if not photos.is_dir():
        print(f"no media at {photos}", file=sys.stderr)
        return 2

    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    server = subprocess.Popen([sys.executable, "-c", SERVER, str(photos), str(args.latency_ms)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port, n_photos = map(int, server.stdout.readline().split())
        with tempfile.TemporaryDirectory(prefix="bench_urls_") as tmp:
            lst = Path(tmp) / "urls.parquet"
            urls = [f"http://127.0.0.1:{port}/img/{i}/photo.jpg" for i in range(args.images)]
            pq.write_table(pa.table({"url": urls, "caption": [f"photo number {i}" for i in range(args.images)]}), lst)
            print(f"{args.images} URLs over {n_photos} real JPEGs, latency {args.latency_ms:g} ms, "
                  f"concurrency {args.concurrency}")
            env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
            rates: dict[str, float] = {}
            contenders = [("ours", [sys.executable, "-c", OURS])]
            if I2D_PYTHON.exists():
                contenders.append(("img2dataset", [str(I2D_PYTHON), "-c", I2D]))
            else:
                print(f"img2dataset: skipped ({I2D_PYTHON} missing; see the docstring)")
            for rep in range(args.repeat):
                for name, cmd in contenders:
                    out = Path(tmp) / f"{name}-{rep}"
                    r = run_child(cmd + [str(lst), str(out), str(args.concurrency)], env=env, timeout=1800)
                    if not r.ok:
                        print(f"{name}: FAILED {r.error}")
                        continue
                    rate = r.result["items"] / r.wall_s
                    rates.setdefault(name, []).append(rate)
                    print(f"{name:12s} {r.result['items']:5d} images in {r.wall_s:6.2f} s = {rate:7.1f} images/s, "
                          f"CPU {r.cpu_s:5.1f} s, peak RSS (tree) {r.tree_rss_mb:6.0f} MB")
            med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
            if "ours" in med and "img2dataset" in med:
                print(f"ratio ours / img2dataset: {med['ours'] / med['img2dataset']:.2f}x")
            print(json.dumps({"images_per_s": med, "latency_ms": args.latency_ms}))
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
