"""Shared helpers of scripts/bench_images.py and scripts/bench_videos.py.

Every contender runs in its own child process (``run_child``): the parent measures the child's
wall time, its CPU time (user+sys of the child and everything it waited for, from ``os.wait4``),
its own peak RSS (``ru_maxrss`` from ``os.wait4``) and the peak of the summed RSS of the child's
whole process tree (sampled from /proc every 50 ms, so Ray/ffmpeg helper processes count too).
The child prints one line ``BENCH_RESULT {json}`` with what it measured itself (the run's wall
time without interpreter start-up and imports, the items it produced, the bytes it read).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
RESULT_TAG = "BENCH_RESULT "


def emit_result(**kw: Any) -> None:
    """Child side: report what the run measured (one line on stdout)."""
    print(RESULT_TAG + json.dumps(kw, default=str), flush=True)


# --------------------------------------------------------------------------------------------
# process-tree RSS sampling (no psutil needed: /proc is enough on Linux)


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
            # the command name is in parentheses and may contain spaces: split after the last ')'
            ppid = int(s[s.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss(pid: int) -> int:
    kids = _children_map()
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss_bytes(p)
        todo.extend(kids.get(p, ()))
    return total


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --------------------------------------------------------------------------------------------
# running one contender


@dataclass
class Run:
    ok: bool
    wall_s: float  # the run as the child timed it (no start-up); process wall when not reported
    proc_wall_s: float  # the whole child process, start-up and imports included
    cpu_s: float  # user + sys of the child and its waited-for descendants
    maxrss_mb: float  # the child's own peak RSS
    tree_rss_mb: float  # peak of the summed RSS of the child's process tree
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def run_child(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600.0,
              cwd: str | None = None) -> Run:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)
    sampler = _TreeSampler(p.pid)
    sampler.start()
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [threading.Thread(target=lambda: out_chunks.append(p.stdout.read()), daemon=True),
               threading.Thread(target=lambda: err_chunks.append(p.stderr.read()), daemon=True)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    status = ru = None
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            err_chunks.append(f"\ntimed out after {timeout:.0f} s")
            break
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(status)
    proc_wall = time.perf_counter() - t0
    sampler.stop()
    for r in readers:
        r.join(5)
    out, err = "".join(out_chunks), "".join(err_chunks)
    result: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
    ok = p.returncode == 0 and bool(result) and not result.get("error")
    error = ""
    if not ok:
        error = result.get("error") or _tail(err) or _tail(out) or f"exit code {p.returncode}"
    return Run(ok=ok, wall_s=float(result.get("wall_s", proc_wall)), proc_wall_s=proc_wall,
               cpu_s=ru.ru_utime + ru.ru_stime, maxrss_mb=ru.ru_maxrss / 1024.0,
               tree_rss_mb=max(sampler.peak, ru.ru_maxrss * 1024) / 2**20,
               result=result, error=error)


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-1200:]


# --------------------------------------------------------------------------------------------
# repeats, medians and tables


@dataclass
class Row:
    name: str
    runs: list[Run]
    unit: str = "items"
    note: str = ""
    skipped: str = ""

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def med(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.good]
        return statistics.median(vals) if vals else None

    def med_result(self, key: str) -> float | None:
        vals = [r.result[key] for r in self.good if r.result.get(key) is not None]
        return statistics.median(vals) if vals else None

    def rate(self, key: str = "items") -> float | None:
        """Median over runs of (result[key] / run wall)."""
        vals = [r.result[key] / r.wall_s for r in self.good if r.result.get(key) is not None and r.wall_s > 0]
        return statistics.median(vals) if vals else None

    def spread(self, key: str = "items") -> str:
        vals = sorted(r.result[key] / r.wall_s for r in self.good if r.result.get(key) and r.wall_s > 0)
        if len(vals) < 2:
            return ""
        return f"{vals[0]:.3g}-{vals[-1]:.3g}"


def repeat(name: str, cmd: list[str], n: int, unit: str = "items", env=None, timeout: float = 3600.0,
           note: str = "", verbose: bool = True, first: int = 1) -> Row:
    runs = []
    for i in range(first - 1, first - 1 + n):
        r = run_child(cmd, env=env, timeout=timeout)
        runs.append(r)
        if verbose:
            if r.ok:
                items = r.result.get("items")
                print(f"  {name} #{i + 1}: {r.wall_s:.2f} s run, {r.proc_wall_s:.2f} s process, "
                      f"{items} {unit}, cpu {r.cpu_s:.1f} s, tree RSS {r.tree_rss_mb:.0f} MB", flush=True)
            else:
                print(f"  {name} #{i + 1}: FAILED: {r.error}", flush=True)
        if not r.ok:
            break  # a contender that fails once will fail again: do not burn the time budget
    return Row(name, runs, unit=unit, note=note)


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def table(rows: list[Row], unit: str, extra_cols: list[tuple[str, Any]] | None = None) -> str:
    """Markdown table of medians. extra_cols: (header, fn(row) -> str)."""
    extra_cols = extra_cols or []
    head = [
        "contender", f"{unit}/s", "MB/s in", "run wall s", "process wall s", f"CPU-s per {unit[:-1] if unit.endswith('s') else unit}",
        "peak RSS MB (tree)", "runs", *[h for h, _ in extra_cols],
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row.skipped or not row.good:
            why = row.skipped or (row.runs[-1].error if row.runs else "not run")
            lines.append(f"| {row.name} | skipped: {why} |" + " |" * (len(head) - 2))
            continue
        items = row.med_result("items")
        mb = row.rate("bytes_in")
        cpu = [r.cpu_s / r.result["items"] for r in row.good if r.result.get("items")]
        cells = [
            row.name,
            fmt(row.rate("items")) + (f" ({row.spread('items')})" if row.spread("items") else ""),
            fmt(mb / 1e6 if mb is not None else None),
            fmt(row.med("wall_s")),
            fmt(row.med("proc_wall_s")),
            fmt(statistics.median(cpu) if cpu else None),
            fmt(row.med("tree_rss_mb")),
            f"{len(row.good)} x {int(items) if items is not None else '-'}",
            *[fn(row) for _, fn in extra_cols],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def machine_line() -> str:
    import platform

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
        load_s = f"load avg {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    except OSError:
        load_s = ""
    return (f"{time.strftime('%Y-%m-%d %H:%M')} | {platform.node()} | {os.cpu_count()} CPUs ({cpu}) | "
            f"Python {platform.python_version()} | {load_s}")


def default_curator_python() -> str | None:
    p = ROOT / ".venv-bench" / "bin" / "python"
    return str(p) if p.exists() else None


def self_cmd(script: Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


class Outs:
    """A fresh output dir per run (contenders must never find a previous run's files)."""

    def __init__(self, base: Path):
        self.base, self.n = base, 0

    def __call__(self, name: str) -> str:
        self.n += 1
        p = self.base / f"{name}-{self.n}"
        shutil.rmtree(p, ignore_errors=True)
        return str(p)


def _fresh_run(name, make_cmd, outs: Outs, first: int, **kw) -> Row:
    """One run in a fresh output dir, deleted afterwards (disk stays small)."""
    out = outs(name.split()[0])
    row = repeat(name, make_cmd(out), 1, first=first, **kw)
    shutil.rmtree(out, ignore_errors=True)
    Path(out + ".stats.json").unlink(missing_ok=True)
    # Flush this run's dirty pages and the deletion before the next run starts: otherwise the
    # next contender pays for them (kernel write-back on its cores, and ext4 "discard" of the
    # freed blocks inside its first fsync: 0.2-0.5 s seen per fsync).
    os.sync()
    return row


def repeat_fresh(name, make_cmd, outs: Outs, n: int, **kw) -> Row:
    """Like repeat(), but each run gets a fresh output dir (deleted afterwards: disk stays small)."""
    runs = []
    for i in range(n):
        runs += _fresh_run(name, make_cmd, outs, i + 1, **kw).runs
        if not runs[-1].ok:
            break
    return Row(name, runs, unit=kw.get("unit", "items"))


def repeat_fresh_interleaved(specs: dict[str, tuple[str, Any, dict]], outs: Outs, n: int) -> dict[str, Row]:
    """repeat_fresh for several contenders taking turns (run 1 of each, then run 2 of each...):
    this VM changes speed by ~30% over minutes, and in blocks that drift lands on whichever
    contender ran in the slow minutes. ``specs``: key -> (name, make_cmd, repeat kwargs)."""
    runs: dict[str, list] = {key: [] for key in specs}
    for i in range(n):
        for key, (name, make_cmd, kw) in specs.items():
            if runs[key] and not runs[key][-1].ok:
                continue  # a contender that fails once will fail again
            runs[key] += _fresh_run(name, make_cmd, outs, i + 1, **kw).runs
    return {key: Row(name, runs[key], unit=kw.get("unit", "items")) for key, (name, _, kw) in specs.items()}
