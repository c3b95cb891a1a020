"""Turn every second block of each stage of a timm CNN into a MoD block of the same type.

The paper's integration rule (Sec. 3.4): each stage starts with a standard block, then standard and MoD blocks
alternate. A MoD block wraps a block of the same type built for k = C // c channels. How to rebuild a block at k
channels is the only family-specific knowledge; it lives in one small adapter per block type, registered here.

`mod_stage` converts one stage; `mod` converts a whole timm model: it finds the stages, picks c by the paper's rule,
checks that every block to replace has an adapter before touching anything, initialises the new blocks as their
family initialises blocks, and records its settings on the model.
"""
from fractions import Fraction
from functools import partial
from itertools import count
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

import timm
import torch
import torch.nn as nn
from timm.layers import ConvNormAct, GlobalResponseNormMlp, SEModule, get_device_dtype, make_divisible
from timm.models import ConvNeXt, EfficientNet, MobileNetV3, RegNet, ResNet
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
from timm.models._efficientnet_builder import efficientnet_init_weights
from timm.models._manipulate import named_apply
from timm.models.convnext import ConvNeXtBlock, _init_weights as _convnext_init_weights
from timm.models.efficientnet import EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3Features
from timm.models.regnet import Bottleneck as RegNetBottleneck, _init_weights as _regnet_init_weights
from timm.models.resnet import BasicBlock, Bottleneck

from .layers import MoDBlock, check_reduction, mod_num_selected

__all__ = ['register_block_adapter', 'mod_stage', 'block_channels', 'find_stages', 'default_c', 'mod']

# block type -> fn(block, k) building a block of the same type and settings that maps k channels to k channels
_ADAPTERS: Dict[Type[nn.Module], Callable[[nn.Module, int], nn.Module]] = {}
# block type -> the smallest k at which its rebuild still works as a block of that type (1 unless registered)
_MIN_K: Dict[Type[nn.Module], int] = {}


def register_block_adapter(block_cls: Type[nn.Module], min_k: int = 1):
    """Decorator registering ``fn(block, k) -> nn.Module`` as the k-channel rebuild of ``block_cls``, for k >= min_k."""
    def _register(fn: Callable[[nn.Module, int], nn.Module]):
        _ADAPTERS[block_cls] = fn
        _MIN_K[block_cls] = min_k
        return fn
    return _register


def _adapter_for(block: nn.Module, where: str = '') -> Callable[[nn.Module, int], nn.Module]:
    """The adapter of the block's exact type.

    Subclasses are refused rather than rebuilt as their parent: timm's CondConvResidual subclasses InvertedResidual
    but routes over expert kernels, which the InvertedResidual adapter would silently drop.
    """
    adapter = _ADAPTERS.get(type(block))
    if adapter is None:
        known = ', '.join(sorted(f'{c.__module__.rsplit(".", 1)[-1]}.{c.__name__}' for c in _ADAPTERS))
        prefix = f'{where}: ' if where else ''
        raise TypeError(
            f'{prefix}cannot build a MoD block from {type(block).__name__}: no adapter (supported: {known})')
    return adapter


def block_channels(block: nn.Module) -> int:
    """Input channels of a block, read from its first convolution."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise TypeError(f'{type(block).__name__} has no Conv2d to read its channel count from')


def _mod_indices(stage: nn.Module, every: int) -> range:
    """Positions of the blocks to replace: 1, 1 + every, 1 + 2 * every, ... (never the first block)."""
    return range(1, len(list(stage.children())), every)


def _num_selected(block: nn.Module, c: int, where: str) -> int:
    """k = C // c of a block to replace, validated against c and the minimum k of the block's type."""
    name = f'{where} ({type(block).__name__})'
    channels = block_channels(block)
    k = mod_num_selected(channels, c, name)
    min_k = _MIN_K.get(type(block), 1)
    if k < min_k:
        raise ValueError(
            f'{name}: k = C // c = {channels} // {c} = {k}; a {type(block).__name__} needs k >= {min_k}, so mod_c '
            f'must be <= {channels // min_k}')
    return k


