#!/usr/bin/env bash
# GPU timing of the dense systems (Tables 3-4): FCN at Cityscapes' 1024x2048, Faster R-CNN + FPN at 600x1000, each
# MoD backbone against ResNet50. About a minute on one H200 (estimated from its settings). Results: a JSON in $OUT,
# else benchmarks/results/dense/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/dense}
mkdir -p "$out"
source benchmarks/gpu_env.sh
python3 -m timm_mod.dense bench --device cuda --fcn-size 1024 2048 --rounds 10 --min-run-time 0.3 \
  --json "$out/gpu-${card}-dense.json"
