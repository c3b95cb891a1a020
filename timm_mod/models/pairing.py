"""The timm model each MoD model is compared with: the paper's pairings, and for the models beyond the paper the
timm model they convert.

The bench times each MoD model against its baseline, the model cards name it, and `./train.sh --init-from` is
usually given its pretrained weights (resnet75_mod and resnet86_mod take more of resnet101's than of resnet50's).
"""
from typing import Dict

__all__ = ['PAPER_PAIRS', 'BEYOND_PAPER', 'BASELINES']

# Each MoD model of the paper and the baseline its tables compare it with
PAPER_PAIRS: Dict[str, str] = {
    'resnet50_mod': 'resnet50', 'resnet75_mod': 'resnet50', 'resnet86_mod': 'resnet50',
    'resnet50_mod_rand': 'resnet50', 'resnet50_mod_lk': 'resnet50', 'resnet75_mod_lk': 'resnet50',
    'resnet86_mod_lk': 'resnet50',
    'resnet101_mod': 'resnet101', 'resnet152_mod': 'resnet101',
    'resnet18_mod': 'resnet18', 'resnet26_mod': 'resnet18',
    'resnet34_mod': 'resnet34', 'resnet42_mod': 'resnet34',
    'mobilenetv2_mod': 'mobilenetv2_100', 'mobilenetv2_mod_l': 'mobilenetv2_100',
    'resnet18_mod_cifar': 'resnet18_cifar', 'resnet34_mod_cifar': 'resnet34_cifar',
    'resnet50_mod_cifar': 'resnet50_cifar', 'vgg16_bn_mod_cifar': 'vgg16_bn_cifar',
    'vgg19_bn_mod_cifar': 'vgg19_bn_cifar',
}

# Each model beyond the paper and the timm model it converts (the paper has no numbers for these)
BEYOND_PAPER: Dict[str, str] = {
    'convnext_tiny_mod': 'convnext_tiny', 'convnext_nano_mod': 'convnext_nano',
    'resnext50_32x4d_mod': 'resnext50_32x4d', 'seresnet50_mod': 'seresnet50', 'regnety_016_mod': 'regnety_016',
    'efficientnet_b0_mod': 'efficientnet_b0', 'mobilenetv3_large_100_mod': 'mobilenetv3_large_100',
}

BASELINES: Dict[str, str] = {**PAPER_PAIRS, **BEYOND_PAPER}
