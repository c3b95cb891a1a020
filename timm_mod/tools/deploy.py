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
import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..layers import MoDBlock


__all__ = [
    'RUNTIMES', 'EXPORTERS', 'PRECISIONS', 'KEEP', 'require', 'add_graph_arguments', 'export_onnx', 'onnx_node_scopes',
    'kept_scopes', 'quantize_onnx', 'quantize_openvino', 'onnxruntime_session', 'openvino_model', 'WithSelections',
    'deployed', 'runner', 'compare_int8', 'quantize_and_compare', 'save_deployed', 'sample_batches', 'main']

RUNTIMES = ('eager', 'compile', 'onnxruntime', 'openvino')
EXPORTERS = ('dynamo', 'torchscript')
PRECISIONS = ('fp32', 'int8')
# what of every MoD block stays float32 when a model is quantized: nothing (plain post-training quantization, the
# default), or its channel selector (pooling and scoring: channels ranked as in float32 from the quantized features)
KEEP = ('none', 'selector')
_PACKAGES = {'onnxruntime': ('onnx', 'onnxruntime', 'onnxscript'), 'openvino': ('openvino',)}
_INT8_PACKAGES = {'onnxruntime': (), 'openvino': ('nncf',)}


def require(runtime: str, precision: str = 'fp32') -> None:
    """Raise ImportError naming the install command when a runtime's packages are missing."""
    needed = _PACKAGES.get(runtime, ()) + (_INT8_PACKAGES.get(runtime, ()) if precision == 'int8' else ())
    missing = [p for p in needed if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f'--runtime {runtime}{" in int8" if precision == "int8" else ""} needs {", ".join(missing)}: '
                          f'pip install "timm-mod[deploy]"')


def add_graph_arguments(parser: argparse.ArgumentParser, calibration_images: int) -> None:
    """The options the bench and the breakdown share for exported models: --exporter, --precision, --keep."""
    parser.add_argument('--exporter', default='dynamo', choices=EXPORTERS,
                        help='torch.onnx.export\'s exporter for --runtime onnxruntime (default dynamo, torch\'s '
                             'default; the INT8 tables use torchscript)')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS,
                        help='with --runtime onnxruntime or openvino: float32, or INT8 quantized by the runtime\'s own '
                             'post-training quantization, calibrated on %d random images (default fp32)'
                             % calibration_images)
    parser.add_argument('--keep', default='none', choices=KEEP,
                        help='with --precision int8: what of every MoD block stays float32: none (the default) or '
                             'its selector')


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
            scope = _torchscript_scope(node.name)
        for name in (node.name, *node.output):
            scopes[name] = scope
    return scopes


def _torchscript_scope(name: str) -> str:
    """'/model/layer1/layer1.1/selector/Conv' -> 'model.layer1.1.selector': each part is a module's attribute name,
    a sequential's child named after its parent ('layer1.1' inside 'layer1'); the last part names the op."""
    parts: List[str] = []
    for part in name.strip('/').split('/')[:-1]:
        if parts and part.startswith(parts[-1] + '.'):
            parts[-1] = part
        else:
            parts.append(part)
    return '.'.join(parts)


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
    paths `keep` stay float32.

    The graph is first pre-processed as ONNX Runtime recommends (shape inference, BatchNorm and activation fusion):
    without it most convolutions keep a float kernel between dequantize and quantize, and the INT8 model is no faster
    than the float32 one.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {'x': np.asarray(batch, dtype=np.float32)}

    scopes = onnx_node_scopes(src)  # the exporter's names: the pre-processed graph keeps those of the nodes it keeps
    prepared = f'{dst}.prepared.onnx'
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static suggests pre-processing on every call
    try:
        quant_pre_process(src, prepared)
        exclude = sorted({n for n, s in scopes.items() if _in_scopes(s, keep)} & _onnx_node_names(prepared))
        quantize_static(prepared, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
        _shapes_from_quantized(dst)
    finally:
        root.setLevel(level)
        if os.path.exists(prepared):
            os.remove(prepared)
    return dst


def _shapes_from_quantized(path: str) -> None:
    """Read every shape the graph reads of a dequantized tensor from the quantized tensor itself (the same shape).

    The MoD gather reads its input's shape to serve every batch size; read off the DequantizeLinear's output, it makes
    ONNX Runtime dequantize (and reorder) the whole feature map only to read its shape.
    """
    import onnx
    proto = onnx.load(path)
    dequantized = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == 'DequantizeLinear'}
    changed = False
    for n in proto.graph.node:
        if n.op_type == 'Shape' and n.input[0] in dequantized:
            n.input[0] = dequantized[n.input[0]]
            changed = True
    if changed:
        onnx.save(proto, path)


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
        keep: str = 'none',
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
        keep: str = 'none',
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


