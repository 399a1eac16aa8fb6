#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the package with its test dependencies, once.
# Re-runs are instant unless pyproject.toml changed. Usage: bash scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml
  .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
  .venv/bin/python -c "import torch, torchvision, retinanet" # fail loudly if the install did not work
  rm -f .venv/.installed-*
  touch "$stamp"
fi