def mod_stage(
        stage: nn.Module,
        c: int,
        reduction: int = 16,
        fusion: str = 'first',
        routing: str = 'topk',
        every: int = 2,
        name: str = 'stage',
        seed_offset: int = 0,
) -> nn.Module:
    """Replace blocks 1, 1 + every, 1 + 2 * every, ... (0-based) of a stage with MoD blocks in place.

    The stage's children are its blocks, in order: an nn.Sequential, or a module such as timm's RegStage whose
    forward runs its children. The replaced block must map C channels to C channels at stride 1 (true of every
    non-first block of a stage).
    """
    children = list(stage.named_children())
    for idx in _mod_indices(stage, every):
        child_name, old = children[idx]
        block_name = f'{name}.{child_name}'
        _num_selected(old, c, block_name)
        adapter = _adapter_for(old, block_name)
        drop_path = getattr(old, 'drop_path', None)
        setattr(stage, child_name, MoDBlock(
            block_channels(old),
            lambda k, old=old: adapter(old, k),
            c=c,
            reduction=reduction,
            fusion=fusion,
            routing=routing,
            drop_path=drop_path if isinstance(drop_path, nn.Module) else None,
            routing_seed=seed_offset + idx,
            name=block_name,
            **get_device_dtype(old),
        ))
    return stage


def _numbered(model: nn.Module, prefix: str) -> List[Tuple[str, nn.Module]]:
    """Children prefix1, prefix2, ... in order, up to the first missing one."""
    stages = []
    for i in count(1):
        stage = getattr(model, f'{prefix}{i}', None)
        if stage is None:
            return stages
        stages.append((f'{prefix}{i}', stage))


def find_stages(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, stage) for each stage of a timm CNN, in order; a stage's children are its blocks.

    Recognised by timm's module names: ResNet ``layer1..``; RegNet ``s1..``; ConvNeXt and other ``stages[i].blocks``
    models (``stages[i]`` itself where a stage is a plain nn.Sequential of blocks, as in ByobNet); EfficientNet and
    MobileNet ``blocks[i]``.

    Raises:
        TypeError: if the model has none of these layouts.
    """
    if hasattr(model, 'layer1'):
        return _numbered(model, 'layer')
    if hasattr(model, 's1'):
        return _numbered(model, 's')
    stages = getattr(model, 'stages', None)
    if isinstance(stages, (nn.Sequential, nn.ModuleList)):
        return [
            (f'stages.{i}.blocks', s.blocks) if hasattr(s, 'blocks') else (f'stages.{i}', s)
            for i, s in enumerate(stages)]
    blocks = getattr(model, 'blocks', None)
    if isinstance(blocks, nn.Sequential) and all(isinstance(s, nn.Sequential) for s in blocks):
        return [(f'blocks.{i}', s) for i, s in enumerate(blocks)]
    raise TypeError(
        f'{type(model).__name__}: cannot find its stages (expected timm\'s layer1.., s1.., stages[i](.blocks) or '
        f'blocks[i] of blocks)')


def _targets(stages: List[Tuple[str, nn.Module]], every: int) -> List[Tuple[str, nn.Module]]:
    """(name, block) of every block to replace, in model order."""
    targets = []
    for stage_name, stage in stages:
        children = list(stage.named_children())
        targets += [(f'{stage_name}.{children[i][0]}', children[i][1]) for i in _mod_indices(stage, every)]
    return targets


def default_c(stages: List[Tuple[str, nn.Module]], every: int = 2) -> int:
    """The paper's c (Sec. 3.2): the channel count of the first stage's first block, at its narrower end.

    The paper sets c to the channels of the first block, giving c = 64 for ResNets and c = 16 for MobileNetV2. Both
    are the smaller of the first block's input and output widths (ResNet50: 64 -> 256; MobileNetV2: 32 -> 16), and
    that is the rule used for every family. The output width is read as the input width of the block after it.

    Where a block to replace would get fewer channels than its type needs, c is lowered until it gets them: a
    ConvNeXt block normalises over its channels, so at k = 1 its LayerNorm outputs only its bias. ConvNeXt-T then
    gets c = 48 rather than 96 (k = 2 in its first stage).
    """
    blocks = [block for _, stage in stages for block in stage.children()]
    if len(blocks) < 2:
        raise ValueError('a model needs at least two blocks to derive c from; pass c explicitly')
    c = min(block_channels(blocks[0]), block_channels(blocks[1]))
    for _, block in _targets(stages, every):
        c = min(c, block_channels(block) // _MIN_K.get(type(block), 1))
    return c


def _init_resnet_block(block: nn.Module) -> None:
    """As timm's ResNet.init_weights with its default zero_init_last=True."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if hasattr(m, 'zero_init_last'):
            m.zero_init_last()


