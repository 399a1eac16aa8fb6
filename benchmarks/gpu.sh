#!/usr/bin/env bash
# The GPU measurements in one run, for a machine with one CUDA GPU (about 10 minutes on an
# H100/H200-class card): inference fp32 / bf16 at 800 px, batch 1 and 16, against torchvision;
# the training step fp32 / bf16 at 800 px, batch 16 (images/s); the engine's training step under
# torch.cuda.set_sync_debug_mode("error"). Writes DIR/bench/results.{json,md} and DIR/sync*.json.
#   bash benchmarks/gpu.sh [DIR]          (default benchmarks/gpu; PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
status=0
# 1. the engine's step: no synchronisation in steady state, in bf16 (auto) and fp32
timeout 150 "$py" benchmarks/gpu_sync_check.py --amp auto --out "$out/sync_bf16.json" || status=1
timeout 150 "$py" benchmarks/gpu_sync_check.py --amp off --out "$out/sync_fp32.json" || status=1
# 2. against torchvision: inference and training, fp32 and bf16, same weights and inputs
timeout 360 "$py" -m retinanet benchmark --device cuda --sizes 800 --batch-sizes 1,16 --dtype bf16 \
    --train-size 800 --train-batch 16 --only inference,train --repeats 10 --warmup 3 --no-compile \
    --max-run-seconds 60 --out "$out/bench" || status=1
exit $status
