"""Faster R-CNN with FPN on timm backbones (the paper's Sec. 4.3, Table 4, Appendix C).

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024), https://arxiv.org/abs/2409.17016
Faster R-CNN: `Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks` - Ren et al. (2015)
FPN: `Feature Pyramid Networks for Object Detection` - Lin et al. (CVPR 2017), https://arxiv.org/abs/1612.03144

torchvision's `FasterRCNN` on a `torchvision.ops.FeaturePyramidNetwork` over stages 1-4 of a timm `features_only`
backbone (strides 4-32, plus a max-pooled stride-64 level), as MMDetection's faster_rcnn_r50_fpn the paper trains.
Images are resized as Appendix C's (1000, 600) with aspect ratio kept: the short side to 600 unless the long side
would pass 1000. With a pretrained backbone the stem and stage 1 are frozen and batch norm runs on its ImageNet
statistics, as both torchvision and MMDetection do for batches of 2 images.
"""
from typing import Dict, Iterator, Optional

import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbone import FeatureDict, create_backbone

__all__ = ['TimmBackboneWithFPN', 'faster_rcnn']

NUM_STAGES = 4


class TimmBackboneWithFPN(nn.Module):
    """torchvision's `BackboneWithFPN` for a timm backbone: stages 1-4 -> FPN maps '0'-'3' and 'pool'.

    Frozen parameters keep `requires_grad=False` rather than becoming buffers (torchvision's FrozenBatchNorm2d), so
    parameter counts include them, as the paper's (MMDetection's) do.
    """

    def __init__(
            self,
            body: FeatureDict,
            out_channels: int = 256,
            trainable_layers: int = NUM_STAGES + 1,
            freeze_bn: bool = False,
    ):
        """
        Args:
            body: Backbone returning the four stage maps, strides 4 to 32.
            out_channels: Channels of every FPN level.
            trainable_layers: Stages trained, counted from the last (0-4), or 5 to train the stem too
                (torchvision's `trainable_backbone_layers`).
            freeze_bn: Keep the backbone's batch norm in eval mode with frozen affine parameters.
        """
        super().__init__()
        if not 0 <= trainable_layers <= NUM_STAGES + 1:
            raise ValueError(f'trainable_layers must be in [0, {NUM_STAGES + 1}], got {trainable_layers}')
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.freeze_bn = freeze_bn
        self._freeze(trainable_layers)

    def _freeze(self, trainable_layers: int) -> None:
        trained = self.body.body.feature_info.module_name()[NUM_STAGES - min(trainable_layers, NUM_STAGES):]
        # The body's children run in order (stem, then stages): everything before the first trained stage freezes.
        for name, child in self.body.body.named_children():
            if trainable_layers > NUM_STAGES or name in trained:
                break
            child.requires_grad_(False)
        for bn in self._batch_norms():
            bn.requires_grad_(False)

    def _batch_norms(self) -> Iterator[nn.Module]:
        if self.freeze_bn:
            yield from (m for m in self.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))

    def train(self, mode: bool = True) -> 'TimmBackboneWithFPN':
        super().train(mode)
        for bn in self._batch_norms():
            bn.eval()
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def faster_rcnn(
        backbone: str = 'resnet86_mod',
        num_classes: int = 21,
        pretrained_backbone: bool = False,
        trainable_layers: Optional[int] = None,
        min_size: int = 600,
        max_size: int = 1000,
        **kwargs,
) -> FasterRCNN:
    """torchvision Faster R-CNN + FPN on a timm backbone, resizing images as Appendix C.

    Args:
        backbone: timm model name, e.g. 'resnet50' or 'resnet86_mod'.
        num_classes: Classes including background (21 for Pascal VOC).
        pretrained_backbone: Load the backbone's ImageNet weights through timm (and freeze the stem, stage 1 and
            batch norm, as torchvision does for pretrained backbones).
        trainable_layers: Override the stages trained (default 3 with a pretrained backbone, else all 5).
        min_size: Short side the images are resized to.
        max_size: Largest long side after resizing.
        **kwargs: Further `torchvision.models.detection.FasterRCNN` arguments (box_score_thresh, rpn_*, ...).
    """
    body = create_backbone(backbone, tuple(range(1, NUM_STAGES + 1)), [str(i) for i in range(NUM_STAGES)],
                           pretrained=pretrained_backbone)
    if trainable_layers is None:
        trainable_layers = 3 if pretrained_backbone else NUM_STAGES + 1
    fpn = TimmBackboneWithFPN(body, trainable_layers=trainable_layers, freeze_bn=pretrained_backbone)
    cfg = body.body.pretrained_cfg
    return FasterRCNN(
        fpn, num_classes=num_classes, min_size=min_size, max_size=max_size,
        image_mean=list(cfg['mean']), image_std=list(cfg['std']), **kwargs)
