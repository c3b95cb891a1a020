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
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from ..layers import MoDBlock
from . import deploy
from ._cli import OutputError, check_models, int_list, new_file, positive_int
from .bench import CALIBRATION_IMAGES, cpu_name

__all__ = [
    'block_breakdown', 'profile_onnxruntime', 'profile_openvino', 'runtime_breakdown', 'markdown', 'runtime_markdown']


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
        parts = [('total', m)] + [
            (key, sub) for key, sub in (('route', m.selector), ('block', m.block)) if sub is not None]
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
             '| MoD block | C | k | route ms | block ms | gather + fuse ms | total ms |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["block"]} | {r["channels"]} | {r["k"]} | {r["route_ms"]:.3f} | {r["block_ms"]:.3f} | '
                     f'{r["gather_fuse_ms"]:.3f} | {r["total_ms"]:.3f} |')
    lines.append(f'| all {len(rows)} | | | {sums["route_ms"]:.3f} | {sums["block_ms"]:.3f} | '
                 f'{sums["gather_fuse_ms"]:.3f} | {sums["total_ms"]:.3f} |')
    return '\n'.join(lines)


# --- the runtimes' own profilers: every executed node charged to the module it came from

def _optimized_scopes(path: str, scopes: Dict[str, str]) -> Dict[str, Tuple[str, bool]]:
    """Node of the optimised graph -> (module scope, whether the optimiser inserted it).

    A kept node keeps its name; a fused or re-laid-out node is named after the tensor it produces (``relu_4_nchwc``),
    which gives its module.
    A node the optimiser inserted (a layout reorder) has no module of its own: it is charged to the node consuming
    its output (a reorder in front of a gather belongs to that gather's MoD block), else to the one producing its input.
    """
    import onnx
    graph = onnx.load(path, load_external_data=False).graph

    def own(name: str) -> Optional[str]:
        for candidate in (name, name[:-len('_nchwc')] if name.endswith('_nchwc') else name):
            if candidate in scopes:
                return scopes[candidate]
        return None

    found: Dict[str, Tuple[str, bool]] = {}
    for n in graph.node:
        if n.op_type.startswith('Reorder'):  # NCHWc <-> NCHW; its output takes over the name of the tensor it reorders
            continue
        scope = next((own(name) for name in (n.name, *n.output) if own(name) is not None), None)
        if scope is not None:
            found[n.name] = (scope, False)
    producer = {out: n for n in graph.node for out in n.output}
    consumers: Dict[str, List[Any]] = {}
    for n in graph.node:
        for inp in n.input:
            consumers.setdefault(inp, []).append(n)
    for _ in range(3):  # a chain of inserted nodes inherits step by step
        for n in graph.node:
            if n.name in found:
                continue
            near = [c.name for out in n.output for c in consumers.get(out, [])]
            near += [producer[inp].name for inp in n.input if inp in producer]
            near = [found[m][0] for m in near if m in found]
            if near:
                found[n.name] = (near[0], True)
    return found


