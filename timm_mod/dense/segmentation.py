"""FCN semantic segmentation on timm backbones (the paper's Sec. 4.2, Table 3, Appendix B).

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024), https://arxiv.org/abs/2409.17016
FCN: `Fully Convolutional Networks for Semantic Segmentation` - Long, Shelhamer, Darrell (CVPR 2015)

torchvision's `FCN` and `FCNHead` on a dilated timm `features_only` backbone, as MMSegmentation's FCN-R50-D8 the
paper trains: output stride 8 (stages 3 and 4 dilated 2 and 4), the main head on stage 4, an auxiliary head on
stage 3 whose loss weighs 0.4, dropout 0.1 in both heads. Logits come back upsampled to the input size.

torchvision's FCNHead is one 3x3 conv (C -> C/4) and a 1x1 classifier; MMSegmentation's is two 3x3 convs, a 3x3 conv
over their output concatenated with the input, and the classifier. The heads differ, the backbones do not, so the
parameter differences between backbones are the paper's while the totals are not (see docs/dense.md).
"""
from typing import Dict

import torch
import torch.nn.functional as F
from torchvision.models.segmentation.fcn import FCN, FCNHead

from .backbone import create_backbone

__all__ = ['fcn', 'fcn_loss', 'AUX_WEIGHT', 'IGNORE_INDEX']

AUX_WEIGHT = 0.4  # Appendix B: "the auxiliary head contributing 40% to the total loss"
IGNORE_INDEX = 255  # Cityscapes pixels outside the 19 evaluated classes


def fcn(
        backbone: str = 'resnet86_mod',
        num_classes: int = 19,
        aux: bool = True,
        output_stride: int = 8,
        pretrained_backbone: bool = False,
        **kwargs,
) -> FCN:
    """torchvision FCN on a timm backbone: main head on stage 4, auxiliary head on stage 3.

    Args:
        backbone: timm model name, e.g. 'resnet50' or 'resnet86_mod'.
        num_classes: Output classes (19 for Cityscapes).
        aux: Add the auxiliary head (training only: it costs time at inference and is not part of the paper's
            parameter counts).
        output_stride: 8 (FCN-D8, the paper's), 16 or 32; the stages past it are dilated.
        pretrained_backbone: Load the backbone's ImageNet weights through timm.
        **kwargs: Further timm backbone arguments (drop_path_rate, mod_c, ...).
    """
    out_indices, names = ((3, 4), ('aux', 'out')) if aux else ((4,), ('out',))
    body = create_backbone(
        backbone, out_indices, names, pretrained=pretrained_backbone, output_stride=output_stride, **kwargs)
    channels = body.channels
    aux_classifier = FCNHead(channels[0], num_classes) if aux else None
    return FCN(body, FCNHead(channels[-1], num_classes), aux_classifier)


def fcn_loss(outputs: Dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy of the main head plus 0.4 x that of the auxiliary head, ignoring label 255."""
    loss = F.cross_entropy(outputs['out'], target, ignore_index=IGNORE_INDEX)
    if 'aux' in outputs:
        loss = loss + AUX_WEIGHT * F.cross_entropy(outputs['aux'], target, ignore_index=IGNORE_INDEX)
    return loss
