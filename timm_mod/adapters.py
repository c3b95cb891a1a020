"""The block adapters: how each timm block type is rebuilt at k channels, and how each family initialises it.

Each adapter is ``fn(block, k) -> nn.Module``, registered with `timm_mod.convert.register_block_adapter` for one block
type: a block of the same type and settings that maps k channels to k channels. Each family init is ``fn(block)``,
registered with `timm_mod.convert.register_family_init` for the model types that use it. Supporting another block
type is one function here.
"""
from fractions import Fraction
from functools import partial
from typing import Any, Callable, Dict, Optional, Type

import torch
import torch.nn as nn
from timm.layers import ConvNormAct, GlobalResponseNormMlp, SEModule, get_device_dtype, make_divisible
from timm.models import ConvNeXt, EfficientNet, MobileNetV3, RegNet, ResNet, named_apply
from timm.models.convnext import ConvNeXtBlock
from timm.models.efficientnet import EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3Features
from timm.models.resnet import BasicBlock, Bottleneck

from ._timm import (
    DepthwiseSeparableConv, InvertedResidual, RegNetBottleneck, SqueezeExcite, convnext_init_weights,
    efficientnet_init_weights, regnet_init_weights)
from .convert import register_block_adapter, register_family_init

__all__ = []  # everything here is registered with timm_mod.convert, nothing is called by name


@register_family_init(ResNet)
def _init_resnet_block(block: nn.Module) -> None:
    """As timm's ResNet.init_weights with its default zero_init_last=True."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if hasattr(m, 'zero_init_last'):
            m.zero_init_last()


# the channel selector keeps torch's Linear init, as in the paper's models; the blocks start as timm's defaults do
register_family_init(ConvNeXt)(partial(named_apply, convnext_init_weights, include_root=True))
register_family_init(RegNet)(partial(named_apply, partial(regnet_init_weights, zero_init_last=True), include_root=True))
register_family_init(EfficientNet, EfficientNetFeatures, MobileNetV3, MobileNetV3Features)(efficientnet_init_weights)


def _layer_type(module: Optional[nn.Module]) -> Optional[Type[nn.Module]]:
    return None if module is None or isinstance(module, nn.Identity) else type(module)


def _norm_layer(norm: nn.Module) -> Callable[..., nn.Module]:
    """The norm's own type as a layer factory, keeping its eps (and momentum, for batch norms)."""
    kwargs: Dict[str, Any] = dict(eps=norm.eps)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        kwargs['momentum'] = norm.momentum
    return partial(type(norm), **kwargs)


