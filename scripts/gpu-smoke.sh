#!/usr/bin/env bash
# The gpu tier's smoke profile on one CUDA card, in one command, sized for a first lent card's
# eight minutes. From the repository root, with .venv set up (scripts/setup.sh):
#
#   bash scripts/gpu-smoke.sh
#
# Phases, each timed, in this order:
#   estimate  the cost model's FLOPs and minutes for the profile (sgdwalk sweep --dry-run of
#             its grid; about 6.1 PFLOP, 5 min at 20 TFLOP/s), printed before any device time
#   device    the card (nvidia-smi, torch.cuda.get_device_name), torch, CUDA and cuDNN versions
#   smoke     pytest suites/gpu --runslow --sgdwalk-profile smoke, on CIFAR-10 and MNIST when
#             both are found (SGDWALK_DATA_ROOT or the usual places), else on Fashion-MNIST
#   table     the report as a Markdown table
#   speed     benchmarks/gpu_speed.py's speed phase only (--tier-profile none): images/s of
#             training, segment measurement and forward passes, about 0.6 PFLOP (30 s);
#             GPU_SMOKE_PRECISION=1 adds its precision phase (about 3.7 PFLOP, 3 min more)
#   offload   tests/test_offload.py's side-by-side test on the card: the tracker's vectors beside
#             the model, in pinned host memory and on disk give the same records (seconds)
#
# Everything lands in $GPU_SMOKE_OUT (default results/gpu): smoke-estimate.txt, smoke-device.json,
# smoke-report.json, smoke-log.txt, smoke-table.md, speed.json, speed.txt, offload.txt, and smoke-phases.tsv
# (phase, exit status, wall seconds), written as each phase ends, so that whatever stops the
# script leaves the phases before it; a trap adds the phase it stopped in, as "stopped".
# The smoke and speed phases stop at their time limits (GPU_SMOKE_TIMEOUT_S, default 360;
# GPU_SPEED_TIMEOUT_S, default 60; 0 skips speed; the offload phase at GPU_OFFLOAD_TIMEOUT_S, default 45) with SIGINT, on which pytest still writes
# its report of the tests that ran. GPU_SMOKE_TFLOPS sets the estimate's throughput;
# GPU_SMOKE_PYTHON the interpreter (default .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_SMOKE_PYTHON:-.venv/bin/python}
OUT=${GPU_SMOKE_OUT:-results/gpu}
SMOKE_TIMEOUT_S=${GPU_SMOKE_TIMEOUT_S:-360}
SPEED_TIMEOUT_S=${GPU_SPEED_TIMEOUT_S:-60}
OFFLOAD_TIMEOUT_S=${GPU_OFFLOAD_TIMEOUT_S:-45}
# A process that ignores SIGINT is killed this long after it.
KILL_AFTER_S=15
mkdir -p "$OUT"
PHASES="$OUT/smoke-phases.tsv"
printf 'phase\tstatus\tseconds\n' >"$PHASES"

current=""
started=0
status=0

begin() {
  current=$1
  started=$(date +%s.%N)
  echo "== $1 ($(date -u +%H:%M:%SZ))"
}

end() {  # end PHASE_STATUS: one line of smoke-phases.tsv, as soon as the phase is over
  local seconds
  seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$current" "$1" "$seconds" >>"$PHASES"
  echo "   $current: exit $1 after $seconds s"
  [ "$1" -eq 0 ] || [ "$status" -ne 0 ] || status=$1
  current=""
}

on_exit() {
  # Stopped inside a phase (a signal, the card taken back): its time so far, as "stopped".
  if [ -n "$current" ]; then
    awk -v p="$current" -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%s\tstopped\t%.1f\n", p, b - a }' >>"$PHASES"
  fi
  echo "== phases ($PHASES)"
  column -t -s $'\t' "$PHASES" 2>/dev/null || cat "$PHASES"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------- data
if $PY -c "import sys; from sgdwalk.training.data import find_dataset; sys.exit(0 if find_dataset('cifar10') and find_dataset('mnist') else 1)"; then
  DATA=paper
else
  DATA=fashion-mnist
fi
echo "data: $DATA (paper = CIFAR-10 and MNIST, found; else the fallback on Fashion-MNIST)"

# ----------------------------------------------------------------------- estimate
begin estimate
GRID="$OUT/smoke-grid.json"
TFLOPS_FLAG=()
[ -z "${GPU_SMOKE_TFLOPS:-}" ] || TFLOPS_FLAG=(--tflops "$GPU_SMOKE_TFLOPS")
$PY -m suites.gpu.claims --profile smoke --device cuda --data "$DATA" --grid "$GRID" \
  && $PY -m sgdwalk sweep "$GRID" --out "$OUT/smoke-estimate-cells" --dry-run "${TFLOPS_FLAG[@]}" \
    >"$OUT/smoke-estimate.txt"
rc=$?
tail -n 1 "$OUT/smoke-estimate.txt" 2>/dev/null
end $rc

# ------------------------------------------------------------------------- device
begin device
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/smoke-nvidia-smi.txt"
$PY - "$OUT/smoke-device.json" <<'EOF'
import json, platform, sys
import torch
info = {
    "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    "python": platform.python_version(),
}
with open(sys.argv[1], "w", encoding="utf-8") as file:
    json.dump(info, file, indent=2)
print(info)
sys.exit(0 if info["device_name"] else 1)
EOF
device_rc=$?
end $device_rc
if [ "$device_rc" -ne 0 ]; then
  # No card (or a driver too old for this torch): the tier would stop at collection anyway;
  # say so once and leave the estimate and the device files.
  echo "gpu-smoke: no CUDA device here (torch.cuda.is_available() is False): nothing to run" >&2
  exit "$status"
fi

# -------------------------------------------------------------------------- smoke
begin smoke
timeout -s INT -k "$KILL_AFTER_S" "$SMOKE_TIMEOUT_S" \
  $PY -m pytest suites/gpu --runslow --sgdwalk-profile smoke --sgdwalk-gpu-data "$DATA" \
  --sgdwalk-report "$OUT/smoke-report.json" --durations=0 2>&1 | tee "$OUT/smoke-log.txt"
end "${PIPESTATUS[0]}"

begin table
$PY -m sgdwalk claims table "$OUT/smoke-report.json" --output "$OUT/smoke-table.md"
end $?

# -------------------------------------------------------------------------- speed
if [ "$SPEED_TIMEOUT_S" -gt 0 ]; then
  begin speed
  PRECISION_FLAG=()
  [ "${GPU_SMOKE_PRECISION:-0}" = 1 ] && PRECISION_FLAG=(--precision)
  timeout -s INT -k "$KILL_AFTER_S" "$SPEED_TIMEOUT_S" \
    $PY benchmarks/gpu_speed.py --device cuda --tier-profile none "${PRECISION_FLAG[@]}" --out "$OUT/speed.json" \
    2>&1 | tee "$OUT/speed.txt"
  end "${PIPESTATUS[0]}"
fi

# ------------------------------------------------------------------------ offload
# "host" on a GPU (pinned memory, blocks moved to the device) has run nowhere else: a few
# seconds, and the only check of it on a card.
begin offload
timeout -s INT -k "$KILL_AFTER_S" "$OFFLOAD_TIMEOUT_S" \
  $PY -m pytest -p no:cacheprovider tests/test_offload.py -k "three_stores and cuda" 2>&1 | tee "$OUT/offload.txt"
end "${PIPESTATUS[0]}"
exit $status
