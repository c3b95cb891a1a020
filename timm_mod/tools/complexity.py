"""Parameter and MAC counts, the way the paper's tables report them."""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ._cli import import_extra

__all__ = ['count_params_m', 'count_gmacs']


def count_params_m(model: nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def count_gmacs(model: nn.Module, input_size: Optional[Tuple[int, int, int]] = None) -> float:
    """Multiply-accumulates (G) of one forward pass at batch 1, counted by fvcore.

    fvcore counts conv / linear / matmul MACs only and lands about 1-2 % under the counter used by the paper.
    """
    # imported here: fvcore is an extra ('tools'), and slow to import
    FlopCountAnalysis = import_extra('fvcore.nn', 'tools', 'counting MACs').FlopCountAnalysis

    input_size = input_size or model.pretrained_cfg['input_size']
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flops = FlopCountAnalysis(model, torch.zeros(1, *input_size, device=param.device, dtype=param.dtype))
            flops.unsupported_ops_warnings(False)
            flops.uncalled_modules_warnings(False)
            return flops.total() / 1e9
    finally:
        model.train(was_training)
