"""Exports: one graph that serves every batch size, run in the runtimes themselves, matching PyTorch eager.

One model per block adapter and per fusion and routing, exported from a batch-1 example (the case that used to bake
the batch size into the graph) with a dynamic batch axis, then run at batch 1 and at an odd batch size. Models are
random-init, so their channel selection is as arbitrary as it gets; that ties between logits (the selector's hidden
ReLU all zero) go to the lower channel index everywhere is tested on its own.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.fx.experimental._config

from tiers import slow_cases
from mod_cases import CASES, build_case, tied_block

ort = pytest.importorskip('onnxruntime', reason='the deploy extra is not installed: pip install -e ".[deploy]"')
ov = pytest.importorskip('openvino', reason='the deploy extra is not installed: pip install -e ".[deploy]"')

BATCHES = (1, 3)
TOL = dict(rtol=1e-3, atol=1e-4)


def _model(case: str):
    return build_case(case)


def _inputs(size: int):
    gen = torch.Generator().manual_seed(1)
    return {b: torch.randn(b, 3, size, size, generator=gen) for b in BATCHES}


def _check(run, model, inputs):
    for b, x in inputs.items():
        with torch.no_grad():
            expected = model(x)
        with torch.no_grad():
            out = torch.as_tensor(np.asarray(run(x)))
        assert out.shape == expected.shape, f'batch {b}'
        scale = expected.abs().max().item()
        torch.testing.assert_close(out, expected, rtol=TOL['rtol'], atol=TOL['atol'] * max(1., scale),
                                   msg=lambda m: f'batch {b}: {m}')


def _onnx_session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


def _export_onnx(model, x, path, dynamo: bool):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if dynamo:
            # a named axis: a Dim would be specialized to 1 by a batch-1 example (torch.export does so for any model)
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=['x'], output_names=['y'],
                              dynamic_shapes={'x': {0: 'batch'}})
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=['x'], output_names=['y'],
                              opset_version=17, dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}})


# the fast tier exports each runtime's representatives; the full sweep every case through every path
@pytest.mark.parametrize('case, dynamo', slow_cases(
    [(case, dynamo) for case in CASES for dynamo in (False, True)],
    [('BasicBlock/first', False), ('BasicBlock/first', True), ('random', False)]))
def test_onnx_export_from_batch_1_runs_every_batch_in_onnxruntime(case, dynamo, tmp_path):
    model, size = _model(case)
    inputs = _inputs(size)
    path = tmp_path / 'model.onnx'
    _export_onnx(model, inputs[1], path, dynamo)
    session = _onnx_session(path)
    _check(lambda x: session.run(None, {'x': x.numpy()})[0], model, inputs)


@pytest.mark.parametrize('case', slow_cases(list(CASES), ['Bottleneck/last', 'original']))
def test_openvino_converts_from_batch_1_and_runs_every_batch(case):
    model, size = _model(case)
    inputs = _inputs(size)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        converted = ov.convert_model(model, example_input=inputs[1], input=[(-1, 3, size, size)])
    compiled = ov.Core().compile_model(converted, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    _check(lambda x: compiled(x.numpy())[0], model, inputs)


@pytest.mark.parametrize('case', slow_cases(['BasicBlock/first', 'InvertedResidual', 'original'], ['BasicBlock/first']))
def test_openvino_runs_the_onnx_export(case, tmp_path):
    model, size = _model(case)
    inputs = _inputs(size)
    path = tmp_path / 'model.onnx'
    _export_onnx(model, inputs[1], path, dynamo=False)
    compiled = ov.Core().compile_model(ov.convert_model(str(path)), 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    _check(lambda x: compiled(x.numpy())[0], model, inputs)


@pytest.mark.parametrize('case', slow_cases(
    ['BasicBlock/first', 'Bottleneck/last', 'InvertedResidual', 'original', 'random'], ['BasicBlock/first']))
def test_torch_export_from_batch_1_runs_every_batch(case):
    model, size = _model(case)
    inputs = _inputs(size)
    # torch.export specializes any size-1 dimension of an example (timm's own models too) unless told not to
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        exported = torch.export.export(model, (inputs[1],), dynamic_shapes={'x': {0: torch.export.Dim.DYNAMIC}})
    _check(lambda x: exported.module()(x), model, inputs)


@pytest.mark.parametrize('dynamo', slow_cases([False, True], [False]), ids=['torchscript', 'dynamo'])
def test_onnx_fusion_adds_whole_tensors_without_slicing_or_scattering_feature_maps(dynamo, tmp_path):
    """Slice + Concat of a feature map (or a Scatter) makes the runtimes leave their blocked conv layout."""
    onnx = pytest.importorskip('onnx')
    model, size = _model('BasicBlock/first')
    path = tmp_path / 'model.onnx'
    _export_onnx(model, _inputs(size)[1], path, dynamo)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    elem_type = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    cut = [n.name for n in graph.node
           if n.op_type in ('Slice', 'Concat', 'Split') and elem_type.get(n.output[0]) == onnx.TensorProto.FLOAT]
    assert not cut, cut
    assert not {n.op_type for n in graph.node} & {'ScatterND', 'ScatterElements'}


@pytest.mark.parametrize('runtime', ['onnxruntime', 'openvino'])
def test_runtimes_break_ties_like_pytorch(runtime, tmp_path):
    block = tied_block()
    x = torch.rand(3, 16, 4, 4)
    if runtime == 'onnxruntime':
        path = tmp_path / 'block.onnx'
        _export_onnx(block, x[:1], path, dynamo=False)
        run = lambda t: _onnx_session(path).run(None, {'x': t.numpy()})[0]  # noqa: E731
    else:
        compiled = ov.Core().compile_model(
            ov.convert_model(block, example_input=x[:1], input=[(-1, 16, 4, 4)]), 'CPU',
            {'INFERENCE_PRECISION_HINT': 'f32'})
        run = lambda t: compiled(t.numpy())[0]  # noqa: E731
    _check(run, block, {1: x[:1], 3: x})
