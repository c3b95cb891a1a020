"""INT8 and the channel selection, measured on trained digits models.

Trains resnet18_mod and mobilenetv2_mod with the quick start's recipe (./train.sh digits MODEL, or takes
--checkpoints), quantizes each to INT8 in ONNX Runtime (static QDQ) and OpenVINO (NNCF) as
`python -m timm_mod.tools.deploy quantize` does, calibrated on 256 training images drawn at random, with every MoD
block quantized (plain post-training quantization) and with every block's selector kept in float32, and compares
each INT8 model with the float32 one in the same runtime on the 364 validation images: top-1 of both, top-1
agreement, and how many channel selections (per MoD block and image: the k channels, in the order they are fused)
INT8 keeps.

    python benchmarks/int8_digits.py                           # trains both models first: about 5 minutes
    python benchmarks/int8_digits.py --checkpoints output/train/digits-resnet18_mod-*/model_best.pth.tar

Writes a JSON file and the table between the int8-digits markers of docs/deployment.md.
"""
from pathlib import Path
from typing import Dict, List

import torch

from _digits import trained_models_cli, validation_batches

MODELS = ('resnet18_mod', 'mobilenetv2_mod')
RUNTIMES = ('onnxruntime', 'openvino')
CALIBRATION_IMAGES = 256


def _train_batches(model: torch.nn.Module, images: int) -> List:
    """`images` training images drawn at random, as evaluated (the calibration set, as the deploy command takes it)."""
    from timm_mod.tools.deploy import sample_batches
    from timm_mod.tools.train import digits_root
    return [x.numpy() for x, _ in sample_batches(digits_root(), 'train', model, images, img_size=32, crop_pct=1.0)]


def _top1(runtime: str, graph, batches) -> float:
    from timm_mod.tools import deploy
    run = deploy._run_graph(runtime, graph, batches[0][0][:1], 1)
    right = sum(int((run(x.numpy())[0].argmax(1) == y.numpy()).sum()) for x, y in batches)
    return right / sum(len(y) for _, y in batches) * 100


def measure(name: str, checkpoint: Path) -> List[Dict]:
    """Each runtime and choice of what stays float32; and the same network without its MoD blocks (its bound),
    quantized alike, which tells the backbone's own loss from the routing's."""
    import copy
    import tempfile
    from timm_mod.checkpoint import model_from_checkpoint
    from timm_mod.tools import deploy
    from timm_mod.tools.bench import mod_bound
    model = model_from_checkpoint(checkpoint).eval()
    bound = mod_bound(copy.deepcopy(model)).eval()
    held_out = validation_batches(model)
    calibration = _train_batches(model, CALIBRATION_IMAGES)
    rows = []
    for runtime in RUNTIMES:
        for keep in deploy.KEEP:
            result = deploy.compare_int8(runtime, model, held_out, calibration, keep)
            rows.append(dict(model=name, runtime=runtime, keep=keep, **result))
            print(f'{name} {runtime} keep {keep}: top-1 {result["top1_fp32"]:.2f} -> {result["top1_int8"]:.2f}, '
                  f'selections {result["same_selections"]:.1f} %', flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            example = held_out[0][0][:1]
            top1 = [_top1(runtime, deploy.deployed(runtime, bound, example, tmp, 'torchscript', precision, calibration),
                          held_out) for precision in deploy.PRECISIONS]
        rows.append(dict(model=f'{name} without MoD blocks', runtime=runtime, keep='none', top1_fp32=top1[0],
                         top1_int8=top1[1]))
    return rows


def table(rows: List[Dict]) -> str:
    lines = ['| model | runtime | float32 kept | top-1 float32 (%) | top-1 INT8 (%) | same top-1 (%) | '
             'same selections (%) | per MoD block (%) |', '|---|---|---|---|---|---|---|---|']
    names = {'onnxruntime': 'ONNX Runtime', 'openvino': 'OpenVINO'}
    for r in rows:
        if 'per_block' not in r:  # the network without its MoD blocks: top-1 only
            lines.append(f"| {r['model']} | {names[r['runtime']]} | - | {r['top1_fp32']:.2f} | {r['top1_int8']:.2f} "
                         f"| | | |")
            continue
        per_block = ', '.join(f'{v:.0f}' for v in r['per_block'].values())
        lines.append(f"| {r['model']} | {names[r['runtime']]} | {'selector' if r['keep'] == 'selector' else '-'} | "
                     f"{r['top1_fp32']:.2f} | {r['top1_int8']:.2f} | {r['same_top1']:.2f} | "
                     f"{r['same_selections']:.1f} | {per_block} |")
    return '\n'.join(lines)


if __name__ == '__main__':
    trained_models_cli(__doc__, 'int8', 'deployment.md', MODELS, measure, table)
