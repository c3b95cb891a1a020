#!/usr/bin/env bash
# INT8 against float32 in ONNX Runtime and OpenVINO: the paper models (resnet50/75/86_mod, mobilenetv2_mod(_l)),
# their baselines and their bounds, each quantized by the runtime's own post-training quantization (calibrated on 8
# random images) and in float32, timed in turn (1 thread, batch 1 and 32), then the table of docs/deployment.md's
# INT8 speed section. About an hour on 2 cores; run it on an otherwise idle machine. Results go to
# benchmarks/results/int8/ (earlier ones are moved to benchmarks/results/old/, never overwritten).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736}
results=benchmarks/results/int8
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$results" benchmarks/results/old
for f in "$results"/*.json; do
  [ -e "$f" ] && mv "$f" "benchmarks/results/old/$(basename "$f").$stamp"
done
models=resnet50_mod,resnet75_mod,resnet86_mod,mobilenetv2_mod,mobilenetv2_mod_l
bench() { "$py" -m timm_mod.tools.bench --models "$models" --threads 1 --bound --no-train --no-gmacs --min-run-time 0 \
  --exporter torchscript "$@"; }
for runtime in onnxruntime openvino; do
  for precision in int8 fp32; do
    bench --runtime "$runtime" --precision "$precision" --batch-size 1 --rounds 15 \
      --json "$results/cpu-$runtime-$precision-1t-bs1.json"
    bench --runtime "$runtime" --precision "$precision" --batch-size 32 --rounds 4 \
      --json "$results/cpu-$runtime-$precision-1t-bs32.json"
  done
done
"$py" -m timm_mod.tools.report "$results"/*.json --int8 docs/deployment.md > /dev/null