def _run_graph(runtime: str, graph, example: torch.Tensor, threads: int) -> Callable[[np.ndarray], List[np.ndarray]]:
    """A call running an exported (ONNX file) or converted (OpenVINO model) graph on a batch: its outputs, in order."""
    if runtime == 'onnxruntime':
        session = onnxruntime_session(graph, threads)
        return lambda x: session.run(None, {'x': x})
    compiled = openvino_model(graph, example, threads)
    return lambda x: [r for r in compiled(x).values()]


def compare_int8(
        runtime: str,
        model: nn.Module,
        batches: Sequence[Tuple[torch.Tensor, Optional[torch.Tensor]]],
        calibration: Sequence[np.ndarray],
        keep: str = 'none',
        exporter: str = 'torchscript',
        threads: int = 1,
) -> Dict[str, Any]:
    """The INT8 model against the float32 one, both run by `runtime`, on held-out `batches` of (images, labels or None).

    Returns the number of images, the top-1 of each where there are labels, how often their top-1 predictions agree,
    and the fraction of channel selections (per MoD block and image: the k channels in the order they are fused) that
    the INT8 model makes as the float32 one does, in all and per block.
    """
    with tempfile.TemporaryDirectory() as tmp:
        return quantize_and_compare(runtime, model, batches, calibration, tmp, keep, exporter, threads)[0]


def quantize_and_compare(
        runtime: str,
        model: nn.Module,
        batches: Sequence[Tuple[torch.Tensor, Optional[torch.Tensor]]],
        calibration: Sequence[np.ndarray],
        workdir: str,
        keep: str = 'none',
        exporter: str = 'torchscript',
        threads: int = 1,
) -> Tuple[Dict[str, Any], Any]:
    """`compare_int8`'s result and the INT8 graph it measured, with the model's logits as its only output (an ONNX
    file in `workdir`, or an OpenVINO model)."""
    wrapped = WithSelections(model.eval()).eval()
    example = batches[0][0][:1]
    os.makedirs(os.path.join(workdir, 'fp32'))
    os.makedirs(os.path.join(workdir, 'int8'))
    fp32 = _run_graph(runtime, deployed(runtime, wrapped, example, os.path.join(workdir, 'fp32'), exporter), example,
                      threads)
    graph = deployed(runtime, wrapped, example, os.path.join(workdir, 'int8'), exporter, 'int8', calibration, keep)
    int8 = _run_graph(runtime, graph, example, threads)
    outputs = [(fp32(x.numpy()), int8(x.numpy()), y) for x, y in batches]
    blocks = [name for name, m in model.named_modules() if isinstance(m, MoDBlock) and m.selector is not None]
    pred = {k: np.concatenate([o[i][0].argmax(1) for o in outputs]) for i, k in enumerate(('fp32', 'int8'))}
    same = [np.concatenate([(f[1 + b] == q[1 + b]).all(1) for f, q, _ in outputs]) for b in range(len(blocks))]
    result: Dict[str, Any] = dict(
        images=int(len(pred['fp32'])), same_top1=float((pred['fp32'] == pred['int8']).mean() * 100),
        same_selections=float(np.mean(np.concatenate(same)) * 100) if same else None,
        per_block={b: float(s.mean() * 100) for b, s in zip(blocks, same)})
    if all(y is not None for _, _, y in outputs):
        labels = np.concatenate([y.numpy() for _, _, y in outputs])
        result.update(top1_fp32=float((pred['fp32'] == labels).mean() * 100),
                      top1_int8=float((pred['int8'] == labels).mean() * 100))
    return result, _logits_only(runtime, graph, os.path.join(workdir, 'int8', 'logits.onnx'))


def _logits_only(runtime: str, graph, path: str):
    """A `WithSelections` graph without its selection outputs: the model as deployed."""
    if runtime == 'onnxruntime':
        import onnx
        proto = onnx.load(graph)
        del proto.graph.output[1:]
        onnx.save(proto, path)
        return path
    import openvino as ov
    return ov.Model([graph.output(0)], graph.get_parameters(), graph.get_friendly_name())


