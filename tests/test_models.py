"""The registered models: fidelity to the paper's tables, the timm model interface, honest pretrained listings."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import timm

import timm_mod
from tiers import slow_cases
from timm_mod import MoDBlock
from timm_mod.models import _common
from timm_mod.models._common import hub_repo_id, mod_cfg
from timm_mod.tools.complexity import count_gmacs, count_params_m
from timm_mod.tools.paper import PAPER

OURS = timm_mod.list_models()
IMAGENET_RESNETS = [n for n in OURS if n.startswith('resnet') and 'cifar' not in n]
SMALL = ['resnet18_mod', 'resnet50_mod', 'mobilenetv2_mod', 'resnet18_mod_cifar', 'vgg16_bn_mod_cifar']
# the fast tier's representatives: a ResNet (Bottleneck), the EfficientNet family and a CIFAR VGG
FAST = ('resnet50_mod', 'mobilenetv2_mod', 'vgg16_bn_mod_cifar')
README = Path(__file__).resolve().parents[1] / 'README.md'


def test_every_paper_model_is_registered():
    expected = {n for n in PAPER if n not in ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'mobilenetv2_100')}
    assert expected <= set(OURS)
    assert set(timm.list_models()) >= expected


@pytest.mark.parametrize('name', [n for n in PAPER if n in OURS])
def test_params_match_paper(name):
    row = PAPER[name]
    model = timm.create_model(name)
    assert abs(count_params_m(model) - row.params_m) < 0.01
    if row.params_m_c100 is not None:
        assert abs(count_params_m(timm.create_model(name, num_classes=100)) - row.params_m_c100) < 0.01


@pytest.mark.parametrize('name', slow_cases([n for n in PAPER if n in OURS], FAST))
def test_macs_match_paper(name):
    # fvcore counts conv/linear MACs only: ~1 % under the paper's counter on ResNets, ~2 % on MobileNetV2
    tolerance = 0.025 if name in IMAGENET_RESNETS else 0.03
    gmacs = count_gmacs(timm.create_model(name))
    assert abs(gmacs / PAPER[name].gmacs - 1) < tolerance


@pytest.mark.parametrize('name', IMAGENET_RESNETS + ['mobilenetv2_mod', 'mobilenetv2_mod_l'])
def test_every_second_block_of_each_stage_is_mod(name):
    model = timm.create_model(name, device='meta')
    stages = [model.layer1, model.layer2, model.layer3, model.layer4] if hasattr(model, 'layer1') else model.blocks
    for stage in stages:
        for i, block in enumerate(stage):
            assert isinstance(block, MoDBlock) == (i % 2 == 1), f'{name} block {i}'


def test_variants_carry_their_fusion_and_routing():
    def mod_blocks(name):
        return [m for m in timm.create_model(name, device='meta').modules() if isinstance(m, MoDBlock)]
    assert all(b.fusion == 'last' for b in mod_blocks('resnet50_mod_lk'))
    assert all(b.routing == 'random' and b.selector is None for b in mod_blocks('resnet50_mod_rand'))
    assert all(b.k == b.channels // 64 for b in mod_blocks('resnet50_mod'))
    assert all(b.k == b.channels // 16 for b in mod_blocks('mobilenetv2_mod'))


def test_mod_kwargs_are_honoured():
    model = timm.create_model('resnet50_mod', mod_c=32, mod_reduction=8, mod_fusion='original', device='meta')
    block = model.layer3[1]
    assert (block.k, block.fusion, block.selector.fc1.out_features) == (1024 // 32, 'original', 1024 // 8)


def test_bad_mod_c_fails_naming_the_block():
    with pytest.raises(ValueError, match=r'layer1\.1 \(BasicBlock\).*64 // 128'):
        timm.create_model('resnet18_mod', mod_c=128)
    with pytest.raises(ValueError, match='mod_c'):
        timm.create_model('resnet18_mod', mod_c=0)


def test_unknown_kwarg_raises():
    with pytest.raises(TypeError):
        timm.create_model('resnet18_mod', not_an_arg=1)


@pytest.mark.parametrize('name', SMALL)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = timm.create_model(name, num_classes=7).train()
    size = model.pretrained_cfg['input_size'][1]
    out = model(torch.randn(2, 3, min(size, 96), min(size, 96)))
    assert out.shape == (2, 7)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize('name', slow_cases(SMALL, FAST))
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    model = timm.create_model(name).train()
    x = torch.randn(2, 3, 64, 64)

    def run():
        model.zero_grad()
        torch.manual_seed(0)
        out = model(x)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    ref_out, ref_grads = run()
    model.set_grad_checkpointing(True)
    out, grads = run()
    torch.testing.assert_close(out, ref_out)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', ['resnet50_mod', 'mobilenetv2_mod', 'vgg16_bn_mod_cifar'])
def test_meta_device_construction_and_forward(name):
    model = timm.create_model(name, device='meta')
    assert all(p.device.type == 'meta' for p in model.parameters())
    size = model.pretrained_cfg['input_size'][1]
    assert model(torch.randn(2, 3, size, size, device='meta')).shape == (2, model.num_classes)


def test_dilated_output_stride_8():
    model = timm.create_model('resnet50_mod', output_stride=8).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 8
    assert model.layer4[1].block.conv2.dilation == (4, 4)


def test_drop_path_applies_to_mod_blocks():
    model = timm.create_model('resnet50_mod', drop_path_rate=0.1, device='meta')
    assert type(model.layer4[1].drop_path).__name__ == 'DropPath'


def test_torchscript_matches_eager():
    model = timm.create_model('resnet18_mod').eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_import_loads_no_optional_package():
    """`import timm_mod` needs torch, timm, huggingface_hub and safetensors only: no extra's package is imported
    (torchvision is not in the list: timm imports it where it is installed)."""
    extras = ('fvcore', 'jinja2', 'sklearn', 'datasets', 'webdataset', 'matplotlib', 'torchmetrics', 'pycocotools',
              'onnx', 'onnxruntime', 'openvino', 'transformers', 'nncf')
    code = f'import sys, timm_mod; print(" ".join(m for m in {extras!r} if m in sys.modules))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ''


# --- pretrained weights: listed, and with a weight source, only where published


def test_only_published_weights_are_listed_or_have_a_weight_source():
    tags = timm.list_models(module=list(timm_mod.MODEL_MODULES), include_tags=True)
    assert set(timm_mod.list_models(pretrained=True)) == _common.PUBLISHED
    assert {n for n in timm.list_pretrained() if n in tags} == _common.PUBLISHED
    assert [n for n in tags if bool(timm.get_pretrained_cfg(n).has_weights) != (n in _common.PUBLISHED)] == []


def test_a_cfg_names_its_hub_repo_only_once_published(monkeypatch):
    monkeypatch.setattr(_common, 'PUBLISHED', frozenset())
    assert not {'hf_hub_id', 'hf_hub_filename', 'url', 'file'} & set(mod_cfg('resnet75_mod'))
    monkeypatch.setattr(_common, 'PUBLISHED', frozenset({'resnet75_mod.in1k'}))
    cfg = mod_cfg('resnet75_mod')
    assert (cfg['hf_hub_id'], cfg['hf_hub_filename']) == (hub_repo_id('resnet75_mod', 'in1k'), 'model.safetensors')
    assert 'hf_hub_id' not in mod_cfg('resnet75_mod', 'c10') and 'hf_hub_id' not in mod_cfg('resnet86_mod')


def test_readme_weights_table_lists_the_published_tags():
    table = re.search(r'<!-- published-weights:begin -->\n(.*?)<!-- published-weights:end -->', README.read_text(),
                      re.S)
    assert table, 'README: no published-weights table'
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in table.group(1).splitlines()[2:]]
    if not _common.PUBLISHED:
        assert rows == [['none yet', '', '']]
        return
    listed = {row[0].strip('`'): row[1] for row in rows}
    assert set(listed) == _common.PUBLISHED
    for name_tag, repo in listed.items():
        assert f'timm-mod/{name_tag}' in repo, f'README: {name_tag} is not in its repo, timm-mod/{name_tag}'
