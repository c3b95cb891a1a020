#!/usr/bin/env bash
# GPU timing of the dense systems (Tables 3-4): FCN at Cityscapes' 1024x2048, Faster R-CNN + FPN at 600x1000.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/dense}
mkdir -p "$out"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
python3 -m timm_mod.dense bench --device cuda --fcn-size 1024 2048 --rounds 10 --min-run-time 0.3 \
  --json "$out/gpu-${card}-dense.json"
