"""timm_mod.mod: one call turns a timm CNN of a supported family into its MoD version (beyond the paper)."""
import copy

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import SEModule
from timm.models._efficientnet_blocks import SqueezeExcite

import timm_mod
from timm_mod import MoDBlock
from timm_mod.tools.complexity import count_params_m
from timm_mod.convert import find_stages
from timm_mod.models.pairing import BASELINES
from timm_mod.tools.paper import PAPER
from tiers import slow_cases

SIZE = 64
# Small members of every supported family: (timm name, create kwargs); the ids say what each one covers.
FAMILIES = {
    'resnet18d': ('resnet18d', {}),  # BasicBlock, deep stem
    'seresnet18': ('seresnet18', {}),  # BasicBlock + SE
    'ecaresnet26t': ('ecaresnet26t', {}),  # Bottleneck + ECA
    'resnext': ('resnext50_32x4d', dict(layers=(1, 2, 1, 2))),  # grouped Bottleneck
    'wide_resnet': ('wide_resnet50_2', dict(layers=(1, 2, 1, 2))),  # Bottleneck, width 2 x planes
    'convnext_linear_mlp': ('convnext_atto', dict(conv_mlp=False)),  # channels-last LayerNorm, Linear MLP
    'convnext_conv_mlp': ('convnext_atto', {}),  # LayerNorm2d, 1x1-conv MLP
    'convnextv2': ('convnextv2_atto', {}),  # GRN MLP, no layer scale
    'regnetx': ('regnetx_002', {}),  # grouped bottleneck
    'regnety': ('regnety_002', {}),  # grouped bottleneck + SE
    'efficientnet': ('efficientnet_b0', {}),  # InvertedResidual + SE, DepthwiseSeparableConv stem stage
    'mobilenetv3': ('mobilenetv3_small_050', {}),  # InvertedResidual + hard-sigmoid SE
    'lcnet': ('lcnet_050', {}),  # stages of DepthwiseSeparableConv (+ SE)
}
# the fast tier's representatives: a grouped ResNet bottleneck, ConvNeXt, RegNet with SE, the EfficientNet family
FAST_FAMILIES = ('resnext', 'convnext_conv_mlp', 'regnety', 'efficientnet')
CURATED = ['convnext_tiny_mod', 'convnext_nano_mod', 'resnext50_32x4d_mod', 'seresnet50_mod', 'regnety_016_mod',
           'efficientnet_b0_mod', 'mobilenetv3_large_100_mod']

_converted = {}


def _stage_types(model: nn.Module):
    return [[type(b) for b in stage.children()] for _, stage in find_stages(model)]


def converted(family: str):
    """(what the baseline had before conversion, the converted model), built once per family."""
    if family not in _converted:
        name, kwargs = FAMILIES[family]
        torch.manual_seed(0)
        model = timm.create_model(name, **kwargs).eval()
        x = torch.randn(2, 3, SIZE, SIZE)
        with torch.no_grad():
            before = dict(
                x=x, out=model(x).shape, features=model.forward_features(x).shape,
                feature_info=copy.deepcopy(model.feature_info), types=_stage_types(model))
        _converted[family] = before, timm_mod.mod(model)
    return _converted[family]


@pytest.mark.parametrize('family', slow_cases(list(FAMILIES), FAST_FAMILIES))
def test_conversion_keeps_output_shapes_and_feature_info(family):
    before, model = converted(family)
    with torch.no_grad():
        assert model(before['x']).shape == before['out']
        assert model.forward_features(before['x']).shape == before['features']
    assert model.feature_info == before['feature_info']


