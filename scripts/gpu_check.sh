#!/usr/bin/env bash
# The GPU path on a GPU machine, in one command (under 8 minutes):
#   bash scripts/gpu_check.sh
# 1. stops at once, in one line, when there is no NVIDIA GPU/driver;
# 2. creates (or reuses) a venv, $VENV (default .venv-gpu, with the system's site-packages so a
#    preinstalled CuPy/torch is reused) and installs .[gpu,test,samples] into it (offline
#    machines: WHEELHOUSE=/dir/of/wheels installs from there with --no-index; SKIP_INSTALL=1
#    uses the venv as it is);
# 3. prints the GPU (nvidia-smi), runs the gpu pytest tier (tests/test_gpu_tier.py) and a short
#    bench (scripts/gpu_bench.py), and prints one table. Exit status: the tier's.
# Media: ../shared/media beside the repo when present (the tier needs it; without it the tier
# skips and the bench uses built-in samples).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
fail() { echo "gpu_check: $*" >&2; exit 2; }
step() { echo "== [$((SECONDS - T0)) s] $*"; }

command -v nvidia-smi >/dev/null 2>&1 || fail "no GPU: nvidia-smi not found (no NVIDIA driver on this machine)"
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i 0 2>&1) \
  || fail "no GPU: nvidia-smi failed: ${GPU%%$'\n'*}"
[ -n "$GPU" ] || fail "no GPU: nvidia-smi lists none"
step "GPU: $GPU"
nvidia-smi

VENV=${VENV:-.venv-gpu}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv --system-site-packages "$VENV" || fail "could not create a venv with $PY"
fi
if [ -z "${SKIP_INSTALL:-}" ]; then  # SKIP_INSTALL=1: the venv already holds the stack
  step "installing .[gpu,test,samples]"
  PIP_ARGS=(-q -e ".[gpu,test,samples]")
  [ -n "${WHEELHOUSE:-}" ] && PIP_ARGS=(--no-index --find-links "$WHEELHOUSE" "${PIP_ARGS[@]}")
  timeout 240 "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" \
    || fail "pip could not install .[gpu,test,samples] (no network? set WHEELHOUSE to a folder of wheels)"
fi
VPY="$VENV/bin/python"
"$VPY" - <<'PY' || fail "the GPU stack does not start (see the line above)"
import sys
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
    assert int(cupy.arange(4).sum()) == 6
    import PyNvVideoCodec  # noqa: F401
    import nvidia.dali  # noqa: F401
except Exception as e:
    print(f"gpu_check: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", file=sys.stderr)
    sys.exit(1)
print(f"cupy {cupy.__version__}, {n} device(s)")
PY

MEDIA=""
[ -d ../shared/media ] && MEDIA=$(cd ../shared/media && pwd)
OUT=$(mktemp -d)
step "gpu tier (tests/test_gpu_tier.py)"
timeout 300 "$VPY" -m pytest tests/test_gpu_tier.py -q -rs -p no:cacheprovider --junitxml="$OUT/tier.xml" \
  2>&1 | tee "$OUT/tier.log" | tail -40
TIER_RC=${PIPESTATUS[0]}
step "bench (scripts/gpu_bench.py)"
REMAIN=$(( 470 - (SECONDS - T0) )); [ "$REMAIN" -lt 60 ] && REMAIN=60
timeout "$REMAIN" "$VPY" scripts/gpu_bench.py ${MEDIA:+--media "$MEDIA"} --seconds 6 >"$OUT/bench.json" 2>"$OUT/bench.err" \
  || { echo "bench failed or timed out:"; tail -5 "$OUT/bench.err"; }

"$VPY" - "$OUT" "$GPU" "$TIER_RC" "$((SECONDS - T0))" <<'PY'
import json, sys, xml.etree.ElementTree as ET
out, gpu, rc, wall = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [("GPU", gpu)]
try:
    s = ET.parse(f"{out}/tier.xml").getroot()
    s = s if s.tag == "testsuite" else s.find("testsuite")
    t, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
    rows.append(("gpu tier", f"{t - f - e - k} passed, {f} failed, {e} errors, {k} skipped (rc {rc})"))
except Exception as ex:
    rows.append(("gpu tier", f"no report ({ex}); rc {rc}"))
try:
    b = json.load(open(f"{out}/bench.json"))
except Exception:
    b = {}
rows.append(("bench media", b.get("media", "-")))
rows.append(("images/s (DALI mixed + CuPy scores, batch 64)", b.get("images_per_s", b.get("images_error", "-"))))
rows.append(("video", b.get("video", b.get("video_error", "-"))))
for k, v in (b.get("video_fps") or {}).items():
    rows.append((f"video fps, {k} NVDEC session(s) (decode+shots+motion)", v))
rows.append(("NVDEC engines", b.get("nvdec_engines", "-")))
rows.append(("GPU memory peak (nvidia-smi, MiB)", b.get("gpu_mem_peak_mib", "-")))
rows.append(("CuPy pool held (MiB)", b.get("cupy_pool_held_mib", "-")))
rows.append(("wall (s)", wall))
w = max(len(r[0]) for r in rows)
print("\n| what | value |\n|---|---|")
for a, v in rows:
    print(f"| {a} | {v} |")
PY
exit "$TIER_RC"
