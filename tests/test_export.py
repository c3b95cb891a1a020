"""The static graph, shown: compile without graph breaks, torch.export, ONNX run in onnxruntime."""
import numpy as np
import pytest
import timm
import torch

import timm_mod  # noqa: F401

NAMES = ['resnet18_mod_cifar', 'resnet50_mod_lk', 'mobilenetv2_mod', 'vgg16_bn_mod_cifar']


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('train', [False, True])
def test_compiles_as_one_graph(name, train):
    torch._dynamo.reset()
    model = timm.create_model(name).train(train)
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend='eager')  # fullgraph: any graph break raises
    if train:
        compiled(x).sum().backward()
    else:
        with torch.inference_mode():
            torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize('name', ['resnet18_mod_cifar', 'mobilenetv2_mod'])
def test_torch_export_matches_eager(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


@pytest.mark.parametrize('name', ['resnet18_mod_cifar', 'resnet50_mod_lk', 'vgg16_bn_mod_cifar'])
def test_onnx_runs_in_onnxruntime_and_matches(name, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    onnx = pytest.importorskip('onnx')
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / f'{name}.onnx'
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=['x'], opset_version=17)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {'ScatterND', 'ScatterElements'}, 'first/last fusion should export without scatter'
    out = ort.InferenceSession(str(path)).run(None, {'x': x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4, rtol=1e-4)
