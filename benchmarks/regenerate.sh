#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: times the paper's models against their baselines on this machine's CPU, then writes the
# report from every JSON in benchmarks/results/ (GPU runs come from benchmarks/gpu*.sh on a GPU machine).
#   1 thread, batch 1 (the paper's setting): every model of BASELINES (paper + beyond), with its bound
#   all cores, batch 1 and 32 (inference and training): the Table 1/2 pairs, or every model with ALL=1;
#   all cores, batch 1: the beyond-the-paper models
# Earlier CPU results are moved to benchmarks/results/old/, never overwritten. About 15 minutes on 2 cores
# (ALL=1: about 45); run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
results=benchmarks/results
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$results/old"
for f in "$results"/cpu-*.json; do
  [ -e "$f" ] && mv "$f" "$results/old/$(basename "$f" .json).$stamp.json"
done
cores=$(nproc)
main=resnet50_mod,resnet75_mod,resnet86_mod,mobilenetv2_mod,mobilenetv2_mod_l
models=$([ "${ALL:-0}" = 1 ] && echo "" || echo "$main")
"$py" -m timm_mod.bench --threads 1 --batch-size 1 --bound --no-train --min-run-time 0.5 \
  --json "$results/cpu-1t-bs1.json"
"$py" -m timm_mod.bench --models "$models" --threads "$cores" --batch-size 1 --bound --no-train --no-gmacs \
  --min-run-time 0.5 --json "$results/cpu-${cores}t-bs1.json"
"$py" -m timm_mod.bench --models "$models" --threads "$cores" --batch-size 32 --bound --min-run-time 0.5 --no-gmacs \
  --json "$results/cpu-${cores}t-bs32.json"
if [ "${ALL:-0}" != 1 ]; then  # the beyond-the-paper models at all cores too (batch 1)
  beyond=convnext_tiny_mod,convnext_nano_mod,resnext50_32x4d_mod,seresnet50_mod,regnety_016_mod,efficientnet_b0_mod
  "$py" -m timm_mod.bench --models "$beyond,mobilenetv3_large_100_mod" --threads "$cores" --batch-size 1 --bound \
    --no-train --no-gmacs --min-run-time 0.5 --json "$results/cpu-${cores}t-bs1-beyond.json"
fi
"$py" -m timm_mod.report "$results"/*.json --header benchmarks/header.md --footer benchmarks/dense.md \
  --out BENCHMARKS.md --plot benchmarks/figures