def profile_onnxruntime(model: nn.Module, example: torch.Tensor, threads: int, iters: int = 20,
                        exporter: str = 'dynamo', precision: str = 'fp32', calibration=None,
                        keep: str = 'none') -> List[Dict[str, Any]]:
    """Mean time per call (ms) of every node ONNX Runtime executes, with its op type and module scope.

    Nodes are those of the optimised graph (fused convolutions, inserted layout reorders); `inserted` marks nodes the
    optimiser added, charged to a neighbouring module (see `_adjacent_scopes`).
    """
    import onnxruntime as ort
    x = example.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = deploy.deployed('onnxruntime', model, example, tmp, exporter, precision, calibration, keep)
        # the float32 export's (`deployed` writes it first): quantization keeps the names of the nodes it keeps, but
        # its pre-processing drops the metadata the dynamo exporter keeps module paths in
        scopes = deploy.onnx_node_scopes(os.path.join(tmp, 'model.onnx'))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = os.path.join(tmp, 'optimized.onnx')
        opts.log_severity_level = 3
        ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])  # writes the optimised graph
        found = _optimized_scopes(opts.optimized_model_filepath, scopes)
        session = deploy.onnxruntime_session(path, threads, profile_prefix=os.path.join(tmp, 'profile'))
        for _ in range(3):
            session.run(None, {'x': x})
        session.end_profiling()
        session = deploy.onnxruntime_session(path, threads, profile_prefix=os.path.join(tmp, 'profile'))
        for _ in range(iters):
            session.run(None, {'x': x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    totals: Dict[str, Dict[str, Any]] = {}
    for e in events:
        if e.get('cat') != 'Node' or not e['name'].endswith('_kernel_time'):
            continue
        name = e['name'][:-len('_kernel_time')]
        scope, inserted = found.get(name, ('', True))
        row = totals.setdefault(name, dict(node=name, op=e['args'].get('op_name', '?'), scope=scope,
                                           inserted=inserted, ms=0.))
        row['ms'] += e['dur'] / 1e3 / iters
    return list(totals.values())


def _scope_of(names: str) -> Optional[str]:
    """The module path in an OpenVINO node name, ``__module.<path>/aten::<op>/...``; None without one."""
    for name in names.split(','):
        if '__module.' in name:
            return name.split('__module.', 1)[1].split('/', 1)[0]
    return None


def _openvino_scopes(compiled, wrappers: Sequence[str] = ()) -> Dict[str, Tuple[str, bool]]:
    """Executed node -> (module scope, whether OpenVINO inserted it), from the runtime graph.

    A node carries the names of the layers fused into it; a convolution whose batch norm was folded in is named
    after the folding and carries no module, so it takes the scope of the node feeding it, and a reorder (an
    inserted node) that of the node it feeds. A folded convolution never belongs to one of the `wrappers` themselves
    (a MoD block's own nodes are named): next to one it takes its other neighbour's scope.
    """
    ops = compiled.get_runtime_model().get_ops()
    found: Dict[str, Tuple[str, bool]] = {}
    for op in ops:
        info = op.get_rt_info()
        if info['layerType'].astype(str) == 'Reorder':
            continue
        scope = _scope_of(info['originalLayersNames'].astype(str)) if 'originalLayersNames' in info else None
        if scope is not None:
            found[op.get_friendly_name()] = (scope, False)
    consumers: Dict[str, List[str]] = {}
    for op in ops:
        for inp in op.inputs():
            consumers.setdefault(inp.get_source_output().get_node().get_friendly_name(), []).append(
                op.get_friendly_name())
    for _ in range(4):
        for op in ops:
            name = op.get_friendly_name()
            if name in found:
                continue
            reorder = op.get_rt_info()['layerType'].astype(str) == 'Reorder'
            producers = [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
            # a reorder serves the node after it; a folded convolution continues the node before it (after it may
            # already be the next block)
            near = consumers.get(name, []) + producers if reorder else producers + consumers.get(name, [])
            near = [found[n][0] for n in near if n in found]
            if not reorder:
                near = [n for n in near if n not in wrappers] or near
            if near:
                found[name] = (near[0], reorder)
    return found


def profile_openvino(model: nn.Module, example: torch.Tensor, threads: int, iters: int = 20,
                     bf16: bool = False, precision: str = 'fp32', calibration=None,
                     keep: str = 'none') -> List[Dict[str, Any]]:
    """Mean time per call (ms) of every node OpenVINO executes (its performance counters), with op and scope.

    Scopes come from the runtime graph (`_openvino_scopes`); `inserted` marks the layout reorders OpenVINO added.
    """
    with tempfile.TemporaryDirectory() as tmp:
        converted = deploy.deployed('openvino', model, example, tmp, precision=precision, calibration=calibration,
                                    keep=keep)
    compiled = deploy.openvino_model(converted, example, threads, bf16, profile=True)
    found = _openvino_scopes(compiled, [name for name, m in model.named_modules() if isinstance(m, MoDBlock)])
    request = compiled.create_infer_request()
    x = example.numpy()
    for _ in range(3):
        request.infer({0: x})
    totals: Dict[str, Dict[str, Any]] = {}
    for _ in range(iters):
        request.infer({0: x})
        for p in request.profiling_info:
            if p.real_time.total_seconds() <= 0:
                continue
            scope, inserted = found.get(p.node_name, ('', p.node_type == 'Reorder'))
            row = totals.setdefault(p.node_name, dict(node=p.node_name, op=p.node_type, scope=scope,
                                                      inserted=inserted, ms=0.))
            row['ms'] += p.real_time.total_seconds() * 1e3 / iters
    return list(totals.values())


def runtime_breakdown(model: nn.Module, x: torch.Tensor, runtime: str, threads: int, iters: int = 20,
                      precision: str = 'fp32', keep: str = 'none', exporter: str = 'dynamo') -> Dict[str, Any]:
    """Per-call times (ms) inside ONNX Runtime or OpenVINO: `model_ms` (all executed nodes), per MoD block `route_ms`,
    `block_ms`, `gather_fuse_ms` (including `reorder_ms`, the runtime's layout reorders charged to the block) and
    `total_ms`, and `ops`: time per op type over the whole model, most expensive first. INT8 models are calibrated on
    the bench's random images (`timm_mod.tools.bench.CALIBRATION_IMAGES`); `exporter` is ONNX Runtime's."""
    if runtime == 'onnxruntime':
        profile = functools.partial(profile_onnxruntime, exporter=exporter)
    else:
        profile = profile_openvino
    calibration = None
    if precision == 'int8':
        gen = torch.Generator().manual_seed(0)
        calibration = [torch.randn(CALIBRATION_IMAGES, *x.shape[1:], generator=gen).numpy()]
    nodes = profile(model.eval(), x, threads, iters, precision=precision, calibration=calibration, keep=keep)
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, MoDBlock)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no MoD blocks to break down')
    rows = []
    for name, m in blocks:
        mine = [n for n in nodes if n['scope'] == name or n['scope'].startswith(name + '.')]
        part = {key: sum(n['ms'] for n in mine if n['scope'].startswith(f'{name}.{key}'))
                for key in ('selector', 'block')}
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m timm_mod.tools.breakdown', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='resnet50_mod', help='comma-separated MoD models (default resnet50_mod)')
    parser.add_argument('--threads', type=int_list, default=None, help='thread counts, e.g. 1,2 (default: all cores)')
    parser.add_argument('--batch-size', type=int_list, default=[1], help='batch sizes, e.g. 1,32 (default 1)')
    parser.add_argument('--img-size', type=positive_int, default=None, help='input size (default: the model\'s own)')
    parser.add_argument('--iters', type=positive_int, default=50, help='timed forwards per model (default 50)')
    parser.add_argument('--runtime', default='eager', choices=('eager', 'onnxruntime', 'openvino'),
                        help='eager (forward hooks in PyTorch) or the exported model in ONNX Runtime / OpenVINO '
                             '(their profilers); default eager')
    deploy.add_graph_arguments(parser, CALIBRATION_IMAGES)
    parser.add_argument('--out', metavar='FILE', help='also write the markdown to FILE (a new file)')
    args = parser.parse_args(argv)
    if args.runtime != 'eager':
        try:
            deploy.require(args.runtime, args.precision)
        except ImportError as e:
            parser.error(str(e))
    elif args.precision == 'int8':
        parser.error('--precision int8 needs --runtime onnxruntime or openvino')
    models = [m for m in args.models.split(',') if m]
    check_models(parser, models)
    plain = [m for m in models
             if not any(isinstance(b, MoDBlock) for b in timm.create_model(m, device='meta').modules())]
    if plain:
        parser.error(f'no MoD blocks in: {", ".join(plain)}')
    try:
        out = new_file(args.out) if args.out else contextlib.nullcontext()
        with out as f:
            sections = _sections(args, models)
            if f is not None:
                f.write('\n\n'.join(sections) + '\n')
    except OutputError as e:
        parser.error(str(e))
    if args.out:
        print(f'wrote {args.out}', file=sys.stderr)


def _sections(args: argparse.Namespace, models: List[str]) -> List[str]:
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
                    result = runtime_breakdown(model, x, args.runtime, t, args.iters, args.precision, args.keep,
                                               args.exporter)
                    label = args.runtime + (f' ({args.exporter} export)' if args.runtime == 'onnxruntime' else '')
                    label += f' INT8 ({args.keep} kept float32)' if args.precision == 'int8' else ''
                    sections.append(runtime_markdown(name, f'{label}, {setting}', result))
                print(sections[-1] + '\n', flush=True)
    return sections


if __name__ == '__main__':
    main()
