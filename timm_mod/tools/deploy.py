"""Run a timm model the way it is deployed: exported to ONNX Runtime or converted to OpenVINO, on the CPU, in
float32 or quantized to INT8.

Used by `timm_mod.tools.bench --runtime`, `timm_mod.tools.breakdown --runtime` and this module's command line, so
that a MoD model, its baseline and its bound are exported, converted, quantized and run the same way. Exports have a
dynamic batch axis (as timm's onnx_export.py makes them): one graph serves every batch size.

    onnxruntime  torch.onnx.export (torch's default exporter, dynamo; ``torchscript`` for the older one), run by an
                 InferenceSession with every graph optimisation on, `threads` intra-op threads, sequential.
                 INT8: ONNX Runtime's static quantization, QDQ format, per-channel int8 weights, uint8 activations
    openvino     openvino.convert_model on the PyTorch model (OpenVINO's own converter), compiled for the CPU with
                 `threads` streams' worth of threads, latency hint, and float32 inference precision unless asked for
                 bfloat16 (OpenVINO's default on CPUs with AVX512-BF16 or AMX; the bench's --amp).
                 INT8: NNCF's post-training quantization (nncf.quantize)

Quantization is calibrated on the images it is given; `keep` names parts of every MoD block that stay in float32
(``selector``: its pooling and scoring, so the ranking of channels is computed as in float32 from the quantized
network's features).

Needs the ``deploy`` extra: ``pip install "timm-mod[deploy]"``.
"""
import contextlib
import importlib.util
import io
import logging
import os
import re
import tempfile
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..layers import MoDBlock


__all__ = [
    'RUNTIMES', 'EXPORTERS', 'PRECISIONS', 'KEEP', 'require', 'export_onnx', 'onnx_node_scopes', 'kept_scopes',
    'quantize_onnx', 'quantize_openvino', 'onnxruntime_session', 'openvino_model', 'WithSelections', 'runner']

RUNTIMES = ('eager', 'compile', 'onnxruntime', 'openvino')
EXPORTERS = ('dynamo', 'torchscript')
PRECISIONS = ('fp32', 'int8')
# what of every MoD block stays float32 when a model is quantized: nothing, or its channel selector
KEEP = ('selector', 'none')
_PACKAGES = {'onnxruntime': ('onnx', 'onnxruntime', 'onnxscript'), 'openvino': ('openvino',)}
_INT8_PACKAGES = {'onnxruntime': (), 'openvino': ('nncf',)}


def require(runtime: str, precision: str = 'fp32') -> None:
    """Raise ImportError naming the install command when a runtime's packages are missing."""
    needed = _PACKAGES.get(runtime, ()) + (_INT8_PACKAGES.get(runtime, ()) if precision == 'int8' else ())
    missing = [p for p in needed if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f'--runtime {runtime}{" in int8" if precision == "int8" else ""} needs {", ".join(missing)}: '
                          f'pip install "timm-mod[deploy]"')


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


def onnx_node_scopes(path: str) -> Dict[str, str]:
    """Node and tensor name -> the dotted module path of the node (producing it), for either exporter.

    The dynamo exporter records each node's module path in its name-scope metadata; the TorchScript exporter names a
    node by its module path, ``/layer1/layer1.1/selector/Conv`` (the last part before the op is the module).
    """
    import onnx
    scopes = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if 'pkg.torch.onnx.name_scopes' in meta:
            names = [s.strip(" '") for s in meta['pkg.torch.onnx.name_scopes'].strip('[]').split(',')]
            modules = [s for s in names[:-1] if s]  # the last entry names the op itself
            scope = modules[-1] if modules else ''
        else:
            parts = node.name.strip('/').split('/')
            scope = parts[-2] if len(parts) > 1 else ''
        for name in (node.name, *node.output):
            scopes[name] = scope
    return scopes


def kept_scopes(model: nn.Module, keep: str) -> List[str]:
    """Module paths of the parts that `keep` names in every MoD block (see `KEEP`)."""
    if keep not in KEEP:
        raise ValueError(f'unknown keep {keep!r}, expected one of {KEEP}')
    if keep == 'none':
        return []
    return [f'{name}.selector' for name, m in model.named_modules()
            if isinstance(m, MoDBlock) and m.selector is not None]


def _in_scopes(scope: str, scopes: Sequence[str]) -> bool:
    return any(scope == s or scope.startswith(s + '.') for s in scopes)


