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
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn as nn


__all__ = ['RUNTIMES', 'EXPORTERS', 'require', 'export_onnx', 'onnxruntime_session', 'openvino_model', 'runner']

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
