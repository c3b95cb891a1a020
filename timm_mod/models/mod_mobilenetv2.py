"""MobileNetV2 Mixture-of-Depths (MobileNetV2-MoD, MobileNetV2-MoD-L)

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024)
    https://arxiv.org/abs/2409.17016

timm's MobileNetV2 (EfficientNet machinery, arch_def block strings) with every second inverted residual of each
stage replaced by a MoD block around a k-channel InvertedResidual (c = 16, r = 16; Table 2). MobileNetV2-MoD-L uses
the deeper, wider channel plan of Appendix A.3, Table 6.
"""
from functools import partial
from typing import Tuple, Type

import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models._builder import pretrained_cfg_for_features
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures

from ._common import MoDModelMixin, build_mod_model, mod_cfg

__all__ = ['EfficientNetMoD', 'EfficientNetFeaturesMoD']


# Head arguments that timm's EfficientNetFeatures does not take (timm's `_create_effnet` drops them)
EFFNET_FEATURES_FILTER = ('num_classes', 'num_features', 'head_conv', 'global_pool')


class EfficientNetMoD(MoDModelMixin, EfficientNet):
    """timm EfficientNet / MobileNetV2 whose stages alternate standard and MoD blocks (c = 16 by default)."""
    default_mod_c = 16


class EfficientNetFeaturesMoD(MoDModelMixin, EfficientNetFeatures):
    """features_only version of `EfficientNetMoD` (timm's EfficientNetFeatures with the same MoD blocks)."""
    default_mod_c = 16


def _create_effnet_mod(
        variant: str,
        model_cls: Type[nn.Module],
        features_cls: Type[nn.Module],
        kwargs_filter: Tuple[str, ...],
        pretrained: bool = False,
        **kwargs,
) -> nn.Module:
    """timm's `_create_effnet` / `_create_mnv3` for any EfficientNet-family model class and its Features class.

    features_only builds `features_cls` (EfficientNetFeatures, MobileNetV3Features), which takes no head arguments
    (`kwargs_filter`); with `feature_cls` or `feature_cfg` the full model is wrapped by timm's feature extractors
    instead (hook, fx, getter).
    """
    features_mode = ''
    if kwargs.pop('features_only', False):
        if 'feature_cfg' in kwargs or 'feature_cls' in kwargs:
            features_mode = 'cfg'
        else:
            model_cls = features_cls
            features_mode = 'cls'
    model = build_mod_model(
        model_cls,
        variant,
        pretrained,
        features_only=features_mode == 'cfg',
        pretrained_strict=features_mode != 'cls',
        kwargs_filter=kwargs_filter if features_mode == 'cls' else None,
        **kwargs,
    )
    if features_mode == 'cls':
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return model


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
    return _create_effnet_mod(
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
