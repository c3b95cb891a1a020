"""Settings shared by the timm_mod model families."""
import os
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ['HUB_ORG', 'PAPER_ID', 'hf_hub_id', 'mod_cfg']

# The Hugging Face organisation that hosts timm_mod weights, set once here; TIMM_MOD_HUB_ORG overrides it.
HUB_ORG = os.environ.get('TIMM_MOD_HUB_ORG', 'timm-mod')
PAPER_ID = 'arXiv:2409.17016'


def hf_hub_id(name: str, tag: str) -> str:
    """Hub repo id of one pretrained tag, e.g. 'timm-mod/resnet75_mod.in1k'."""
    return f'{HUB_ORG}/{name}.{tag}'


def mod_cfg(name: str, tag: str = 'in1k', **kwargs) -> Dict[str, Any]:
    """Pretrained cfg of one `name.tag`, ImageNet-1k defaults (as timm's ResNet `_cfg`) unless overridden."""
    return {
        'hf_hub_id': hf_hub_id(name, tag),
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'fc',
        'license': 'apache-2.0', 'paper_ids': PAPER_ID,
        **kwargs,
    }
