#!/usr/bin/env bash
# MoD models against their baselines on one GPU, in order of priority:
#   1. parity: every fast path of the MoD block against the plain mechanism, on the GPU (benchmarks/parity.py)
#   2. eager, AMP + channels_last, the paper's models of Tables 1-2 with their baselines and bounds
#      (benchmarks/matrix.py, one process): inference and training step (forward, backward, SGD) at batch 256 and 32,
#      inference at batch 64, inference at batch 1
#   3. one MoD block against the standard block beside it, per stage, inference and forward + backward, with aten op
#      counts (benchmarks/blockbench.py): resnet50_mod and mobilenetv2_mod at batch 1, 32, 256; then forward +
#      backward at batch 32 and 256 again with cudnn.benchmark on, as timm's train.py runs
#   4. torch.compile, AMP + channels_last, models and baselines (no bounds: each compile costs tens of seconds):
#      inference at batch 256, CUDA graphs (mode reduce-overhead) at batch 1, inference at batch 64
# It ends within about 8 minutes on one H200, environment included: what would not end within LIMIT_S seconds of the
# start (default 420; the rest is for a unit that runs past its estimate) is skipped and named in the log, which is
# why compiled units go last. Results go to $OUT, else benchmarks/results: the bench rows as
# gpu-<card>-<date>-{eager,compile}.json (where the report reads them), parity, block rows and the log in
# gpu-matrix-<card>-<date>/. STEPS="parity eager blocks compile" picks steps, MODELS and BLOCK_MODELS the models.
# SMOKE=1 runs every step on the CPU (1 thread) as a dry run: 32 px, tiny batches, one round, torch.compile disabled
# (TORCH_COMPILE_DISABLE=1: the calls run eagerly), parity without its compiled paths; about 2 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${LIMIT_S:-420}
steps=" ${STEPS:-parity eager blocks compile} "
models=${MODELS:-resnet50_mod,resnet75_mod,resnet86_mod,mobilenetv2_mod,mobilenetv2_mod_l}
block_models=${BLOCK_MODELS:-resnet50_mod,mobilenetv2_mod}
stamp=$(date -u +%Y%m%d-%H%M%S)
if [ "${SMOKE:-0}" = 1 ]; then
  dev=cpu card=cpu-smoke py=${PYTHON:-.venv/bin/python}
  out=${OUT:-$(mktemp -d)}
  b1=1 b32=2 b64=3 b256=4 rounds=1 min_run_time=0 block_rounds=1 block_min_run_time=0
  common=(--img-size 32 --channels-last)  # no --amp: bfloat16 on a CPU is another path, and slow
  block_common=(--img-size 64 --channels-last)  # layer4 at 2 x 2: a training batch norm needs 2 values at batch 1
  parity_flags=(--no-compile)
  export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1  # 2 threads on a busy 2-core machine spin against each other
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the scripts in benchmarks/ import timm_mod from this checkout
else
  dev=cuda py=${PYTHON:-python3}
  out=${OUT:-benchmarks/results}
  source benchmarks/gpu_env.sh  # sets $card, PYTHONPATH (the carried timm wheel), PYTHONUNBUFFERED
  b1=1 b32=32 b64=64 b256=256 rounds=3 min_run_time=0.05 block_rounds=2 block_min_run_time=0.03
  common=(--amp --channels-last)
  block_common=("${common[@]}")
  parity_flags=()
fi
prefix="gpu-${card}-${stamp}"
extra="$out/gpu-matrix-${card}-${stamp}"
mkdir -p "$extra"
log="$extra/$prefix.log"
exec > >(tee -a "$log") 2>&1
left() { echo $((limit - SECONDS)); }
step_done() { echo "[gpu_matrix] $1: $(($SECONDS - $2)) s (script at ${SECONDS} s of ${limit})"; }

echo "[gpu_matrix] $(date -u) device $dev, models $models, blocks $block_models, steps${steps}, limit ${limit} s"
echo "[gpu_matrix] batches $b1/$b32/$b64/$b256, rounds $rounds x ${min_run_time} s, ${common[*]}"
echo "[gpu_matrix] blocks: rounds $block_rounds x ${block_min_run_time} s, ${block_common[*]}"
if [ "$dev" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
fi
"$py" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available())"

parity=skipped
if [[ $steps == *" parity "* ]]; then
  t=$SECONDS
  if "$py" benchmarks/parity.py --device "$dev" "${parity_flags[@]}" --json "$extra/$prefix-parity.json"; then
    parity=passed
  else
    parity=FAILED
  fi
  step_done "parity ($parity)" $t
fi

if [[ $steps == *" eager "* ]]; then
  t=$SECONDS
  budget=$(($(left) - 60))
  if [ "$budget" -gt 0 ]; then
    "$py" benchmarks/matrix.py --device "$dev" --models "$models" "${common[@]}" --rounds "$rounds" \
      --min-run-time "$min_run_time" --budget "$budget" --json "$out/$prefix-eager.json" \
      --group "eager bs=$b256,$b32 train bound" --group "eager bs=$b64 bound" --group "eager bs=$b1 bound"
  else
    echo "[gpu_matrix] eager: SKIPPED, $(left) s left"
  fi
  step_done eager $t
fi

if [[ $steps == *" blocks "* ]]; then
  t=$SECONDS
  if [ "$(left)" -gt 45 ]; then
    "$py" benchmarks/blockbench.py --device "$dev" --model "$block_models" --batch-size "$b1,$b32,$b256" \
      "${block_common[@]}" --rounds "$block_rounds" --min-run-time "$block_min_run_time" \
      --json "$extra/$prefix-blocks.json" --out "$extra/$prefix-blocks.md"
  else
    echo "[gpu_matrix] blocks: SKIPPED, $(left) s left"
  fi
  if [ "$(left)" -gt 30 ]; then  # training as timm's train.py runs it: cuDNN picks its kernels by timing them
    "$py" benchmarks/blockbench.py --device "$dev" --model "$block_models" --batch-size "$b32,$b256" --mode train \
      --cudnn-benchmark "${block_common[@]}" --rounds "$block_rounds" --min-run-time "$block_min_run_time" \
      --json "$extra/$prefix-blocks-cudnn-benchmark.json"
  fi
  step_done blocks $t
fi

if [[ $steps == *" compile "* ]]; then
  t=$SECONDS
  if [ "${SMOKE:-0}" = 1 ]; then
    export TORCH_COMPILE_DISABLE=1
  fi
  budget=$(($(left) - 5))
  if [ "$budget" -gt 0 ]; then
    "$py" benchmarks/matrix.py --device "$dev" --models "$models" "${common[@]}" --rounds "$rounds" \
      --min-run-time "$min_run_time" --budget "$budget" --json "$out/$prefix-compile.json" \
      --group "compile bs=$b256" --group "compile:reduce-overhead bs=$b1" --group "compile bs=$b64"
  else
    echo "[gpu_matrix] compile: SKIPPED, $(left) s left"
  fi
  step_done compile $t
fi

echo "[gpu_matrix] done in ${SECONDS} s; parity $parity; results:"
ls -l "$out"/"$prefix"-*.json "$extra" || true  # a step left out leaves no file