@pytest.mark.parametrize('family', slow_cases(list(FAMILIES), FAST_FAMILIES))
def test_every_second_block_of_each_stage_becomes_a_mod_block_of_the_same_type(family):
    before, model = converted(family)
    stages = find_stages(model)
    assert len(model.mod_settings['blocks']) == sum(len(t) // 2 for t in before['types'])
    for (stage_name, stage), types in zip(stages, before['types']):
        for i, (block, old_type) in enumerate(zip(stage.children(), types)):
            if i % 2:
                assert isinstance(block, MoDBlock), f'{stage_name}[{i}]'
                assert type(block.block) is old_type and block.k == block.channels // model.mod_settings['c']
            else:
                assert type(block) is old_type, f'{stage_name}[{i}] must stay standard'


@pytest.mark.parametrize('family', slow_cases(list(FAMILIES), FAST_FAMILIES))
def test_converted_model_trains_a_step(family):
    before, model = converted(family)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(before['x']), torch.tensor([1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    selector = next(m for m in model.modules() if isinstance(m, MoDBlock)).selector.fc2.weight
    old = selector.detach().clone()
    optimizer.step()
    assert not torch.equal(selector, old)


def test_settings_are_recorded_on_the_model():
    model = timm_mod.mod('resnet50', c=32, fusion='last', routing='random', reduction=8, device='meta')
    settings = model.mod_settings
    assert {k: settings[k] for k in ('c', 'every', 'fusion', 'routing', 'reduction')} == dict(
        c=32, every=2, fusion='last', routing='random', reduction=8)
    assert settings['blocks'] == ('layer1.1', 'layer2.1', 'layer2.3', 'layer3.1', 'layer3.3', 'layer3.5', 'layer4.1')


@pytest.mark.parametrize('name, c', [
    ('resnet50', 64), ('resnet18', 64), ('mobilenetv2_100', 16), ('efficientnet_b0', 16),
    ('mobilenetv3_large_100', 16), ('regnety_016', 32)])
def test_c_defaults_to_the_narrower_end_of_the_first_block(name, c):
    assert timm_mod.mod(name, device='meta').mod_settings['c'] == c


def test_default_c_gives_convnext_blocks_two_channels_to_normalise():
    model = timm_mod.mod('convnext_tiny', device='meta')
    assert model.mod_settings['c'] == 48 and model.stages[0].blocks[1].k == 2


def test_c_leaving_a_convnext_block_one_channel_is_refused():
    with pytest.raises(ValueError, match=r'stages\.0\.blocks\.1 \(ConvNeXtBlock\).*needs k >= 2.* <= 48'):
        timm_mod.mod('convnext_tiny', c=96, device='meta')


@pytest.mark.parametrize('baseline, paper_model', [
    ('resnet50', 'resnet50_mod'), ('mobilenetv2_100', 'mobilenetv2_mod')])
def test_default_conversion_of_a_paper_baseline_has_the_papers_size(baseline, paper_model):
    """The generic conversion of the paper's baseline, at the default c, is the paper's model: its parameter count
    (Tables 1 and 2, to 0.01 M)."""
    assert count_params_m(timm_mod.mod(baseline, device='meta')) == pytest.approx(PAPER[paper_model].params_m,
                                                                                  abs=0.005)


@pytest.mark.parametrize('every, expected', [(1, [1, 2, 3, 4, 5]), (3, [1, 4])])
def test_every_sets_the_spacing_and_never_converts_the_first_block(every, expected):
    model = timm_mod.mod('resnet50', every=every, device='meta')
    assert [i for i, b in enumerate(model.layer3) if isinstance(b, MoDBlock)] == expected


def test_other_weights_are_kept():
    model = timm.create_model('resnet18d')
    replaced = tuple(f'layer{i}.1.' for i in range(1, 5))
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(replaced)}
    timm_mod.mod(model)
    torch.testing.assert_close({k: model.state_dict()[k] for k in state}, state)


def test_grouped_bottleneck_keeps_its_group_width_where_k_allows():
    wide_k = timm_mod.mod('resnext50_32x4d', c=4, device='meta').layer1[1].block.conv2  # k = 64, width 32
    assert (wide_k.out_channels, wide_k.groups) == (32, 8)  # group width 4, as resnext50_32x4d's layer1
    narrow_k = timm_mod.mod('resnext50_32x4d', device='meta').layer4[1].block.conv2  # k = 32, width 16 < 32
    assert (narrow_k.out_channels, narrow_k.groups) == (16, 1)


def test_convnext_block_keeps_kernel_mlp_ratio_norm_and_layer_scale():
    model = timm_mod.mod('convnext_atto', conv_mlp=False)
    old, new = model.stages[3].blocks[0], model.stages[3].blocks[1].block
    assert new.conv_dw.kernel_size == old.conv_dw.kernel_size and new.conv_dw.groups == new.conv_dw.in_channels
    assert new.mlp.fc1.out_features == 4 * new.conv_dw.in_channels
    assert type(new.norm) is type(old.norm) and new.norm.eps == old.norm.eps
    assert torch.all(new.gamma == 1e-6)


def test_inverted_residual_rebuilds_its_squeeze_excite_at_the_new_width():
    _, model = converted('mobilenetv3')
    for block in model.modules():
        if isinstance(block, MoDBlock) and not isinstance(block.block.se, nn.Identity):
            se = block.block.se
            assert isinstance(se, SqueezeExcite) and se.conv_reduce.in_channels == block.block.conv_dw.in_channels
            assert se.conv_reduce.out_channels >= 1 and type(se.gate).__name__.lower().startswith('hard')
            return
    pytest.fail('no MoD block with squeeze-excitation')


def test_regnet_se_is_sized_from_the_new_width():
    _, model = converted('regnety')
    se = model.s4.b2.block.se
    assert isinstance(se, SEModule) and se.fc1.in_channels == model.s4.b2.block.conv2.conv.out_channels


@pytest.mark.parametrize('name, block_type', [('resnext26ts', 'BottleneckBlock'),
                                              ('efficientnet_cc_b0_4e', 'CondConvResidual')])
def test_unsupported_block_is_refused_by_name_and_nothing_changes(name, block_type):
    model = timm.create_model(name, device='meta')
    with pytest.raises(TypeError, match=rf'{name}.*cannot build a MoD block from {block_type}: no adapter'):
        timm_mod.mod(model)
    assert not any(isinstance(m, MoDBlock) for m in model.modules())


def test_model_without_stages_is_refused():
    with pytest.raises(TypeError, match='VisionTransformer: cannot find its stages'):
        timm_mod.mod('vit_tiny_patch16_224', device='meta')


def test_too_large_c_is_refused_before_anything_changes():
    model = timm.create_model('resnet18d', device='meta')
    with pytest.raises(ValueError, match=r'layer1\.1 \(BasicBlock\).*64 // 128'):
        timm_mod.mod(model, c=128)
    assert not any(isinstance(m, MoDBlock) for m in model.modules())


def test_create_kwargs_need_a_model_name():
    with pytest.raises(TypeError, match='only apply when a model name is given'):
        timm_mod.mod(timm.create_model('resnet18', device='meta'), num_classes=10)


# the default c of each registered model beyond the paper, as its docs state it
DOCUMENTED_C = {'convnext_tiny_mod': 48, 'convnext_nano_mod': 40, 'resnext50_32x4d_mod': 64, 'seresnet50_mod': 64,
                'regnety_016_mod': 32, 'efficientnet_b0_mod': 16, 'mobilenetv3_large_100_mod': 16}


@pytest.mark.parametrize('name', slow_cases(CURATED, ['regnety_016_mod', 'efficientnet_b0_mod']))
def test_registered_model_is_its_baseline_with_every_second_block_a_mod_block(name):
    """Checked against timm's baseline itself: every standard block and every module outside the stages has the
    baseline's tensors; blocks 1, 3, 5, ... of each stage are MoD blocks around a block of the baseline's type at
    k = C // c, with the documented c."""
    registered = timm.create_model(name, device='meta')
    baseline = timm.create_model(BASELINES[name], device='meta')
    c = DOCUMENTED_C[name]
    mod_keys = set()
    for (stage_name, stage), (_, base_stage) in zip(find_stages(registered), find_stages(baseline)):
        blocks, base_blocks = list(stage.named_children()), list(base_stage.children())
        assert len(blocks) == len(base_blocks), stage_name
        for j, ((child, block), base_block) in enumerate(zip(blocks, base_blocks)):
            if j % 2 == 0:
                assert type(block) is type(base_block), f'{stage_name}.{child}'
                continue
            assert isinstance(block, MoDBlock) and type(block.block) is type(base_block), f'{stage_name}.{child}'
            assert block.k == block.channels // c
            mod_keys |= {f'{stage_name}.{child}.{k}' for k in block.state_dict()}
    shapes = {k: v.shape for k, v in registered.state_dict().items() if k not in mod_keys}
    assert shapes == {k: v.shape for k, v in baseline.state_dict().items() if k in shapes}
    assert set(shapes) < set(baseline.state_dict())
