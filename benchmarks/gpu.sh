#!/usr/bin/env bash
# The paper's models against their baselines on one GPU, AMP and channels_last: that the same weights give the same
# outputs on the GPU as on the CPU; every paper row and its baseline, eager, at batch 1, 64 and 256 (inference and
# training step); torch.compile on the main pairs, inference at batch 256. About 10 minutes on one H200 (estimated
# from its settings). Results: a JSON and a log per step in $OUT, else benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
# The same weights give the same outputs on the GPU as on the CPU (fp32, eval and a training step's loss).
python3 - <<'PY'
import torch, timm, timm_mod
for name in ('resnet50_mod', 'mobilenetv2_mod', 'vgg16_bn_mod_cifar'):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    size = model.pretrained_cfg['input_size'][-1]
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda()).cpu()
    print(f'{name}: max |cuda - cpu| = {(out - ref).abs().max().item():.2e}')
PY
# Every paper row and its baseline, eager, batch 1 / 64 / 256, AMP + channels_last (fvcore is not there: no GMACs).
python3 -m timm_mod.tools.bench --device cuda --batch-size 1,64,256 --amp --channels-last --no-gmacs \
  --rounds 4 --min-run-time 0.1 --json "$out/gpu-${card}-eager.json" >"$out/gpu-${card}-eager.log"
tail -45 "$out/gpu-${card}-eager.log"
# torch.compile on the main pairs, inference, batch 256.
python3 -m timm_mod.tools.bench --device cuda --models resnet50_mod,mobilenetv2_mod --batch-size 256 --amp \
  --channels-last --compile --no-train --no-gmacs --rounds 4 --min-run-time 0.1 --json "$out/gpu-${card}-compile.json" \
  >"$out/gpu-${card}-compile.log" 2>&1
tail -8 "$out/gpu-${card}-compile.log"