def save_deployed(runtime: str, graph, out: Path) -> List[Path]:
    """Write an exported or converted graph into the folder `out`: model.onnx, or OpenVINO's model.xml / model.bin."""
    if runtime == 'onnxruntime':
        import shutil
        shutil.copy(graph, out / 'model.onnx')
        return [out / 'model.onnx']
    import openvino as ov
    ov.save_model(graph, str(out / 'model.xml'), compress_to_fp16=False)
    return [out / 'model.xml', out / 'model.bin']


def sample_batches(
        root: Union[str, Path],
        split: str,
        model: nn.Module,
        images: int,
        batch_size: int = 32,
        dataset: Optional[str] = '',
        img_size: Optional[int] = None,
        crop_pct: Optional[float] = None,
        seed: int = 0,
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """`images` images of a split drawn at random (`seed`), transformed as the model evaluates, in batches of
    (images, labels). A source that can only be read in order (webdataset) gives its first `images`.

    Args:
        root: Data root: an ImageFolder, or the folder a timm `dataset` source reads.
        dataset: timm dataset source ('' or None for a folder, 'hfds/NAME', 'wds/NAME', ...).
        img_size, crop_pct: The eval transform's, where they differ from the model's pretrained config.
    """
    from timm.data import create_dataset, create_transform, resolve_data_config
    given = dict(input_size=(_in_chans(model), img_size, img_size) if img_size else None, crop_pct=crop_pct)
    config = resolve_data_config({k: v for k, v in given.items() if v is not None}, model=model)
    data = create_dataset(dataset or '', root=str(root), split=split, is_training=False, batch_size=batch_size)
    data.transform = create_transform(config['input_size'], is_training=False, interpolation=config['interpolation'],
                                      mean=config['mean'], std=config['std'], crop_pct=config['crop_pct'])
    if not isinstance(data, torch.utils.data.IterableDataset):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:images].tolist()
        data = torch.utils.data.Subset(data, order)
    batches, seen = [], 0
    for x, y in torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=0):
        batches.append((x[:images - seen], y[:images - seen]))
        seen += len(batches[-1][0])
        if seen >= images:
            break
    return batches


