"""timm `features_only` backbones for torchvision's dense-prediction heads.

torchvision's heads (FCN, FPN + Faster R-CNN) read a backbone's features from a dict of named maps; timm's
`features_only` models return a list. `FeatureDict` names the list's entries, so any timm model, MoD or not, slots
into those heads unchanged.
"""
import difflib
from collections import OrderedDict
from typing import Dict, Sequence

import timm
import torch
import torch.nn as nn

__all__ = ['FeatureDict', 'check_backbone', 'create_backbone']


def check_backbone(name: str) -> None:
    """Fail fast, naming the closest registered models, when `name` is not a timm model.

    Raises:
        ValueError: if no timm model (of timm or timm_mod) has that architecture name.
    """
    if timm.is_model(name):
        return
    hints = difflib.get_close_matches(name, timm.list_models(), n=3)
    raise ValueError(f'unknown backbone {name!r}' + (f'; did you mean {", ".join(hints)}?' if hints else ''))


class FeatureDict(nn.Module):
    """A timm `features_only` model whose outputs come back as an ordered dict under the given names."""

    def __init__(self, body: nn.Module, names: Sequence[str]):
        """
        Args:
            body: timm `features_only` model returning a list of feature maps.
            names: One key per feature map, in the body's output order.
        """
        super().__init__()
        if len(names) != len(body.feature_info.out_indices):
            raise ValueError(f'{len(names)} names for {len(body.feature_info.out_indices)} feature maps')
        self.body = body
        self.names = tuple(names)

    @property
    def channels(self) -> Sequence[int]:
        return self.body.feature_info.channels()

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return OrderedDict(zip(self.names, self.body(x)))


def create_backbone(
        name: str,
        out_indices: Sequence[int],
        names: Sequence[str],
        pretrained: bool = False,
        **kwargs,
) -> FeatureDict:
    """`timm.create_model(name, features_only=True, ...)` returning a dict of the `out_indices` feature maps.

    Args:
        name: timm model name, optionally with a pretrained tag ('resnet86_mod', 'resnet50.a1_in1k').
        out_indices: Feature levels to return (1-4 are the strides 4-32 stages of a ResNet).
        names: Key of each returned map.
        pretrained: Load the backbone's ImageNet weights through timm.
        **kwargs: Further timm model arguments (output_stride, drop_path_rate, mod_c, ...).
    """
    check_backbone(name)
    body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices), **kwargs)
    return FeatureDict(body, names)