# How each model family initialises a new block (with timm's default options); other models keep the init of the
# blocks' constructors. The channel selector keeps torch's Linear init, as in the paper's models.
_FAMILY_INITS: Tuple[Tuple[Tuple[type, ...], Callable[[nn.Module], None]], ...] = (
    ((ResNet,), _init_resnet_block),
    ((ConvNeXt,), partial(named_apply, _convnext_init_weights, include_root=True)),
    ((RegNet,), partial(named_apply, partial(_regnet_init_weights, zero_init_last=True), include_root=True)),
    ((EfficientNet, EfficientNetFeatures, MobileNetV3, MobileNetV3Features), efficientnet_init_weights),
)


def _model_label(model: nn.Module) -> str:
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    return f'{arch} ({type(model).__name__})' if arch else type(model).__name__


def mod(
        model_or_name: Union[nn.Module, str],
        c: Optional[int] = None,
        every: int = 2,
        fusion: str = 'first',
        routing: str = 'topk',
        reduction: int = 16,
        **create_kwargs: Any,
) -> nn.Module:
    """The MoD version of a timm CNN: blocks 1, 1 + every, ... of each stage become MoD blocks of the same type.

    A model is converted in place and returned (its other weights, pretrained or not, are kept); a name is first
    created with ``timm.create_model(name, **create_kwargs)``. The settings are recorded as ``model.mod_settings``.

    Args:
        model_or_name: A timm model, or the name of one.
        c: Channel reduction: each MoD block processes k = C // c of its C channels. Default: the paper's rule,
            see `default_c`.
        every: Replace every `every`-th block of each stage, starting with the second (2: alternate, as the paper).
        fusion: Where processed channels are added: 'first', 'last' (MoD-lk) or 'original'.
        routing: 'topk' (learned channel selector) or 'random'.
        reduction: Bottleneck ratio r of the channel selector.
        **create_kwargs: Passed to timm.create_model when a name is given (pretrained, num_classes, ...).

    Raises:
        TypeError: if the stages cannot be found or a block to replace has no adapter; nothing is changed then.
        ValueError: if c or every is invalid (also before anything is changed).
    """
    if isinstance(model_or_name, str):
        model = timm.create_model(model_or_name, **create_kwargs)
    elif create_kwargs:
        raise TypeError(f'mod: {sorted(create_kwargs)} only apply when a model name is given')
    else:
        model = model_or_name
    label = _model_label(model)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f'{label}: every must be a positive integer, got {every!r}')
    stages = find_stages(model)
    for name, block in _targets(stages, every):  # refuse before changing anything
        _adapter_for(block, f'{label} {name}')
    c = default_c(stages, every) if c is None else c
    for name, block in _targets(stages, every):
        _num_selected(block, c, f'{label} {name}')
        if routing == 'topk':
            check_reduction(reduction, block_channels(block), f'{label} {name} ({type(block).__name__})')

    for i, (stage_name, stage) in enumerate(stages):
        mod_stage(
            stage, c=c, reduction=reduction, fusion=fusion, routing=routing, every=every, name=stage_name,
            seed_offset=1000 * i)
    new_blocks = [(f'{stage_name}.{n}', b) for stage_name, stage in stages
                  for n, b in stage.named_children() if isinstance(b, MoDBlock)]
    init = next((fn for families, fn in _FAMILY_INITS if isinstance(model, families)), None)
    if init is not None:
        for _, block in new_blocks:
            init(block.block)
    model.mod_settings = dict(
        c=c, every=every, fusion=fusion, routing=routing, reduction=reduction,
        blocks=tuple(name for name, _ in new_blocks))
    return model


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
