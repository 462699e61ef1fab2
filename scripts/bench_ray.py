#!/usr/bin/env python
"""What ``--runner ray`` costs against the in-process runner, on the same input and settings.

    .venv/bin/python scripts/bench_ray.py [--images 600] [--repeat 3] [--cluster | --ray-address HOST:PORT]

Images: the JPEGs of ../shared/media/images (else the built-in samples), packed about
``--images`` times over into WebDataset tars of 100, exactly as scripts/bench_images.py builds
its input. Two rows each: near-duplicate removal off (every copy written) and on (the copies
are near-duplicates: two passes, the driver decides between them; ours writes one of each).
Videos (a smaller row): the H.264 MP4/MOV files of ../shared/media/videos, copied into a
folder, ``--split fixed --dry-run`` (decode, motion, clip metadata; no clip files). One long
video (a row of its own): Big Buck Bunny's 30 s, ``--clip-len 2 --dry-run``; the Ray contenders
run it in three tasks of 10 s (``--ray-video-chunk-s 10``), the local one whole.

Contenders, each a child process running the Python API (``run_images`` / ``run_videos``),
taking turns (local, ray, cluster, local, ray, ...; median of ``--repeat``):
  local     ``runner="local"``: the stages in one process.
  ray       ``runner="ray"`` with no address: the run starts a local Ray runtime (``ray.init``,
            2 CPUs here) and stops it at the end. Its time and memory count in full: the
            child's process tree holds the raylet, GCS and workers.
  cluster   ``runner="ray"`` joining a running cluster: ``--cluster`` starts a two-node cluster
            on loopback like tests/test_ray_runner.py (head + second raylet, 1 CPU each, in a
            temp dir of its own; stopped at the end by killing only the processes started here,
            never ``ray stop``), or ``--ray-address`` names one already running. The cluster's
            own processes are not in the child's tree: their peak RSS is sampled apart.
Every contender gets the same ``--images-per-tar`` (default 100: six partitions, so Ray has
tasks to spread over two nodes; it only changes shard grouping, not the items).

Printed per contender: images/s (or clips/s) over the whole API call, the overhead ratio
(ray wall / local wall; target <= 1.15x at 600 images; also without ``ray.init``), and the
wall split into: ``ray.init`` inside the run (read from curastream's own log record), the run
after connecting (driver plan, tasks, merge: ``--stats``' wall), the summed time inside the
tasks (their own clocks: the gap to "after connect" is worker start, imports, scheduling and
transfers), and the rest (listing, opening the output, index, ``ray.shutdown``). Peak RSS is
of the child's process tree (sampled from /proc). CPU: "CPU-s per image" is os.wait4's, which
misses Ray's workers (the raylet never lets the child reap them); the "(sampled)" column sums
/proc CPU times of every process of the tree during the run (for the cluster row: the
driver's tree plus the cluster's processes). The load average is printed before every round: on a shared 2-core machine a load near
the core count means another job took CPU from the contenders.
Every child runs with RAY_USAGE_STATS_ENABLED=0, RAY_AUTH_MODE=disabled and RAY_TMPDIR in this
bench's temp dir, so leftover Ray processes of ours are found by that path and only they are
ended.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import (
    MEDIA,
    Outs,
    Row,
    _fresh_run,
    emit_result,
    fmt,
    machine_line,
    ratio,
    self_cmd,
    table,
    tree_rss,
    verdict,
)
from bench_images import build_tars, source_jpegs
from bench_videos import link_inputs, pick_videos

SCRIPT = Path(__file__).resolve()
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
TARGET_OVERHEAD = 1.15


# ------------------------------------------------------------------------------------ children


class _InitTime(logging.Handler):
    """Catches the 'ray: connected in %.1f s' record of curastream.distributed.cluster, whose
    argument is the unrounded ray.init time: the run starts Ray itself, so only its log knows."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("ray: connected in") and record.args:
            self.seconds = float(record.args[0])


def _watch_init() -> _InitTime:
    h = _InitTime()
    lg = logging.getLogger("curastream.distributed.cluster")
    lg.setLevel(logging.INFO)
    lg.addHandler(h)
    return h


def _ray_fields(stats, init: _InitTime) -> dict:
    nodes = stats.extra.get("nodes") or {}
    return {"init_s": init.seconds,
            "after_connect_s": stats.wall_s if stats.extra.get("runner") == "ray" else None,
            "task_s": sum(n["task_s"] for n in nodes.values()) if nodes else None, "tasks": stats.extra.get("tasks"),
            "nodes": {k: n["tasks"] for k, n in nodes.items()}}


