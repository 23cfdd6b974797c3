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

echo "== quick tier: unit tests and synthetic claims (S1-S7)"
$PY -m pytest tests suites/quick --sgdwalk-report "$REPORTS/quick.json"

echo "== slow unit tests (end-to-end CLI runs, sweeps with worker processes)"
$PY -m pytest tests --runslow -m slow

echo "== real tier: claims C1-C11 and X1 on Fashion-MNIST (CPU)"
$PY -m pytest suites/real --runslow --sgdwalk-report "$REPORTS/real.json"

echo "== gpu tier, tiny CPU profile (keeps the GPU suite from rotting)"
$PY -m pytest suites/gpu --runslow --sgdwalk-device cpu --sgdwalk-profile tiny --sgdwalk-report "$REPORTS/gpu-tiny.json"

echo "== gpu tier, nets CPU profile: C1-C7 on VGG-11 and ResNet-56 at a quarter width, Fashion-MNIST padded to 32"
$PY -m pytest suites/gpu --runslow --sgdwalk-device cpu --sgdwalk-profile nets --sgdwalk-report "$REPORTS/nets.json"

echo "== claims against the committed baselines"
status=0
for tier in quick real gpu-tiny nets; do
  .venv/bin/sgdwalk claims compare "suites/baselines/$tier.json" "$REPORTS/$tier.json" || status=1
done
exit $status
