"""Turn every second block of each stage of a timm CNN into a MoD block of the same type.

The paper's integration rule (Sec. 3.4): each stage starts with a standard block, then standard and MoD blocks
alternate. A MoD block wraps a block of the same type built for k = C // c channels. How to rebuild a block at k
channels, and how a family initialises a new block, is the only family-specific knowledge; it lives in
`timm_mod.adapters`, registered here with `register_block_adapter` and `register_family_init`.

`mod_stage` converts one stage; `mod` converts a whole timm model: it finds the stages, picks c by the paper's rule,
checks that every block to replace has an adapter before touching anything, initialises the new blocks as their
family initialises blocks, and records its settings on the model.
"""
from itertools import count
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

import timm
import torch.nn as nn
from timm.layers import get_device_dtype

from .layers import MoDBlock, check_reduction, mod_num_selected

__all__ = [
    'register_block_adapter', 'register_family_init', 'adapter_for', 'mod_stage', 'block_channels', 'find_stages',
    'default_c', 'mod']

# block type -> fn(block, k) building a block of the same type and settings that maps k channels to k channels
_ADAPTERS: Dict[Type[nn.Module], Callable[[nn.Module, int], nn.Module]] = {}
# block type -> the smallest k at which its rebuild still works as a block of that type (1 unless registered)
_MIN_K: Dict[Type[nn.Module], int] = {}


# (model types, fn(new block)): how each model family initialises a new block; other models keep the init of the
# blocks' constructors
_FAMILY_INITS: List[Tuple[Tuple[type, ...], Callable[[nn.Module], None]]] = []


def register_family_init(*model_types: type):
    """Decorator registering ``fn(block)``, initialising a new MoD block's inner block as `model_types` do."""
    def _register(fn: Callable[[nn.Module], None]):
        _FAMILY_INITS.append((model_types, fn))
        return fn
    return _register


def register_block_adapter(block_cls: Type[nn.Module], min_k: int = 1):
    """Decorator registering ``fn(block, k) -> nn.Module`` as the k-channel rebuild of ``block_cls``, for k >= min_k."""
    def _register(fn: Callable[[nn.Module, int], nn.Module]):
        _ADAPTERS[block_cls] = fn
        _MIN_K[block_cls] = min_k
        return fn
    return _register


def adapter_for(block: nn.Module, where: str = '') -> Callable[[nn.Module, int], nn.Module]:
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
        adapter = adapter_for(old, block_name)
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
        adapter_for(block, f'{label} {name}')
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


from . import adapters  # noqa: E402,F401  (registers the adapters of timm's block types)
