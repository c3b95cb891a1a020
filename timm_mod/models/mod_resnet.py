"""ResNet Mixture-of-Depths (ResNet-MoD)

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024)
    https://arxiv.org/abs/2409.17016

timm's ResNet, BasicBlock and Bottleneck with every second block of each stage (blocks 1, 3, 5, ...) replaced by a
MoD block that processes k = C // c of the C channels (c = 64, r = 16; paper Sec. 3.4, Appendix A.2, Table 5).
"""
from typing import Tuple, Type, Union

from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ._common import MoDModelMixin, build_mod_model, mod_cfg

__all__ = ['ResNetMoD']


class ResNetMoD(MoDModelMixin, ResNet):
    """timm ResNet whose stages alternate standard and MoD blocks (the first block of each stage is standard; c = 64
    by default, the MoD keywords of `MoDModelMixin`)."""
    default_mod_c = 64

    def __init__(
            self,
            block: Union[Type[BasicBlock], Type[Bottleneck]],
            layers: Tuple[int, ...],
            zero_init_last: bool = True,
            **kwargs,
    ):
        """
        Args:
            block: Block type of every stage (BasicBlock or Bottleneck).
            layers: Blocks per stage.
            zero_init_last: Zero-init the last BN of each residual branch, as timm's ResNet.
            **kwargs: the MoD keywords (mod_c, mod_reduction, mod_fusion, mod_routing) and timm ResNet arguments
                (num_classes, in_chans, output_stride, drop_path_rate, ...).
        """
        self._mod_building = True  # skip the parent's weight init for blocks about to be replaced
        super().__init__(block, layers, zero_init_last=zero_init_last, **kwargs)
        self._mod_building = False
        self.init_weights(zero_init_last=zero_init_last)

    def init_weights(self, zero_init_last: bool = True) -> None:
        if not getattr(self, '_mod_building', False):
            super().init_weights(zero_init_last=zero_init_last)


def _create_resnet_mod(variant: str, pretrained: bool = False, **kwargs) -> ResNetMoD:
    return build_mod_model(ResNetMoD, variant, pretrained, **kwargs)


_NAMES = (
    'resnet18_mod', 'resnet26_mod', 'resnet34_mod', 'resnet42_mod',
    'resnet50_mod', 'resnet75_mod', 'resnet86_mod', 'resnet101_mod', 'resnet152_mod',
    'resnet50_mod_lk', 'resnet75_mod_lk', 'resnet86_mod_lk', 'resnet50_mod_rand',
)
default_cfgs = generate_default_cfgs({f'{name}.in1k': mod_cfg(name) for name in _NAMES})


@register_model
def resnet18_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet18-MoD: BasicBlock [2, 2, 2, 2]."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_resnet_mod('resnet18_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet26_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet26-MoD: BasicBlock [2, 2, 3, 4]."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 3, 4))
    return _create_resnet_mod('resnet26_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet34-MoD: BasicBlock [3, 4, 6, 3]."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3))
    return _create_resnet_mod('resnet34_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet42_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet42-MoD: BasicBlock [3, 3, 6, 6]."""
    model_args = dict(block=BasicBlock, layers=(3, 3, 6, 6))
    return _create_resnet_mod('resnet42_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet50-MoD: Bottleneck [3, 4, 6, 3]."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create_resnet_mod('resnet50_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet75_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet75-MoD: Bottleneck [3, 4, 14, 3]."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 14, 3))
    return _create_resnet_mod('resnet75_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet86_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet86-MoD: Bottleneck [3, 4, 18, 3]."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 18, 3))
    return _create_resnet_mod('resnet86_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet101-MoD: Bottleneck [3, 4, 23, 3]."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3))
    return _create_resnet_mod('resnet101_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_mod(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet152-MoD: Bottleneck [3, 8, 36, 3]."""
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3))
    return _create_resnet_mod('resnet152_mod', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_mod_lk(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet50-MoD-lk: processed channels added to the last k channels (Table 8)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), mod_fusion='last')
    return _create_resnet_mod('resnet50_mod_lk', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet75_mod_lk(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet75-MoD-lk: processed channels added to the last k channels (Table 8)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 14, 3), mod_fusion='last')
    return _create_resnet_mod('resnet75_mod_lk', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet86_mod_lk(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet86-MoD-lk: processed channels added to the last k channels (Table 8)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 18, 3), mod_fusion='last')
    return _create_resnet_mod('resnet86_mod_lk', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_mod_rand(pretrained: bool = False, **kwargs) -> ResNetMoD:
    """ResNet50-MoD with random channel routing, the "MoD50 rand." baseline of Table 1."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), mod_routing='random')
    return _create_resnet_mod('resnet50_mod_rand', pretrained, **dict(model_args, **kwargs))
