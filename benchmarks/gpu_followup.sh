#!/usr/bin/env bash
# The paper's main pairs on one GPU, AMP and channels_last: eager at batch 256 with the training step, and CUDA graphs
# (torch.compile mode reduce-overhead) at batch 1, where eager runs are bound by host overhead. About 5 minutes on one
# H200 (estimated from its settings). Results: a JSON and a log per step in $OUT, else benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
source benchmarks/gpu_env.sh
main=resnet50_mod,resnet75_mod,resnet86_mod,resnet101_mod,resnet152_mod,resnet18_mod,resnet34_mod
main=$main,mobilenetv2_mod,mobilenetv2_mod_l
python3 -m timm_mod.tools.bench --device cuda --models "$main" --batch-size 256 --amp --channels-last --no-gmacs \
  --rounds 4 --min-run-time 0.1 --json "$out/gpu-${card}-eager2-bs256.json" >"$out/gpu-${card}-eager2-bs256.log"
tail -14 "$out/gpu-${card}-eager2-bs256.log"
python3 -m timm_mod.tools.bench --device cuda --models resnet50_mod,mobilenetv2_mod --batch-size 1 --amp \
  --channels-last --compile --compile-mode reduce-overhead --no-train --no-gmacs --rounds 4 --min-run-time 0.1 \
  --json "$out/gpu-${card}-cudagraphs-bs1.json" >"$out/gpu-${card}-cudagraphs-bs1.log" 2>&1
tail -8 "$out/gpu-${card}-cudagraphs-bs1.log"