def child_images(tars: list[str], out: str, runner: str, address: str | None, dedup: bool, per_tar: int) -> None:
    from curastream import ImageRunConfig, run_images
    from curastream.config import ImageFilters

    init = _watch_init()
    cfg = ImageRunConfig(sources=tars, output=out, filters=ImageFilters(dedup=dedup), progress=False,
                         images_per_tar=per_tar, runner=runner, ray_address=address,
                         stats=out.rstrip("/") + ".stats.json")
    t0 = time.perf_counter()
    stats = run_images(cfg)
    wall = time.perf_counter() - t0
    # images/s counts inputs: with dedup on, the copies are read and analysed, then dropped
    emit_result(wall_s=wall, items=stats.items_in, items_out=stats.items_out, bytes_in=stats.bytes_in,
                rejected=stats.items_rejected, **_ray_fields(stats, init))


def child_videos(src: str, out: str, runner: str, address: str | None, chunk_s: float = 300.0,
                 clip_len: float = 10.0) -> None:
    from curastream import VideoRunConfig, run_videos

    init = _watch_init()
    cfg = VideoRunConfig(sources=[src], output=out, split="fixed", dry_run=True, clip_len=clip_len, min_clip_len=2.0,
                         previews=False, progress=False, runner=runner, ray_address=address,
                         ray_video_chunk_s=chunk_s,
                         stats=out.rstrip("/") + ".stats.json")
    t0 = time.perf_counter()
    stats = run_videos(cfg)
    wall = time.perf_counter() - t0
    emit_result(wall_s=wall, items=stats.extra.get("clips", 0), videos=stats.items_in, bytes_in=stats.bytes_in,
                **_ray_fields(stats, init))


