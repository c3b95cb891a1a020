"""The MoD mechanism's whole range in small models, shared by the tests that sweep it (exports, captured features).

One model per block adapter, then the fusions and routings those do not cover; each with the input size it runs at.
"""
from typing import Callable, Dict, Tuple

import timm
import torch
import torch.nn as nn

import timm_mod
from timm_mod import MoDBlock

CASES: Dict[str, Tuple[Callable[[], nn.Module], int]] = {
    'BasicBlock/first': (lambda: timm.create_model('resnet18_mod_cifar'), 32),
    'Bottleneck/last': (lambda: timm.create_model('resnet50_mod_lk', mod_c=32), 32),
    'InvertedResidual': (lambda: timm.create_model('mobilenetv2_mod'), 64),
    'InvertedResidual-SE': (lambda: timm.create_model('mobilenetv3_large_100_mod'), 64),
    'DepthwiseSeparableConv': (lambda: timm_mod.mod('mobilenetv1_100', c=64), 64),
    'ConvNeXtBlock': (lambda: timm_mod.mod('convnext_atto'), 64),
    'RegNetBottleneck': (lambda: timm_mod.mod('regnety_002', c=16), 64),
    'ConvNormAct': (lambda: timm.create_model('vgg16_bn_mod_cifar'), 32),
    'original': (lambda: timm.create_model('resnet18_mod_cifar', mod_fusion='original'), 32),
    'random': (lambda: timm.create_model('resnet18_mod_cifar', mod_routing='random'), 32),
}


def build_case(case: str, train: bool = False) -> Tuple[nn.Module, int]:
    """The case's model, seeded (random-init weights), in eval or training mode, and its input size."""
    torch.manual_seed(0)
    build, size = CASES[case]
    model = build().train(train)
    assert any(isinstance(m, MoDBlock) for m in model.modules())
    return model, size


class _Ones(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv2d(k, k, 1)

    def forward(self, x):
        return self.conv(x)


def tied_block() -> MoDBlock:
    """A MoD block whose selector's hidden ReLU is zero for every input: every channel logit is exactly 0."""
    torch.manual_seed(0)
    block = MoDBlock(16, _Ones, c=4, reduction=4).eval()
    with torch.no_grad():
        block.selector.fc1.weight.fill_(-1.)
    return block
