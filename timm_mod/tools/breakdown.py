"""Where a MoD model's time goes: what its MoD blocks cost inside the model, and which part of each block costs it.

Forward hooks on the model, on every MoD block, its selector and its k-channel block time each call while the model
runs whole (a block timed on its own, in a loop, finds its code and weights in cache and looks two to three times
cheaper than it is inside the network): per MoD block `route` (pooling, scoring MLP, sigmoid, top-k), `block` (the
k-channel block) and the rest (`gather + fuse`: picking the k channels, scaling and adding the result back), and the
MoD blocks' share of the model's forward. The speed-ups themselves, against baselines and bounds, come from
`python -m timm_mod.tools.bench`.

With ``--runtime onnxruntime`` or ``openvino`` the same split comes from the runtime's own profiler (ONNX Runtime's
node profiling, OpenVINO's performance counters) over the exported model: each executed node is charged to the module
it came from, layout reorders the runtime inserted are charged to a neighbouring node's module and counted apart, and
the op types that cost most in the whole model are listed.

Example:
    python -m timm_mod.tools.breakdown --models resnet50_mod,mobilenetv2_mod --threads 1 --batch-size 1
    python -m timm_mod.tools.breakdown --models resnet86_mod --threads 1 --runtime onnxruntime
"""
import argparse
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List

import timm
import torch
import torch.nn as nn

from ..layers import MoDBlock
from . import deploy
from .bench import cpu_name

__all__ = ['block_breakdown', 'runtime_breakdown', 'markdown', 'runtime_markdown']


def _median_ms(times: List[float]) -> float:
    return statistics.median(times) * 1e3


def block_breakdown(model: nn.Module, x: torch.Tensor, iters: int = 50, warmup: int = 5) -> Dict[str, Any]:
    """Median times per call (ms), the model running whole: `model_ms` for the forward, and in `blocks`, per MoD
    block, `route_ms`, `block_ms`, `gather_fuse_ms` and `total_ms`."""
    stamps: Dict[str, List[float]] = defaultdict(list)
    handles = []

    def stamp(key):
        return lambda *args: stamps[key].append(time.perf_counter())

    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, MoDBlock)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no MoD blocks to break down')
    handles.append(model.register_forward_pre_hook(stamp(('', 'model', 0))))
    handles.append(model.register_forward_hook(stamp(('', 'model', 1))))
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
    return dict(model_ms=_median_ms(spans('', 'model')), blocks=rows)


def markdown(name: str, setting: str, result: Dict[str, Any]) -> str:
    rows = result['blocks']
    sums = {k: sum(r[k] for r in rows) for k in ('route_ms', 'block_ms', 'gather_fuse_ms', 'total_ms')}
    lines = [f'#### {name}, {setting}', '',
             f'Forward {result["model_ms"]:.2f} ms, of which the {len(rows)} MoD blocks {sums["total_ms"]:.2f} ms '
             f'({100 * sums["total_ms"] / result["model_ms"]:.1f} %).', '',
             '| MoD block | C | k | route ms | block ms | gather + fuse ms | total ms |', '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["block"]} | {r["channels"]} | {r["k"]} | {r["route_ms"]:.3f} | {r["block_ms"]:.3f} | '
                     f'{r["gather_fuse_ms"]:.3f} | {r["total_ms"]:.3f} |')
    lines.append(f'| all {len(rows)} | | | {sums["route_ms"]:.3f} | {sums["block_ms"]:.3f} | '
                 f'{sums["gather_fuse_ms"]:.3f} | {sums["total_ms"]:.3f} |')
    return '\n'.join(lines)


def runtime_breakdown(model: nn.Module, x: torch.Tensor, runtime: str, threads: int, iters: int = 20) -> Dict[str, Any]:
    """Per-call times (ms) inside ONNX Runtime or OpenVINO: `model_ms` (all executed nodes), per MoD block `route_ms`,
    `block_ms`, `gather_fuse_ms` (including `reorder_ms`, the runtime's layout reorders charged to the block) and
    `total_ms`, and `ops`: time per op type over the whole model, most expensive first."""
    profile = deploy.profile_onnxruntime if runtime == 'onnxruntime' else deploy.profile_openvino
    nodes = profile(model.eval(), x, threads, iters)
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, MoDBlock)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no MoD blocks to break down')
    rows = []
    for name, m in blocks:
        mine = [n for n in nodes if n['scope'] == name or n['scope'].startswith(name + '.')]
        part = {key: sum(n['ms'] for n in mine if n['scope'].startswith(f'{name}.{key}')) for key in ('selector', 'block')}
        total = sum(n['ms'] for n in mine)
        rows.append(dict(block=name, channels=m.channels, k=m.k, route_ms=part['selector'], block_ms=part['block'],
                         gather_fuse_ms=total - part['selector'] - part['block'],
                         reorder_ms=sum(n['ms'] for n in mine if n['inserted']), total_ms=total))
    ops: Dict[str, float] = defaultdict(float)
    for n in nodes:
        ops[n['op']] += n['ms']
    return dict(model_ms=sum(n['ms'] for n in nodes), blocks=rows,
                ops=sorted(ops.items(), key=lambda kv: -kv[1]))


def runtime_markdown(name: str, setting: str, result: Dict[str, Any], top_ops: int = 8) -> str:
    """`markdown` for a runtime profile, with the reorders and the model's most expensive op types."""
    text = markdown(name, setting, result)
    reorders = sum(r['reorder_ms'] for r in result['blocks'])
    ops = ', '.join(f'{op} {ms:.2f}' for op, ms in result['ops'][:top_ops])
    return (f'{text}\n\nOf the gather + fuse time, {reorders:.3f} ms are layout reorders the runtime inserted. '
            f'Whole model, ms per op type: {ops}.')


def _int_list(text: str) -> List[int]:
    return [int(v) for v in text.split(',') if v]


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m timm_mod.tools.breakdown', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='resnet50_mod', help='comma-separated MoD models (default resnet50_mod)')
    parser.add_argument('--threads', type=_int_list, default=None, help='thread counts (default: all cores)')
    parser.add_argument('--batch-size', type=_int_list, default=[1], help='batch sizes (default 1)')
    parser.add_argument('--img-size', type=int, default=None, help='input size (default: the model\'s own)')
    parser.add_argument('--iters', type=int, default=50, help='timed forwards per model (default 50)')
    parser.add_argument('--runtime', default='eager', choices=('eager', 'onnxruntime', 'openvino'),
                        help='eager (forward hooks in PyTorch) or the exported model in ONNX Runtime / OpenVINO '
                             '(their profilers); default eager')
    parser.add_argument('--out', metavar='FILE', help='also write the markdown to FILE (must not exist)')
    args = parser.parse_args(argv)
    if args.runtime != 'eager':
        try:
            deploy.require(args.runtime)
        except ImportError as e:
            parser.error(str(e))

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
                setting = f'CPU ({cpu_name()}), {t} thread(s), batch {bs}, {size} px, torch {torch.__version__}'
                if args.runtime == 'eager':
                    sections.append(markdown(name, setting, block_breakdown(model, x, args.iters)))
                else:
                    result = runtime_breakdown(model, x, args.runtime, t, args.iters)
                    sections.append(runtime_markdown(name, f'{args.runtime}, {setting}', result))
                print(sections[-1] + '\n', flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n\n'.join(sections) + '\n')
        print(f'wrote {args.out}', file=sys.stderr)


if __name__ == '__main__':
    main()
