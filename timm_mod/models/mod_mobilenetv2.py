"""MobileNetV2 Mixture-of-Depths (MobileNetV2-MoD, MobileNetV2-MoD-L)

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024)
    https://arxiv.org/abs/2409.17016

timm's MobileNetV2 (EfficientNet machinery, arch_def block strings) with every second inverted residual of each
stage replaced by a MoD block around a k-channel InvertedResidual (c = 16, r = 16; Table 2). MobileNetV2-MoD-L uses
the deeper, wider channel plan of Appendix A.3, Table 6.
"""
from functools import partial

import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from .._timm import decode_arch_def, round_channels
from ._common import mod_cfg
from ._efficientnet import EFFNET_FEATURES_FILTER, EfficientNetFeaturesMoD, EfficientNetMoD, create_effnet_mod

__all__ = ['EfficientNetMoD', 'EfficientNetFeaturesMoD']


def _create_mobilenetv2_mod(variant: str, arch_def, pretrained: bool = False, **kwargs) -> EfficientNetMoD:
    """timm's `_gen_mobilenet_v2` (multiplier 1.0) with the MoD model classes."""
    model_args = dict(
        block_args=decode_arch_def(arch_def),
        num_features=1280,
        stem_size=32,
        round_chs_fn=partial(round_channels, multiplier=1.0),
        norm_layer=nn.BatchNorm2d,
        act_layer=nn.ReLU6,
    )
    return create_effnet_mod(
        variant, EfficientNetMoD, EfficientNetFeaturesMoD, EFFNET_FEATURES_FILTER, pretrained,
        **dict(model_args, **kwargs))


default_cfgs = generate_default_cfgs({
    'mobilenetv2_mod.in1k': mod_cfg('mobilenetv2_mod', first_conv='conv_stem', classifier='classifier'),
    'mobilenetv2_mod_l.in1k': mod_cfg('mobilenetv2_mod_l', first_conv='conv_stem', classifier='classifier'),
})


@register_model
def mobilenetv2_mod(pretrained: bool = False, **kwargs) -> EfficientNetMoD:
    """MobileNetV2-MoD: MobileNetV2 1.0 with alternating MoD inverted residuals, c = 16 (Table 2)."""
    arch_def = [
        ['ds_r1_k3_s1_c16'],
        ['ir_r2_k3_s2_e6_c24'],
        ['ir_r3_k3_s2_e6_c32'],
        ['ir_r4_k3_s2_e6_c64'],
        ['ir_r3_k3_s1_e6_c96'],
        ['ir_r3_k3_s2_e6_c160'],
        ['ir_r1_k3_s1_e6_c320'],
    ]
    return _create_mobilenetv2_mod('mobilenetv2_mod', arch_def, pretrained, **kwargs)


@register_model
def mobilenetv2_mod_l(pretrained: bool = False, **kwargs) -> EfficientNetMoD:
    """MobileNetV2-MoD-L: the deeper channel plan of Table 6 with alternating MoD inverted residuals, c = 16."""
    arch_def = [
        ['ds_r1_k3_s1_c16'],
        ['ir_r2_k3_s2_e6_c32'],
        ['ir_r3_k3_s2_e6_c64'],
        ['ir_r4_k3_s2_e6_c96'],
        ['ir_r3_k3_s1_e6_c128'],
        ['ir_r3_k3_s2_e6_c160'],
        ['ir_r1_k3_s1_e6_c320'],
    ]
    return _create_mobilenetv2_mod('mobilenetv2_mod_l', arch_def, pretrained, **kwargs)
