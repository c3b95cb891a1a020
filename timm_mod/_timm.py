"""Every private timm name timm_mod uses, in one place.

timm keeps these out of its public API (underscore modules or names, or helpers of one model family), so a timm
release may move or change them. They are imported here only; the supported timm releases are TIMM_RANGE, which
pyproject.toml states too (a test checks that both agree, that the installed timm is in range and that every name
here imports).
"""
from timm.models._builder import pretrained_cfg_for_features
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
from timm.models._efficientnet_builder import (
    decode_arch_def, efficientnet_init_weights, resolve_act_layer, resolve_bn_args, round_channels)
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from timm.models.convnext import _init_weights as convnext_init_weights, checkpoint_filter_fn as convnext_filter_fn
from timm.models.regnet import (
    Bottleneck as RegNetBottleneck, _filter_fn as regnet_filter_fn, _init_weights as regnet_init_weights,
    model_cfgs as regnet_cfgs)

__all__ = [
    'TIMM_RANGE', 'pretrained_cfg_for_features', 'DepthwiseSeparableConv', 'InvertedResidual', 'SqueezeExcite',
    'decode_arch_def', 'efficientnet_init_weights', 'resolve_act_layer', 'resolve_bn_args', 'round_channels',
    'feature_take_indices', 'checkpoint_seq', 'convnext_init_weights', 'convnext_filter_fn', 'RegNetBottleneck',
    'regnet_filter_fn', 'regnet_init_weights', 'regnet_cfgs']

# The timm releases these names are known to work with: at least the first, below the second
TIMM_RANGE = ('1.0.31', '1.1')
