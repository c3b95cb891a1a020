#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: times the paper's models against their baselines on this machine's CPU, then writes the
# report from every JSON in benchmarks/results/ (GPU runs come from benchmarks/gpu*.sh on a GPU machine).
#   1 thread, batch 1 (the paper's setting): every model of BASELINES (paper + beyond), with its bound
#   all cores, batch 1 and 32 (inference and training): the Table 1/2 pairs, or every model with ALL=1;
#   all cores, batch 1: the beyond-the-paper models
#   where the MoD blocks' time goes (python -m timm_mod.tools.breakdown): resnet50/86_mod, mobilenetv2_mod
# A baseline and its models are timed in turn, round after round (--rounds), so load that comes and goes hits all of
# them alike. glibc is told to keep freed memory (GLIBC_TUNABLES below, recorded in every row): by default it returns
# batch-32 feature maps to the kernel after each use and page-faults them in again on the next forward, which was
# ~45 % of a batch-32 ResNet50 forward here and most of its spread (benchmarks/header.md has the command). Baselines and MoD models run under the same setting.
# Earlier CPU results are moved to benchmarks/results/old/, never overwritten. About 20 minutes on 2 cores
# (ALL=1: about 50); run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736}
results=benchmarks/results
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$results/old"
cores=$(nproc)
main=resnet50_mod,resnet75_mod,resnet86_mod,mobilenetv2_mod,mobilenetv2_mod_l
models=$([ "${ALL:-0}" = 1 ] && echo "" || echo "$main")
old_results=$([ "${BREAKDOWN_ONLY:-0}" = 1 ] || echo "$results"/cpu-*.json)
for f in $old_results "$results"/breakdown-cpu.md; do
  [ -e "$f" ] && mv "$f" "$results/old/$(basename "$f").$stamp"
done
if [ "${BREAKDOWN_ONLY:-0}" != 1 ]; then  # BREAKDOWN_ONLY=1 keeps the bench results and redoes the breakdown
"$py" -m timm_mod.tools.bench --threads 1 --batch-size 1 --bound --no-train --rounds 30 --min-run-time 0 \
  --json "$results/cpu-1t-bs1.json"
"$py" -m timm_mod.tools.bench --models "$models" --threads "$cores" --batch-size 1 --bound --no-train --no-gmacs \
  --rounds 30 --min-run-time 0 --json "$results/cpu-${cores}t-bs1.json"
"$py" -m timm_mod.tools.bench --models "$models" --threads "$cores" --batch-size 32 --bound --rounds 8 --min-run-time 0 --no-gmacs \
  --json "$results/cpu-${cores}t-bs32.json"
if [ "${ALL:-0}" != 1 ]; then  # the beyond-the-paper models at all cores too (batch 1)
  beyond=convnext_tiny_mod,convnext_nano_mod,resnext50_32x4d_mod,seresnet50_mod,regnety_016_mod,efficientnet_b0_mod
  "$py" -m timm_mod.tools.bench --models "$beyond,mobilenetv3_large_100_mod" --threads "$cores" --batch-size 1 --bound \
    --no-train --no-gmacs --rounds 30 --min-run-time 0 --json "$results/cpu-${cores}t-bs1-beyond.json"
fi
fi
{
  echo "## Where the MoD blocks' time goes (CPU)"
  echo
  echo "\`python -m timm_mod.tools.breakdown\`: forward hooks time, while the model runs whole, each MoD block's selector"
  echo "(\`route\`: pooling, scoring MLP, sigmoid, top-k), its k-channel block and the rest (gather + fuse), and the"
  echo "model's forward. Hooks add a few microseconds per block. malloc: \`GLIBC_TUNABLES=$GLIBC_TUNABLES\`."
  echo
  "$py" -m timm_mod.tools.breakdown --models resnet50_mod,resnet86_mod,mobilenetv2_mod --threads "1,$cores" --iters 50
  "$py" -m timm_mod.tools.breakdown --models resnet50_mod --threads "$cores" --batch-size 32 --iters 6
} > "$results/breakdown-cpu.md.partial"
mv "$results/breakdown-cpu.md.partial" "$results/breakdown-cpu.md"  # never a half-written section
"$py" -m timm_mod.tools.report "$results"/*.json --header benchmarks/header.md --footer benchmarks/gpu.md \
  --footer "$results/breakdown-cpu.md" --footer benchmarks/dense.md \
  --out BENCHMARKS.md --plot benchmarks/figures
