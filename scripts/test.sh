#!/usr/bin/env bash
# Run every CPU tier with its claims report, then compare the reports with the committed
# baselines: a claim that passed in the baseline and fails now fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REPORTS=${SGDWALK_REPORTS:-reports}
mkdir -p "$REPORTS"

echo "== static checks: the package's layers import only downward, lint, types"
.venv/bin/lint-imports
# Both read their settings and scope (the whole tree) from pyproject.toml.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

# The quick tier first, alone, on both cores (pytest-xdist: a worker per core), so that a
# broken unit fails the script in about a minute.
echo "== quick tier: unit tests and synthetic claims (S1-S9), on two cores"
$PY -m pytest tests suites/quick -n 2 --sgdwalk-report "$REPORTS/quick.json"

# The nets profile runs beside all the others: each walk runs on one CPU thread (the runs'
# cpu_threads), so on two cores the script takes about the longer of it and the rest, not
# their sum (41 minutes in all in the clean-clone run of 336823a). Its output is shown when
# it has finished; it is stopped if the script ends early. It keeps no pytest cache, which
# the runs in front would write at the same time.
echo "== gpu tier, nets CPU profile: C1-C7 on VGG-11 and ResNet-56 at a quarter width, Fashion-MNIST padded to 32 (started)"
$PY -m pytest -p no:cacheprovider suites/gpu --runslow --sgdwalk-device cpu --sgdwalk-profile nets --sgdwalk-report "$REPORTS/nets.json" \
  >"$REPORTS/nets.log" 2>&1 &
nets_pid=$!
trap 'kill "$nets_pid" 2>/dev/null || true' EXIT

echo "== slow unit tests (end-to-end CLI runs, sweeps with worker processes)"
$PY -m pytest tests --runslow -m slow

# On two pytest-xdist workers beside the nets profile (three walks on two cores until it ends):
# the tier is the longest piece of work here, and one worker alone would leave the second core
# idle once the nets profile is done. The workers share their runs (sgdwalk_shared_folder)
# and take the heaviest checks first, so neither ends long after the other.
echo "== real tier: claims C1-C11, X1 and X3 on Fashion-MNIST (CPU), two workers"
$PY -m pytest suites/real --runslow -n 2 --sgdwalk-report "$REPORTS/real.json"

# On two workers too, so the gpu tier's shared runs (gpu_run_cache) are exercised in CI.
echo "== gpu tier, tiny CPU profile (keeps the GPU suite from rotting), two workers"
$PY -m pytest suites/gpu --runslow --sgdwalk-device cpu --sgdwalk-profile tiny -n 2 --sgdwalk-report "$REPORTS/gpu-tiny.json"

echo "== gpu tier, nets CPU profile: its output, now that it has finished"
nets_status=0
wait "$nets_pid" || nets_status=$?
cat "$REPORTS/nets.log"
if [ "$nets_status" -ne 0 ]; then
  echo "the nets profile failed (exit $nets_status)"
  exit "$nets_status"
fi

echo "== claims against the committed baselines"
status=0
for tier in quick real gpu-tiny nets; do
  .venv/bin/sgdwalk claims compare "suites/baselines/$tier.json" "$REPORTS/$tier.json" || status=1
done
exit $status
