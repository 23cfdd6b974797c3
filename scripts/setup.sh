#!/usr/bin/env bash
# Set up sgdwalk on a fresh machine: Fashion-MNIST from Debian, a virtual environment in
# .venv, and the package (editable) with its test and cluster extras and the integrations'
# extras (tensorboard, mlflow, lightning, transformers: CI runs their round-trip tests), pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null 2>&1; then
  # The default walk and the real-data tier read Fashion-MNIST from Debian's package.
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq dataset-fashion-mnist
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# PIP_CONSTRAINT pins torch/torchvision to a pair that imports together (see constraints.txt).
PIP_CONSTRAINT="$PWD/constraints.txt" .venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -e '.[test,cluster,tensorboard,mlflow,lightning,transformers]'
.venv/bin/python -c "import sgdwalk, torch, torchvision; print(f'sgdwalk {sgdwalk.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}')"
