"""features_only and forward_intermediates: every option timm offers, for every registered model.

Each model is built once plain, and once per option with the plain model's weights loaded the way a user loads a
pretrained backbone (``pretrained=True`` with the weights in its pretrained cfg). The features, computed under
no_grad, must be the plain model's `forward_intermediates` computed with autograd on, where every MoD block takes its
training path: an inference-only shortcut that changed a stage output after it was captured would show.
"""
import itertools
from typing import Dict, List, Tuple, Union

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.models._features import FeatureGetterNet, FeatureHookNet
from timm.models._features_fx import FeatureGraphNet

import timm_mod
from tiers import slow_cases

NAMES = timm_mod.list_models()
# the fast tier's representatives: a ResNet, the EfficientNet family (its own Features class) and a CIFAR VGG
FAST = ('resnet18_mod', 'mobilenetv2_mod', 'vgg16_bn_mod_cifar')

# features_only kwargs of each option, and the feature indices they select (None: all, an int n: the last n)
OPTIONS: Dict[str, Tuple[dict, Union[None, int, Tuple[int, ...]]]] = {
    'default': (dict(), None),
    'hook': (dict(feature_cls='hook', out_indices=(1, 3)), (1, 3)),
    'fx': (dict(feature_cls='fx', out_indices=2), 2),
    'getter': (dict(feature_cls='getter', out_indices=(0, 2)), (0, 2)),  # prunes the later stages
}
FEATURE_CLASSES = {'hook': FeatureHookNet, 'fx': FeatureGraphNet, 'getter': FeatureGetterNet}


def _size(name: str) -> int:
    return 32 if name.endswith('_cifar') else 64


def _randomized(model: nn.Module) -> nn.Module:
    """Eval-mode model whose norms, biases and layer scales are off their init, so features tell weights apart.

    At init a ResNet's zero-initialised last BN and ConvNeXt's 1e-6 layer scale make residual branches vanish.
    """
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            leaf = name.rsplit('.', 1)[-1]
            if leaf == 'running_var' or (leaf in ('weight', 'gamma') and tensor.ndim == 1):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif leaf in ('running_mean', 'bias'):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
    return model.eval()


def _run(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    torch.manual_seed(0)  # the same draws for random routing in every run
    out = model(x)
    return list(out.values()) if isinstance(out, dict) else out


def _selected(indices, n: int) -> List[int]:
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        return list(range(n - indices, n))
    return list(indices)


@pytest.fixture(scope='module', params=slow_cases(NAMES, FAST))
def plain(request, tmp_path_factory):
    """(name, plain model, its weights file, input, its intermediates computed with autograd on)."""
    name = request.param
    model = _randomized(timm.create_model(name))
    weights = tmp_path_factory.mktemp(name) / 'model.safetensors'
    save_file(model.state_dict(), weights)
    x = torch.randn(2, 3, _size(name), _size(name), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    with torch.enable_grad():
        reference = [t.detach() for t in model.forward_intermediates(x, intermediates_only=True)]
    return name, model, weights, x, reference


@pytest.mark.parametrize('option', list(OPTIONS))
def test_features_are_the_plain_models_intermediates(plain, option):
    name, model, weights, x, reference = plain
    kwargs, indices = OPTIONS[option]
    features_model = timm.create_model(  # loaded as timm loads a pretrained backbone
        name, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)), **kwargs).eval()
    if option in FEATURE_CLASSES:
        assert isinstance(features_model, FEATURE_CLASSES[option])
    take = _selected(indices, len(model.feature_info))
    info = [model.feature_info[i] for i in take]
    assert features_model.feature_info.channels() == [i['num_chs'] for i in info]
    assert features_model.feature_info.reduction() == [i['reduction'] for i in info]
    with torch.no_grad():
        features = _run(features_model, x)
    assert len(features) == len(take)
    for i, feature in zip(take, features):
        torch.testing.assert_close(feature, reference[i], rtol=1e-5, atol=1e-5, msg=lambda m: f'feature {i}: {m}')


def test_output_stride_dilates_the_last_two_stages(plain):
    name, model, _, x, _ = plain
    reductions = [info['reduction'] for info in model.feature_info]
    output_stride = reductions[-1] // 4  # 8 for ImageNet models and VGG, 2 for CIFAR ResNets
    features_model = timm.create_model(name, features_only=True, output_stride=output_stride).eval()
    expected = [min(r, output_stride) for r in reductions]
    assert features_model.feature_info.reduction() == expected
    with torch.no_grad():
        features = _run(features_model, x)
    assert [f.shape[1] for f in features] == [info['num_chs'] for info in model.feature_info]
    assert [x.shape[-1] // f.shape[-1] for f in features] == expected


def test_forward_intermediates_under_no_grad_are_the_true_intermediates(plain):
    name, model, _, x, reference = plain
    torch.manual_seed(0)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.manual_seed(0)
        features = model.forward_features(x)
    torch.testing.assert_close(final, features)
    assert len(intermediates) == len(reference) == len(model.feature_info)
    assert [t.shape[1] for t in intermediates] == [info['num_chs'] for info in model.feature_info]
    assert [x.shape[-1] // t.shape[-1] for t in intermediates] == [info['reduction'] for info in model.feature_info]
    for i, (a, b) in enumerate(zip(intermediates, reference)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f'intermediate {i}: {m}')


def test_forward_intermediates_takes_indices_and_stops_early(plain):
    name, model, _, x, reference = plain
    last = len(reference) - 1
    torch.manual_seed(0)
    with torch.no_grad():
        picked = model.forward_intermediates(x, indices=[0, last - 1], stop_early=True, intermediates_only=True)
        torch.manual_seed(0)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    for got, i in zip(picked + last_two, [0, last - 1, last - 1, last]):
        torch.testing.assert_close(got, reference[i], rtol=1e-5, atol=1e-5)