def child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["images", "videos", "long-video"])
    ap.add_argument("--src", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runner", choices=["local", "ray"], required=True)
    ap.add_argument("--address", default=None)
    ap.add_argument("--dedup", action="store_true")
    ap.add_argument("--per-tar", type=int, default=100)
    ap.add_argument("--chunk-s", type=float, default=300.0)
    a = ap.parse_args(argv)
    try:
        if a.kind == "images":
            child_images(a.src, a.out, a.runner, a.address, a.dedup, a.per_tar)
        elif a.kind == "long-video":
            child_videos(a.src[0], a.out, a.runner, a.address, chunk_s=a.chunk_s, clip_len=2.0)
        else:
            child_videos(a.src[0], a.out, a.runner, a.address)
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        emit_result(error=f"{type(e).__name__}: {e}")
        return 1
    return 0


# One video split into parts on Ray (--ray-video-chunk-s): 30 s of 720p VP8, in three 10 s parts.
LONG_VIDEO = "moviepy_big_buck_bunny_0_30.webm"
LONG_CHUNK_S = 10.0


# ------------------------------------------------------------------------------------ our Ray processes


def _pids_naming(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (a temp dir of this bench): ours only."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(d))
        except OSError:
            continue
    return out


def _descendants(roots: list[int]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
            kids.setdefault(int(s[s.rindex(b")") + 2:].split()[1]), []).append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        for k in kids.get(p, ()):
            out.append(k)
            todo.append(k)
    return out


def _kill(pids) -> int:
    n = 0
    for pid in set(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except ProcessLookupError:
            pass
    return n


class Cluster:
    """Two raylets on loopback (head + one more), 1 CPU each, like tests/test_ray_runner.py."""

    def __init__(self, env: dict[str, str], object_store_mb: int = 100):
        self.env = env
        self.temp = tempfile.mkdtemp(prefix="bray-", dir="/tmp")  # short: Unix socket paths are limited
        self.procs: list[subprocess.Popen] = []
        self.store = object_store_mb
        self.address = ""
        self.start_s = 0.0

    def start(self) -> str:
        ray_bin = str(Path(sys.executable).parent / "ray")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        common = ["--num-cpus", "1", "--object-store-memory", str(self.store << 20), "--disable-usage-stats"]
        t0 = time.perf_counter()
        # --block keeps each `ray start` our child: its PID is known and its services are its children
        self.procs.append(subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--temp-dir", self.temp,
                                            "--include-dashboard", "false", "--block", *common], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.address = f"127.0.0.1:{port}"
        self._wait_nodes(1)
        self.procs.append(subprocess.Popen([ray_bin, "start", "--address", self.address, "--block", *common],
                                           env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait_nodes(2)
        self.start_s = time.perf_counter() - t0
        return self.address

    def _wait_nodes(self, n: int, timeout: float = 120.0) -> None:
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
                "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("ray start exited")
            r = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                               env=self.env, timeout=90, check=False)
            if r.returncode == 0 and r.stdout.strip() and int(r.stdout.split()[-1]) >= n:
                return
            time.sleep(1)
        raise RuntimeError(f"cluster at {self.address} did not reach {n} nodes")

    def rss(self) -> int:
        return sum(tree_rss(p.pid) for p in self.procs)

    def stop(self) -> None:
        tree = _descendants([p.pid for p in self.procs])
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # services or workers outliving their `ray start`: only those seen under it or naming our dir
        _kill([pid for pid in tree if Path(f"/proc/{pid}").exists()] + _pids_naming(self.temp))
        shutil.rmtree(self.temp, ignore_errors=True)


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
        fields = s[s.rindex(b")") + 2:].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return -1


class TreeCpu(threading.Thread):
    """CPU seconds used by a process tree while it runs, from /proc, last value seen per process.
    os.wait4 cannot give this for Ray: the raylet's workers are never reaped by the child."""

    def __init__(self, roots, period: float = 0.2):
        super().__init__(daemon=True)
        self.roots, self.period = roots, period
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._halt = threading.Event()

    def sample(self, first: bool = False) -> None:
        roots = self.roots()
        me = os.getpid()  # the bench itself (its samplers) is not a contender
        for pid in [r for r in roots if r != me] + _descendants(roots):
            t = _cpu_ticks(pid)
            if t >= 0:
                self.last[pid] = t
                if first:
                    self.first[pid] = t

    def run(self) -> None:
        while not self._halt.wait(self.period):
            self.sample()

    def begin(self) -> TreeCpu:
        self.sample(first=True)
        self.start()
        return self

    def stop(self) -> float:
        self._halt.set()
        self.join()
        self.sample()
        return sum(t - self.first.get(pid, 0) for pid, t in self.last.items()) / os.sysconf("SC_CLK_TCK")


class PeakSampler(threading.Thread):
    def __init__(self, fn, period: float = 0.1):
        super().__init__(daemon=True)
        self.fn, self.period, self.peak = fn, period, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self.fn())
            self._halt.wait(self.period)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


# ------------------------------------------------------------------------------------ parent


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    high = (f"  HIGH: {one:.1f} runnable on {cores} cores before this round; other work is taking CPU "
            "and every contender here is slower and noisier than on a quiet machine") if one >= 0.5 * cores else ""
    return f"os.getloadavg() = ({one:.2f}, {five:.2f}, {fifteen:.2f}){high}"


def run_rounds(groups: dict[str, dict[str, tuple]], outs: Outs, n: int, env: dict, cluster: Cluster | None,
               marker: str) -> dict[str, dict[str, Row]]:
    """``groups``: group -> contender -> (label, make_cmd, unit). Round i runs run i of every
    contender of every group, contenders of a group back to back (the VM drifts in speed over
    minutes; pairs run seconds apart see the same machine)."""
    runs: dict[str, dict[str, list]] = {g: {k: [] for k in cs} for g, cs in groups.items()}
    loads = []
    for i in range(n):
        print(f"\nround {i + 1}/{n}: {load_line()}", flush=True)
        loads.append(os.getloadavg()[0])
        for g, contenders in groups.items():
            for key, (label, make_cmd, unit) in contenders.items():
                if runs[g][key] and not runs[g][key][-1].ok:
                    continue  # a contender that fails once will fail again
                on_cluster = key == "cluster" and cluster is not None
                sampler = PeakSampler(cluster.rss) if on_cluster else None
                if sampler:
                    sampler.start()
                # the child is this process's only child while it runs: its tree is ours minus us
                extra = [p.pid for p in cluster.procs] if on_cluster else []
                cpu = TreeCpu(lambda extra=extra: [os.getpid(), *extra]).begin()
                row = _fresh_run(label, make_cmd, outs, i + 1, unit=unit, env=env, timeout=900)
                res = row.runs[0].result
                res["tree_cpu_s"] = cpu.stop()
                if sampler:
                    res["cluster_rss_mb"] = sampler.stop() / 2**20
                runs[g][key] += row.runs
                # a local runtime whose driver died leaves its raylet behind: end ours, nothing else
                if key == "ray":
                    stray = _kill(_pids_naming(marker))
                    if stray:
                        print(f"  (ended {stray} leftover Ray process(es) of this bench)", flush=True)
    print(f"\nload average (1 min) at the start of each round: {', '.join(f'{x:.2f}' for x in loads)}")
    return {g: {k: Row(cs[k][0], runs[g][k], unit=cs[k][2]) for k in cs} for g, cs in groups.items()}


def med(row: Row, key: str) -> float | None:
    return row.med_result(key)


def report(title: str, rows: dict[str, Row], unit: str) -> dict:
    local = rows.get("local")
    lw = local.med("wall_s") if local else None

    def col_ratio(row: Row) -> str:
        return "1" if row is local else fmt(ratio(row.med("wall_s"), lw))

    def col_init(row: Row) -> str:
        return fmt(med(row, "init_s"))

    def col_after(row: Row) -> str:
        return fmt(med(row, "after_connect_s"))

    def col_tasks(row: Row) -> str:
        t = med(row, "task_s")
        n = med(row, "tasks")
        return f"{fmt(t)} ({int(n)} tasks)" if t is not None and n is not None else "-"

    def col_other(row: Row) -> str:
        w, i, a = row.med("wall_s"), med(row, "init_s"), med(row, "after_connect_s")
        return fmt(w - i - a) if None not in (w, i, a) else "-"

    def col_cpu(row: Row) -> str:
        vals = [r.result["tree_cpu_s"] / r.result["items"] for r in row.good if r.result.get("items")]
        return fmt(statistics.median(vals)) if vals else "-"

    def col_cluster(row: Row) -> str:
        return fmt(med(row, "cluster_rss_mb"))

    print(f"\n## {title} (median of runs; {unit}/s over the whole API call, spread in brackets)\n")
    print(table(list(rows.values()), unit, [("wall / local", col_ratio), ("ray.init s", col_init),
                                            ("after connect s", col_after), ("in tasks s", col_tasks),
                                            ("rest s", col_other), (f"CPU-s per {unit[:-1]} (sampled)", col_cpu),
                                            ("cluster RSS MB", col_cluster)]))
    doc = {}
    for key, row in rows.items():
        w = row.med("wall_s")
        init = med(row, "init_s")
        doc[key] = {"name": row.name, "rate": row.rate(), "wall_s": w, "proc_wall_s": row.med("proc_wall_s"),
                    "cpu_s": row.med("cpu_s"), "tree_cpu_s": med(row, "tree_cpu_s"), "tree_rss_mb": row.med("tree_rss_mb"), "init_s": init,
                    "after_connect_s": med(row, "after_connect_s"), "task_s": med(row, "task_s"),
                    "cluster_rss_mb": med(row, "cluster_rss_mb"), "runs": len(row.good),
                    "items": med(row, "items"), "items_out": med(row, "items_out"),
                    "nodes": row.good[-1].result.get("nodes") if row.good else None,
                    "error": row.runs[-1].error if row.runs and not row.good else ""}
        if key != "local" and row.good and lw:
            r = ratio(w, lw)
            no_init = ratio(w - init, lw) if init is not None and w is not None else None
            doc[key].update(ratio=r, ratio_without_init=no_init)
            print(f"- {key}: {fmt(r)}x local wall (target <= {TARGET_OVERHEAD}x: "
                  f"{verdict(r, TARGET_OVERHEAD, higher_is_better=False)}); without ray.init {fmt(no_init)}x; "
                  f"tasks on {doc[key]['nodes']}")
    for key in ("local", "ray", "cluster"):
        if key in rows and rows[key].good:
            outs = {r.result.get("items_out") for r in rows[key].good}
            if outs != {None}:
                print(f"- {key}: items written {sorted(outs)}")
    return doc


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        return child_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", default=str(MEDIA), help="shared media folder (images/ and videos/ inside)")
    ap.add_argument("--images", type=int, default=600, help="about this many images (the JPEG set packed N times)")
    ap.add_argument("--images-per-tar", type=int, default=100, help="every contender's --images-per-tar")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cluster", action="store_true", help="also run on a two-node loopback cluster started here")
    ap.add_argument("--ray-address", default=None, help="also run on this running cluster (HOST:PORT)")
    ap.add_argument("--skip", default="", help="comma list to skip: dedup-off,dedup-on,videos,long-video")
    ap.add_argument("--json", default=None, help="also write the medians here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    if args.cluster and args.ray_address:
        ap.error("--cluster starts a cluster; --ray-address names one: not both")
    skip = set(filter(None, args.skip.split(",")))

    tmp = Path(tempfile.mkdtemp(prefix="bray-b-", dir="/tmp"))
    ray_tmp = tmp / "r"  # RAY_TMPDIR of every child: short, ours, and how leftovers are found
    ray_tmp.mkdir()
    env = {**os.environ, **RAY_ENV, "RAY_TMPDIR": str(ray_tmp)}
    outs = Outs(tmp / "out")
    files, what = source_jpegs(Path(args.media), tmp)
    copies = max(1, -(-args.images // len(files)))
    tars = [str(t) for t in build_tars(files, copies, tmp / "in")]
    n_img = len(files) * copies
    mb = sum(f.stat().st_size for f in files) * copies / 1e6
    print(f"# bench_ray\n{machine_line()}\n{load_line()}\nimages: {what}: {len(files)} JPEGs x {copies} copies = "
          f"{n_img} images, {mb:.1f} MB in {len(tars)} tars; --images-per-tar {args.images_per_tar}; "
          f"repeat {args.repeat}", flush=True)
    vid_dir = None
    if "videos" not in skip:
        vids, vwhat = pick_videos(Path(args.media), tmp, all_codecs=False)
        vid_dir = str(link_inputs(vids, tmp / "vin"))
        print(f"videos: {vwhat}: {len(vids)} files, {sum(v.stat().st_size for v in vids) / 1e6:.1f} MB; "
              "--split fixed --clip-len 10 --dry-run", flush=True)

    long_dir = None
    long_video = Path(args.media) / "videos" / LONG_VIDEO
    if "long-video" not in skip and long_video.is_file():
        long_dir = str(link_inputs([long_video], tmp / "lvin"))
        print(f"long video: {LONG_VIDEO}; --split fixed --clip-len 2 --dry-run, --ray-video-chunk-s "
              f"{LONG_CHUNK_S:g} (the Ray runs split it, the local run does not)", flush=True)

    cluster = None
    address = args.ray_address
    if args.cluster:
        cluster = Cluster(env)
        try:
            address = cluster.start()
        except Exception:
            cluster.stop()
            raise
        print(f"cluster: head + 1 raylet on loopback at {address}, 1 CPU each, up in {cluster.start_s:.1f} s, "
              f"idle RSS {cluster.rss() / 2**20:.0f} MB", flush=True)

    def contenders(kind: str, src: list[str], extra: list[str], unit: str, label: str) -> dict[str, tuple]:
        def cmd(runner: str, addr: str | None = None):
            tail = ["--address", addr] if addr else []
            return lambda out: self_cmd(SCRIPT, "_child", kind, "--src", *src, "--out", out, "--runner", runner,
                                        "--per-tar", str(args.images_per_tar), *extra, *tail)
        cs = {"local": (f"{label}: local", cmd("local"), unit),
              "ray": (f"{label}: ray, local runtime started by the run", cmd("ray"), unit)}
        if address:
            where = "2-node loopback cluster" if cluster else address
            cs["cluster"] = (f"{label}: ray, {where}", cmd("ray", address), unit)
        return cs

    groups: dict[str, dict[str, tuple]] = {}
    if "dedup-off" not in skip:
        groups["dedup-off"] = contenders("images", tars, [], "images", "images, dedup off")
    if "dedup-on" not in skip:
        groups["dedup-on"] = contenders("images", tars, ["--dedup"], "images", "images, dedup on")
    if vid_dir:
        groups["videos"] = contenders("videos", [vid_dir], [], "clips", "videos, fixed, dry run")
    if long_dir:
        groups["long-video"] = contenders("long-video", [long_dir], ["--chunk-s", str(LONG_CHUNK_S)], "clips",
                                          "one long video in parts")

    try:
        rows = run_rounds(groups, outs, args.repeat, env, cluster, str(ray_tmp))
    finally:
        if cluster:
            cluster.stop()
        stray = _kill(_pids_naming(str(ray_tmp)))
        if stray:
            print(f"(ended {stray} leftover Ray process(es) of this bench)")

    doc = {"machine": machine_line(), "input": {"images": n_img, "mb": mb, "what": what,
                                                "images_per_tar": args.images_per_tar},
           "cluster_start_s": cluster.start_s if cluster else None}
    titles = {"dedup-off": "Images, dedup off", "dedup-on": "Images, dedup on (two passes)",
              "videos": "Videos, --split fixed --dry-run",
              "long-video": f"One video in parts of {LONG_CHUNK_S:g} s, --split fixed --dry-run"}
    for g, rs in rows.items():
        doc[g] = report(titles[g], rs, "clips" if g in ("videos", "long-video") else "images")
    print(f"\n{load_line()}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
    if args.keep:
        print(f"\n(temp dir kept: {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
