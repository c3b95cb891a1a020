"""Turn every second block of a stage into a MoD block of the same type.

The paper's integration rule (Sec. 3.4): each stage starts with a standard block, then standard and MoD blocks
alternate. A MoD block wraps a block of the same type built for k = C // c channels. How to rebuild a block at k
channels is the only family-specific knowledge; it lives in one small adapter per block type, registered here.
"""
import math
from typing import Callable, Dict, Optional, Type

import torch.nn as nn
from timm.layers import ConvNormAct, get_device_dtype
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.resnet import BasicBlock, Bottleneck

from .layers import MoDBlock, mod_num_selected

__all__ = ['register_block_adapter', 'mod_stage', 'block_channels']

# block type -> fn(block, k) building a block of the same type and settings that maps k channels to k channels
_ADAPTERS: Dict[Type[nn.Module], Callable[[nn.Module, int], nn.Module]] = {}


def register_block_adapter(block_cls: Type[nn.Module]):
    """Decorator registering ``fn(block, k) -> nn.Module`` as the k-channel rebuild of ``block_cls``."""
    def _register(fn: Callable[[nn.Module, int], nn.Module]):
        _ADAPTERS[block_cls] = fn
        return fn
    return _register


def _adapter_for(block: nn.Module) -> Callable[[nn.Module, int], nn.Module]:
    for cls in type(block).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    known = ', '.join(sorted(c.__name__ for c in _ADAPTERS))
    raise TypeError(f'cannot build a MoD block from {type(block).__name__}: no adapter (supported: {known})')


def block_channels(block: nn.Module) -> int:
    """Input channels of a block, read from its first convolution."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise TypeError(f'{type(block).__name__} has no Conv2d to read its channel count from')


def mod_stage(
        stage: nn.Sequential,
        c: int,
        reduction: int = 16,
        fusion: str = 'first',
        routing: str = 'topk',
        every: int = 2,
        name: str = 'stage',
        seed_offset: int = 0,
) -> nn.Sequential:
    """Replace blocks every, 2 * every - 1, ... (0-based: 1, 3, 5 for every=2) of a stage with MoD blocks in place.

    The replaced block must map C channels to C channels at stride 1 (true of every non-first block of a stage).
    """
    for idx in range(1, len(stage), every):
        old = stage[idx]
        block_name = f'{name}.{idx}'
        channels = block_channels(old)
        mod_num_selected(channels, c, f'{block_name} ({type(old).__name__})')
        adapter = _adapter_for(old)
        drop_path = getattr(old, 'drop_path', None)
        stage[idx] = MoDBlock(
            channels,
            lambda k, old=old: adapter(old, k),
            c=c,
            reduction=reduction,
            fusion=fusion,
            routing=routing,
            drop_path=drop_path if isinstance(drop_path, nn.Module) else None,
            routing_seed=seed_offset + idx,
            name=block_name,
            **get_device_dtype(old),
        )
    return stage


def _layer_type(module: Optional[nn.Module]) -> Optional[Type[nn.Module]]:
    return None if module is None or isinstance(module, nn.Identity) else type(module)


@register_block_adapter(BasicBlock)
@register_block_adapter(Bottleneck)
def _resnet_block(block: nn.Module, k: int) -> nn.Module:
    """timm ResNet block at k channels: k -> k // expansion (-> k), same act/norm/attn/aa/dilation, no drop path."""
    expansion = type(block).expansion
    if k % expansion:
        raise ValueError(f'{type(block).__name__} needs k divisible by its expansion {expansion}, got k={k}')
    planes = k // expansion
    extra = {}
    if isinstance(block, Bottleneck):
        # width = floor(planes * base_width / 64) * cardinality; recover base_width from the original block
        groups = block.conv2.groups
        orig_planes = block.conv3.out_channels // expansion
        extra = dict(cardinality=groups, base_width=block.conv2.out_channels // groups * 64 // orig_planes)
        if math.floor(planes * extra['base_width'] / 64) < 1:
            raise ValueError(f'Bottleneck at k={k} would have no width (cardinality {groups})')
    se = getattr(block, 'se', None)
    return type(block)(
        k,
        planes,
        dilation=block.dilation,
        first_dilation=block.dilation,
        act_layer=type(block.act1),
        norm_layer=type(block.bn1),
        attn_layer=_layer_type(se),
        aa_layer=_layer_type(block.aa),
        **extra,
        **get_device_dtype(block),
    )


@register_block_adapter(InvertedResidual)
def _inverted_residual(block: InvertedResidual, k: int) -> nn.Module:
    """timm InvertedResidual at k channels, same expansion ratio, kernel, dilation, act and norm."""
    if not isinstance(block.se, nn.Identity):
        raise TypeError('InvertedResidual with squeeze-excitation has no MoD adapter yet')
    conv_dw = block.conv_dw
    return InvertedResidual(
        k,
        k,
        dw_kernel_size=conv_dw.kernel_size[0],
        dilation=conv_dw.dilation[0],
        exp_ratio=block.conv_pw.out_channels / block.conv_pw.in_channels,
        act_layer=type(block.bn1.act),
        norm_layer=nn.BatchNorm2d,
        **get_device_dtype(block),
    )


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