def _in_chans(model: nn.Module) -> int:
    return next(m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def _check_batches(runtime: str, graph, model: nn.Module, x: torch.Tensor, precision: str) -> Dict[str, Any]:
    """The written graph on the images `x` (up to 3) one by one and together: a float32 export must give PyTorch's
    logits both ways; any graph must give each image the same top-1 alone as in the batch.

    Raises:
        OutputError: it does not.
    """
    from ._cli import OutputError
    run = _run_graph(runtime, graph, x[:1], 1)
    together = run(x.numpy())[0]
    alone = np.concatenate([run(x[i:i + 1].numpy())[0] for i in range(len(x))])
    if precision == 'fp32':
        with torch.no_grad():
            expected = model(x).numpy()
        for name, got in (('one by one', alone), (f'at batch {len(x)}', together)):
            if not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
                raise OutputError(f'the export does not reproduce PyTorch {name} (max difference '
                                  f'{np.abs(got - expected).max():.2e})')
    if (together.argmax(1) != alone.argmax(1)).any():
        raise OutputError(f'the {precision} graph gives other top-1 predictions at batch {len(x)} than one by one')
    return dict(batch_check=dict(images=len(x), max_difference=float(np.abs(together - alone).max())))


def _load_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> nn.Module:
    """The model to deploy: the checkpoint's (as --model, or as its own architecture), or a Hub / local folder's."""
    import timm
    from ..checkpoint import CheckpointError, model_from_checkpoint
    from ._cli import check_models
    if args.model:
        check_models(parser, [args.model])
    try:
        if args.checkpoint:
            return model_from_checkpoint(args.checkpoint, arch=args.model)
        return timm.create_model(args.model, pretrained=args.model.startswith(('hf-hub:', 'local-dir:'))).eval()
    except (CheckpointError, RuntimeError) as e:
        parser.error(str(e))


def main(argv: Optional[Sequence[str]] = None) -> None:
    from ._cli import NewFolder, OutputError, existing_dir, existing_file, fraction, positive_int
    parser = argparse.ArgumentParser(prog='python -m timm_mod.tools.deploy', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--model', help="model name, or 'hf-hub:ORG/NAME' / 'local-dir:FOLDER' (weights included); "
                                        'default: the --checkpoint\'s own architecture')
    common.add_argument('--checkpoint', type=existing_file,
                        help='train.py checkpoint, state dict or safetensors file (loaded with weights_only=True)')
    common.add_argument('--runtime', required=True, choices=('onnxruntime', 'openvino'), help='where it will run')
    common.add_argument('--out', required=True, metavar='DIR',
                        help='new folder for model.onnx (ONNX Runtime) or model.xml / model.bin (OpenVINO) and '
                             'report.json')
    common.add_argument('--img-size', type=positive_int, help='input size (default: the model\'s)')
    common.add_argument('--crop-pct', type=fraction, help='center crop fraction of the eval transform (default: the '
                                                          'model\'s; the digits preset trains with 1.0)')
    common.add_argument('--exporter', default='torchscript', choices=EXPORTERS,
                        help='torch.onnx.export\'s exporter for ONNX Runtime (default torchscript)')
    commands.add_parser('export', parents=[common], help='export in float32, checked against PyTorch',
                        description='Export in float32 with a dynamic batch axis; checked against PyTorch at batch 1 '
                                    'and 3.')
    quantize = commands.add_parser(
        'quantize', parents=[common], help='quantize to INT8, checked against float32 on held-out images',
        description='Quantize to INT8 (ONNX Runtime: static QDQ; OpenVINO: NNCF), calibrated on images of --data, '
                    'and compare it with the float32 model on held-out images of the same data: top-1 agreement and '
                    'accuracy, and how many channel selections of the MoD blocks it keeps.')
    quantize.add_argument('--data', required=True, type=existing_dir,
                          help='data root: an ImageFolder, or the folder a --dataset source reads')
    quantize.add_argument('--dataset', help='timm dataset source, as ./train.sh takes it (hfds/NAME, wds/NAME, ...)')
    quantize.add_argument('--calibration-split', default='train', help='split to calibrate on (default train)')
    quantize.add_argument('--calibration-images', type=positive_int, default=256,
                          help='images to calibrate on (default 256)')
    quantize.add_argument('--eval-split', default='val', help='held-out split to compare on (default val)')
    quantize.add_argument('--eval-images', type=positive_int, default=1000,
                          help='held-out images to compare on (default 1000)')
    quantize.add_argument('--keep', default='none', choices=KEEP,
                          help='what of every MoD block stays float32 (default none: plain post-training '
                               'quantization; selector: its pooling and scoring)')
    args = parser.parse_args(argv)
    if not args.model and not args.checkpoint:
        parser.error('name a --model, a --checkpoint, or both')
    precision = 'int8' if args.command == 'quantize' else 'fp32'
    keep = getattr(args, 'keep', 'none')
    try:
        require(args.runtime, precision)
    except ImportError as e:
        parser.error(str(e))
    target = NewFolder(args.out, what='--out')
    model = _load_model(args, parser)
    size = args.img_size or model.pretrained_cfg['input_size'][-1]
    data = dict(dataset=args.dataset, img_size=args.img_size, crop_pct=args.crop_pct) if precision == 'int8' else {}
    try:
        with target:
            if precision == 'int8':
                calibration = [x.numpy() for x, _ in sample_batches(
                    args.data, args.calibration_split, model, args.calibration_images, **data)]
                held_out = sample_batches(args.data, args.eval_split, model, args.eval_images, **data)
            else:
                held_out = [(torch.randn(3, _in_chans(model), size, size, generator=torch.Generator().manual_seed(0)),
                             None)]
            example = held_out[0][0][:1]
            x3 = torch.cat([x for x, _ in held_out[:3]])[:3]  # batches hold at least an image each
            with target.staging() as folder, tempfile.TemporaryDirectory() as tmp:
                if precision == 'int8':  # the graph compared is the graph written
                    report, graph = quantize_and_compare(args.runtime, model, held_out, calibration, tmp, keep,
                                                         args.exporter)
                else:
                    report, graph = {}, deployed(args.runtime, model, example, tmp, args.exporter)
                written = save_deployed(args.runtime, graph, folder)
                report.update(_check_batches(args.runtime, graph, model, x3, precision))
                report.update(runtime=args.runtime, precision=precision, keep=keep if precision == 'int8'
                              else None, model=args.model or str(args.checkpoint), files=[p.name for p in written])
                (folder / 'report.json').write_text(json.dumps(report, indent=1))
    except OutputError as e:
        parser.error(str(e))
    print(json.dumps(report, indent=1))
    print(f'wrote {target.out}: ' + ', '.join(sorted(p.name for p in target.out.iterdir())), file=sys.stderr)


if __name__ == '__main__':
    main()
