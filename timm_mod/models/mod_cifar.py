"""CIFAR ResNet and VGG-BN models, standard and Mixture-of-Depths (paper Appendix D, Table 9)

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024)
    https://arxiv.org/abs/2409.17016

* ResNet: the ImageNet definitions with a CIFAR stem (3x3 conv, stride 1, no max-pool), so the last feature map
  is 1/8 of the input; output_stride 4 or 2 dilates the last stages instead.
* VGG-BN: 3x3 conv (with bias) - BN - ReLU layers, max-pool after each module, a 512-512-512-classes classifier.
  In the MoD versions every second conv of each module is a MoD block around a k-channel conv-bn-relu (c = 64).
  An output stride below 32 keeps the resolution of the last modules as DeepLab does with VGG-16 (`Semantic Image
  Segmentation with Deep Convolutional Nets and Fully Connected CRFs`, https://arxiv.org/abs/1412.7062): their
  max-pools become 3x3 with stride 1 and the convs after them are dilated.

Every MoD model has its standard baseline registered beside it, so the comparison is one call away.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, ConvNormAct, get_device_dtype
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from .. import convert
from .._timm import checkpoint_seq, feature_take_indices
from ._common import build_mod_model, mod_cfg
from .mod_resnet import ResNetMoD

__all__ = ['CifarResNet', 'CifarResNetMoD', 'VggCifar']

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _imagenet_output_stride(output_stride: int) -> int:
    """The output stride to build timm's ResNet with, whose 7x7/2 conv + max-pool stem reduces 4x where ours does not.

    timm's ResNet takes 8, 16 or 32 (2, 4 or 8 here); a CIFAR ResNet never reduces more than 8x, so 16 and 32 ask for
    no dilation, as 8 does.
    """
    return min(4 * output_stride, 32)


def _use_cifar_stem(model: ResNet) -> None:
    """Swap a timm ResNet's 7x7/2 conv + max-pool stem for a 3x3/1 conv and fix the feature reductions."""
    dd = get_device_dtype(model.conv1)
    model.conv1 = nn.Conv2d(model.in_chans, model.bn1.num_features, 3, stride=1, padding=1, bias=False, **dd)
    nn.init.kaiming_normal_(model.conv1.weight, mode='fan_out', nonlinearity='relu')
    model.maxpool = nn.Identity()
    for info in model.feature_info:
        info['reduction'] = max(1, info['reduction'] // 4)


class CifarResNet(ResNet):
    """timm ResNet with a CIFAR stem (output_stride: 8, the default, or 4 or 2 with the last stages dilated)."""

    def __init__(self, *args, output_stride: int = 8, **kwargs):
        super().__init__(*args, output_stride=_imagenet_output_stride(output_stride), **kwargs)
        _use_cifar_stem(self)


class CifarResNetMoD(ResNetMoD):
    """ResNet-MoD with a CIFAR stem (output_stride: 8, the default, or 4 or 2 with the last stages dilated)."""

    def __init__(self, *args, output_stride: int = 8, **kwargs):
        super().__init__(*args, output_stride=_imagenet_output_stride(output_stride), **kwargs)
        _use_cifar_stem(self)


class VggStage(nn.Module):
    """One VGG module: conv-bn-relu layers, then a 2x2 max-pool (3x3 with stride 1 where it keeps the resolution)."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            depth: int,
            stride: int = 2,
            dilation: int = 1,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.Sequential(*[
            ConvNormAct(in_chs if i == 0 else out_chs, out_chs, 3, dilation=dilation, bias=True, **dd)
            for i in range(depth)])
        self.pool = nn.MaxPool2d(2, 2) if stride == 2 else nn.MaxPool2d(3, 1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.pool(x)


class VggCifar(nn.Module):
    """VGG-BN for 32x32 inputs, optionally with MoD blocks on every second conv of each module."""

    def __init__(
            self,
            depths: Tuple[int, ...],
            widths: Tuple[int, ...] = (64, 128, 256, 512, 512),
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            output_stride: int = 32,
            mlp_hidden: int = 512,
            drop_rate: float = 0.,
            mod: bool = False,
            mod_c: int = 64,
            mod_reduction: int = 16,
            mod_fusion: str = 'first',
            mod_routing: str = 'topk',
            device=None,
            dtype=None,
    ):
        """
        Args:
            depths: Conv layers per module.
            widths: Channels per module.
            num_classes: Number of classes.
            in_chans: Input channels.
            global_pool: Global pooling type of the head.
            output_stride: Input size over the size of the last feature map: 32, 16 or 8 (dilated).
            mlp_hidden: Width of the two hidden classifier layers.
            drop_rate: Dropout before each classifier layer.
            mod: Replace every second conv of each module with a MoD block.
            mod_c: Channel reduction c of the MoD blocks.
            mod_reduction: Bottleneck ratio r of the channel selector.
            mod_fusion: 'first', 'last' or 'original'.
            mod_routing: 'topk' or 'random'.
        """
        if output_stride not in (8, 16, 32):
            raise ValueError(f'output_stride must be 8, 16 or 32, not {output_stride}')
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        stages, self.feature_info = [], []
        prev_chs, net_stride, dilation = in_chans, 1, 1
        for i, (depth, width) in enumerate(zip(depths, widths)):
            stride = 2 if net_stride < output_stride else 1
            stages.append(VggStage(prev_chs, width, depth, stride=stride, dilation=dilation, **dd))
            prev_chs = width
            if stride == 1:  # the convs after a pool that keeps the resolution are dilated to see as far
                dilation *= 2
            net_stride *= stride
            self.feature_info.append(dict(num_chs=width, reduction=net_stride, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        if mod:
            convert.mod(self, c=mod_c, reduction=mod_reduction, fusion=mod_fusion, routing=mod_routing)
        self.num_features = prev_chs
        # 1x1 convs rather than Linear layers so the head also works unpooled (global_pool=''), as timm's VGG
        self.pre_logits = nn.Sequential(
            nn.Conv2d(prev_chs, mlp_hidden, 1, **dd),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Conv2d(mlp_hidden, mlp_hidden, 1, **dd),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
        )
        self.head_hidden_size = mlp_hidden
        self.head = ClassifierHead(mlp_hidden, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.blocks\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        # the model's device / dtype: after reset(0) the head itself has no parameters to take them from
        self.head.reset(num_classes, global_pool, **get_device_dtype(self))
        self.head.train(self.training)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward that also returns the outputs of the modules picked by `indices` (see timm's ResNet)."""
        assert output_fmt == 'NCHW', 'Output shape must be NCHW.'
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if not stop_early else self.stages[:max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if max_index < len(self.feature_info) - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            prune_head = True
        if prune_head:
            self.pre_logits = nn.Identity()
            self.head.reset(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(cls, variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    feature_cfg = dict(flatten_sequential=True) if cls is VggCifar else None
    return build_mod_model(cls, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


def _cfg(name: str, tag: str, **kwargs) -> Dict[str, Any]:
    c100 = tag == 'c100'
    cifar = dict(
        num_classes=100 if c100 else 10, input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0,
        mean=CIFAR100_MEAN if c100 else CIFAR10_MEAN, std=CIFAR100_STD if c100 else CIFAR10_STD)
    return mod_cfg(name, tag, **dict(cifar, **kwargs))


_RESNETS = ('resnet18', 'resnet34', 'resnet50')
_VGGS = ('vgg16_bn', 'vgg19_bn')
_vgg_cfg = dict(first_conv='stages.0.blocks.0.conv', classifier='head.fc', pool_size=(1, 1))
default_cfgs = generate_default_cfgs({
    **{f'{n}{m}_cifar.{t}': _cfg(f'{n}{m}_cifar', t) for n in _RESNETS for m in ('', '_mod') for t in ('c10', 'c100')},
    **{f'{n}{m}_cifar.{t}': _cfg(f'{n}{m}_cifar', t, **_vgg_cfg) for n in _VGGS for m in ('', '_mod') for t in (
        'c10', 'c100')},
})


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet18 with a CIFAR stem (baseline of resnet18_mod_cifar)."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create(CifarResNet, 'resnet18_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet34 with a CIFAR stem (baseline of resnet34_mod_cifar)."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3))
    return _create(CifarResNet, 'resnet34_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet50 with a CIFAR stem (baseline of resnet50_mod_cifar)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create(CifarResNet, 'resnet50_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_mod_cifar(pretrained: bool = False, **kwargs) -> CifarResNetMoD:
    """ResNet18-MoD with a CIFAR stem (Table 9)."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create(CifarResNetMoD, 'resnet18_mod_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_mod_cifar(pretrained: bool = False, **kwargs) -> CifarResNetMoD:
    """ResNet34-MoD with a CIFAR stem (Table 9)."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3))
    return _create(CifarResNetMoD, 'resnet34_mod_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_mod_cifar(pretrained: bool = False, **kwargs) -> CifarResNetMoD:
    """ResNet50-MoD with a CIFAR stem (Table 9)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create(CifarResNetMoD, 'resnet50_mod_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def vgg16_bn_cifar(pretrained: bool = False, **kwargs) -> VggCifar:
    """VGG16-BN for CIFAR (baseline of vgg16_bn_mod_cifar)."""
    model_args = dict(depths=(2, 2, 3, 3, 3))
    return _create(VggCifar, 'vgg16_bn_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def vgg19_bn_cifar(pretrained: bool = False, **kwargs) -> VggCifar:
    """VGG19-BN for CIFAR (baseline of vgg19_bn_mod_cifar)."""
    model_args = dict(depths=(2, 2, 4, 4, 4))
    return _create(VggCifar, 'vgg19_bn_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def vgg16_bn_mod_cifar(pretrained: bool = False, **kwargs) -> VggCifar:
    """VGG16-BN-MoD for CIFAR: every second conv of each module is a MoD block, c = 64 (Table 9)."""
    model_args = dict(depths=(2, 2, 3, 3, 3), mod=True)
    return _create(VggCifar, 'vgg16_bn_mod_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def vgg19_bn_mod_cifar(pretrained: bool = False, **kwargs) -> VggCifar:
    """VGG19-BN-MoD for CIFAR: every second conv of each module is a MoD block, c = 64 (Table 9)."""
    model_args = dict(depths=(2, 2, 4, 4, 4), mod=True)
    return _create(VggCifar, 'vgg19_bn_mod_cifar', pretrained, **dict(model_args, **kwargs))
