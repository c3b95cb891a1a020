"""timm_mod: CNN Mixture-of-Depths models for timm.

Importing this package registers its models with timm, so ``timm.create_model('resnet75_mod')`` works.
"""
from .version import __version__
from .layers import ChannelSelector, MoDBlock
from .convert import mod_stage, register_block_adapter
from .models import *
from .models import MODEL_MODULES, list_models
