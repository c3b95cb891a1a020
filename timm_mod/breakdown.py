"""Where a MoD model's time goes: what its MoD blocks cost inside the model, and which part of each block costs it.

Two measurements, both taken while the model runs whole (a block timed on its own, in a loop, finds its code and
weights in cache and looks two to three times cheaper than it is inside the network):

* **MoD cost**: forwards of the model, of its bound (MoD blocks replaced by identity) and of the paired baseline
  alternate, one call each, `--iters` times; the MoD blocks cost median(model) - median(bound).
* **per block**: forward hooks on every MoD block, its selector and its k-channel block time, per call,
  `route` (pooling, scoring MLP, sigmoid, top-k), `block` (the k-channel block) and the rest of the MoD block
  (`gather + fuse`: picking the k channels, scaling and adding the result back).

Example:
    python -m timm_mod.breakdown --models resnet50_mod,mobilenetv2_mod --threads 1 --batch-size 1
"""
import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List

import timm
import torch
import torch.nn as nn

from .bench import cpu_name, mod_bound
from .layers import MoDBlock
from .paper import BASELINES

__all__ = ['block_breakdown', 'mod_cost', 'markdown']


def _median_ms(times: List[float]) -> float:
    return statistics.median(times) * 1e3


def block_breakdown(model: nn.Module, x: torch.Tensor, iters: int = 50, warmup: int = 5) -> List[Dict[str, Any]]:
    """Per MoD block: median route, block, gather + fuse and total time per call (ms), the model running whole."""
    stamps: Dict[str, List[float]] = defaultdict(list)
    handles = []

    def stamp(key):
        return lambda *args: stamps[key].append(time.perf_counter())

    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, MoDBlock)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no MoD blocks to break down')
    for name, m in blocks:
        parts = [('total', m)] + [(key, sub) for key, sub in (('route', m.selector), ('block', m.block)) if sub is not None]
        for key, sub in parts:
            handles.append(sub.register_forward_pre_hook(stamp((name, key, 0))))
            handles.append(sub.register_forward_hook(stamp((name, key, 1))))
    try:
        with torch.inference_mode():
            for _ in range(warmup + iters):
                model(x)
    finally:
        for h in handles:
            h.remove()

    def spans(name, key):
        starts, ends = stamps.get((name, key, 0), []), stamps.get((name, key, 1), [])
        return [e - s for s, e in zip(starts, ends)][warmup:]

    rows = []
    for name, m in blocks:
        total, block = spans(name, 'total'), spans(name, 'block')
        route = spans(name, 'route') or [0.0] * len(total)  # random routing has no selector
        rest = [t - r - b for t, r, b in zip(total, route, block)]
        rows.append(dict(block=name, channels=m.channels, k=m.k, route_ms=_median_ms(route),
                         block_ms=_median_ms(block), gather_fuse_ms=_median_ms(rest), total_ms=_median_ms(total)))
    return rows


def mod_cost(name: str, x: torch.Tensor, iters: int = 50, warmup: int = 5) -> Dict[str, Any]:
    """Median latency (ms) of the model, its bound and its baseline, timed by alternating single forwards."""
    model = timm.create_model(name).eval()
    models = {'model': model, 'bound': mod_bound(copy.deepcopy(model))}
    if BASELINES.get(name):
        models['baseline'] = timm.create_model(BASELINES[name]).eval()
    times: Dict[str, List[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for i in range(warmup + iters):
            for key, m in models.items():
                start = time.perf_counter()
                m(x)
                if i >= warmup:
                    times[key].append(time.perf_counter() - start)
    out = {f'{k}_ms': _median_ms(v) for k, v in times.items()}
    out['mod_blocks_ms'] = out['model_ms'] - out['bound_ms']
    out['mod_share'] = out['mod_blocks_ms'] / out['bound_ms']
    return out


def markdown(name: str, setting: str, cost: Dict[str, Any], rows: List[Dict[str, Any]]) -> str:
    lines = [f'#### {name}, {setting}', '']
    parts = [f'model {cost["model_ms"]:.2f} ms', f'bound {cost["bound_ms"]:.2f} ms']
    if 'baseline_ms' in cost:
        parts += [f'baseline {cost["baseline_ms"]:.2f} ms',
                  f'speed-up {cost["baseline_ms"] / cost["model_ms"]:.2f} (bound {cost["baseline_ms"] / cost["bound_ms"]:.2f})']
    parts.append(f'MoD blocks {cost["mod_blocks_ms"]:.2f} ms = {100 * cost["mod_share"]:.1f} % of the bound')
    lines += ['Alternating forwards: ' + ', '.join(parts) + '.', '',
              '| MoD block | C | k | route ms | block ms | gather + fuse ms | total ms |', '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["block"]} | {r["channels"]} | {r["k"]} | {r["route_ms"]:.3f} | {r["block_ms"]:.3f} | '
                     f'{r["gather_fuse_ms"]:.3f} | {r["total_ms"]:.3f} |')
    sums = {k: sum(r[k] for r in rows) for k in ('route_ms', 'block_ms', 'gather_fuse_ms', 'total_ms')}
    lines.append(f'| all {len(rows)} | | | {sums["route_ms"]:.3f} | {sums["block_ms"]:.3f} | '
                 f'{sums["gather_fuse_ms"]:.3f} | {sums["total_ms"]:.3f} |')
    return '\n'.join(lines)


def _int_list(text: str) -> List[int]:
    return [int(v) for v in text.split(',') if v]


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m timm_mod.breakdown', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='resnet50_mod', help='comma-separated MoD models (default resnet50_mod)')
    parser.add_argument('--threads', type=_int_list, default=None, help='thread counts (default: all cores)')
    parser.add_argument('--batch-size', type=_int_list, default=[1], help='batch sizes (default 1)')
    parser.add_argument('--img-size', type=int, default=None, help='input size (default: the model\'s own)')
    parser.add_argument('--iters', type=int, default=50, help='timed forwards per model (default 50)')
    parser.add_argument('--out', metavar='FILE', help='also write the markdown to FILE (must not exist)')
    args = parser.parse_args(argv)

    models = [m for m in args.models.split(',') if m]
    known = set(timm.list_models())
    unknown = [m for m in models if m not in known]
    if unknown:
        parser.error(f'unknown model(s): {", ".join(unknown)}')
    plain = [m for m in models if not any(isinstance(b, MoDBlock) for b in timm.create_model(m, device='meta').modules())]
    if plain:
        parser.error(f'no MoD blocks in: {", ".join(plain)}')
    if args.out:
        import os
        if os.path.exists(args.out):
            parser.error(f'{args.out} exists; choose a new file (results are never overwritten)')

    sections = []
    for t in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(t)
        for bs in args.batch_size:
            for name in models:
                model = timm.create_model(name).eval()
                size = args.img_size or model.pretrained_cfg['input_size'][-1]
                x = torch.randn(bs, 3, size, size)
                cost = mod_cost(name, x, args.iters)
                rows = block_breakdown(model, x, args.iters)
                setting = f'CPU ({cpu_name()}), {t} thread(s), batch {bs}, {size} px, torch {torch.__version__}'
                sections.append(markdown(name, setting, cost, rows))
                print(sections[-1] + '\n', flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n\n'.join(sections) + '\n')
        print(f'wrote {args.out}', file=sys.stderr)


if __name__ == '__main__':
    main()