def quantize_onnx(src: str, dst: str, calibration: Iterable[np.ndarray], keep: Sequence[str] = ()) -> str:
    """ONNX Runtime's static INT8 quantization of the ONNX file `src` into `dst`: QDQ format, per-channel int8
    weights, uint8 activations, calibrated (min-max) on the input batches of `calibration`; the nodes of the module
    paths `keep` stay float32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {'x': np.asarray(batch, dtype=np.float32)}

    scopes = onnx_node_scopes(src)
    exclude = sorted({n for n, s in scopes.items() if _in_scopes(s, keep)} & _onnx_node_names(src))
    logging.getLogger('root').setLevel(logging.ERROR)  # quantize_static suggests pre-processing on every call
    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    return dst


def _onnx_node_names(path: str) -> set:
    import onnx
    return {n.name for n in onnx.load(path, load_external_data=False).graph.node}


def quantize_openvino(converted, calibration: Iterable[np.ndarray], keep: Sequence[str] = ()):
    """NNCF's post-training INT8 quantization of a converted OpenVINO model, calibrated on the input batches of
    `calibration`; the operations of the module paths `keep` stay float32."""
    import nncf
    nncf.set_log_level(logging.ERROR)  # the list of ignored operations, at every call
    batches = [np.asarray(b, dtype=np.float32) for b in calibration]
    patterns = [rf'__module\.{re.escape(s)}(\..*)?/.*' for s in keep]
    # its progress bars go to stdout, where a tool's results go
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        return nncf.quantize(converted, nncf.Dataset(batches), subset_size=sum(len(b) for b in batches),
                             ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None)


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


def convert_openvino(model: nn.Module, example: torch.Tensor):
    """The PyTorch model converted by OpenVINO's own converter, with a dynamic batch axis."""
    import openvino as ov
    shape = [-1, *example.shape[1:]]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        return ov.convert_model(model, example_input=example, input=[shape])


def openvino_model(model, example: torch.Tensor, threads: int, bf16: bool = False, profile: bool = False):
    """An OpenVINO CPU compiled model: converted from the PyTorch `model`, or `model` as already converted."""
    import openvino as ov
    converted = convert_openvino(model, example) if isinstance(model, nn.Module) else model
    config = {
        'INFERENCE_NUM_THREADS': threads,
        'NUM_STREAMS': 1,
        'PERFORMANCE_HINT': 'LATENCY',
        'INFERENCE_PRECISION_HINT': 'bf16' if bf16 else 'f32',
        'PERF_COUNT': profile,
    }
    return ov.Core().compile_model(converted, 'CPU', config)


class WithSelections(nn.Module):
    """A model whose outputs are its logits and, after them, every MoD block's selected channels (B, k), so that an
    exported or quantized graph can be compared with another channel by channel."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.selectors = [m.selector for m in model.modules() if isinstance(m, MoDBlock) and m.selector is not None]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        picked: List[torch.Tensor] = []
        hooks = [s.register_forward_hook(lambda mod, inp, out: picked.append(out[1])) for s in self.selectors]
        try:
            y = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        return (y, *picked)


def deployed(
        runtime: str,
        model: nn.Module,
        example: torch.Tensor,
        workdir: str,
        exporter: str = 'dynamo',
        precision: str = 'fp32',
        calibration: Optional[Sequence[np.ndarray]] = None,
        keep: str = 'selector',
):
    """`model` exported to ONNX (a file in `workdir`) or converted to OpenVINO, quantized to INT8 when `precision`
    asks: the ONNX file's path, or the OpenVINO model, that `runner` and the deploy command run."""
    require(runtime, precision)
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision {precision!r}, expected one of {PRECISIONS}')
    if precision == 'int8' and not calibration:
        raise ValueError('int8 needs calibration batches')
    scopes = kept_scopes(model, keep) if precision == 'int8' else []
    if runtime == 'onnxruntime':
        path = export_onnx(model, example, os.path.join(workdir, 'model.onnx'), exporter)
        if precision == 'int8':
            path = quantize_onnx(path, os.path.join(workdir, 'model.int8.onnx'), calibration, scopes)
        return path
    if runtime == 'openvino':
        converted = convert_openvino(model, example)
        return quantize_openvino(converted, calibration, scopes) if precision == 'int8' else converted
    raise ValueError(f'runtime {runtime!r} has no runner; expected onnxruntime or openvino')


def runner(
        runtime: str,
        model: nn.Module,
        example: torch.Tensor,
        threads: int,
        exporter: str = 'dynamo',
        bf16: bool = False,
        workdir: Optional[str] = None,
        precision: str = 'fp32',
        calibration: Optional[Sequence[np.ndarray]] = None,
        keep: str = 'selector',
) -> Callable[[], List[np.ndarray]]:
    """A no-argument call that runs the eval-mode `model` on `example` in `runtime` ('onnxruntime' or 'openvino'),
    in float32 or quantized to INT8 (see `deployed`)."""
    x = example.numpy()
    if runtime == 'onnxruntime' and bf16:
        raise ValueError('--amp (bfloat16) is not available with --runtime onnxruntime')
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        graph = deployed(runtime, model, example, tmp, exporter, precision, calibration, keep)
        if runtime == 'onnxruntime':
            session = onnxruntime_session(graph, threads)  # the session holds the graph: the files can go
            return lambda: session.run(None, {'x': x})
    request = openvino_model(graph, example, threads, bf16).create_infer_request()
    return lambda: request.infer({0: x})
