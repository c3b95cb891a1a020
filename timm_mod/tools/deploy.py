"""Run a timm model the way it is deployed: exported to ONNX Runtime or converted to OpenVINO, on the CPU.

Used by `timm_mod.tools.bench --runtime` and `timm_mod.tools.breakdown --runtime`, so that a MoD model, its baseline
and its bound are exported, converted and run the same way. Exports have a dynamic batch axis (as timm's
onnx_export.py makes them): one graph serves every batch size.

    onnxruntime  torch.onnx.export (torch's default exporter, dynamo; ``torchscript`` for the older one), run by an
                 InferenceSession with every graph optimisation on, `threads` intra-op threads, sequential
    openvino     openvino.convert_model on the PyTorch model (OpenVINO's own converter), compiled for the CPU with
                 `threads` streams' worth of threads, latency hint, and float32 inference precision unless asked for
                 bfloat16 (OpenVINO's default on CPUs with AVX512-BF16 or AMX; the bench's --amp)

Needs the ``deploy`` extra: ``pip install "timm-mod[deploy]"``.
"""
import importlib.util
import os
import tempfile
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..layers import MoDBlock

__all__ = [
    'RUNTIMES', 'EXPORTERS', 'require', 'export_onnx', 'onnxruntime_session', 'openvino_model', 'runner',
    'profile_onnxruntime', 'profile_openvino']

RUNTIMES = ('eager', 'compile', 'onnxruntime', 'openvino')
EXPORTERS = ('dynamo', 'torchscript')
_PACKAGES = {'onnxruntime': ('onnx', 'onnxruntime', 'onnxscript'), 'openvino': ('openvino',)}


def require(runtime: str) -> None:
    """Raise ImportError naming the install command when a runtime's packages are missing."""
    missing = [p for p in _PACKAGES.get(runtime, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f'--runtime {runtime} needs {", ".join(missing)}: pip install "timm-mod[deploy]"')


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, exporter: str = 'dynamo') -> str:
    """Export an eval-mode model to ONNX at `path` with a dynamic batch axis named 'batch'.

    The dynamo exporter gets a named axis rather than a `Dim`, which a batch-1 example would specialize to 1.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'unknown exporter {exporter!r}, expected one of {EXPORTERS}')
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        if exporter == 'dynamo':
            torch.onnx.export(model, (example,), path, dynamo=True, input_names=['x'], output_names=['y'],
                              dynamic_shapes={'x': {0: 'batch'}}, verbose=False)
        else:
            torch.onnx.export(model, (example,), path, dynamo=False, input_names=['x'], output_names=['y'],
                              opset_version=17, dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}})
    return path


def onnxruntime_session(path: str, threads: int, profile_prefix: Optional[str] = None):
    """An ONNX Runtime CPU session: all graph optimisations, `threads` intra-op threads, sequential execution."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])


def openvino_model(model: nn.Module, example: torch.Tensor, threads: int, bf16: bool = False, profile: bool = False):
    """An OpenVINO CPU compiled model converted from the PyTorch model, with a dynamic batch axis."""
    import openvino as ov
    shape = [-1, *example.shape[1:]]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        converted = ov.convert_model(model, example_input=example, input=[shape])
    config = {
        'INFERENCE_NUM_THREADS': threads,
        'NUM_STREAMS': 1,
        'PERFORMANCE_HINT': 'LATENCY',
        'INFERENCE_PRECISION_HINT': 'bf16' if bf16 else 'f32',
        'PERF_COUNT': profile,
    }
    return ov.Core().compile_model(converted, 'CPU', config)


def runner(
        runtime: str,
        model: nn.Module,
        example: torch.Tensor,
        threads: int,
        exporter: str = 'dynamo',
        bf16: bool = False,
        workdir: Optional[str] = None,
) -> Callable[[], List[np.ndarray]]:
    """A no-argument call that runs the eval-mode `model` on `example` in `runtime` ('onnxruntime' or 'openvino')."""
    require(runtime)
    x = example.numpy()
    if runtime == 'onnxruntime':
        if bf16:
            raise ValueError('--amp (bfloat16) is not available with --runtime onnxruntime')
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = export_onnx(model, example, os.path.join(tmp, 'model.onnx'), exporter)
            session = onnxruntime_session(path, threads)  # the session holds the graph: the file can go
        return lambda: session.run(None, {'x': x})
    if runtime == 'openvino':
        request = openvino_model(model, example, threads, bf16).create_infer_request()
        return lambda: request.infer({0: x})
    raise ValueError(f'runtime {runtime!r} has no runner; expected onnxruntime or openvino')


def _onnx_scopes(path: str) -> Dict[str, str]:
    """Node and tensor name -> the dotted module path of the node (producing it), from the dynamo exporter's
    name-scope metadata."""
    import onnx
    scopes = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        names = [s.strip(" '") for s in meta.get('pkg.torch.onnx.name_scopes', '[]').strip('[]').split(',')]
        modules = [s for s in names[:-1] if s]  # the last entry names the op itself
        for name in (node.name, *node.output):
            scopes[name] = modules[-1] if modules else ''
    return scopes


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
                        exporter: str = 'dynamo') -> List[Dict[str, Any]]:
    """Mean time per call (ms) of every node ONNX Runtime executes, with its op type and module scope.

    Nodes are those of the optimised graph (fused convolutions, inserted layout reorders); `inserted` marks nodes the
    optimiser added, charged to a neighbouring module (see `_adjacent_scopes`).
    """
    import json
    require('onnxruntime')
    import onnxruntime as ort
    x = example.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, example, os.path.join(tmp, 'model.onnx'), exporter)
        scopes = _onnx_scopes(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = os.path.join(tmp, 'optimized.onnx')
        opts.log_severity_level = 3
        ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])  # writes the optimised graph
        found = _optimized_scopes(opts.optimized_model_filepath, scopes)
        session = onnxruntime_session(path, threads, profile_prefix=os.path.join(tmp, 'profile'))
        for _ in range(3):
            session.run(None, {'x': x})
        session.end_profiling()
        session = onnxruntime_session(path, threads, profile_prefix=os.path.join(tmp, 'profile'))
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
                     bf16: bool = False) -> List[Dict[str, Any]]:
    """Mean time per call (ms) of every node OpenVINO executes (its performance counters), with op and scope.

    Scopes come from the runtime graph (`_openvino_scopes`); `inserted` marks the layout reorders OpenVINO added.
    """
    require('openvino')
    compiled = openvino_model(model, example, threads, bf16, profile=True)
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
