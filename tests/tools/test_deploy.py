"""INT8 deployment: quantized by ONNX Runtime and OpenVINO, one small model per block adapter, checked against float32
on generated images; and the deploy command line.

Tolerance: random-init models have no trained margins to keep, so agreement is checked on the logits themselves: the
INT8 logits of every image must correlate with float32's at 0.8 or more (these models give 0.87-1.00, MobileNetV3's
hard-swish and squeeze-excitation the lowest), and the INT8 model must give each image the same logits at batch 1 as
inside a batch of 3.
"""
import json
import warnings

import numpy as np
import pytest
import torch

from mod_cases import CASES, build_case
from tiers import slow_cases
from timm_mod import MoDBlock
from timm_mod.tools import deploy

pytest.importorskip('onnxruntime', reason='the deploy extra is not installed: pip install -e ".[deploy]"')
pytest.importorskip('nncf', reason='the deploy extra is not installed: pip install -e ".[deploy]"')

RUNTIMES = ('onnxruntime', 'openvino')
FAST = [('BasicBlock/first', 'onnxruntime'), ('InvertedResidual', 'openvino'), ('random', 'onnxruntime')]


def _randomized(model):
    """Eval-mode model with batch-norm statistics off their init, so that features and selections vary."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('case, runtime', slow_cases([(c, r) for c in CASES for r in RUNTIMES], FAST))
def test_int8_runs_every_batch_and_follows_float32(case, runtime, tmp_path):
    model, size = build_case(case)
    model = _randomized(model)
    calibration = [_images(8, size, seed).numpy() for seed in (1, 2)]
    x3 = _images(3, size, 3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        graph = deploy.deployed(runtime, model, x3[:1], str(tmp_path), 'torchscript', 'int8', calibration)
    run = deploy._run_graph(runtime, graph, x3[:1], 1)
    int8_3, int8_1 = run(x3.numpy())[0], run(x3[:1].numpy())[0]
    with torch.no_grad():
        fp32 = model(x3).numpy()
    assert int8_3.shape == fp32.shape and np.allclose(int8_1, int8_3[:1], rtol=1e-4, atol=1e-5)
    for got, expected in zip(int8_3, fp32):
        assert np.corrcoef(got, expected)[0, 1] >= 0.8


@pytest.mark.parametrize('runtime', slow_cases(list(RUNTIMES), ['onnxruntime']))
def test_comparing_int8_with_float32_counts_top1_and_selections(runtime):
    model, size = build_case('BasicBlock/first')
    model = _randomized(model)
    batches = [(_images(4, size, seed), torch.tensor([0, 1, 2, 3])) for seed in (5, 6)]
    calibration = [_images(8, size, 7).numpy()]
    # every selector picks the same k channels in the same order for every image, by margins 8-bit logits keep:
    # channel (7 i + 3) mod C gets the logit (k - i) * 100 * h, the others 0, h the mean of the pooled features
    # (positive after the block's ReLU)
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, MoDBlock)]
    with torch.no_grad():
        for _, block in blocks:
            fc1, fc2 = block.selector.fc1, block.selector.fc2
            fc1.weight.fill_(1 / fc1.in_features)
            fc2.weight.zero_()
            for i in range(block.k):
                fc2.weight[(7 * i + 3) % block.channels] = (block.k - i) * 100.
    result = deploy.compare_int8(runtime, model, batches, calibration)
    assert result['images'] == 8 and list(result['per_block']) == [n for n, _ in blocks]
    assert result['same_selections'] == 100 and set(result['per_block'].values()) == {100}
    assert 0 <= result['same_top1'] <= 100
    # float32 in the runtime is the PyTorch model itself
    with torch.no_grad():
        expected = np.mean([(model(x).argmax(1) == y).float().mean().item() for x, y in batches]) * 100
    assert result['top1_fp32'] == pytest.approx(expected)


@pytest.mark.parametrize('wrapped', [False, True], ids=['model', 'with-selections'])
def test_keeping_the_selector_leaves_its_nodes_unquantized(wrapped, tmp_path):
    onnx = pytest.importorskip('onnx')
    model, size = build_case('BasicBlock/first')
    model = deploy.WithSelections(model) if wrapped else model
    calibration = [_images(8, size, 1).numpy()]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        path = deploy.deployed('onnxruntime', model.eval(), _images(1, size, 2), str(tmp_path), 'torchscript', 'int8',
                               calibration, keep='selector')
    scopes = deploy.onnx_node_scopes(path)
    nodes = onnx.load(path).graph.node
    selector = [n for n in nodes if '.selector' in scopes.get(n.name, '')]
    assert selector and not any(n.op_type in ('QuantizeLinear', 'DequantizeLinear') for n in selector)
    assert any(n.op_type == 'QuantizeLinear' for n in nodes)  # the rest is quantized


@pytest.fixture()
def digits_like(tmp_path):
    """A tiny ImageFolder of two splits, 10 classes of 32 px images."""
    from PIL import Image
    gen = torch.Generator().manual_seed(0)
    for split, n in (('train', 3), ('val', 2)):
        for c in range(10):
            folder = tmp_path / 'data' / split / str(c)
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f'{i}.png')
    return tmp_path / 'data'


def _checkpoint(path, name='resnet18_mod_cifar'):
    import argparse
    import timm
    model = timm.create_model(name, num_classes=10)
    torch.save({'arch': name, 'state_dict': model.state_dict(), 'epoch': 0,
                'args': argparse.Namespace(model=name, model_kwargs={}, gp=None)}, path)
    return path


@pytest.mark.parametrize('runtime, files', slow_cases(
    [('onnxruntime', ['model.onnx', 'report.json']), ('openvino', ['model.bin', 'model.xml', 'report.json'])],
    [('openvino', ['model.bin', 'model.xml', 'report.json'])]))
def test_quantize_command_writes_the_model_and_its_comparison(runtime, files, digits_like, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / 'ckpt.pth.tar')
    out = tmp_path / 'int8'
    deploy.main(['quantize', '--checkpoint', str(ckpt), '--runtime', runtime, '--data', str(digits_like),
                 '--calibration-images', '8', '--eval-images', '12', '--out', str(out)])
    assert sorted(p.name for p in out.iterdir()) == files
    report = json.loads((out / 'report.json').read_text())
    assert report['images'] == 12 and report['precision'] == 'int8' and report['batch_check']['images'] == 3
    assert 'top1_int8' in report and 'layer1.1' in report['per_block']
    # the graph written is the INT8 model compared, its logits its only output
    run = deploy._run_graph(runtime, str(out / 'model.onnx') if runtime == 'onnxruntime' else
                            __import__('openvino').Core().read_model(out / 'model.xml'), torch.zeros(1, 3, 32, 32), 1)
    assert [o.shape for o in run(np.zeros((2, 3, 32, 32), np.float32))] == [(2, 10)]


def test_export_command_is_checked_against_pytorch(tmp_path):
    out = tmp_path / 'fp32'
    deploy.main(['export', '--checkpoint', str(_checkpoint(tmp_path / 'c.pth')), '--runtime', 'onnxruntime', '--out',
                 str(out)])
    report = json.loads((out / 'report.json').read_text())
    assert report['precision'] == 'fp32' and report['batch_check']['images'] == 3


@pytest.mark.parametrize('argv, error', [
    (['quantize', '--runtime', 'onnxruntime', '--data', '.', '--out', 'x'], 'name a --model, a --checkpoint'),
    (['quantize', '--model', 'resnet18_modd', '--runtime', 'onnxruntime', '--data', '.', '--out', 'x'],
     "unknown model 'resnet18_modd'"),
    (['quantize', '--model', 'resnet18_mod', '--runtime', 'onnxruntime', '--data', 'nowhere', '--out', 'x'],
     'no folder nowhere'),
    (['quantize', '--model', 'resnet18_mod', '--runtime', 'onnxruntime', '--data', '.', '--out', 'x',
      '--calibration-images', '0'], 'at least 1'),
    (['export', '--model', 'resnet18_mod', '--runtime', 'onnxruntime', '--out', 'x', '--crop-pct', '1.5'],
     'at most 1'),
])
def test_bad_input_is_refused_before_any_work(argv, error, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        deploy.main(argv)
    assert e.value.code == 2 and error in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()


def test_an_existing_output_folder_is_never_replaced(digits_like, tmp_path, capsys):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep')
    with pytest.raises(SystemExit):
        deploy.main(['export', '--checkpoint', str(_checkpoint(tmp_path / 'c.pth')), '--runtime', 'onnxruntime',
                     '--out', str(out)])
    assert 'never replaced' in capsys.readouterr().err and (out / 'notes.txt').read_text() == 'keep'
