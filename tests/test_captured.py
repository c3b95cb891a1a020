"""What users capture from inside a MoD model is what the modules really output.

Grad-CAM, feature visualisation, distillation and probing read activations through forward hooks, timm's and
torchvision's FX feature extractors and `forward_intermediates`. A MoD block that wrote into its input would change
the previous block's output after it had been captured. One model per block adapter, the three fusions and random
routing, in inference and in training mode.
"""
from typing import Dict, List

import pytest
import torch
import torch.nn as nn
from timm.models import create_feature_extractor as timm_feature_extractor

from mod_cases import CASES, build_case
from tiers import slow_cases
from timm_mod import MoDBlock

# the fast tier's representatives: a ResNet block, the EfficientNet family's, and random routing
FAST = ('BasicBlock/first', 'InvertedResidual', 'random')

def _model(case: str, train: bool = False):
    model, size = build_case(case, train)
    return model, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def _around_mod_blocks(model: nn.Module) -> List[str]:
    """Names of every MoD block and the module before it in its stage: the output a MoD block could overwrite."""
    names = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children):
            if isinstance(child, MoDBlock):
                prefix = f'{parent_name}.' if parent_name else ''
                names += [f'{prefix}{children[i - 1][0]}', f'{prefix}{name}']
    assert names, 'no MoD blocks'
    return names


def _true_outputs(model: nn.Module, x: torch.Tensor, names: List[str]) -> Dict[str, torch.Tensor]:
    """Each named module's output, copied the moment it is produced."""
    modules = dict(model.named_modules())
    outputs = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o.detach().clone()))
               for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


@pytest.mark.parametrize('case', slow_cases(list(CASES), FAST))
@pytest.mark.parametrize('grad', [False, True])
def test_forward_hooks_keep_what_they_captured(case, grad):
    model, x = _model(case)
    names = _around_mod_blocks(model)
    modules = dict(model.named_modules())
    kept, copied = {}, {}

    def hook(module, inputs, output, name):
        kept[name] = output  # held as Grad-CAM or a feature cache holds it: no copy
        copied[name] = output.detach().clone()

    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n in names]
    with torch.set_grad_enabled(grad):
        model(x)
    for h in handles:
        h.remove()
    for name in names:
        assert torch.equal(kept[name].detach(), copied[name]), f'{name} changed after it was captured'


@pytest.mark.parametrize('case', slow_cases(list(CASES), FAST))
def test_timm_feature_extractor_returns_the_modules_outputs(case):
    model, x = _model(case)
    names = _around_mod_blocks(model)
    extractor = timm_feature_extractor(model, return_nodes={n: n for n in names})
    with torch.no_grad():
        features = extractor(x)
    expected = _true_outputs(model, x, names)
    for name in names:
        torch.testing.assert_close(features[name], expected[name], msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('case', slow_cases(
    ['BasicBlock/first', 'Bottleneck/last', 'InvertedResidual', 'ConvNeXtBlock', 'RegNetBottleneck', 'ConvNormAct',
     'original', 'random'], FAST))
def test_torchvision_feature_extractor_traces_and_returns_the_modules_outputs(case):
    feature_extraction = pytest.importorskip('torchvision.models.feature_extraction')
    model, x = _model(case)
    names = _around_mod_blocks(model)
    extractor = feature_extraction.create_feature_extractor(model, return_nodes={n: n for n in names})
    with torch.no_grad():
        features = extractor(x)
    expected = _true_outputs(model, x, names)
    for name in names:
        torch.testing.assert_close(features[name], expected[name], msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('case', slow_cases(list(CASES), FAST))
def test_forward_intermediates_are_the_stage_outputs(case):
    model, x = _model(case)
    modules = [info['module'] for info in model.feature_info]
    with torch.no_grad():
        intermediates = model.forward_intermediates(x, intermediates_only=True)
    expected = _true_outputs(model, x, modules)
    assert len(intermediates) == len(modules)
    for name, feature in zip(modules, intermediates):
        torch.testing.assert_close(feature, expected[name], msg=lambda m: f'{name}: {m}')
