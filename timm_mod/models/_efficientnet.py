"""The EfficientNet family's model builder for MoD models: EfficientNet, MobileNetV2 and MobileNetV3 entrypoints.

timm builds every model of the family from block strings through `_create_effnet` / `_create_mnv3`; these are the
same with the MoD model classes, shared by `mod_mobilenetv2` and `mod_timm`.
"""
from typing import Tuple, Type

import torch.nn as nn
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures

from .._timm import pretrained_cfg_for_features
from ._common import MoDModelMixin, build_mod_model

__all__ = ['EfficientNetMoD', 'EfficientNetFeaturesMoD', 'EFFNET_FEATURES_FILTER', 'create_effnet_mod']


# Head arguments that timm's EfficientNetFeatures does not take (timm's `_create_effnet` drops them)
EFFNET_FEATURES_FILTER = ('num_classes', 'num_features', 'head_conv', 'global_pool')


class EfficientNetMoD(MoDModelMixin, EfficientNet):
    """timm EfficientNet / MobileNetV2 whose stages alternate standard and MoD blocks (c = 16 by default)."""
    default_mod_c = 16


class EfficientNetFeaturesMoD(MoDModelMixin, EfficientNetFeatures):
    """features_only version of `EfficientNetMoD` (timm's EfficientNetFeatures with the same MoD blocks)."""
    default_mod_c = 16


def create_effnet_mod(
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
