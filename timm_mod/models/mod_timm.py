"""ConvNeXt, ResNeXt, SE-ResNet, RegNetY, EfficientNet and MobileNetV3 Mixture-of-Depths (beyond the paper)

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024)
    https://arxiv.org/abs/2409.17016

The paper names ConvNeXt among the architectures MoD fits but publishes only ResNet, MobileNetV2 and VGG models.
Each model here is its timm baseline (paired in `timm_mod.models.pairing`) with every second block of each stage
replaced by a MoD block of the same type (`timm_mod.mod`), c by the paper's rule (`timm_mod.convert.default_c`):
64 for the ResNets, 32 for RegNetY-1.6GF, 16 for EfficientNet-B0 and MobileNetV3-L. For ConvNeXt the rule's 96 / 80
is halved to 48 / 40, so that the LayerNorm of each MoD block spans at least two channels. No weights exist for
these models yet; their pretrained cfgs copy the eval settings of the baseline's.
"""
from functools import partial
from typing import Any, Dict

import torch.nn as nn
from timm.models import generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models.convnext import ConvNeXt
from timm.models.mobilenetv3 import MobileNetV3, MobileNetV3Features
from timm.models.regnet import RegNet, RegNetCfg
from timm.models.resnet import Bottleneck

from .._timm import (
    SqueezeExcite, convnext_filter_fn, decode_arch_def, regnet_cfgs, regnet_filter_fn, resolve_act_layer,
    resolve_bn_args, round_channels)
from ._common import MoDModelMixin, build_mod_model, mod_cfg
from ._efficientnet import EFFNET_FEATURES_FILTER, EfficientNetFeaturesMoD, EfficientNetMoD, create_effnet_mod
from .mod_resnet import ResNetMoD
from .pairing import BEYOND_PAPER

__all__ = ['ConvNeXtMoD', 'RegNetMoD', 'MobileNetV3MoD', 'MobileNetV3FeaturesMoD']



class ConvNeXtMoD(MoDModelMixin, ConvNeXt):
    """timm ConvNeXt whose stages alternate standard and MoD ConvNeXt blocks (each stage starts with a standard one).

    Default c: half the width of the first stage, the paper's rule lowered to give every MoD block k >= 2.
    """


class RegNetMoD(MoDModelMixin, RegNet):
    """timm RegNet whose stages alternate standard and MoD bottlenecks (the first block of each stage is standard).

    Default c: the stem width, the narrower end of the first block (the paper's rule). The new blocks are initialised
    as timm's RegNet default does, zero-initialising their last BN.
    """


class MobileNetV3MoD(MoDModelMixin, MobileNetV3):
    """timm MobileNetV3 whose stages alternate standard and MoD blocks (the first block of each stage is standard).

    Default c: the paper's rule, the narrower end of the first block.
    """


class MobileNetV3FeaturesMoD(MoDModelMixin, MobileNetV3Features):
    """features_only version of `MobileNetV3MoD` (timm's MobileNetV3Features with the same MoD blocks)."""


def _create_convnext_mod(variant: str, pretrained: bool = False, **kwargs) -> ConvNeXtMoD:
    return build_mod_model(
        ConvNeXtMoD, variant, pretrained,
        pretrained_filter_fn=convnext_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs)


def _create_regnet_mod(variant: str, cfg: RegNetCfg, pretrained: bool = False, **kwargs) -> RegNetMoD:
    return build_mod_model(
        RegNetMoD, variant, pretrained, model_cfg=cfg, pretrained_filter_fn=regnet_filter_fn, **kwargs)


