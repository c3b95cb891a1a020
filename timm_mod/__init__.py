"""timm_mod: CNN Mixture-of-Depths models for timm.

Importing this package registers its models with timm, so ``timm.create_model('resnet75_mod')`` works, and
``timm_mod.mod(name_or_model)`` converts a timm CNN into its MoD version.
"""
from .version import __version__
from .layers import ChannelSelector, MoDBlock
from .convert import mod, mod_stage, register_block_adapter
from .models import *
from .models import MODEL_MODULES, list_models
