#!/usr/bin/env bash
# INT8 against float32 in ONNX Runtime and OpenVINO: the paper models (resnet50/75/86_mod, mobilenetv2_mod(_l)),
# their baselines and their bounds, each quantized by the runtime's own post-training quantization (calibrated on 8
# random images; once with everything quantized, once with every MoD block's selector kept in float32) and in float32,
# timed in turn (1 thread, batch 1 and 32), then the table of docs/deployment.md's INT8 speed section. About 40
# minutes on 2 cores; run it on an otherwise idle machine. `./benchmarks/int8_speed.sh int8` runs only the INT8 runs
# with everything quantized (about 12 minutes) and keeps the other files. Results go to
# benchmarks/results/int8/ (earlier ones are moved to benchmarks/results/old/, never overwritten).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736}
results=benchmarks/results/int8
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$results" benchmarks/results/old
variants=${1:-int8 int8-selector fp32}
for variant in $variants; do
  for f in "$results"/cpu-*-"$variant"-1t-*.json; do
    [ -e "$f" ] && mv "$f" "benchmarks/results/old/$(basename "$f").$stamp"
  done
done
models=resnet50_mod,resnet75_mod,resnet86_mod,mobilenetv2_mod,mobilenetv2_mod_l
bench() { "$py" -m timm_mod.tools.bench --models "$models" --threads 1 --bound --no-train --no-gmacs --min-run-time 0 \
  --exporter torchscript "$@"; }
for runtime in onnxruntime openvino; do
  for variant in $variants; do
    case $variant in
      int8) args=(--precision int8 --keep none) ;;
      int8-selector) args=(--precision int8 --keep selector) ;;
      fp32) args=(--precision fp32) ;;
      *) echo "unknown variant $variant (int8, int8-selector or fp32)" >&2; exit 2 ;;
    esac
    bench --runtime "$runtime" "${args[@]}" --batch-size 1 --rounds 15 --json "$results/cpu-$runtime-$variant-1t-bs1.json"
    bench --runtime "$runtime" "${args[@]}" --batch-size 32 --rounds 4 --json "$results/cpu-$runtime-$variant-1t-bs32.json"
  done
done
"$py" -m timm_mod.tools.report "$results"/*.json --int8 docs/deployment.md > /dev/null