def _groups(width: int, group_width: int) -> int:
    """Groups of a `width`-channel conv keeping about `group_width` channels per group.

    As in timm's RegNet, the group width is capped at the width, so a narrow conv becomes a dense one; otherwise the
    largest number of groups that divides the width is taken, so the group width never falls below the original's.
    """
    most = max(1, width // group_width)
    return max(g for g in range(1, most + 1) if width % g == 0)


def _round_at_least_one(x: float) -> int:
    return max(1, round(x))


def _se_layer(se: Optional[nn.Module]) -> Optional[Callable[..., nn.Module]]:
    """Factory rebuilding a block's squeeze-excitation at any width; None when the block has none.

    timm's SEModule and EfficientNet's SqueezeExcite keep their hidden / channels ratio as built (at least one
    hidden channel: at k channels the ratio often rounds to zero), activation and gate. Any other attention module
    is rebuilt by its type alone: e.g. ECA derives its kernel size from the channel count.
    """
    if _layer_type(se) is None:
        return None
    if isinstance(se, SqueezeExcite):
        # called as se_layer(chs, act_layer=<block act>): force_act_layer keeps the SE's own activation
        return partial(
            SqueezeExcite,
            rd_ratio=se.conv_reduce.out_channels / se.conv_reduce.in_channels,
            rd_round_fn=_round_at_least_one,
            force_act_layer=type(se.act1),
            gate_layer=type(se.gate),
        )
    if isinstance(se, SEModule):
        return partial(
            SEModule,
            rd_ratio=se.fc1.out_channels / se.fc1.in_channels,
            rd_divisor=1,  # make_divisible(v, 1) rounds to the nearest int, at least 1
            add_maxpool=se.add_maxpool,
            bias=se.fc1.bias is not None,
            act_layer=type(se.act),
            norm_layer=_layer_type(se.bn),
            gate_layer=type(se.gate),
        )
    return type(se)


@register_block_adapter(BasicBlock)
@register_block_adapter(Bottleneck)
def _resnet_block(block: nn.Module, k: int) -> nn.Module:
    """timm ResNet block at k channels: k -> k // expansion (-> k), same act/norm/attn/aa/dilation, no drop path.

    A Bottleneck keeps its width / planes ratio (2 for wide_resnet50_2) and, for ResNeXt, its group width where k
    allows: a narrow MoD bottleneck has fewer groups, down to a dense 3x3 conv (see `_groups`).
    """
    expansion = type(block).expansion
    if k % expansion:
        raise ValueError(f'{type(block).__name__} needs k divisible by its expansion {expansion}, got k={k}')
    planes = k // expansion
    extra = {}
    if isinstance(block, Bottleneck):
        conv2 = block.conv2
        width = max(1, planes * conv2.out_channels // (block.conv3.out_channels // expansion))
        groups = _groups(width, conv2.out_channels // conv2.groups)
        # Bottleneck derives its width as floor(planes * base_width / 64) * cardinality: an exact rational base_width
        # makes that land on width
        extra = dict(cardinality=groups, base_width=Fraction(64 * (width // groups), planes))
    return type(block)(
        k,
        planes,
        dilation=block.dilation,
        first_dilation=block.dilation,
        act_layer=type(block.act1),
        norm_layer=_norm_layer(block.bn1),
        attn_layer=_se_layer(block.se),
        aa_layer=_layer_type(block.aa),
        **extra,
        **get_device_dtype(block),
    )


@register_block_adapter(InvertedResidual)
def _inverted_residual(block: InvertedResidual, k: int) -> nn.Module:
    """timm InvertedResidual at k channels: same expansion ratio, kernels, dilation, group width, act, norm and SE.

    The squeeze-excitation is rebuilt at the new mid width with the same ratio and gate (see `_se_layer`).
    """
    conv_dw = block.conv_dw
    exp_ratio = block.conv_pw.out_channels / block.conv_pw.in_channels
    mid = make_divisible(k * exp_ratio)  # as InvertedResidual computes it
    return InvertedResidual(
        k,
        k,
        dw_kernel_size=conv_dw.kernel_size[0],
        dilation=conv_dw.dilation[0],
        group_size=mid // _groups(mid, conv_dw.in_channels // conv_dw.groups),
        noskip=not block.has_skip,
        exp_ratio=exp_ratio,
        exp_kernel_size=block.conv_pw.kernel_size[0],
        pw_kernel_size=block.conv_pwl.kernel_size[0],
        act_layer=type(block.bn1.act),
        norm_layer=_norm_layer(block.bn1),
        se_layer=_se_layer(block.se),
        **get_device_dtype(block),
    )


@register_block_adapter(DepthwiseSeparableConv)
def _depthwise_separable(block: DepthwiseSeparableConv, k: int) -> nn.Module:
    """timm DepthwiseSeparableConv (C -> C, stride 1) at k channels: same kernels, dilation, act, norm and SE."""
    conv_dw = block.conv_dw
    if conv_dw.in_channels != block.conv_pw.out_channels or conv_dw.stride != (1, 1):
        raise ValueError(
            f'DepthwiseSeparableConv {conv_dw.in_channels} -> {block.conv_pw.out_channels} channels, stride '
            f'{conv_dw.stride[0]}: only a C -> C, stride 1 block can be rebuilt at k channels')
    return DepthwiseSeparableConv(
        k,
        k,
        dw_kernel_size=conv_dw.kernel_size[0],
        dilation=conv_dw.dilation[0],
        group_size=k // _groups(k, conv_dw.in_channels // conv_dw.groups),
        noskip=not block.has_skip,
        pw_kernel_size=block.conv_pw.kernel_size[0],
        pw_act=block.has_pw_act,
        act_layer=type(block.bn1.act),
        norm_layer=_norm_layer(block.bn1),
        se_layer=_se_layer(block.se),
        **get_device_dtype(block),
    )


@register_block_adapter(ConvNeXtBlock, min_k=2)  # its norm spans the k channels: k = 1 leaves it only its bias
def _convnext_block(block: ConvNeXtBlock, k: int) -> nn.Module:
    """timm ConvNeXtBlock at k channels: same kernel, dilation, MLP ratio and kind (GRN, conv), act, norm, layer scale.

    ConvNeXtBlock keeps no record of its ls_init_value, but a freshly built block holds it in every channel of its
    layer scale, so the new one starts from the old one's first k values (the init value itself, also on the meta
    device; for a trained block, its trained scale).
    """
    conv_dw, mlp = block.conv_dw, block.mlp
    new = ConvNeXtBlock(
        k,
        kernel_size=conv_dw.kernel_size[0],
        dilation=conv_dw.dilation[0],
        mlp_ratio=mlp.fc1.weight.shape[0] / mlp.fc1.weight.shape[1],
        conv_mlp=block.use_conv_mlp,
        conv_bias=conv_dw.bias is not None,
        use_grn=isinstance(mlp, GlobalResponseNormMlp),
        ls_init_value=None if block.gamma is None else 1.,
        act_layer=type(mlp.act),
        norm_layer=_norm_layer(block.norm),
        **get_device_dtype(block),
    )
    if block.gamma is not None:
        with torch.no_grad():
            new.gamma.copy_(block.gamma[:k])
    return new


@register_block_adapter(RegNetBottleneck)
def _regnet_bottleneck(block: RegNetBottleneck, k: int) -> nn.Module:
    """timm RegNet Bottleneck at k channels: same bottleneck ratio, group width (see `_groups`), SE, act and norm."""
    conv2 = block.conv2.conv
    width = max(1, round(k * conv2.out_channels / block.conv1.conv.in_channels))
    new = RegNetBottleneck(
        k,
        k,
        dilation=(conv2.dilation[0], conv2.dilation[0]),
        bottle_ratio=width / k,
        group_size=width // _groups(width, conv2.out_channels // conv2.groups),
        se_ratio=0.,  # rebuilt below: RegNet sizes its SE from the block input, which rounds to zero at small k
        linear_out=isinstance(block.act3, nn.Identity),
        act_layer=type(block.conv1.bn.act),
        norm_layer=_norm_layer(block.conv1.bn),
        **get_device_dtype(block),
    )
    se_layer = _se_layer(block.se)
    if se_layer is not None:
        new.se = se_layer(width, **get_device_dtype(block))
    return new


@register_block_adapter(ConvNormAct)
def _conv_norm_act(block: ConvNormAct, k: int) -> nn.Module:
    """timm ConvNormAct (a plain conv-bn-act, e.g. one VGG layer) at k -> k channels."""
    conv = block.conv
    return ConvNormAct(
        k,
        k,
        conv.kernel_size[0],
        dilation=conv.dilation[0],
        bias=conv.bias is not None,
        norm_layer=nn.BatchNorm2d,
        act_layer=type(block.bn.act),
        **get_device_dtype(block),
    )
