#!/usr/bin/env bash
# Regenerates docs/benchmarks.md and its "Where MoD pays off" table: times the paper's models against their
# baselines and bounds on this machine's CPU in every runtime, then writes the report from every JSON in
# benchmarks/results/ (GPU runs come from benchmarks/gpu*.sh on a GPU machine).
#   eager        PyTorch eager. 1 thread, batch 1 (the paper's setting): every model of BASELINES (paper + beyond);
#                all cores, batch 1 and 32 (inference and training): the Table 1/2 pairs (every model with ALL=1);
#                all cores, batch 1: the beyond-the-paper models
#   compile      torch.compile (inductor), the Table 1/2 pairs: 1 thread and all cores, batch 1 and 32
#   onnxruntime  ONNX Runtime (torch.onnx.export, dynamo exporter, dynamic batch axis), the Table 1/2 pairs: 1 thread
#                and all cores, batch 1 and 32; 1 thread, batch 1: the beyond-the-paper models
#   openvino     OpenVINO (openvino.convert_model, float32), as onnxruntime
#   breakdown    where the MoD blocks' time goes (python -m timm_mod.tools.breakdown), eager and in both runtimes
# PARTS="eager openvino" reruns only those parts (default: all of them); the report always reads every JSON there.
# A baseline and its models are timed in turn, round after round (--rounds), so load that comes and goes hits all of
# them alike. glibc is told to keep freed memory (GLIBC_TUNABLES below, recorded in every row): by default it returns
# batch-32 feature maps to the kernel after each use and page-faults them in again on the next forward, which was
# ~45 % of a batch-32 ResNet50 forward here and most of its spread (benchmarks/header.md has the command). Baselines
# and MoD models run under the same setting.
# A part's earlier results are moved to benchmarks/results/old/, never overwritten. About 100 minutes on 2 cores for
# every part; run it on an otherwise idle machine (two threads share two cores with nothing else).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736}
results=benchmarks/results
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$results/old"
cores=$(nproc)
parts=${PARTS:-eager compile onnxruntime openvino breakdown}
main=resnet50_mod,resnet75_mod,resnet86_mod,mobilenetv2_mod,mobilenetv2_mod_l
beyond=convnext_tiny_mod,convnext_nano_mod,resnext50_32x4d_mod,seresnet50_mod,regnety_016_mod,efficientnet_b0_mod
beyond=$beyond,mobilenetv3_large_100_mod
models=$([ "${ALL:-0}" = 1 ] && echo "" || echo "$main")
bench() { "$py" -m timm_mod.tools.bench --bound --no-gmacs --min-run-time 0 "$@"; }
for part in $parts; do
  case $part in
    eager|compile|onnxruntime|openvino|breakdown) ;;
    *) echo "regenerate.sh: unknown part '$part' (eager, compile, onnxruntime, openvino, breakdown)" >&2; exit 2 ;;
  esac
done

retire() {  # move a part's earlier results aside
  for f in "$@"; do
    [ -e "$f" ] && mv "$f" "$results/old/$(basename "$f").$stamp"
  done
  return 0
}

for part in $parts; do
  case $part in
    eager)
      retire "$results"/cpu-eager-*.json "$results"/cpu-[0-9]*t-*.json
      "$py" -m timm_mod.tools.bench --threads 1 --batch-size 1 --bound --no-train --rounds 30 --min-run-time 0 \
        --json "$results/cpu-eager-1t-bs1.json"
      bench --models "$models" --threads "$cores" --batch-size 1 --no-train --rounds 30 \
        --json "$results/cpu-eager-${cores}t-bs1.json"
      bench --models "$models" --threads "$cores" --batch-size 32 --rounds 8 --json "$results/cpu-eager-${cores}t-bs32.json"
      [ "${ALL:-0}" = 1 ] || bench --models "$beyond" --threads "$cores" --batch-size 1 --no-train --rounds 30 \
        --json "$results/cpu-eager-${cores}t-bs1-beyond.json"
      ;;
    compile)
      retire "$results"/cpu-compile-*.json
      for t in 1 "$cores"; do
        bench --runtime compile --models "$main" --threads "$t" --batch-size 1 --no-train --rounds 20 \
          --json "$results/cpu-compile-${t}t-bs1.json"
        bench --runtime compile --models "$main" --threads "$t" --batch-size 32 --no-train --rounds 4 \
          --json "$results/cpu-compile-${t}t-bs32.json"
      done
      ;;
    onnxruntime|openvino)
      retire "$results/cpu-$part"-*.json
      for t in 1 "$cores"; do
        bench --runtime "$part" --models "$main" --threads "$t" --batch-size 1 --no-train --rounds 20 \
          --json "$results/cpu-$part-${t}t-bs1.json"
        bench --runtime "$part" --models "$main" --threads "$t" --batch-size 32 --no-train --rounds 4 \
          --json "$results/cpu-$part-${t}t-bs32.json"
      done
      bench --runtime "$part" --models "$beyond" --threads 1 --batch-size 1 --no-train --rounds 20 \
        --json "$results/cpu-$part-1t-bs1-beyond.json"
      ;;
    breakdown)
      retire "$results"/breakdown-cpu.md
      {
        echo "## Where the MoD blocks' time goes (CPU)"
        echo
        echo "\`python -m timm_mod.tools.breakdown\`: in PyTorch eager, forward hooks time, while the model runs whole,"
        echo "each MoD block's selector (\`route\`: pooling, scoring MLP, top-k), its k-channel block and the rest"
        echo "(gather + fuse), and the model's forward (hooks add a few microseconds per block). With \`--runtime\`, the"
        echo "runtime's own profiler times every node of the exported model (profiling adds a little to each node), and"
        echo "each node is charged to the module it came from. malloc: \`GLIBC_TUNABLES=$GLIBC_TUNABLES\`."
        echo
        "$py" -m timm_mod.tools.breakdown --models resnet50_mod,resnet86_mod,mobilenetv2_mod --threads "1,$cores" \
          --iters 50
        "$py" -m timm_mod.tools.breakdown --models resnet50_mod --threads "$cores" --batch-size 32 --iters 6
        for runtime in onnxruntime openvino; do
          "$py" -m timm_mod.tools.breakdown --runtime "$runtime" --models resnet86_mod,mobilenetv2_mod --threads 1 \
            --iters 50
        done
      } > "$results/breakdown-cpu.md.partial"
      mv "$results/breakdown-cpu.md.partial" "$results/breakdown-cpu.md"  # never a half-written section
      ;;
  esac
done
"$py" -m timm_mod.tools.report "$results"/*.json --header benchmarks/header.md --footer benchmarks/gpu.md \
  --footer "$results/breakdown-cpu.md" --footer benchmarks/dense.md \
  --out docs/benchmarks.md --plot benchmarks/figures --payoff docs/benchmarks.md
