"""Half precision and the channel selection, measured on trained digits models.

Trains resnet18_mod and mobilenetv2_mod with the quick start's recipe (./train.sh digits MODEL, or takes
--checkpoints), then runs the 364 digits validation images in float32 and in each half-precision setting, and reports
how many channel selections (per MoD block and image: the k channels, in the order they are fused) and top-1
predictions agree with float32's, with the channel selector computing in float32 (this release) and, for comparison,
in the model's own precision (before it):

  bf16 autocast   torch.autocast('cpu', torch.bfloat16): what AMP does on a CPU
  bf16 model      model.to(torch.bfloat16)
  fp16 autocast   torch.autocast('cpu', torch.float16): what AMP does on a GPU (here on the CPU)
  fp16 model      model.half()

    python benchmarks/precision_digits.py                       # trains both models first: about 3 minutes
    python benchmarks/precision_digits.py --checkpoints output/train/digits-resnet18_mod-*/model_best.pth.tar

Writes a JSON file and the table between the precision-digits markers of docs/deployment.md.
"""
import contextlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from _digits import trained_models_cli, validation_batches

MODELS = ('resnet18_mod', 'mobilenetv2_mod')
SETTINGS = ('bf16 autocast', 'bf16 model', 'fp16 autocast', 'fp16 model')


def _selector_dtype_of_the_input(dtype: torch.dtype) -> torch.dtype:
    return dtype


def _run(model: torch.nn.Module, batches, setting: Optional[str]) -> Tuple[torch.Tensor, Dict, Dict]:
    """Predictions, every MoD block's selected channels (B, k) and its selector's logits (B, C), over all batches, in
    one precision setting."""
    from timm_mod import MoDBlock
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get((setting or '')[:4], torch.float32)
    model = model.to(dtype if setting and setting.endswith('model') else torch.float32)
    picked: Dict[str, List[torch.Tensor]] = {}
    logits: Dict[str, List[torch.Tensor]] = {}

    def capture(name, selector, inputs, output):
        picked.setdefault(name, []).append(output[1])
        logits.setdefault(name, []).append(selector.logits(inputs[0]).float())

    hooks = [m.selector.register_forward_hook(lambda *a, name=name: capture(name, *a))
             for name, m in model.named_modules() if isinstance(m, MoDBlock) and m.selector is not None]
    autocast = torch.autocast('cpu', dtype=dtype) if setting and setting.endswith('autocast') else (
        contextlib.nullcontext())
    predictions = []
    try:
        with torch.no_grad(), autocast:
            for x, _ in batches:
                x = x.to(dtype) if setting and setting.endswith('model') else x
                predictions.append(model(x).float().argmax(1))
    finally:
        for h in hooks:
            h.remove()
        model.float()
    return (torch.cat(predictions), {k: torch.cat(v) for k, v in picked.items()},
            {k: torch.cat(v) for k, v in logits.items()})


def measure(name: str, checkpoint: Path) -> List[Dict]:
    import timm_mod.layers
    from timm_mod.checkpoint import model_from_checkpoint
    model = model_from_checkpoint(checkpoint).eval()
    batches = validation_batches(model)
    labels = torch.cat([y for _, y in batches])
    reference, ref_picks, ref_logits = _run(model, batches, None)
    rows = [dict(model=name, setting='float32', selector='float32', top1=float((reference == labels).float().mean())
                 * 100, same_top1=100.0, same_selections=100.0, same_sets=100.0, tie_gap=0.0, logit_change=0.0)]
    for selector, ranking in (('float32', timm_mod.layers._ranking_dtype), ('model', _selector_dtype_of_the_input)):
        for setting in SETTINGS:
            original, timm_mod.layers._ranking_dtype = timm_mod.layers._ranking_dtype, ranking
            try:
                predicted, picks, logits = _run(model, batches, setting)
            finally:
                timm_mod.layers._ranking_dtype = original
            same = torch.cat([(picks[b] == ref_picks[b]).all(1) for b in ref_picks])
            # where a selection differs: the float32 logits of the channel float32 picked and the one picked here, at
            # the same position, differ by `gap`; half precision moved the logits by up to `change`
            gaps = torch.cat([
                (ref_logits[b].gather(1, ref_picks[b]) - ref_logits[b].gather(1, picks[b])).abs().max(1).values
                for b in ref_picks])
            change = max(float((logits[b] - ref_logits[b]).abs().max()) for b in ref_picks)
            same_set = torch.cat([(picks[b].sort(1)[0] == ref_picks[b].sort(1)[0]).all(1) for b in ref_picks])
            rows.append(dict(
                model=name, setting=setting, selector=selector,
                top1=float((predicted == labels).float().mean()) * 100,
                same_top1=float((predicted == reference).float().mean()) * 100,
                same_selections=float(same.float().mean()) * 100, same_sets=float(same_set.float().mean()) * 100,
                tie_gap=float(gaps[~same].max()) if (~same).any() else 0.0, logit_change=change))
    return rows


def table(rows: List[Dict]) -> str:
    lines = ['| model | precision | selector computes in | top-1 (%) | same top-1 as float32 (%) | '
             'same selections as float32 (%) | same channel sets (%) | largest float32 logit gap where they differ | '
             'largest logit change |', '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        selector = 'float32' if r['selector'] == 'float32' else "the model's precision"
        lines.append(f"| {r['model']} | {r['setting']} | {selector} | {r['top1']:.2f} | {r['same_top1']:.2f} | "
                     f"{r['same_selections']:.2f} | {r['same_sets']:.2f} | {r['tie_gap']:.4f} | "
                     f"{r['logit_change']:.4f} |")
    return '\n'.join(lines)


if __name__ == '__main__':
    trained_models_cli(__doc__, 'precision', 'deployment.md', MODELS, measure, table)