# Eval settings copied from the default pretrained cfg of each model's baseline
_BASELINE_CFG_FIELDS = (
    'input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'first_conv', 'classifier')


def _cfg(name: str, tag: str = 'in1k', **kwargs) -> Dict[str, Any]:
    baseline = get_pretrained_cfg(BEYOND_PAPER[name])
    return mod_cfg(name, tag, **{f: getattr(baseline, f) for f in _BASELINE_CFG_FIELDS}, **kwargs)


default_cfgs = generate_default_cfgs({f'{name}.in1k': _cfg(name) for name in BEYOND_PAPER})


@register_model
def convnext_tiny_mod(pretrained: bool = False, **kwargs) -> ConvNeXtMoD:
    """ConvNeXt-T-MoD: ConvNeXt-T [3, 3, 9, 3] x [96, 192, 384, 768] with alternating MoD blocks, c = 48."""
    model_args = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
    return _create_convnext_mod('convnext_tiny_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def convnext_nano_mod(pretrained: bool = False, **kwargs) -> ConvNeXtMoD:
    """ConvNeXt-N-MoD: timm's ConvNeXt nano [2, 2, 8, 2] x [80, 160, 320, 640] with alternating MoD blocks, c = 40."""
    model_args = dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True)
    return _create_convnext_mod('convnext_nano_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnext50_32x4d_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNeXt50-32x4d-MoD: MoD bottlenecks keep the group width, so at k <= 32 channels their 3x3 conv is dense."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), cardinality=32, base_width=4)
    return build_mod_model(ResNetMoD, 'resnext50_32x4d_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def seresnet50_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """SE-ResNet50-MoD: MoD bottlenecks keep the SE ratio 1/16 (at least one hidden channel), c = 64."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), block_args=dict(attn_layer='se'))
    return build_mod_model(ResNetMoD, 'seresnet50_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def regnety_016_mod(pretrained: bool = False, **kwargs) -> RegNetMoD:
    """RegNetY-1.6GF-MoD: alternating MoD bottlenecks with SE and group width 24 (or less), c = 32."""
    return _create_regnet_mod('regnety_016_mod', regnet_cfgs['regnety_016'], pretrained, **kwargs)


@register_model
def efficientnet_b0_mod(pretrained: bool = False, **kwargs) -> EfficientNetMoD:
    """EfficientNet-B0-MoD: alternating MoD inverted residuals with SE, c = 16 (timm's `_gen_efficientnet`)."""
    arch_def = [
        ['ds_r1_k3_s1_e1_c16_se0.25'],
        ['ir_r2_k3_s2_e6_c24_se0.25'],
        ['ir_r2_k5_s2_e6_c40_se0.25'],
        ['ir_r3_k3_s2_e6_c80_se0.25'],
        ['ir_r3_k5_s1_e6_c112_se0.25'],
        ['ir_r4_k5_s2_e6_c192_se0.25'],
        ['ir_r1_k3_s1_e6_c320_se0.25'],
    ]
    round_chs_fn = partial(round_channels, multiplier=1.0, divisor=8)
    model_args = dict(
        block_args=decode_arch_def(arch_def),
        num_features=round_chs_fn(1280),
        stem_size=32,
        round_chs_fn=round_chs_fn,
        act_layer=resolve_act_layer(kwargs, 'swish'),
        norm_layer=kwargs.pop('norm_layer', None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
    )
    return create_effnet_mod(
        'efficientnet_b0_mod', EfficientNetMoD, EfficientNetFeaturesMoD, EFFNET_FEATURES_FILTER, pretrained,
        **dict(model_args, **kwargs))


@register_model
def mobilenetv3_large_100_mod(pretrained: bool = False, **kwargs) -> MobileNetV3MoD:
    """MobileNetV3-Large-1.0-MoD: alternating MoD inverted residuals (SE, hard-swish), c = 16 (`_gen_mobilenet_v3`)."""
    arch_def = [
        ['ds_r1_k3_s1_e1_c16_nre'],
        ['ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'],
        ['ir_r3_k5_s2_e3_c40_se0.25_nre'],
        ['ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'],
        ['ir_r2_k3_s1_e6_c112_se0.25'],
        ['ir_r3_k5_s2_e6_c160_se0.25'],
        ['cn_r1_k1_s1_c960'],
    ]
    model_args = dict(
        block_args=decode_arch_def(arch_def),
        num_features=1280,
        stem_size=16,
        fix_stem=False,
        round_chs_fn=partial(round_channels, multiplier=1.0),
        norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'hard_swish'),
        se_layer=partial(SqueezeExcite, gate_layer='hard_sigmoid', force_act_layer=nn.ReLU, rd_round_fn=round_channels),
    )
    return create_effnet_mod(
        'mobilenetv3_large_100_mod', MobileNetV3MoD, MobileNetV3FeaturesMoD,
        ('num_classes', 'num_features', 'head_conv', 'head_bias', 'head_norm', 'global_pool'), pretrained,
        **dict(model_args, **kwargs))
