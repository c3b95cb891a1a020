#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: times every paper model against its baseline on this machine's CPU (the paper's
# setting, 1 thread batch 1, then all cores at batch 1 and 32), then writes the report from every JSON in
# benchmarks/results/ (GPU runs come from benchmarks/gpu.sh on a GPU machine and are kept there).
# Earlier CPU results are moved to benchmarks/results/old/, never overwritten. Takes about 30 minutes on 2 cores.
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
# inference at batch 1 (the paper's setting first), then inference and training at batch 32
"$py" -m timm_mod.bench --threads 1 --batch-size 1 --bound --no-train --json "$results/cpu-1t-bs1.json"
"$py" -m timm_mod.bench --threads "$cores" --batch-size 1 --bound --no-train --no-gmacs \
  --json "$results/cpu-${cores}t-bs1.json"
"$py" -m timm_mod.bench --threads "$cores" --batch-size 32 --bound --min-run-time 0.5 --no-gmacs \
  --json "$results/cpu-${cores}t-bs32.json"
"$py" -m timm_mod.report "$results"/*.json --header benchmarks/header.md --footer benchmarks/dense.md \
  --out BENCHMARKS.md --plot benchmarks/figures
